"""The node's fencer (docs/guarantees.md): a round moves to another worker only after its holder is
provably stopped. Run by the janitor every pass.

A worker is stale when an entry pending on it has gone a lease without renewal, or a
round it holds has passed its lease deadline; it is gone when its process no longer runs.
For each, in this order: stop the process (SIGKILL, then wait until it is gone or a
zombie; its identity — pid, start time, boot — is in its consumer name, so a reused pid is
never hit), wait (bounded) until its orphaned sockets have delivered what it had handed to
the kernel, and only then read what it still holds and hand that back (``hand_back.lua``):
a live room's round is queued again, an ended room's blocks go back and its Failed is
pushed. Until then the round's blocks stay held and its status waits.

Who fences the fencer: the janitor runs it; while the janitor is paused or restarting no
round changes hands (live workers go on). If `serve` itself dies, the kernel SIGKILLs every
worker (PDEATHSIG, ``processes.py``), and the next serve's fencer finds them gone.
"""
from __future__ import annotations

import logging
import time

from xferd.state.retry import last_recovery
from xferd.node.stopping import Identity, stop, wait_drained
from xferd.node.notify import Notifier
from xferd.settings import Settings
from xferd.state.store import Store

log = logging.getLogger("xferd.fencer")


class Fencer:
    def __init__(self, store: Store, settings: Settings, notifier: Notifier):
        self.store, self.settings, self.notifier = store, settings, notifier
        self.lease_ms = int(settings.lease * 1000)
        self._unfenceable: set[str] = set()  # reported once

    def _stopped(self, name: str, stale: bool) -> bool | None:
        """Whether the consumer's process is stopped for certain: True (now or already),
        False (it could not be stopped yet), None (not stale and still running)."""
        identity = Identity.parse(name)
        if identity is None:
            if stale and name not in self._unfenceable:
                self._unfenceable.add(name)
                log.error("worker %r holds a round past its lease, but its name says no process: "
                          "it cannot be fenced, its round waits", name)
            return False if stale else None
        running = identity.running()
        if running is None:
            # another host: the node record says this host serves the node now (claim.py),
            # so that host's serve was taken over by an operator who declared it gone
            log.warning("worker %s ran on host %s, which this node was taken over from: taken as "
                        "stopped", name, identity.host)
            return True
        if running and not stale:
            return None
        if running:
            log.warning("worker %s (pid %d) holds a round past its %.1fs lease: stopping it",
                        name, identity.pid, self.settings.lease)
            if not stop(identity, timeout=1.0):  # the next pass looks again
                log.error("worker %s (pid %d) has not died within 1s of SIGKILL (uninterruptible "
                          "sleep?); its rounds wait", name, identity.pid)
                return False
            self.store.count("writers_fenced")
        return True

    def candidates(self, holds: list[tuple[int, str, int]]) -> dict[str, bool]:
        """Consumer name -> stale (past its lease) for every consumer with work: entries
        pending on it, or a round it holds (``holds``: Store.holds)."""
        found = {name: False for name, pending in self.store.consumers().items() if pending}
        found.update((holder, False) for _, holder, _ in holds if holder)
        # after an outage every lease looks run out: give live workers one to renew
        if time.monotonic() >= last_recovery() + self.settings.lease:
            for _, name in self.store.pending(min_idle_ms=self.lease_ms):
                found[name] = True
            now = self.store.now_ms()
            found.update((holder, True) for _, holder, until in holds if holder and until <= now)
        return found

    def pass_once(self) -> int:
        """Fence every stale or gone consumer and hand back what it held; returns hand-backs."""
        holds = self.store.holds()
        stopped = [name for name, stale in self.candidates(holds).items() if self._stopped(name, stale)]
        if not stopped:
            return 0
        left = wait_drained(self.settings.drain_timeout)
        if left:
            log.warning("%d orphaned connections still hold unsent bytes after %.1fs; handing back "
                        "anyway", left, self.settings.drain_timeout)
        return sum(self.hand_back(name, [room for room, holder, _ in holds if holder == name])
                   for name in stopped)

    def hand_back(self, name: str, held_rooms: list[int]) -> int:
        """Hand back everything the stopped consumer ``name`` holds: the entries pending on
        it, and the rounds of ``held_rooms``; returns how many."""
        held: dict[int, list[str]] = {room: [] for room in held_rooms}  # room -> its entries
        for entry_id, _ in self.store.pending(consumer=name, count=1000):
            work = self.store.entry(entry_id)
            if work is None:  # trimmed while pending: nothing to redo, just let it go
                self.store.acknowledge(entry_id)
                continue
            held.setdefault(work.room, []).append(entry_id)
        done = 0
        for room, entries in held.items():
            for entry_id in entries or [""]:
                verdict, outcome = self.store.hand_back(name, room, entry_id)
                if verdict == "none":
                    continue
                done += 1
                log.info("room %s: %s's round handed back (%s)", room, name, verdict)
                if verdict == "dead":
                    self.store.count("dead_letters")
                if outcome is not None and outcome.notify:
                    self.notifier.send(outcome.endpoints, room, outcome.status)
        if done:
            self.store.count("handed_back", done)
        return done
