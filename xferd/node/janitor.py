"""Janitor process: timeouts, fencing, unpublished allocations, stream trimming.

Each pass: fail rooms whose deadline passed (the script re-checks the record, so a stale
zset entry is harmless; Failed is pushed once no write of the room is in flight), fence
stale or dead workers and hand their rounds back (``fencer.py``), log the rooms that ended
and push Success again where its worker died before it could (``lostpush.py``), return
allocations never published. Every few seconds: rebuild a lost pool, trim acknowledged
entries, forget consumers whose process is gone.
"""
from __future__ import annotations

import logging
import time


from xferd.state.connections import TRANSIENT, connect

from xferd.state.retry import trouble, wait_for_redis
from xferd.node.fencer import Fencer
from xferd.node.stopping import Identity
from xferd.node.lostpush import LostPushes, horizon_s
from xferd.node.notify import Notifier
from xferd.state.node_record import node_record
from xferd.node.processes import run_service
from xferd.state.replication import NotReplicated
from xferd.ops.roomlog import RoomEndLog
from xferd.settings import Settings
from xferd.state.store import Store

log = logging.getLogger("xferd.janitor")
TRIM_EVERY_S = 10.0


class Janitor:
    def __init__(self, settings: Settings, store: Store | None = None):
        self.settings = settings
        self.store = store or Store(connect(settings.redis_url), settings)
        self.notifier = Notifier.for_settings(settings)
        self.fencer = Fencer(self.store, settings, self.notifier)
        self.room_log = RoomEndLog(self.store, settings.buffer_layout)
        self.lost_pushes = LostPushes(self.store, self.notifier, horizon_s(settings))
        self.stopping = False
        self.next_trim = 0.0
        self.pool_description = node_record(settings)

    def pass_once(self) -> dict[str, int]:
        store = self.store
        now = store.now_ms()
        counts = {"timed_out": 0, "released": 0, "handed_back": 0}
        for room in store.due_rooms(now):
            outcome = store.fail_room(room, "", mode="expired", failure_class="timeout")
            if outcome.failed:
                counts["timed_out"] += 1  # its end is logged with every other (room_log)
            if outcome.notify:
                self.notifier.send(outcome.endpoints, room, outcome.status)
        counts["handed_back"] = self.fencer.pass_once()
        ended = self.room_log.pass_once()
        counts["ended"] = len(ended)
        for fields in ended:
            if fields.get("status") == "Success" and fields.get("by"):
                self.lost_pushes.watch(int(fields["room"]), fields["by"])
        counts["repushed"] = self.lost_pushes.pass_once()
        orphaned, failed = store.expire_allocations(now)
        if orphaned:
            log.warning("returned %d source blocks allocated but neither published nor renewed in time "
                        "(their encoder stopped)%s", orphaned,
                        f"; failed rooms {', '.join(str(room) for room, _ in failed[:10])}" if failed else "")
            counts["released"] += orphaned
        for room, outcome in failed:
            if outcome.notify:
                self.notifier.send(outcome.endpoints, room, outcome.status)
        if time.monotonic() >= self.next_trim:  # the slow, rare checks
            rebuilt = store.rebuild_pool(self.settings.pool_blocks, self.pool_description)
            if rebuilt is not None:
                log.error("Redis lost this node's state (restarted without AOF, or flushed): rooms in "
                          "flight are gone; source pool free list rebuilt with %d free blocks", rebuilt)
            store.trim_rounds()
            removed = store.remove_dead_consumers(self._gone)
            if removed:
                log.info("removed consumers of dead workers: %s", ", ".join(sorted(set(removed))))
            self.next_trim = time.monotonic() + min(TRIM_EVERY_S, self.settings.consumer_ttl / 2)
        return counts

    def _gone(self, name: str, seen_ms: int) -> bool:
        """A consumer whose process is gone; one that names no process on this host, once
        its heartbeat is ``consumer_ttl`` old."""
        identity = Identity.parse(name)
        running = identity.running() if identity is not None else None
        if running is not None:
            return not running
        return (time.time() * 1000 - seen_ms) / 1000 > self.settings.consumer_ttl

    def run(self) -> None:
        log.info("janitor running every %.2fs", self.settings.janitor_interval)
        next_count = 0.0
        while not self.stopping:
            try:
                self.pass_once()
                if time.monotonic() >= next_count:
                    with trouble() as redis_trouble:
                        self.store.add_counts(redis_trouble)
                    next_count = time.monotonic() + 1.0
            except TRANSIENT:
                wait_for_redis(self.store.check_writes, "janitor pass", lambda: self.stopping)
            except NotReplicated as error:  # its status is held back; the pass goes on next time
                log.error("janitor: %s; its status held back", error)
            except Exception:
                log.exception("janitor pass failed; continuing")
            time.sleep(self.settings.janitor_interval)


def main(settings: Settings, ready=None) -> None:
    run_service("janitor", settings, lambda: Janitor(settings), ready)
