"""A holder's lease on the round it writes, and the worker's own fence.

The node's fencer stops (SIGKILL) a worker whose claim on an entry has not been renewed for
a lease. A worker whose Mooncake write outlasts a third of a lease renews from a
background thread (Mooncake releases the GIL while it writes): keep_lease, valid only for
the holder's fencing epoch, resets the entry's idle time and pushes the hold's deadline.

The worker also fences itself: a renewal confirmed at local time t (the time the request
was sent, before Redis reset the idle clock) keeps it safe to write until t + lease, when
the fencer may act. A watchdog thread ends the process (``os._exit``) if a write is still
in flight at t + ``SELF_FENCE`` × lease with no newer confirmation — cut off from Redis, or
so slow that it could not renew — so the write stops before the round can move on. A paused
process cannot fence itself; the node's fencer kills it before handing its round on.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import time

from xferd.state.connections import TRANSIENT

from xferd.state.store import Round, Store

log = logging.getLogger("xferd.lease")
SELF_FENCE = 0.75  # of a lease: the margin covers a watchdog tick and clock-rate skew
SELF_FENCE_EXIT = 75  # the worker's exit status when it fenced itself


class LeaseKeeper:
    def __init__(self, store: Store, consumer: str, lease_ms: int, exit=os._exit):
        self.store, self.consumer, self.lease_ms = store, consumer, lease_ms
        self.patient = store.with_patience(stop=lambda: False)  # a renewal in a write waits Redis out
        self._exit = exit  # tests replace it
        self.lost: str | None = None  # why the current round is no longer held
        self.room_failed = False  # the room failed meanwhile: write no more of it
        self._work: Round | None = None
        self._epoch = ""
        self._confirmed = 0.0  # monotonic send time of the last confirmed renewal
        self._writes = 0  # Mooncake writes in flight
        self._lock = threading.Lock()
        self._wake = threading.Event()
        for target, name in ((self._renew_loop, "lease-keeper"), (self._watchdog, "self-fence")):
            threading.Thread(target=target, name=name, daemon=True).start()

    @property
    def _deadline(self) -> float:
        return self._confirmed + SELF_FENCE * self.lease_ms / 1000

    @contextlib.contextmanager
    def hold(self, work: Round, epoch: str):
        """Keep ``work`` (taken at ``epoch`` just now) claimed for the duration of the block."""
        with self._lock:
            self._work, self._epoch, self.lost, self.room_failed = work, epoch, None, False
            self._confirmed = time.monotonic()  # begin_round reset the entry's idle time
        try:
            yield self
        finally:
            with self._lock:
                self._work = None

    @contextlib.contextmanager
    def writing(self):
        """A Mooncake write is in flight: past the self-fence deadline the process ends."""
        with self._lock:
            self._writes += 1
        try:
            yield
        finally:
            with self._lock:
                self._writes -= 1

    def renew(self, patient: bool = False) -> None:
        """One renewal; ``patient``: ride out a Redis outage instead of leaving it to the
        next tick."""
        with self._lock:
            work, epoch = self._work, self._epoch
        if work is None:
            return
        store = self.patient if patient else self.store.once()
        try:
            sent, held, detail = store.renew_lease(work, self.consumer, epoch, self.lease_ms)
        except TRANSIENT:
            return  # cannot renew now; the next tick tries again (the watchdog counts)
        with self._lock:
            if self._work is not work:
                return
            if held:
                self._confirmed = max(self._confirmed, sent)
                self.room_failed = detail == 0
            elif not self.lost:
                self.lost = str(detail)
                log.warning("room %s round %s: claim lost (%s)", work.room, work.round, detail)

    def may_write(self) -> bool:
        """Before the next write: True if the claim holds, confirmed within half a lease
        (else Redis is asked first, waiting out an outage: the process may have been frozen,
        the keeper thread with it), and the room has not failed meanwhile."""
        if not self.lost and time.monotonic() - self._confirmed > self.lease_ms / 2000:
            self.renew(patient=True)
        return not self.lost and not self.room_failed

    def _renew_loop(self) -> None:
        # wake every sixth of a lease, renew once the last confirmation is a third of a lease
        # old: none for a write shorter than a third of a lease
        while not self._wake.wait(self.lease_ms / 6000):
            try:
                if self._work is not None and time.monotonic() - self._confirmed >= self.lease_ms / 3000:
                    self.renew()
            except Exception:  # the keeper must outlive any one failed renewal
                log.exception("lease renewal failed")

    def _watchdog(self) -> None:
        while not self._wake.wait(self.lease_ms / 20_000):
            with self._lock:
                overdue = self._writes and time.monotonic() > self._deadline
                work = self._work
            if overdue:
                log.critical("room %s round %s: the claim was not confirmed within %.0f%% of the lease "
                             "while a write is in flight; ending this worker so the write stops "
                             "before the round can move on", getattr(work, "room", "?"),
                             getattr(work, "round", "?"), SELF_FENCE * 100)
                logging.shutdown()
                self._exit(SELF_FENCE_EXIT)
                return

    def close(self) -> None:
        self._wake.set()
