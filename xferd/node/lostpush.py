"""Success pushes lost with their worker (run by the janitor).

A worker commits a round in Redis, reads the reply, then pushes the status to the language
side; a worker SIGKILLed (or fenced after a pause) between the two loses the push. That
window is the commit's round trip: about 7 % of worker kills land in it in chaos runs. The
reference language side learns of a round's end only from that push.

A Transferring push stays at most once: the reference counts each one as a round that
landed, so a second one would have it read blocks the next round has not written. A
Success pushed twice changes nothing on any language side (statuses only move forward).
So every Success commit is watched for two leases through the ``ended`` stream, which
names the worker lane (``by``) that had to push it: if that worker's process is gone by
then (killed, or fenced) and the lane did not stop cleanly (a lane that ends its loop has
pushed everything it committed, and says so: ``Store.mark_stopped``), Success is pushed
again to the room's destinations, once the commit is on ``min_replicas`` replicas. A
worker killed just after its push makes the language side get Success twice.
"""
from __future__ import annotations

import logging
import time

from xferd.node.stopping import Identity
from xferd.node.notify import Notifier
from xferd.state.replication import NotReplicated
from xferd.protocol.status import Status
from xferd.state.store import Store

log = logging.getLogger("xferd.lostpush")


def horizon_s(settings) -> float:
    """How long a Success is watched: a worker paused between its commit and its push is
    fenced (SIGKILLed) about a lease after its last renewal."""
    return 2 * settings.lease + 1.0


class LostPushes:
    def __init__(self, store: Store, notifier: Notifier, horizon: float):
        self.store, self.notifier, self.horizon = store, notifier, horizon
        # worker process -> {room: (its lane's consumer name, watched until)}
        self.watched: dict[Identity, dict[int, tuple[str, float]]] = {}

    def watch(self, room: int, by: str) -> None:
        """A Success that worker lane ``by`` committed and has to push."""
        worker = Identity.parse(by)
        if worker is not None:
            self.watched.setdefault(worker, {})[room] = (by, time.monotonic() + self.horizon)

    def pass_once(self) -> int:
        """Push Success again for the watched rooms of every worker gone without stopping
        cleanly; returns how many."""
        pushed, now = 0, time.monotonic()
        for worker, rooms in list(self.watched.items()):
            running = worker.running()  # None: another host's, which this one cannot judge
            if running is False:
                clean = self.store.stopped_cleanly(sorted({by for by, _ in rooms.values()}))
                lost = [room for room, (by, _) in rooms.items() if by not in clean]
                try:
                    if lost:
                        self.store.count_confirmed("statuses_repushed", len(lost))
                except NotReplicated as error:  # not safe to push yet: the next pass tries again
                    log.warning("worker pid %d gone: Success of %d rooms not pushed again yet: %s",
                                worker.pid, len(lost), error)
                    running = True  # keep watching, until the horizon
                else:
                    for room in lost:
                        self.notifier.send(self.store.destinations(room, "endpoint"), room, Status.Success)
                    if lost:
                        shown = ", ".join(map(str, lost[:10])) + (", ..." if len(lost) > 10 else "")
                        log.info("worker pid %d gone after committing Success: pushed again for %d rooms (%s)",
                                 worker.pid, len(lost), shown)
                    pushed += len(lost)
            if running is True:
                for room in [room for room, (_, until) in rooms.items() if until < now]:
                    del rooms[room]
            if running is not True or not rooms:
                del self.watched[worker]
        return pushed
