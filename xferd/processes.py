"""What every xferd child process does: log set-up, stop cleanly on SIGTERM/SIGINT, run,
and stop when its supervisor dies."""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import subprocess
import sys
from typing import Callable, Protocol

from . import logs


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


def _die_with_supervisor() -> None:
    """Linux: SIGTERM this child when `serve` dies, even by SIGKILL, so that no orphaned
    ingress or worker keeps serving beside the fresh set a restarted `serve` starts."""
    parent = multiprocessing.parent_process()
    if parent is None or not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent.pid:  # it died before the request took effect
        sys.exit(0)


def run_service(name: str, make: Callable[[], Service], ready=None) -> None:
    """Build the service, tell the supervisor it is ready (``ready``: an Event), run it."""
    logs.setup(name)
    _die_with_supervisor()
    service = make()
    if ready is not None:
        ready.set()

    def stop(*_):
        service.stopping = True  # the loop finishes its current step, then returns

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    service.run()
