"""`xferd serve`: one node's service — ingress, N workers and the janitor, supervised.

Claims the node (one serve per node, on one host: ``claim.py``), creates its source pool
(shared memory + free list in Redis) if needed, then starts each part as its own OS process
and restarts any that dies, with backoff. Workers die with it (PDEATHSIG SIGKILL), so no
writer outlives the node's fencer. With ``--bootstrap`` it also answers the reference's
HTTP bootstrap (``bootstrap.py``).
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass

import redis
import zmq

from xferd.node import ingress

from xferd.node import janitor

from xferd.node import worker
from xferd.node.bootstrap import BootstrapServer
from xferd.state.connections import DEFAULT_REDIS_URL, connect_at_start, redact
from xferd.ops.health import Health
from xferd.ops.monitor import MonitorServer
from xferd.state.node_record import node_record, refresh, release
from xferd.node.stopping import Identity
from xferd.transfer.pool import SourcePool, remove_unless_mapped
from xferd.node.processes import run_service
from xferd.settings import ConfigError, Settings, split_host_port
from xferd.state.store import Store

log = logging.getLogger("xferd.serve")
MAX_BACKOFF_S = 30.0


def check_addresses(settings: Settings) -> None:
    """The ingress, metrics and bootstrap addresses can be bound now (they are bound right
    after), so a port in use or an address not of this host stops `serve` at once, with one
    line, before it claims the node."""
    for name, address in (("metrics", settings.metrics), ("bootstrap", settings.bootstrap)):
        if address:
            host, port = split_host_port(address, name)
            try:
                with socket.create_server((host or "0.0.0.0", port), reuse_port=False) as probe:
                    probe.close()
            except OSError as error:
                raise ConfigError(f"{name} {address}: cannot listen ({error.strerror or error})") from None
    context = zmq.Context()
    try:
        sock = context.socket(zmq.PULL)
        try:
            sock.bind(settings.ingress)
        except zmq.ZMQError as error:
            raise ConfigError(f"ingress {settings.ingress}: cannot bind ({error.strerror})") from None
        finally:
            sock.close(0)
    finally:
        context.term()


def check_pool_space(settings: Settings) -> None:
    """The source pool fits in /dev/shm (a file already there of the same size is reused)."""
    size = SourcePool.size_of(settings.buffer_layout, settings.pool_blocks)
    path = SourcePool.path_of(settings.shm_name)
    existing = os.path.getsize(path) if os.path.exists(path) else 0
    stat = os.statvfs(os.path.dirname(path))
    free = stat.f_bavail * stat.f_frsize + existing
    if size > free:
        raise ConfigError(f"source pool of {settings.pool_blocks} blocks needs {size / 2**20:.0f} MiB; "
                          f"{os.path.dirname(path)} has {free / 2**20:.0f} MiB free (lower pool_blocks, or "
                          "give the container a larger shm)")


def prepare_node(settings: Settings, me: Identity) -> Store:
    """Claim the node, create the source pool file and its free list (kept as is if the
    shape matches). Raises NodeRefused (one line) when this serve must not run the node,
    ConfigError when it cannot (Redis does not answer, the ingress cannot bind, the pool
    does not fit)."""
    check_addresses(settings)
    check_pool_space(settings)
    store = Store(connect_at_start(settings.redis_url, settings.startup_timeout), settings)
    patient = store.with_patience()  # until Redis answers
    patient.check_schema()
    patient.claim(me, settings.take_over)
    patient.ensure_groups()
    log.info("node %s held by %s", settings.node, patient.where())
    for warning in patient.redis_warnings():
        log.warning("%s", warning)
    pool = SourcePool(settings.buffer_layout, settings.pool_blocks, settings.shm_name, create=True)
    created = patient.init_pool(settings.pool_blocks, node_record(settings))
    log.info("source pool %s: %d blocks, %.1f MiB (%s)", pool.path, settings.pool_blocks,
             pool.size / 2**20, "new" if created else "kept")
    return store


@dataclass
class Child:
    name: str
    target: object
    args: tuple
    process: multiprocessing.Process | None = None
    ready: object = None  # Event the child sets once built; unset at death = start-up failure
    failed_starts: int = 0
    not_before: float = 0.0


class Supervisor:
    def __init__(self, settings: Settings, store: Store | None = None, me: Identity | None = None):
        self.settings, self.store, self.me = settings, store, me
        self._refresher = threading.Thread(target=self._refresh_claim, name="claim", daemon=True)
        self._refresher_stop = threading.Event()
        self.context = multiprocessing.get_context("spawn")
        self.children = [Child("ingress", ingress.main, (settings,)),
                         Child("janitor", janitor.main, (settings,))]
        self.children += [Child(f"worker{i}", worker.main, (settings, i)) for i in range(settings.workers)]
        self.stopping = False
        self.bootstrap: BootstrapServer | None = None
        self.monitor: MonitorServer | None = None
        self.draining = False

    def serving(self) -> dict[str, bool]:
        """Each child's name -> whether it is alive and ready."""
        return {child.name: bool(child.process is not None and child.process.is_alive()
                                 and child.ready.is_set()) for child in self.children}

    def running(self) -> dict[str, bool]:
        """Each child's name -> whether it is alive (ready or still starting)."""
        return {child.name: bool(child.process is not None and child.process.is_alive())
                for child in self.children}

    def _start(self, child: Child) -> None:
        child.ready = self.context.Event()
        child.process = self.context.Process(target=child.target, args=(*child.args, child.ready),
                                             name=child.name, daemon=False)
        child.process.start()

    def run(self) -> None:
        if self.store is not None:
            self._refresher.start()
        for child in self.children:
            self._start(child)
        log.info("serving node %s: ingress %s, %d workers x %d rounds at once, redis %s", self.settings.node,
                 self.settings.ingress, self.settings.workers, self.settings.rounds_per_worker,
                 redact(self.settings.redis_url or "default"))
        while not self.stopping:
            now = time.monotonic()
            for child in self.children:
                process = child.process
                if process is not None and not process.is_alive():
                    # Died while serving (killed, crashed mid-round): its work is reclaimable,
                    # restart at once. Died while starting: a crash loop, back off.
                    if child.ready.is_set():
                        child.failed_starts, delay = 0, 0.0
                        why = "while serving"
                    else:
                        delay = min(MAX_BACKOFF_S, 0.5 * 2 ** child.failed_starts)
                        child.failed_starts += 1
                        why = f"before it was ready ({child.failed_starts} failed starts in a row)"
                    log.error("%s (pid %s) %s %s; restarting in %.1fs", child.name, process.pid,
                              _exit_text(process.exitcode), why, delay)
                    if child.name.startswith("worker") and self.store is not None:
                        self.store.count_quietly("worker_restarts")  # Redis down: it is in the log
                    child.not_before = now + delay
                    child.process = None
                if child.process is None and now >= child.not_before and not self.stopping:
                    self._start(child)
            time.sleep(0.1)
        self.shutdown()

    def _refresh_claim(self) -> None:
        """Keep the node record's serve fields fresh, in a thread of its own: a Redis that
        hangs never holds up the restart of a child."""
        while True:
            try:
                refresh(self.store, self.me)
            except Exception as error:  # Redis down: the children ride it out, so does this
                log.debug("claim refresh failed: %s", error)
            if self._refresher_stop.wait(2.0):
                return

    def shutdown(self) -> None:
        """A drain: ``/readyz`` says so; the workers are asked to stop (a lane finishes the
        round it writes and hands back one it read but had not begun) and get
        ``stop_timeout``, a lane still writing then is killed; meanwhile the ingress goes on
        taking messages (their rounds wait for the next serve) and the bootstrap's /health
        stays up, so the language side fails no room in flight. Then the ingress and the
        janitor stop (its fencer hands back a killed lane's round). The source pool file
        goes when nothing holds it."""
        self.draining = True
        started = time.monotonic()
        log.info("draining node %s: %d rounds being written; waiting up to %.0fs", self.settings.node,
                 self._rounds_in_flight(), self.settings.stop_timeout)
        self._stop([c for c in self.children if c.name.startswith("worker")], self.settings.stop_timeout)
        self._stop([c for c in self.children if not c.name.startswith("worker")], 5.0)
        for server in (self.bootstrap, self.monitor):
            if server is not None:
                server.stop()
        if self.store is not None:
            self._remove_pool()
            self._refresher_stop.set()
            if self._refresher.is_alive():
                self._refresher.join(timeout=12)
            try:
                release(self.store, self.me)  # a serve on another host may start without --take-over
            except Exception as error:
                log.warning("could not release the node record: %s", error)
        log.info("node %s stopped (drained in %.1fs)", self.settings.node, time.monotonic() - started)

    def _stop(self, children: list[Child], timeout: float) -> None:
        for child in children:
            if child.process is not None and child.process.is_alive():
                child.process.terminate()
        deadline = time.monotonic() + timeout
        for child in children:
            if child.process is not None:
                child.process.join(max(0.1, deadline - time.monotonic()))
                if child.process.is_alive():
                    log.warning("%s still running after %.0fs: killed (its round is handed back)", child.name,
                                timeout)
                    child.process.kill()
                    child.process.join()

    def _rounds_in_flight(self) -> int:
        try:
            return len(self.store.holds()) if self.store is not None else 0
        except (redis.RedisError, OSError):
            return -1

    def _remove_pool(self) -> None:
        """Remove the node's shared-memory pool on a clean stop, unless a source block is
        still held (a room in flight: the next serve writes from it) or another process
        (an encoder) maps the file."""
        path = SourcePool.path_of(self.settings.shm_name)
        try:
            held = self.settings.pool_blocks - self.store.free_blocks()
        except (redis.RedisError, OSError) as error:
            log.info("source pool %s kept: Redis cannot say whether a block is held (%s)", path,
                     type(error).__name__)
            return
        if held:
            log.info("source pool %s kept: %d blocks held by rooms in flight", path, held)
            return
        log.info("source pool %s", remove_unless_mapped(path))


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            pass
    return f"exited with code {code}"


def serve(settings: Settings) -> None:
    def start() -> Supervisor:
        me = Identity.current()
        store = prepare_node(settings, me)
        supervisor = Supervisor(settings, store, me)
        health = Health(settings.redis_url, supervisor.serving, running=supervisor.running,
                        pool_path=SourcePool.path_of(settings.shm_name), draining=lambda: supervisor.draining)
        if settings.metrics:
            supervisor.monitor = MonitorServer(settings.metrics, store, health.alive, health.ready,
                                               redact(settings.redis_url or DEFAULT_REDIS_URL)).start()
        if settings.bootstrap:
            supervisor.bootstrap = BootstrapServer(settings, health.check).start()
        return supervisor

    run_service("serve", settings, start)
