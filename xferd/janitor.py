"""Janitor process: timeouts, source-block release, stream trimming.

Each pass: fail rooms whose deadline passed (the script re-checks the record, so a stale
zset entry is harmless), return the blocks of ended rooms, trim acknowledged entries.
"""
from __future__ import annotations

import logging
import time

import redis

from .connections import TRANSIENT, connect, wait_for_redis
from .keys import GROUP
from .notify import Notifier
from .pool import describe_pool
from .processes import run_service
from .settings import Settings
from .status import Status
from .store import Store

log = logging.getLogger("xferd.janitor")
TRIM_EVERY_S = 10.0


class Janitor:
    def __init__(self, settings: Settings, store: Store | None = None):
        self.settings = settings
        self.store = store or Store(connect(settings.redis_url), settings)
        self.notifier = Notifier.for_settings(settings)
        self.stopping = False
        self.next_trim = 0.0
        self.pool_description = describe_pool(settings.buffer_layout, settings.pool_blocks, settings.shm_name)

    def pass_once(self) -> dict[str, int]:
        store, keys = self.store, self.store.keys
        now = store.now_ms()
        counts = {"timed_out": 0, "released": 0}
        for shard in range(keys.shards):
            for room in store.due(keys.timeouts(shard), now):
                outcome = store.fail_room(room, "", expired=True)
                if outcome.failed:
                    counts["timed_out"] += 1
                    log.warning("room %s failed: %s", room, outcome.note)
                    self.notifier.send(outcome.endpoints, room, Status.Failed)
            counts["released"] += store.release_due(shard, now)
        orphaned = store.expire_allocations(now)
        if orphaned:
            log.warning("returned %d source blocks allocated but never published within %.0fs",
                        orphaned, self.settings.alloc_timeout)
            counts["released"] += orphaned
        if time.monotonic() >= self.next_trim:  # the slow, rare checks
            rebuilt = store.rebuild_pool(self.settings.pool_blocks, self.pool_description)
            if rebuilt is not None:
                log.error("Redis lost this node's state (restarted without AOF, or flushed): rooms in "
                          "flight are gone; source pool free list rebuilt with %d free blocks", rebuilt)
            self.trim()
            removed = store.remove_dead_consumers(int(self.settings.consumer_ttl * 1000))
            if removed:
                log.info("removed consumers of dead workers: %s", ", ".join(sorted(set(removed))))
            self.next_trim = time.monotonic() + min(TRIM_EVERY_S, self.settings.consumer_ttl / 2)
        return counts

    def trim(self) -> None:
        """Drop entries every consumer has acknowledged: below the oldest pending id and
        the group's last delivered id (never a pending entry)."""
        client, keys = self.store.client, self.store.keys
        for shard in range(keys.shards):
            stream = keys.stream(shard)
            try:
                groups = client.xinfo_groups(stream)
            except redis.ResponseError:
                continue
            group = next((g for g in groups if g["name"] in (GROUP, GROUP.encode())), None)
            if group is None:
                continue
            floor = group["last-delivered-id"]
            pending = client.xpending(stream, GROUP)
            if pending and pending.get("pending"):
                floor = min(floor, pending["min"], key=_id_key)
            client.xtrim(stream, minid=floor, approximate=False)

    def run(self) -> None:
        log.info("janitor running every %.2fs", self.settings.janitor_interval)
        while not self.stopping:
            try:
                self.pass_once()
            except TRANSIENT:
                wait_for_redis(self.store.client, "janitor pass", lambda: self.stopping)
            except Exception:
                log.exception("janitor pass failed; continuing")
            time.sleep(self.settings.janitor_interval)


def _id_key(entry_id) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def main(settings: Settings, ready=None) -> None:
    run_service("janitor", lambda: Janitor(settings), ready)
