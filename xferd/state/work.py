"""The node's work queue, as ``Store`` methods: one stream of round entries with one
consumer group, the take and commit of a round under its fencing epoch, hand-backs,
heartbeats and the group's consumers."""
from __future__ import annotations

import time

import redis

from xferd.state.keys import GROUP
from xferd.state.records import Outcome, Reply, Round, Take, Verdict, _hash, _text
from xferd.state.retry import door
from xferd.state.room import failure_class as declared_class


def _id_key(entry_id) -> tuple[int, int]:
    ms, _, seq = _text(entry_id).partition("-")
    return int(ms), int(seq or 0)


class WorkQueue:
    """Mixed into ``Store`` (which gives ``client``, ``keys``, ``settings`` and ``_run``)."""

    # ---- the work queue
    def _create_group(self, start: str) -> bool:
        try:
            self.client.xgroup_create(self.keys.stream, GROUP, id=start, mkstream=True)
            return True
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
            return False

    @door("ensure groups")
    def ensure_groups(self) -> None:
        """Create the node's consumer group at first start (from the stream's beginning)."""
        self._create_group("0")

    @door("recover groups")
    def recover_groups(self) -> int:
        """Recreate the consumer group if it was lost (NOGROUP): at the stream's end, so old
        entries are not replayed as new, then queue again the pending round of every live
        room (its entry went with the group). Returns rounds queued again."""
        if not self._create_group("$"):
            return 0  # the group exists: another process recovered it, or it was never lost
        return sum(self._run("requeue", int(_text(member))).verdict is Verdict.requeued
                   for member in self.client.zrange(self.keys.timeouts, 0, -1))

    @door("read rounds")
    def read_rounds(self, consumer: str, count: int, block_ms: int) -> list[Round]:
        """Take up to ``count`` new round entries, waiting up to ``block_ms``."""
        if self._direct is None:
            return self._rounds(self.client.xreadgroup(GROUP, consumer, self._new_entries, count=count,
                                                       block=block_ms))
        if self._direct.has_ahead():  # sent with the last commit (commit_round's read_next)
            reply = self._direct.read_ahead()
        else:
            reply = self._direct.call(*self._read_command(consumer, count, block_ms))
        return self._read_reply(reply)

    def _read_command(self, consumer: str, count: int, block_ms: int | None) -> tuple:
        """XREADGROUP of up to ``count`` new entries, waiting ``block_ms`` (None: not at all)."""
        block = () if block_ms is None else ("BLOCK", block_ms)
        return ("XREADGROUP", "GROUP", GROUP, consumer, "COUNT", count, *block, "STREAMS", self.keys.stream, ">")

    def _read_reply(self, reply) -> list[Round]:
        return self._rounds(self.primary.response_callbacks["XREADGROUP"](reply))  # redis-py's own parser

    def read_ahead(self) -> bool:
        """Whether a read sent with the last commit waits on this thread (``read_rounds``
        takes its reply)."""
        return self._direct is not None and self._direct.has_ahead()

    def _rounds(self, reply) -> list[Round]:
        out = []
        for _, entries in reply or []:
            for entry_id, fields in entries:
                if fields:  # None: deleted while pending
                    out.append(self.round_from(_text(entry_id), fields))
        return out

    @staticmethod
    def round_from(entry_id: str, fields) -> Round:
        f = {_text(k): _text(v) for k, v in fields.items()}
        sessions = tuple(s for s in f.get("sessions", "").split(",") if s)
        return Round(entry_id, int(f["room"]), int(f["round"]), sessions)

    @door("entry")
    def entry(self, entry_id: str) -> Round | None:
        """The round an entry carries; None if it was trimmed."""
        found = self.client.xrange(self.keys.stream, entry_id, entry_id, count=1)
        return self.round_from(entry_id, found[0][1]) if found and found[0][1] else None


    # ---- workers
    @door("begin round")
    def begin_round(self, work: Round, consumer: str, lease_ms: int) -> tuple[Take | None, str]:
        """Take the round: (Take, '') with a fencing epoch, or (None, why it is stale)."""
        return self.take_from(self._run_raw("begin_round", work.room, work.round, work.entry_id, consumer,
                                            lease_ms, sessions=work.sessions))

    @staticmethod
    def take_from(reply) -> tuple[Take | None, str]:
        """begin_round's reply (also NotReplicated's, for a take no replica confirmed)."""
        reply = Reply.parse(reply)
        if reply.verdict is Verdict.stale:
            return None, reply.note
        epoch, room, *sessions = reply.data
        return Take(_text(epoch), _hash(room), [_hash(s) for s in sessions], reply.verdict is Verdict.redo), ""

    @door("renew lease")
    def renew_lease(self, work: Round, consumer: str, epoch: str, lease_ms: int) -> tuple[float, bool, int | str]:
        """``keep_lease``, with when (time.monotonic) the try that got through was sent: Redis
        reset the entry's idle clock after that, so the holder may count from it."""
        sent = time.monotonic()
        held, detail = self.keep_lease(work, consumer, epoch, lease_ms)
        return sent, held, detail

    @door("keep lease")
    def keep_lease(self, work: Round, consumer: str, epoch: str, lease_ms: int) -> tuple[bool, int | str]:
        """Renew the holder's lease: (True, room status) or (False, why the round is not held)."""
        reply = self._run("keep_lease", work.room, work.entry_id, consumer, epoch, lease_ms)
        if reply.verdict is Verdict.ok:
            return True, reply.status
        return False, reply.note

    @door("commit round")
    def commit_round(self, work: Round, consumer: str, epoch: str, sent_after: list[int],
                     read_next: int = 0, written: int = 0, read_count: int = 1) -> tuple[str, Outcome | str]:
        """('ok', Outcome) committed; ('ended', Outcome) the room failed while we wrote (it is
        settled now, Failed due); ('stale', why) this holder no longer holds the round.
        ``read_next``: on the direct path without replica waits, send the consumer's next
        read (blocking that many ms, of up to ``read_count`` entries) in the same write;
        ``read_rounds`` takes its reply. ``written``: the bytes the round wrote (counted with
        the commit)."""
        ahead = self._read_command(consumer, read_count, read_next) if read_next else ()
        return self._committed(self._run("commit_round", work.room, work.round, work.entry_id, consumer, epoch,
                                         written, *sent_after, ahead=ahead))

    @staticmethod
    def _committed(reply: Reply) -> tuple[str, Outcome | str]:
        """commit_round's answer: (verdict, Outcome), or ('stale', why)."""
        if reply.verdict is Verdict.stale:
            return reply.verdict.value, reply.note
        return reply.verdict.value, reply.outcome

    @door("commit and take")
    def commit_and_take(self, work: Round, consumer: str, epoch: str, sent_after: list[int], written: int,
                        following: Round, lease_ms: int) -> tuple[str, Outcome | str, tuple[Take | None, str], list[Round]]:
        """``commit_round`` of ``work`` and, in the same write, the take of ``following`` (an
        entry read ahead, pending on this consumer: ``begin_round``) and a read of one more new
        entry, not waiting: under load a round costs one round trip. Returns the commit's
        (verdict, Outcome or why), the take's (Take or None, why) and the entries read. Only
        where ``batches``. A retry repeats all three: the commit and the take find their own
        work done, and an entry whose read was lost is left behind (``heartbeat``)."""
        calls = [self._call("commit_round", work.room, work.round, work.entry_id, consumer, epoch, written,
                            *sent_after),
                 self._call("begin_round", following.room, following.round, following.entry_id, consumer,
                            lease_ms, sessions=following.sessions)]
        replies = self._direct.batch(*(("EVALSHA", script.sha, len(keys), *keys, *args)
                                       for script, keys, args in calls),
                                     self._read_command(consumer, 1, None))
        for i, reply in enumerate(replies[:2]):
            if isinstance(reply, redis.exceptions.NoScriptError):  # a restarted Redis: load, run alone
                script, keys, args = calls[i]
                replies[i] = self._direct.script(script, keys, args)
            elif isinstance(reply, Exception):
                raise reply
        read = replies[2]
        if isinstance(read, Exception):
            raise read
        verdict, outcome = self._committed(Reply.parse(replies[0]))
        return verdict, outcome, self.take_from(replies[1]), self._read_reply(read)

    @door("fail held round")
    def fail_held_round(self, work: Round, consumer: str, epoch: str, reason: str,
                        failure_class: str = "internal") -> Outcome:
        """The holder fails its own round (its write is over): lets go and acknowledges."""
        return self._run("fail_room", work.room, reason, "holder", declared_class(failure_class), consumer,
                         epoch, work.entry_id).outcome

    @door("hand back")
    def hand_back(self, consumer: str, room: int, entry_id: str = "") -> tuple[str, Outcome | None]:
        """A stopped worker's entry or hold goes back (the fencer): (verdict, Outcome) with
        verdict 'requeued', 'dead', 'ended', 'stale' or 'none'."""
        reply = self._run("hand_back", room, consumer, entry_id, self.settings.max_deliveries)
        return reply.verdict.value, None if reply.verdict is Verdict.none else reply.outcome

    @door("pending")
    def pending(self, consumer: str | None = None, min_idle_ms: int | None = None,
                count: int = 100) -> list[tuple[str, str]]:
        """(entry id, consumer) of pending entries: of one consumer, or idle at least ``min_idle_ms``."""
        found = self.client.xpending_range(self.keys.stream, GROUP, min="-", max="+", count=count,
                                           consumername=consumer, idle=min_idle_ms)
        return [(_text(p["message_id"]), _text(p["consumer"])) for p in found]

    @door("holds")
    def holds(self) -> list[tuple[int, str, int]]:
        """(room, holder, lease deadline in Redis ms) of every round being written."""
        found = [(int(_text(m)), int(score)) for m, score in self.client.zrange(self.keys.writing, 0, -1,
                                                                             withscores=True)]
        if not found:
            return []
        pipe = self.client.pipeline(transaction=False)
        for room, _ in found:
            pipe.hget(self.keys.room(room), "holder")
        return [(room, _text(holder) if holder else "", until)
                for (room, until), holder in zip(found, pipe.execute())]


    @door("heartbeat")
    def heartbeat(self, consumer: str, counters: dict[str, int] | None = None, holding: bool = False) -> list[Round]:
        """The worker is alive; adds ``counters`` to the node's stats in the same round trip.
        Returns the entries pending on it (between rounds there should be none: a read whose
        reply was lost and retried leaves one behind, which the worker then does itself) —
        unless a read sent ahead waits, or the worker is ``holding`` entries it read or took
        ahead, which would look left behind."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(self.keys.workers, consumer, int(time.time() * 1000))
        self._add_counts(pipe, counters or {})
        if holding or self.read_ahead():
            pipe.execute()
            return []
        pipe.xreadgroup(GROUP, consumer, {self.keys.stream: "0"}, count=10)
        return self._rounds(pipe.execute()[-1])

    @door("mark stopped")
    def mark_stopped(self, consumer: str, for_s: float) -> None:
        """The lane stopped cleanly: it pushed every status it committed (kept ``for_s``)."""
        self.client.set(self.keys.stopped(consumer), 1, px=int(for_s * 1000))

    @door("stopped cleanly")
    def stopped_cleanly(self, consumers: list[str]) -> set[str]:
        """Those of ``consumers`` marked by ``mark_stopped``."""
        pipe = self.client.pipeline(transaction=False)
        for consumer in consumers:
            pipe.exists(self.keys.stopped(consumer))
        return {consumer for consumer, marked in zip(consumers, pipe.execute() if consumers else []) if marked}

    @door("live workers")
    def live_workers(self, within_s: float = 5.0) -> list[str]:
        cutoff = (time.time() - within_s) * 1000
        return [name for name, seen in _hash(self.client.hgetall(self.keys.workers)).items()
                if int(seen) >= cutoff]

    def _group_consumers(self) -> list[dict]:
        try:
            return self.client.xinfo_consumers(self.keys.stream, GROUP)
        except redis.ResponseError:
            return []  # no stream or group yet

    @door("consumers")
    def consumers(self) -> dict[str, int]:
        """Every consumer name in the node's group -> entries pending on it."""
        return {_text(c["name"]): int(c["pending"]) for c in self._group_consumers()}

    @door("remove dead consumers")
    def remove_dead_consumers(self, gone) -> list[str]:
        """Forget workers that ``gone(name, last heartbeat ms or 0)`` says are gone: their
        heartbeat, and their consumer in the group once nothing is pending on it (the fencer
        hands it back first: DELCONSUMER would drop pending entries)."""
        beats = {name: int(seen) for name, seen in _hash(self.client.hgetall(self.keys.workers)).items()}
        removed = []
        for consumer in self._group_consumers():
            name = _text(consumer["name"])
            if not consumer["pending"] and gone(name, beats.get(name, 0)):
                # checked again inside the script: an entry may reach it meanwhile
                if self._run("forget_consumer", "", name).verdict is Verdict.ok:
                    removed.append(name)
        silent = [name for name, seen in beats.items() if gone(name, seen)]
        if silent:
            self.client.hdel(self.keys.workers, *silent)
        return removed


    @door("acknowledge")
    def acknowledge(self, entry_id: str) -> None:
        """An entry that needs no round (its room's record is gone, say) leaves the queue."""
        self.client.xack(self.keys.stream, GROUP, entry_id)

    @door("trim rounds")
    def trim_rounds(self) -> None:
        """Drop entries every consumer has acknowledged: below the oldest pending id and
        the group's last delivered id (never a pending entry)."""
        client, stream = self.client, self.keys.stream
        try:
            groups = client.xinfo_groups(stream)
        except redis.ResponseError:
            return
        group = next((g for g in groups if g["name"] in (GROUP, GROUP.encode())), None)
        if group is None:
            return
        floor = group["last-delivered-id"]
        pending = client.xpending(stream, GROUP)
        if pending and pending.get("pending"):
            floor = min(floor, pending["min"], key=_id_key)
        client.xtrim(stream, minid=floor, approximate=False)
