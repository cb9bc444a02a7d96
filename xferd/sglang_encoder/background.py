"""Redis calls the scheduler does not wait for (binding an allocation to its room,
publishing, giving blocks back, a room's first status read), run in order on one thread:
SGLang's own transfer classes answer these calls from memory, and a round trip on the
scheduler's thread would hold up every request it serves."""
from __future__ import annotations

import atexit
import collections
import logging
import threading
from concurrent.futures import Future
from typing import Callable

log = logging.getLogger("xferd.sglang_encoder")
EXIT_WAIT_S = 5.0  # at exit, calls still queued get this long to finish


class Background:
    def __init__(self, name: str):
        self._calls: collections.deque = collections.deque()
        self._changed = threading.Condition()
        self._unfinished = 0
        threading.Thread(target=self._run, name=name, daemon=True).start()
        atexit.register(self.drain, EXIT_WAIT_S)

    def submit(self, call: Callable[[], object], what: str) -> Future:
        """Run ``call`` after every call submitted before it; its future holds the result
        or the exception (logged as a warning: ``what`` failed)."""
        future: Future = Future()
        with self._changed:
            self._calls.append((call, what, future))
            self._unfinished += 1
            self._changed.notify_all()
        return future

    def drain(self, timeout: float) -> bool:
        """Wait until every submitted call ran; False if ``timeout`` passed first."""
        with self._changed:
            return self._changed.wait_for(lambda: self._unfinished == 0, timeout)

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._calls)
                call, what, future = self._calls.popleft()
            try:
                future.set_result(call())
            except Exception as error:  # noqa: BLE001 - handed to whoever waits on the future
                log.warning("%s failed: %s: %s", what, type(error).__name__, error)
                future.set_exception(error)
            with self._changed:
                self._unfinished -= 1
                self._changed.notify_all()
