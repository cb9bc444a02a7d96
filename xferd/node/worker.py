"""Worker process: consume round entries, write with Mooncake, commit, notify.

A round is: read (XREADGROUP: the entry is pending on this worker) → begin (Lua: checks the
entry is current, takes the round under a new fencing epoch, returns the room and its
sessions) → plan (pure) → Mooncake writes, every destination's at once (``engine.write_all``),
the lease kept alive meanwhile (``lease.py``) → commit (Lua: compare-and-set, XACK, the
blocks of a finished room back, all for this epoch only). Three Redis round trips at idle;
under load one, where the commit's write also takes the entry the lane read ahead and reads
the next (``Store.commit_and_take``). An entry read ahead waits only for the lane's current
write: a slow write hands it back to the queue (``Engine.write_all``'s ``on_slow``).
A worker that stops anywhere before the commit (killed, paused, cut off from Redis) keeps
its entry pending; the node's fencer stops its process for certain and only then hands the
round to another worker (``fencer.py``), which rewrites the same bytes. After the commit a
redelivered entry is stale and changes nothing."""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Callable

from xferd.state.connections import TRANSIENT, connect

from xferd.state.retry import Patience, trouble, wait_for_redis
from xferd.transfer.engine import Engine, Write
from xferd.node.faults import maybe_die, maybe_stall
from xferd.node.fencer import Fencer
from xferd.node.stopping import Identity
from xferd.node.lease import LeaseKeeper
from xferd.node.lostpush import horizon_s
from xferd.node.notify import Notifier
from xferd.protocol.planning import PlanError, Target, plan_targets
from xferd.transfer.pool import SourcePool
from xferd.node.processes import run_service
from xferd.state.replication import NotReplicated
from xferd.settings import Settings
from xferd.state.store import Outcome, Round, Store, Take

log = logging.getLogger("xferd.worker")
READ_BLOCK_MS = 200  # a worker's read waits this long for a round (then it heartbeats and reads again)
STEPS = ("take", "plan", "write", "commit", "push")  # the steps of a round, timed (worker_ms:<step>)


class Worker:
    def __init__(self, settings: Settings, index: int = 0, lane: int = 0,
                 shared: tuple[SourcePool, Engine] | None = None):
        """``lane``: one of the rounds a worker process writes at once, each a consumer of
        its own sharing the process's pool mapping and Mooncake engine (``shared``)."""
        self.settings = settings
        # the name says which process holds an entry (the fencer stops that process)
        self.consumer = Identity.current().name(f"w{index}" if not lane else f"w{index}_{lane}")
        # the round's transitions wait Redis out until the worker stops; its loop's own calls
        # (read, heartbeat) try once and the loop waits instead
        self.store = Store(connect(settings.redis_url), settings, direct=True,
                           patience=Patience(stop=lambda: self.stopping))
        self.once = self.store.once()
        self.layout = settings.buffer_layout
        if shared is None:
            pool = SourcePool(self.layout, settings.pool_blocks, settings.shm_name)
            engine = Engine(settings.hostname, settings.protocol, settings.metadata, settings.device)
            engine.register(pool.base_ptr, pool.size)
            shared = pool, engine
        self.pool, self.engine = shared
        self.notifier = Notifier.for_settings(settings)
        self.lease_ms = int(settings.lease * 1000)
        self.keeper = LeaseKeeper(self.store, self.consumer, self.lease_ms)
        # hot-path metrics, added to the node's stats with each heartbeat (`xferd bench`):
        # counts, and the milliseconds each step of a round took (worker_ms:<step>)
        self.metrics = dict.fromkeys(("worker_rounds", "worker_round_trips", "worker_entries",
                                      "worker_runs", *(f"worker_ms:{step}" for step in STEPS)), 0)
        self._per_token_buffers = sum(b.per_token for b in self.layout.buffers)
        # under load, the next round rides with this one: an entry read ahead (pending on this
        # lane, not begun) is taken in the write of the current round's commit
        self._ahead: Round | None = None
        self._taken: tuple[Round, Take] | None = None  # taken with the last commit, not yet written
        # an entry read is pending on this lane until committed, so it reads a second only
        # where its next commit takes it (two were queued: no lane was waiting for them)
        self._read_count = 2 if self.store.batches else 1
        self.stopping = False

    # ---- one round
    def _timed(self, step: str, since: float) -> float:
        """Add the time since ``since`` to ``step``'s; returns now (perf_counter)."""
        now = time.perf_counter()
        self.metrics[f"worker_ms:{step}"] += (now - since) * 1000
        return now

    def process(self, work: Round, taken: Take | None = None) -> None:
        """One round; ``taken``: its take, made with the last commit."""
        started = time.perf_counter()
        take, why = taken, ""
        if taken is None:
            try:
                take, why = self.store.begin_round(work, self.consumer, self.lease_ms)
            except NotReplicated as error:  # the take is on the primary only: write nothing under it
                take, why = Store.take_from(error.reply)
                if take is not None:
                    self.fail(work, take.epoch, f"the take of round {work.round} was not confirmed: {error}",
                              "not_replicated")
                return
        if take is None:
            log.debug("room %s round %s skipped: %s", work.room, work.round, why)
            return
        if take.redo:
            log.info("room %s round %s: redoing a round a stopped worker began", work.room, work.round)
            self.store.count("redone_rounds")
        maybe_die("after_begin", self.once)
        try:
            self._write_and_commit(work, take, self._timed("take", started))
        except TRANSIENT:
            raise  # the round stays this worker's; it is redone once Redis is back
        except Exception as error:  # let go of the round with the room's failure
            log.exception("room %s round %s: unexpected error", work.room, work.round)
            self.fail(work, take.epoch, _internal(work, error), "internal")

    def _write_and_commit(self, work: Round, take: Take, started: float) -> None:
        epoch = take.epoch
        with self.keeper.hold(work, epoch):  # until the commit: its retries may outlast a lease
            try:
                targets = plan_targets(self.layout, self.pool.num_blocks, take.room, take.sessions,
                                       work.sessions, self.settings.strict_bounds)
            except (PlanError, KeyError, ValueError) as error:
                self.fail(work, epoch, f"round {work.round} cannot be planned: {error}", "bad_input")
                return
            self._count(targets)
            written = 0
            if self.keeper.may_write():  # else the room failed meanwhile (the commit settles it)
                writes = [self._write_of(t) for t in targets]
                started = self._timed("plan", started)
                with self.keeper.writing():  # or the claim is lost
                    errors = self.engine.write_all(writes, on_slow=self._let_ahead_go if self._ahead else None)
                started = self._timed("write", started)
                written = sum(sum(w.lengths) for w in writes)
                failed = [(t.session_id, f"round {work.round}: {e}") for t, e in zip(targets, errors) if e]
                for session_id, reason in failed:
                    self.store.mark_session_failed(session_id, reason)
                if failed:
                    self.fail(work, epoch, failed[0][1], "write_error")
                    return
                maybe_stall(self.once)
            if self.keeper.lost:
                # only the fencer takes a round from a live holder, and it stops the holder
                # first: this process is about to be killed; change nothing
                log.warning("room %s round %s abandoned: %s", work.room, work.round, self.keeper.lost)
                return
            maybe_die("after_write", self.once)
            started = time.perf_counter()
            sent_after = [t.plan.sent_after for t in targets]
            try:
                if self._ahead is not None and self.store.batches and not self.stopping:
                    verdict, outcome = self._commit_and_take(work, epoch, sent_after, written)
                else:
                    verdict, outcome = self.store.commit_round(
                        work, self.consumer, epoch, sent_after, read_next=0 if self.stopping else READ_BLOCK_MS,
                        written=written, read_count=self._read_count)
            except NotReplicated as error:  # committed on the primary only: report nothing of it
                reason = f"round {work.round} committed but not confirmed: {error}"
                log.error("room %s failed: %s", work.room, reason)
                self._settle(work.room, lambda: self.store.fail_room(work.room, reason,
                                                                     failure_class="not_replicated"))
                return
        if verdict == "stale":
            log.warning("room %s round %s: commit refused: %s", work.room, work.round, outcome)
            self.store.count("stale_commits")
            return
        started = self._timed("commit", started)
        maybe_die("after_commit", self.once)
        self._push(work.room, outcome)
        self._timed("push", started)

    def _count(self, targets: list[Target]) -> None:
        for target in targets:
            entries = target.plan.entries
            self.metrics["worker_entries"] += len(entries)
            self.metrics["worker_runs"] += target.plan.runs * self._per_token_buffers + sum(
                not self.layout.buffers[e.buffer].per_token for e in entries)

    def _commit_and_take(self, work: Round, epoch: str, sent_after: list[int], written: int):
        """The commit, with the take of the entry read ahead and a read of the next in the same
        write (``Store.commit_and_take``); what it took and read is this lane's next work."""
        following, self._ahead = self._ahead, None
        try:
            verdict, outcome, (take, why), more = self.store.commit_and_take(
                work, self.consumer, epoch, sent_after, written, following, self.lease_ms)
        except TRANSIENT:
            self._ahead = following  # the lane stops in an outage: its begin finds any take it made
            raise
        except Exception:
            self._hand_back(following)  # it may be taken: another lane does it
            raise
        if take is not None:
            self._taken = (following, take)
        else:
            log.debug("room %s round %s skipped: %s", following.room, following.round, why)
        self._ahead = more[0] if more else None
        return verdict, outcome

    def _let_ahead_go(self) -> None:
        """The current write is slow (its destination stalls?): the entry read ahead goes back
        to the queue for another lane rather than waiting behind it."""
        following, self._ahead = self._ahead, None
        if following is not None:
            log.info("room %s round %s: handed back for another lane while a slow write runs",
                     following.room, following.round)
            self._hand_back(following)

    def _hand_back(self, work: Round) -> None:
        """An entry of this lane that it will not write (read ahead, or taken and not begun):
        queued again (``hand_back.lua``), its status pushed if that ended the room."""
        try:
            verdict, outcome = self.once.hand_back(self.consumer, work.room, work.entry_id)
        except Exception as error:  # left pending: the heartbeat finds it left behind, or the fencer
            log.warning("room %s round %s: could not hand back (%s)", work.room, work.round, error)
            return
        if outcome is not None:
            self._push(work.room, outcome)

    def _settle(self, room: int, transition: Callable[[], Outcome]) -> None:
        """Run a room's transition and push the status it made due; one no replica confirmed
        is held back."""
        try:
            outcome = transition()
        except NotReplicated as error:
            log.error("room %s: status held back: %s", room, error)
            return
        self._push(room, outcome)

    def _push(self, room: int, outcome: Outcome) -> None:
        if outcome.notify:
            self.notifier.send(outcome.endpoints, room, outcome.status)

    def _write_of(self, target: Target) -> Write:
        """A destination's share of the round as Mooncake entries (source address, destination
        address, length)."""
        base, offsets = self.pool.base_ptr, self.pool.offsets
        src, dst, lengths = [], [], []
        for entry in target.plan.entries:
            src.append(base + offsets[entry.buffer] + entry.src_offset)
            dst.append(target.dst_ptrs[entry.buffer] + entry.dst_offset)
            lengths.append(entry.length)
        return Write(target.session_id, src, dst, lengths, target.registration)

    def fail(self, work: Round, epoch: str, reason: str, failure_class: str) -> None:
        """Fail the round this worker holds (its write is over): Failed is due at once."""
        log.warning("room %s failed: %s", work.room, reason)
        self._settle(work.room, lambda: self.store.fail_held_round(work, self.consumer, epoch, reason,
                                                                   failure_class))

    # ---- the loop
    def run(self) -> None:
        self.store.ensure_groups()
        self.store.load_scripts()
        log.info("worker %s ready (engine %s)", self.consumer, self.engine.session_id)
        next_beat = 0.0
        while not self.stopping:
            try:
                if time.monotonic() >= next_beat:
                    with trouble() as redis_trouble:
                        left_behind = self.once.heartbeat(self.consumer, {**self.metrics, **redis_trouble},
                                                          holding=self._ahead is not None or self._taken is not None)
                    self.metrics = dict.fromkeys(self.metrics, 0)
                    next_beat = time.monotonic() + 1.0
                    for work in left_behind:  # not counted in the hot-path metrics
                        log.info("room %s round %s: an entry of this worker's was left behind by a "
                                 "retried read; doing it now", work.room, work.round)
                        self.process_safely(work)
                trips = self.store.round_trips
                if self._taken is not None:
                    (work, take), self._taken = self._taken, None
                    self.process_safely(work, take)
                elif self._ahead is not None:
                    work, self._ahead = self._ahead, None
                    self.process_safely(work)
                else:
                    found = self.once.read_rounds(self.consumer, count=self._read_count, block_ms=READ_BLOCK_MS)
                    if not found:
                        continue
                    work, self._ahead = found[0], (found[1] if len(found) > 1 else None)
                    self.process_safely(work)
                # the read that brought the round, and every call while doing it
                self.metrics["worker_round_trips"] += self.store.round_trips - trips
                self.metrics["worker_rounds"] += 1
            except TRANSIENT:
                # wait it out with backoff (one log line per outage), then carry on: entries
                # this worker left pending are still its own until the fencer stops it
                wait_for_redis(self.store.check_writes, "worker loop", lambda: self.stopping)
                self.store.load_scripts()  # a restarted Redis has none
            except Exception as error:
                if "NOGROUP" in str(error):  # the group or stream was deleted, or Redis lost it
                    self._ahead = self._taken = None  # their entries went with it
                    requeued = self.store.recover_groups()
                    log.warning("consumer group was lost: recreated, %d live rounds queued again", requeued)
                else:
                    log.exception("worker loop error; continuing")
                    time.sleep(0.5)
        self._hand_back_read_ahead()
        try:  # every status this lane committed is pushed: lostpush.py needs not push them again
            self.once.mark_stopped(self.consumer, horizon_s(self.settings))
        except TRANSIENT:
            pass  # the janitor pushes its recent Successes again: harmless

    def _hand_back_read_ahead(self) -> None:
        """Stopping (a drain): rounds this lane read or took ahead and will not write go back to
        the queue at once (``hand_back.lua``), for another worker or the node's next serve,
        rather than waiting pending until the fencer sees this worker gone."""
        held = [self._taken[0].room] if self._taken is not None else []
        ahead = self._ahead is not None or self._taken is not None
        self._ahead = self._taken = None
        try:
            if self.once.read_ahead() and self.once.read_rounds(self.consumer, count=2, block_ms=READ_BLOCK_MS):
                ahead = True
            if ahead:  # pending on this lane, written by no one: the fencer's own hand-back
                Fencer(self.once, self.settings, self.notifier).hand_back(self.consumer, held)
        except TRANSIENT:
            pass  # its entries stay pending: the fencer hands them back once this process is gone

    def process_safely(self, work: Round, taken: Take | None = None) -> None:
        """One bad round must never take the worker (and every other room) down."""
        try:
            self.process(work, taken)
        except TRANSIENT:
            raise  # leave the entry pending; it is redone once Redis is back
        except Exception as error:  # before the take (process handles the rest): nothing held
            log.exception("room %s round %s: unexpected error", work.room, work.round)
            reason = _internal(work, error)
            self._settle(work.room, lambda: self.store.fail_room(work.room, reason, failure_class="internal"))
            # the entry is pending on this worker only: drop it
            self.store.acknowledge(work.entry_id)


def _internal(work: Round, error: Exception) -> str:
    return f"internal error in round {work.round}: {type(error).__name__}: {error}"


class WorkerProcess:
    """One worker process: ``settings.rounds_per_worker`` lanes (threads), each reading and
    writing one round at a time, on one pool mapping and one Mooncake engine. A lane whose
    loop ends unasked ends the process (serve starts a new one; the fencer hands back what
    its lanes held)."""

    def __init__(self, settings: Settings, index: int):
        first = Worker(settings, index)
        self.lanes = [first] + [Worker(settings, index, lane, (first.pool, first.engine))
                                for lane in range(1, settings.rounds_per_worker)]

    @property
    def stopping(self) -> bool:
        return self.lanes[0].stopping

    @stopping.setter
    def stopping(self, value: bool) -> None:
        for lane in self.lanes:
            lane.stopping = value

    def _run_lane(self, lane: Worker) -> None:
        try:
            lane.run()
        finally:
            if not lane.stopping:
                log.critical("worker lane %s ended unasked; ending the process", lane.consumer)
                logging.shutdown()
                os._exit(1)

    def run(self) -> None:
        threads = [threading.Thread(target=self._run_lane, args=(lane,), name=f"lane{n}", daemon=True)
                   for n, lane in enumerate(self.lanes[1:], 1)]
        for thread in threads:
            thread.start()
        self.lanes[0].run()
        for thread in threads:
            thread.join()


def main(settings: Settings, index: int = 0, ready=None) -> None:
    run_service(f"worker {index}", settings, lambda: WorkerProcess(settings, index), ready,
                death_signal=signal.SIGKILL)
