"""What every xferd child process does: log set-up, stop cleanly on SIGTERM/SIGINT, run,
and stop when its supervisor dies. And the parent's side: start `xferd serve` as a child
(demo, bench, tests), stop a child."""
from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import urllib.request
from typing import Callable, Protocol

from setproctitle import setproctitle

from xferd import logs
from xferd.state.connections import TRANSIENT
from xferd.node.stopping import Identity, proc_stat

log = logging.getLogger("xferd.processes")


class Service(Protocol):
    stopping: bool

    def run(self) -> None: ...


def stop_process(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM a child (`xferd serve` stops its own children), SIGKILL it if it lingers."""
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def start_serve(settings, store, log, env: dict[str, str] | None = None,
                timeout: float = 60.0) -> subprocess.Popen:
    """`xferd serve` as a child configured by ``settings`` (XFERD_* variables, or ``env``),
    its output to the file ``log``; returns once the node record is written and all its
    workers are up. Raises RuntimeError, the child stopped, if they are not within
    ``timeout`` seconds."""
    process = subprocess.Popen([sys.executable, "-m", "xferd", "serve"], env=env or settings.to_env(),
                               stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout

    def up() -> bool:  # this serve holds the node, all its worker lanes beat (not an earlier serve's)
        if f"-p{process.pid}-" not in store.record().get("serve", ""):
            return False
        ours = [i for i in map(Identity.parse, store.live_workers()) if i is not None and _parent(i.pid) == process.pid]
        return len(ours) >= settings.workers * settings.rounds_per_worker and ready()

    def ready() -> bool:  # and, where it has an operator port, it says it is ready (the ingress too)
        if not settings.metrics:
            return True
        try:
            with urllib.request.urlopen(f"http://{settings.metrics}/readyz", timeout=2) as response:
                return response.status == 200
        except OSError:  # HTTPError (503) included
            return False

    while not up():
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process(process)
            raise RuntimeError(f"xferd serve did not come up; see {log.name}")
        time.sleep(0.1)
    return process


def _parent(pid: int) -> int | None:
    stat = proc_stat(pid)
    return int(stat[1]) if stat else None


def _die_with_supervisor(death_signal: int) -> None:
    """Linux: signal this child when `serve` dies, even by SIGKILL, so that no orphaned
    ingress or worker keeps serving beside the fresh set a restarted `serve` starts.
    Workers get SIGKILL: a write in flight must not outlive the node's fencer."""
    parent = multiprocessing.parent_process()
    if parent is None or not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(death_signal))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent.pid:  # it died before the request took effect
        sys.exit(0)


def run_service(role: str, settings, make: Callable[[], Service], ready=None,
                death_signal: int = signal.SIGTERM) -> None:
    """Build the service, tell the supervisor it is ready (``ready``: an Event), run it;
    ``death_signal`` ends it when the supervisor dies. ``role``: 'ingress', 'worker 1', ..."""
    logs.setup(role, settings.log_level, settings.log_format, settings.node)
    # `ps` and the bench's CPU accounting tell the roles (and nodes) apart
    setproctitle(f"xferd {role} {settings.node}")
    _die_with_supervisor(death_signal)
    service = make()
    if ready is not None:
        ready.set()

    def stop(*_):
        service.stopping = True  # the loop finishes its current step, then returns

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        service.run()
    except TRANSIENT as error:  # stopped while waiting out a Redis outage: a stop, not a crash
        if not service.stopping:
            raise
        log.warning("%s stopped while Redis was unavailable (%s)", role, type(error).__name__)
