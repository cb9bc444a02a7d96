"""What every xferd child process does: log set-up, stop cleanly on SIGTERM/SIGINT, run."""
from __future__ import annotations

import signal
from typing import Callable, Protocol

from . import logs


class Service(Protocol):
    stopping: bool

    def run(self) -> None: ...


def run_service(name: str, make: Callable[[], Service], ready=None) -> None:
    """Build the service, tell the supervisor it is ready (``ready``: an Event), run it."""
    logs.setup(name)
    service = make()
    if ready is not None:
        ready.set()

    def stop(*_):
        service.stopping = True  # the loop finishes its current step, then returns

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    service.run()
