"""Success pushes lost with their worker (run by the janitor).

A worker commits a round in Redis, reads the reply, then pushes the status to the language
side; a worker SIGKILLed (or fenced after a pause) between the two loses the push. That
window is the commit's round trip: about 7 % of worker kills land in it in chaos runs. The
reference language side learns of a round's end only from that push.

A Transferring push stays at most once: the reference counts each one as a round that
landed, so a second one would have it read blocks the next round has not written. A
Success pushed twice changes nothing on any language side (statuses only move forward).
So every Success commit is watched for ``horizon`` seconds through the ``ended`` stream,
which names the worker (``by``) that had to push it: if that worker's process is gone by
then (killed, or fenced), Success is pushed again to the room's destinations, once the
commit is on ``min_replicas`` replicas. A worker that pushed just before it died makes the
language side get Success twice.
"""
from __future__ import annotations

import logging
import time

from .fencing import Identity
from .notify import Notifier
from .replication import NotReplicated
from .status import Status
from .store import Store

log = logging.getLogger("xferd.lostpush")


class LostPushes:
    def __init__(self, store: Store, notifier: Notifier, horizon_s: float):
        self.store, self.notifier, self.horizon_s = store, notifier, horizon_s
        self.watched: dict[Identity, dict[int, float]] = {}  # worker -> {room: watched until}

    def watch(self, room: int, by: str) -> None:
        """A Success that worker ``by`` committed and has to push."""
        worker = Identity.parse(by)
        if worker is not None:
            self.watched.setdefault(worker, {})[room] = time.monotonic() + self.horizon_s

    def pass_once(self) -> int:
        """Push Success again for the watched rooms of every worker gone; returns how many."""
        pushed, now = 0, time.monotonic()
        for worker, rooms in list(self.watched.items()):
            running = worker.running()  # None: another host's, which this one cannot judge
            if running is False:
                try:
                    self.store.count_confirmed("statuses_repushed", len(rooms))
                except NotReplicated as error:  # not safe to push yet: the next pass tries again
                    log.warning("worker pid %d gone: Success of %d rooms not pushed again yet: %s",
                                worker.pid, len(rooms), error)
                    running = True  # keep watching, until the horizon
                else:
                    for room in rooms:
                        self.notifier.send(self.store.destinations(room, "endpoint"), room, Status.Success)
                    log.info("worker pid %d gone after committing Success: pushed again for rooms %s",
                             worker.pid, ", ".join(map(str, rooms)))
                    pushed += len(rooms)
            if running is True:
                for room in [room for room, until in rooms.items() if until < now]:
                    del rooms[room]
            if running is not True or not rooms:
                del self.watched[worker]
        return pushed
