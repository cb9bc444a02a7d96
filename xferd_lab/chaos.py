"""Faults injected into a running demo: worker SIGKILLs, worker pauses (SIGSTOP for longer
than a lease, then SIGCONT), Redis crash-restarts and failovers, and rolling restarts of
`serve` (a drain, then a new serve).

Used by `xferd demo --chaos` and ``scripts/chaos.py``; each fault runs in its own thread
beside the simulated encoder and language side, and counts what it did.
"""
from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
from dataclasses import dataclass
from typing import Callable

from xferd.state.connections import TRANSIENT
from xferd_lab.embedded import EmbeddedRedis
from xferd.node.stopping import Identity, proc_stat
from xferd.state.store import Store

log = logging.getLogger("xferd.chaos")


@dataclass(frozen=True)
class Chaos:
    kill_every: tuple[float, float] | None = (0.2, 0.5)  # seconds between SIGKILLs
    kill_any: bool = False  # pick among all of serve's children (ingress, janitor too), not workers only
    redis_crashes: tuple[tuple[float, float], ...] = ()  # (fraction of requests done, seconds down)
    pause_every: tuple[float, float] | None = None  # seconds between SIGSTOPs of a random worker
    pause_for: tuple[float, float] = (1.0, 5.0)  # how long each pause lasts before SIGCONT
    lease: float = 1.0  # short, so stopped workers' rounds are handed back quickly
    # "cluster" or "sentinel": run on a local replicated Redis (min_replicas 1) and SIGKILL
    # the primary holding the node at each fraction of requests done; a replica takes over
    failover: str = ""
    failover_at: tuple[float, ...] = (0.5,)
    min_replicas: int = 1  # with failover; 0 shows what the replica wait prevents
    replica_lag: float = 0.0  # seconds the replicas are SIGSTOPped before each primary kill
    # rolling restarts: at each fraction of requests done, SIGTERM serve (a drain: rounds in
    # flight finish, the rest waits) and start it again, while the other faults go on
    drains_at: tuple[float, ...] = ()
    # Redis out of memory: at each fraction of requests done, maxmemory set below what it holds
    # (noeviction) for the given seconds, so it refuses every write that adds data
    redis_oom: tuple[tuple[float, float], ...] = ()  # (fraction of requests done, seconds)
    # a slow Redis: the node and the encoder reach it through a proxy that delays every
    # chunk by this many seconds each way
    redis_delay: float = 0.0
    # a language process of its own on a fixed port, SIGKILLed every MIN-MAX seconds (a room's
    # write may be in flight) and started again under the same session id
    restart_peer_every: tuple[float, float] | None = None
    deaf_peer: bool = False  # a language peer whose status endpoint is gone runs rooms too
    # the language side sends init/resume again after 5 quiet seconds (xferd's Receiver); the
    # reference never does, so without it a message the node lost hangs its room
    resend: bool = True

    def describe(self) -> str:
        parts = []
        if self.kill_every:
            whom = "child of serve (ingress, janitor or worker)" if self.kill_any else "worker"
            parts.append(f"SIGKILL a random {whom} every {self.kill_every[0]}–{self.kill_every[1]}s")
        if self.pause_every:
            parts.append(f"SIGSTOP a random worker for {self.pause_for[0]}–{self.pause_for[1]}s every "
                         f"{self.pause_every[0]}–{self.pause_every[1]}s, then SIGCONT")
        for fraction, down in () if self.failover else self.redis_crashes:
            parts.append(f"SIGKILL Redis (AOF) at {fraction:.0%} of requests, down {down:g}s, restart")
        for fraction in self.failover_at if self.failover else ():
            lag = f" {self.replica_lag:g}s after cutting its replica off" if self.replica_lag else ""
            parts.append(f"SIGKILL the {self.failover} primary holding the node at {fraction:.0%} of "
                         f"requests{lag}, a replica promoted, the old primary restarted as a replica")
        if self.redis_delay:
            parts.append(f"every Redis hop of the node and encoder {self.redis_delay * 1000:g} ms slower each way")
        for fraction, seconds in self.redis_oom:
            parts.append(f"Redis out of memory (refusing writes) at {fraction:.0%} of requests for {seconds:g}s")
        if self.restart_peer_every:
            parts.append(f"a language process on a fixed port SIGKILLed every {self.restart_peer_every[0]:g}–"
                         f"{self.restart_peer_every[1]:g}s and started again under its session id")
        if self.deaf_peer:
            parts.append("a language peer whose status endpoint is gone runs rooms beside the workload")
        if self.drains_at:
            at = ", ".join(f"{fraction:.0%}" for fraction in self.drains_at)
            parts.append(f"drain serve (SIGTERM) at {at} of requests and start it again")
        if not self.resend:
            parts.append("the language side never sends a message again")
        return "; ".join(parts) or "none"


def running(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is not None and stat[0] != "Z"


def children_of(pid: int) -> list[int]:
    """Running child processes of ``pid`` (Linux /proc)."""
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()
            and (stat := proc_stat(entry)) is not None and int(stat[1]) == pid and stat[0] != "Z"]


def live_worker_identities(store: Store) -> list[Identity]:
    """Workers that are up and serving: a fresh heartbeat, and their process still runs."""
    return [i for i in map(Identity.parse, store.live_workers(within_s=2.0)) if i is not None and i.running()]


class WorkerKiller(threading.Thread):
    """SIGKILLs a random live worker (or, given ``serve_pid``, any child of the serve it
    names now) every ``low``–``high`` seconds."""

    def __init__(self, store: Store, low: float, high: float, seed: int,
                 serve_pid: Callable[[], int] | None = None):
        super().__init__(name="killer", daemon=True)
        self.store, self.low, self.high, self.serve_pid = store, low, high, serve_pid
        self.rng = random.Random(seed)
        self.kills = 0
        self.done = threading.Event()

    def _candidates(self) -> list[int]:
        if self.serve_pid is not None:
            return children_of(self.serve_pid())
        return [identity.pid for identity in live_worker_identities(self.store)]

    def run(self) -> None:
        while not self.done.wait(self.rng.uniform(self.low, self.high)):
            try:
                candidates = self._candidates()
            except TRANSIENT:
                continue  # Redis is down (a crash test): no way to find workers now
            if not candidates:
                continue
            pid = self.rng.choice(candidates)
            try:
                os.kill(pid, signal.SIGKILL)
                self.kills += 1
                gone = [w for w in self.store.live_workers(within_s=2.0) if f"-p{pid}-" in w]
                if self.serve_pid is None and gone:
                    self.store.client.hdel(self.store.keys.workers, *gone)
            except (ProcessLookupError, *TRANSIENT):
                pass


class WorkerPauser(threading.Thread):
    """Every ``every`` seconds SIGSTOPs a random live worker for ``length`` seconds, then
    SIGCONTs it: a process that stops without dying (GC, cgroup throttling, a VM freeze).
    Pauses overlap. A worker is checked against its start time before each signal (the
    node's fencer may have killed it, and its pid may belong to another process by then)."""

    def __init__(self, store: Store, every: tuple[float, float], length: tuple[float, float], seed: int):
        super().__init__(name="pauser", daemon=True)
        self.store, self.every, self.length = store, every, length
        self.rng = random.Random(seed + 1)
        self.pauses = 0
        self.paused_s = 0.0
        self.done = threading.Event()
        self._paused: dict[Identity, threading.Timer] = {}

    def run(self) -> None:
        while not self.done.wait(self.rng.uniform(*self.every)):
            try:
                identities = [i for i in live_worker_identities(self.store) if i not in self._paused]
            except TRANSIENT:
                continue
            if not identities:
                continue
            victim = self.rng.choice(identities)
            pause = self.rng.uniform(*self.length)
            try:
                os.kill(victim.pid, signal.SIGSTOP)
            except ProcessLookupError:
                continue
            self.pauses += 1
            self.paused_s += pause
            self._paused[victim] = timer = threading.Timer(pause, self._resume, (victim,))
            timer.daemon = True
            timer.start()
        for victim, timer in list(self._paused.items()):  # the run is over: let every pause end
            timer.cancel()
            self._resume(victim)

    def _resume(self, victim: Identity) -> None:
        self._paused.pop(victim, None)
        if victim.running():  # else the fencer killed it meanwhile
            os.kill(victim.pid, signal.SIGCONT)


class AtProgress(threading.Thread):
    """A fault that strikes once the run's progress passes each of ``fractions``:
    ``strike(i)`` for the i-th (in order), until ``done`` is set or a strike returns False."""

    def __init__(self, name: str, fractions, progress: Callable[[], float]):
        super().__init__(name=name, daemon=True)
        self.fractions, self.progress = sorted(fractions), progress
        self.done = threading.Event()

    def run(self) -> None:
        for i, fraction in enumerate(self.fractions):
            while self.progress() < fraction:
                if self.done.wait(0.05):
                    return
            if self.strike(i) is False:
                return

    def strike(self, i: int) -> bool | None:
        raise NotImplementedError


class RedisCrasher(AtProgress):
    """Crash-restarts an AOF ``redis-server`` once progress passes each given fraction."""

    def __init__(self, redis: EmbeddedRedis, crashes: tuple[tuple[float, float], ...],
                 progress: Callable[[], float]):
        self.crashes = sorted(crashes)
        super().__init__("redis-crasher", [fraction for fraction, _ in self.crashes], progress)
        self.redis = redis
        self.outages: list[float] = []  # seconds from kill to answering again

    def strike(self, i: int) -> None:
        started = time.monotonic()
        self.redis.crash_restart(self.crashes[i][1])
        self.outages.append(time.monotonic() - started)


class RedisFiller(AtProgress):
    """Once progress passes each fraction, Redis refuses writes for a while: its maxmemory
    set below what it holds with noeviction, as a Redis that filled up, then set back. Times
    how long the node took to complete a request again after each window."""

    def __init__(self, url: str, windows: tuple[tuple[float, float], ...], progress: Callable[[], float],
                 completed: Callable[[], int]):
        self.windows = sorted(windows)
        super().__init__("redis-filler", [fraction for fraction, _ in self.windows], progress)
        self.url, self.completed = url, completed
        self.full: list[dict[str, float]] = []  # per window: seconds full, seconds to the next completion

    def strike(self, i: int) -> None:
        import redis
        client = redis.Redis.from_url(self.url)
        saved = {name: client.config_get(name)[name] for name in ("maxmemory", "maxmemory-policy")}
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", 1)
        started = time.monotonic()
        log.warning("chaos: Redis out of memory (maxmemory 1) for %gs", self.windows[i][1])
        self.done.wait(self.windows[i][1])
        for name, value in saved.items():
            client.config_set(name, value)
        full_s, before = time.monotonic() - started, self.completed()
        ended = time.monotonic()
        while self.completed() == before and not self.done.wait(0.01):
            pass
        self.full.append({"full_s": round(full_s, 2), "next_done_s": round(time.monotonic() - ended, 2)})
        client.close()


class PrimaryKiller(AtProgress):
    """SIGKILLs the primary holding ``key`` of a LocalCluster or LocalSentinel once progress
    passes each fraction, times the promotion of its replica and how long the node stalled
    (until the next request completed), then restarts the old primary, which rejoins as a
    replica (so min_replicas can hold again)."""

    def __init__(self, setup, key: str, fractions: tuple[float, ...], progress: Callable[[], float],
                 completed: Callable[[], int], lag_s: float = 0.0):
        super().__init__("primary-killer", fractions, progress)
        self.setup, self.key, self.lag_s, self.completed = setup, key, lag_s, completed
        self.failovers: list[dict[str, float]] = []

    def strike(self, i: int) -> None:
        before, started = self.completed(), time.monotonic()
        port = self.setup.kill_primary_of(self.key, self.lag_s)
        promoted = self.setup.wait_promoted(self.key, port)
        self.setup.restart(port)
        while self.completed() == before and not self.done.wait(0.01):
            pass
        self.failovers.append({"killed_port": port, "promoted_s": round(promoted, 2),
                               "stalled_s": round(time.monotonic() - started, 2)})
        log.warning("chaos: primary on port %d killed, replica promoted in %.1fs", port, promoted)


class RollingRestarter(AtProgress):
    """Once progress passes each fraction, ``restart()``: drain `serve` (SIGTERM) and start
    it again, as a rolling restart or a Kubernetes pod replacement does. Each restart's
    report (exit code, drain and downtime seconds) goes to ``restarts``."""

    def __init__(self, restart: Callable[[], dict], fractions: tuple[float, ...], progress: Callable[[], float]):
        super().__init__("rolling-restarter", fractions, progress)
        self.restart = restart
        self.restarts: list[dict] = []

    def strike(self, i: int) -> bool:
        try:
            report = self.restart()
        except RuntimeError as error:  # the new serve did not come up: the run fails, saying so
            self.restarts.append({"exit_code": f"not restarted: {error}", "drained_s": 0.0, "down_s": 0.0})
            return False
        self.restarts.append(report)
        log.warning("chaos: serve drained in %.1fs (exit %s), serving again after %.1fs",
                    report["drained_s"], report["exit_code"], report["down_s"])
        return True
