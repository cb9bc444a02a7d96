"""Worker process: consume round entries, write with Mooncake, commit, notify.

A round is: begin (Lua: checks the entry is current, takes the write lease, returns the
room and its sessions) → plan (pure) → Mooncake writes, the claim kept alive meanwhile
(``lease.py``) → commit (Lua: compare-and-set plus XACK). A worker killed anywhere before
the commit leaves the entry pending; another worker reclaims it after the lease and
redoes it, rewriting the same bytes. After the commit a redelivered entry is stale and
changes nothing.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass

from .connections import TRANSIENT, connect, last_recovery, wait_for_redis, with_retry
from .engine import Engine, WriteError
from .faults import maybe_die, maybe_stall
from .keys import GROUP
from .layout import Layout
from .lease import LeaseKeeper
from .notify import Notifier
from .planning import PlanError, RoundPlan, check_allocation, plan_round
from .pool import SourcePool
from .processes import run_service
from .settings import Settings
from .status import Status
from .store import Round, Store

log = logging.getLogger("xferd.worker")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")] if text else []


@dataclass(frozen=True)
class Target:
    """One destination's share of a round: where to write and what it leaves sent."""

    session_id: str
    plan: RoundPlan
    dst_ptrs: tuple[int, ...]


def plan_targets(layout: Layout, src_num_blocks: int, room: dict[str, str],
                 sessions: list[dict[str, str]], expected: tuple[str, ...],
                 strict_bounds: bool = False) -> list[Target]:
    """Plan every destination of a round from the records; PlanError names what is wrong.
    ``strict_bounds``: refuse a destination registered without buffer lengths."""
    count = int(room["dst_count"])
    if count != len(expected) or count != len(sessions):
        raise PlanError(f"room has {count} destinations, the round entry names {len(expected)}")
    total = int(room["total_tokens"])
    src = _ints(room["src_indices"])
    targets = []
    for k in range(count):
        d = f"dst{k}."
        session_id = room[d + "session"]
        record = sessions[k]
        if session_id != expected[k] or not record:
            raise PlanError(f"session {session_id} is not registered")
        if "failed" in record:
            raise PlanError(f"session {session_id} is marked failed: {record['failed']}")
        ptrs = tuple(_ints(record["ptrs"]))
        if len(ptrs) != len(layout.buffers):
            raise PlanError(f"session {session_id} registered {len(ptrs)} buffers, "
                            f"the layout has {len(layout.buffers)}")
        lens = _ints(record.get("lens", ""))
        if strict_bounds and not lens:
            raise PlanError(f"session {session_id} registered no buffer lengths (strict bounds)")
        dst_blocks = [n // b.item_len for n, b in zip(lens, layout.buffers)] if lens else None
        dst = _ints(room[d + "dst_indices"])
        allocated = int(room[d + "allocated_tokens"])
        check_allocation(layout, allocated, len(dst))
        plan = plan_round(layout, total_tokens=total, sent_tokens=int(room[d + "sent_tokens"]),
                          allocated_tokens=allocated, src_indices=src, dst_indices=dst,
                          src_num_blocks=src_num_blocks, dst_num_blocks=dst_blocks,
                          one_round=room.get(d + "one_round") == "1")
        targets.append(Target(session_id, plan, ptrs))
    return targets


class Worker:
    def __init__(self, settings: Settings, index: int = 0):
        self.settings = settings
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-w{index}"
        self.store = Store(connect(settings.redis_url), settings)
        self.layout = settings.buffer_layout
        self.pool = SourcePool(self.layout, settings.pool_blocks, settings.shm_name)
        self.engine = Engine(settings.hostname, settings.protocol, settings.metadata, settings.device)
        self.engine.register(self.pool.base_ptr, self.pool.size)
        self.notifier = Notifier.for_settings(settings)
        self.lease_ms = int(settings.lease * 1000)
        self.write_lease_ms = int(settings.write_lease * 1000)
        self.keeper = LeaseKeeper(self.store, self.consumer, self.lease_ms, self.write_lease_ms)
        # hot-path metrics, added to the node's stats with each heartbeat (`xferd bench`)
        self.metrics = dict.fromkeys(("worker_rounds", "worker_round_trips", "worker_entries",
                                      "worker_runs"), 0)
        self._per_token_buffers = sum(b.per_token for b in self.layout.buffers)
        self._to_release: list[int] = []  # ended rooms whose blocks go back with the next read
        self.stopping = False

    def _redis(self, action, what: str):
        return with_retry(action, what, stop=lambda: self.stopping)

    # ---- one round
    def process(self, work: Round) -> None:
        state, note = self._redis(lambda: self.store.begin_round(work, self.consumer, self.write_lease_ms),
                                  "begin round")
        if state is None:
            log.debug("room %s round %s skipped: %s", work.room, work.round, note)
            return
        room, sessions = state
        if note == "redo":
            log.info("room %s round %s: redoing a round another worker began", work.room, work.round)
            self._redis(lambda: self.store.count("redone_rounds"), "count")
        maybe_die("after_begin", self.store)
        try:
            targets = plan_targets(self.layout, self.pool.num_blocks, room, sessions, work.sessions,
                                   self.settings.strict_bounds)
        except (PlanError, KeyError, ValueError) as error:
            self.fail(work, f"round {work.round} cannot be planned: {error}")
            return
        for target in targets:
            entries = target.plan.entries
            self.metrics["worker_entries"] += len(entries)
            self.metrics["worker_runs"] += target.plan.runs * self._per_token_buffers + sum(
                not self.layout.buffers[e.buffer].per_token for e in entries)
        with self.keeper.hold(work):  # until the commit: its retries may outlast a lease too
            for target in targets:
                if not self.keeper.still_held():  # ended or taken over: write no more
                    self._abandon(work, targets)
                    return
                try:
                    self.write(target)
                except WriteError as error:
                    reason = f"round {work.round}: {error}"
                    self._redis(lambda: self.store.mark_session_failed(target.session_id, reason),
                                "mark session failed")
                    self.fail(work, reason)
                    return
                maybe_stall(self.store)
            if self.keeper.lost:
                self._abandon(work, targets)
                return
            maybe_die("after_write", self.store)
            outcome = self._commit(work, targets)
        if outcome is None:
            log.info("room %s round %s: commit was stale (room ended or round redone)", work.room, work.round)
            self._redis(lambda: self.store.count("stale_commits"), "count")
            return
        maybe_die("after_commit", self.store)
        self.notifier.send(outcome.endpoints, work.room, outcome.status)
        self._release(work.room, outcome)

    def _abandon(self, work: Round, targets: list[Target]) -> None:
        """Stop a round whose claim is lost. Taken over: leave the entry to its new owner.
        Room over: the stale commit acknowledges the entry and drops this worker's write
        lease, so the room's source blocks go back now rather than when the lease runs out."""
        log.warning("room %s round %s abandoned: %s", work.room, work.round, self.keeper.lost)
        if self.keeper.room_ended:
            self._commit(work, targets)  # stale by now: it only acknowledges and lets go

    def _commit(self, work: Round, targets: list[Target]):
        return self._redis(lambda: self.store.commit_round(work, self.consumer,
                                                           [t.plan.sent_after for t in targets]),
                           "commit round")

    def write(self, target: Target) -> None:
        base, offsets = self.pool.base_ptr, self.pool.offsets
        src, dst, lengths = [], [], []
        for entry in target.plan.entries:
            src.append(base + offsets[entry.buffer] + entry.src_offset)
            dst.append(target.dst_ptrs[entry.buffer] + entry.dst_offset)
            lengths.append(entry.length)
        self.engine.write(target.session_id, src, dst, lengths)

    def fail(self, work: Round, reason: str) -> None:
        log.warning("room %s failed: %s", work.room, reason)
        outcome = self._redis(lambda: self.store.fail_room(work.room, reason, entry_id=work.entry_id,
                                                                 consumer=self.consumer),
                              "fail room")
        if outcome.failed:
            self.notifier.send(outcome.endpoints, work.room, Status.Failed)
            self._release(work.room, outcome)

    def _release(self, room: int, outcome) -> None:
        """The room ended and no write reads its blocks: give them back with this worker's
        next read (same round trip), not at the janitor's next pass — which still does it
        if this worker dies first."""
        if outcome.release_now:
            self._to_release.append(room)

    # ---- the loop
    def reclaim(self) -> list[Round]:
        """Entries a dead worker left pending; past the delivery limit they go to dead letters."""
        claimed = self.store.reclaim(self.consumer, self.lease_ms)
        live = []
        for work in claimed:
            stream = self.store.keys.stream(work.shard)
            info = self.store.client.xpending_range(stream, GROUP, min=work.entry_id,
                                                    max=work.entry_id, count=1)
            deliveries = info[0]["times_delivered"] if info else 1
            if deliveries > self.settings.max_deliveries:
                self.store.client.xadd(self.store.keys.dead(work.shard), {
                    "room": work.room, "round": work.round, "entry": work.entry_id,
                    "deliveries": deliveries}, maxlen=10_000, approximate=True)
                self.store.count("dead_letters")
                self.fail(work, f"round {work.round} was delivered {deliveries} times without "
                                f"completing (limit {self.settings.max_deliveries})")
            else:
                log.info("reclaimed room %s round %s (delivery %s)", work.room, work.round, deliveries)
                self.store.count("reclaimed")
                live.append(work)
        return live

    def run(self) -> None:
        self._redis(self.store.ensure_groups, "create consumer groups")
        self._redis(self.store.load_scripts, "load scripts")
        log.info("worker %s ready (engine %s)", self.consumer, self.engine.session_id)
        next_reclaim = next_beat = 0.0
        while not self.stopping:
            try:
                if time.monotonic() >= next_beat:
                    self.store.heartbeat(self.consumer, self.metrics)
                    self.metrics = dict.fromkeys(self.metrics, 0)
                    next_beat = time.monotonic() + 1.0
                batch: list[Round] = []
                # After an outage every pending entry looks idle: give live workers a lease
                # to renew their claims before taking any over.
                if time.monotonic() >= max(next_reclaim, last_recovery() + self.settings.lease):
                    batch = self.reclaim()
                    # found one: look again right after it; else not before half a lease
                    next_reclaim = 0.0 if batch else time.monotonic() + self.settings.lease / 2
                for work in batch:  # reclaimed: not counted in the hot-path metrics
                    self.process_safely(work)
                trips = self.store.client.round_trips
                # COUNT 1 per shard stream: an entry read is pending on this worker until
                # committed, so taking more would hold back work an idle worker could do now
                # (one read can still bring one entry from each shard that has work)
                release, self._to_release = tuple(self._to_release), []
                try:
                    fresh = self.store.read_rounds(self.consumer, count=1, block_ms=200, release=release)
                except Exception:
                    self._to_release[:0] = release  # unknown whether they went: releasing is idempotent
                    raise
                for work in fresh:
                    self.process_safely(work)
                    # the read that brought the round, and every call while doing it
                    self.metrics["worker_round_trips"] += self.store.client.round_trips - trips
                    self.metrics["worker_rounds"] += 1
                    trips = self.store.client.round_trips
            except TRANSIENT:
                # wait it out with backoff (one log line per outage), then carry on: entries
                # this worker left pending are still its own, or reclaimed by another
                wait_for_redis(self.store.client, "worker loop", lambda: self.stopping)
                self._redis(self.store.load_scripts, "load scripts")  # a restarted Redis has none
            except Exception as error:
                if "NOGROUP" in str(error):  # the group or stream was deleted, or Redis lost it
                    requeued = self._redis(self.store.recover_groups, "recreate consumer groups")
                    log.warning("consumer group was lost: recreated, %d live rounds queued again", requeued)
                else:
                    log.exception("worker loop error; continuing")
                    time.sleep(0.5)

    def process_safely(self, work: Round) -> None:
        """One bad round must never take the worker (and every other room) down."""
        try:
            self.process(work)
        except TRANSIENT:
            raise  # leave the entry pending; it is redone once Redis is back
        except Exception as error:
            log.exception("room %s round %s: unexpected error", work.room, work.round)
            self.fail(work, f"internal error in round {work.round}: {type(error).__name__}: {error}")


def main(settings: Settings, index: int = 0, ready=None) -> None:
    run_service(f"worker{index}", lambda: Worker(settings, index), ready)
