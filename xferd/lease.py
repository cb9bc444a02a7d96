"""Lease keep-alive for a worker on a long write.

An entry idle longer than the lease is presumed dead and reclaimed by another worker. A
live worker whose Mooncake write outlasts the lease renews its claim from a background
thread (Mooncake releases the GIL while it writes): every third of a lease it re-claims
the entry and extends the write lease on the source blocks. When the claim is lost (the
room ended, or the worker stalled past the lease and another took the round over) the
worker is told, so it writes no further and does not commit.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time

from .connections import TRANSIENT
from .store import Round, Store

log = logging.getLogger("xferd.lease")


class LeaseKeeper:
    def __init__(self, store: Store, consumer: str, lease_ms: int, write_lease_ms: int):
        self.store, self.consumer = store, consumer
        self.lease_ms, self.write_lease_ms = lease_ms, write_lease_ms
        self.lost: str | None = None  # why the current round's claim was lost
        self.room_ended = False  # lost because the room is over (not to another worker)
        self._work: Round | None = None
        self._renewed = 0.0  # monotonic time of the last confirmed claim
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
        self._thread.start()

    @contextlib.contextmanager
    def hold(self, work: Round):
        """Keep ``work`` claimed for the duration of the block."""
        with self._lock:
            self._work, self.lost, self.room_ended = work, None, False
            self._renewed = time.monotonic()
        try:
            yield self
        finally:
            with self._lock:
                self._work = None

    def renew(self) -> None:
        with self._lock:
            work = self._work
        if work is None:
            return
        try:
            verdict, why = self.store.keep_lease(work, self.consumer, self.write_lease_ms)
        except TRANSIENT:
            return  # cannot renew now; the next tick tries again
        with self._lock:
            if self._work is not work:
                return
            if verdict == "ok":
                self._renewed = time.monotonic()
            elif not self.lost:
                self.lost, self.room_ended = why, verdict == "ended"
                log.warning("room %s round %s: claim lost (%s)", work.room, work.round, why)

    def still_held(self) -> bool:
        """Before the next write: True if the claim holds. Asks Redis itself when the last
        confirmation is older than half a lease (the process may have been frozen, with the
        keeper thread frozen alongside)."""
        if not self.lost and time.monotonic() - self._renewed > self.lease_ms / 2000:
            self.renew()
        return not self.lost

    def _run(self) -> None:
        # wake every sixth of a lease, renew once the last confirmation is a third of a lease
        # old: at most half a lease between renewals, and none for a write shorter than a third
        while not self._wake.wait(self.lease_ms / 6000):
            try:
                if time.monotonic() - self._renewed >= self.lease_ms / 3000:
                    self.renew()
            except Exception:  # the keeper must outlive any one failed renewal
                log.exception("lease renewal failed")

    def close(self) -> None:
        self._wake.set()
