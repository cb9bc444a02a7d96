"""The Redis side of xferd: records, the work queue and the Lua scripts that change them.

Every state transition is one Lua script (``xferd/state/lua``), run by EVALSHA through
``register_script``, with every key of the node under one hash tag; this module only names
keys and converts replies. Every room script gets the same eight keys (``_keys``).
"""
from __future__ import annotations

import time
from importlib import resources

import redis

from xferd.state.connections import DirectCalls
from xferd.state.keys import GROUP, Keys
from xferd.state.records import Allocation, Outcome, Round, Take, _hash, _text  # noqa: F401 - callers import them from here
from xferd.state.replication import NotReplicated, run_replicated
from xferd.settings import Settings
from xferd.protocol.status import Status
from xferd.state.topology import is_cluster, primary, refresh
from xferd.protocol.wire import Init, Register, Resume

# a lease renewal acted on by nobody but the fencer, where losing one is safe (a live
# worker fenced); every other transition waits for min_replicas
UNREPLICATED = ("keep_lease",)
# the failure classes of rooms, counted by xferd_rooms_ended_total (fail() in the Lua prelude)
FAILURE_CLASSES = ("bad_input", "timeout", "aborted", "write_error", "not_replicated", "dead_letter",
                   "internal")
SCRIPTS = ("publish_source", "dst_init", "dst_resume", "begin_round", "keep_lease", "commit_round",
           "fail_room", "hand_back", "requeue", "pool_alloc", "pool_expire", "release", "request_alloc",
           "request_bind")


# scripts that are not room transitions: no prelude
PLAIN_SCRIPTS = ("forget_consumer", "keep_allocations")


def _load(name: str) -> str:
    folder = resources.files("xferd.state") / "lua"
    if name in PLAIN_SCRIPTS:
        return (folder / f"{name}.lua").read_text()
    return (folder / "_prelude.lua").read_text() + "\n" + (folder / f"{name}.lua").read_text()


class Store:
    def __init__(self, client: redis.Redis, settings: Settings, direct: bool = False):
        """``direct``: run the transition scripts through ``DirectCalls`` (the worker's and
        the ingress's hot path)."""
        self.client = client
        self.settings = settings
        self.keys: Keys = settings.keys
        self._scripts = {name: client.register_script(_load(name)) for name in SCRIPTS + PLAIN_SCRIPTS}
        self._new_entries = {self.keys.stream: ">"}
        self._direct = DirectCalls(lambda: self.primary, self._count_trip, self._lost_primary) if direct else None

    def _keys(self, room: int | str) -> list[str]:
        """The keys every room script takes, in the prelude's order."""
        k = self.keys
        return [k.room(room), k.stream, k.timeouts, k.writing, k.pool_free, k.pool_owned(room),
                k.pool_leases, k.dead, k.stats, k.ended, k.statuses, k.record]

    def _run(self, name: str, room: int | str, *args, sessions: tuple[str, ...] = (), ahead: tuple = (),
             extra: tuple[str, ...] = ()):
        """Run a transition script; with min_replicas, only confirmed by that many replicas
        (``replication.run_replicated``; NotReplicated if not in time). ``ahead``: a command
        sent in the same write on the direct path (``DirectCalls.script``), else not sent."""
        keys = self._keys(room) + [self.keys.session(s) for s in sessions] + list(extra)
        args = [str(room), *args]
        script = self._scripts[name]
        if not self.settings.min_replicas or name in UNREPLICATED:
            if self._direct is None:
                return script(keys=keys, args=args)
            return self._direct.script(script, keys, args, ahead)
        return self._replicated(lambda pipe: pipe.evalsha(script.sha, len(keys), *keys, *args),
                                f"{name} of room {room}", load=lambda connection: connection.script_load(script.script))

    def _replicated(self, stage, what: str, **options):
        try:
            return run_replicated(self._primary_counted, stage, self.settings.min_replicas,
                                  self.settings.replica_timeout, what, lost_primary=self._lost_primary,
                                  count_wait=lambda pipe: pipe.hincrby(self.keys.stats, "replica_waits", 1),
                                  **options)
        except NotReplicated:
            self.count_quietly("not_replicated")
            raise

    def count_quietly(self, counter: str) -> None:
        """Bump a counter when Redis may be what is failing: a lost count is no harm."""
        try:
            self.count(counter)
        except (redis.RedisError, OSError):
            pass

    def _primary_counted(self) -> redis.Redis:
        connection = self.primary
        if connection is not self.client:
            self._count_trip()  # a cluster's node client: counted with the rest
        return connection

    def _count_trip(self) -> None:
        if hasattr(self.client, "round_trips"):
            self.client.round_trips += 1

    def _lost_primary(self) -> None:
        try:
            refresh(self.client)
        except (redis.RedisError, redis.exceptions.RedisClusterException):
            pass  # the cluster cannot say yet; the next try asks again

    def load_scripts(self) -> None:
        """Load every script into Redis's cache (on every primary of a cluster), at start and
        after a restart or failover, so the hot path never pays a NOSCRIPT miss (EVALSHA still
        reloads on one: a promoted replica's cache starts empty)."""
        if is_cluster(self.client):
            for script in self._scripts.values():
                self.client.script_load(script.script)  # sent to every primary
            return
        pipe = self.client.pipeline(transaction=False)
        for script in self._scripts.values():
            pipe.script_load(script.script)
        pipe.execute()

    @property
    def primary(self) -> redis.Redis:
        """A plain client on the server that holds the node's keys now."""
        return primary(self.client, self.keys.record)

    def check_writes(self) -> None:
        """Raises what Redis says to a small write (OOM, READONLY, an outage...), else returns:
        a loop waits on this, not on PING, which a Redis refusing writes still answers."""
        self.client.hset(self.keys.record, "writable_at", int(time.time() * 1000))

    def ping(self) -> None:
        """The node's primary answers (after a failover: the promoted one, once known)."""
        try:
            self.primary.ping()
        except redis.ConnectionError:
            self._lost_primary()
            raise

    def node_keys(self, pattern: str | None = None):
        """Keys of this node matching ``pattern`` (default: all), scanned on its primary only."""
        return self.primary.scan_iter(pattern or self.keys.all_pattern(), count=1000)

    # ---- the work queue
    def _create_group(self, start: str) -> bool:
        try:
            self.client.xgroup_create(self.keys.stream, GROUP, id=start, mkstream=True)
            return True
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
            return False

    def ensure_groups(self) -> None:
        """Create the node's consumer group at first start (from the stream's beginning)."""
        self._create_group("0")

    def recover_groups(self) -> int:
        """Recreate the consumer group if it was lost (NOGROUP): at the stream's end, so old
        entries are not replayed as new, then queue again the pending round of every live
        room (its entry went with the group). Returns rounds queued again."""
        if not self._create_group("$"):
            return 0  # the group exists: another process recovered it, or it was never lost
        return sum(int(self._run("requeue", int(_text(member))))
                   for member in self.client.zrange(self.keys.timeouts, 0, -1))

    def read_rounds(self, consumer: str, count: int, block_ms: int) -> list[Round]:
        """Take up to ``count`` new round entries, waiting up to ``block_ms``."""
        if self._direct is None:
            return self._rounds(self.client.xreadgroup(GROUP, consumer, self._new_entries, count=count,
                                                       block=block_ms))
        if self._direct.has_ahead():  # sent with the last commit (commit_round's read_next)
            reply = self._direct.read_ahead()
        else:
            reply = self._direct.call(*self._read_command(consumer, count, block_ms))
        return self._rounds(self.primary.response_callbacks["XREADGROUP"](reply))  # redis-py's own parser

    def _read_command(self, consumer: str, count: int, block_ms: int) -> tuple:
        return ("XREADGROUP", "GROUP", GROUP, consumer, "COUNT", count, "BLOCK", block_ms,
                "STREAMS", self.keys.stream, ">")

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

    def entry(self, entry_id: str) -> Round | None:
        """The round an entry carries; None if it was trimmed."""
        found = self.client.xrange(self.keys.stream, entry_id, entry_id, count=1)
        return self.round_from(entry_id, found[0][1]) if found and found[0][1] else None

    # ---- language side
    def register_session(self, message: Register, owner: str = "") -> None:
        """Record a session, clearing any failure mark. ``owner``: the CurveZMQ key of the
        peer that registered it ('' without CURVE)."""
        key = self.keys.session(message.session_id)
        record = {
            "owner": owner,
            "session": message.session_id,
            "endpoint": f"{message.ip}:{message.status_port}",
            "ptrs": ",".join(map(str, message.ptrs)),
            "lens": ",".join(map(str, message.lens)) if message.lens else "",
            "registered_at": int(time.time() * 1000),
        }

        def stage(pipe) -> None:  # the new record before the mark goes: never neither
            pipe.hset(key, mapping=record)
            pipe.hdel(key, "failed")
            pipe.pexpire(key, self._session_retention_ms)

        if self.settings.min_replicas:
            self._replicated(stage, f"register {message.session_id}")
        else:
            pipe = self.client.pipeline(transaction=True)
            stage(pipe)
            pipe.execute()

    @property
    def _session_retention_ms(self) -> int:
        return int(self.settings.policy()["session_retention_ms"])

    def session_owner(self, session_id: str) -> str | None:
        """The key of the peer that registered the session; None when it is not registered."""
        owner = self.client.hget(self.keys.session(session_id), "owner")
        return None if owner is None else _text(owner)

    def destinations(self, room: int, field: str = "session") -> list[str]:
        """One field (``session``, ``endpoint``) of every destination that sent init for
        ``room`` (empty when none or no record)."""
        count = int(self.client.hget(self.keys.room(room), "dst_count") or 0)
        if not count:
            return []
        return [_text(s) for s in self.client.hmget(self.keys.room(room),
                                                   [f"dst{k}.{field}" for k in range(count)]) if s]

    def mark_session_failed(self, session_id: str, reason: str) -> None:
        key = self.keys.session(session_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(key, "failed", reason)
        pipe.pexpire(key, self._session_retention_ms)  # bounded, even if it had expired
        pipe.execute()

    def dst_init(self, message: Init) -> Outcome:
        """The 6-frame init (``allocated_tokens`` None) allocates its blocks' worth of tokens
        and asks for everything in one round (``dst<k>.one_round``)."""
        if message.allocated_tokens is None:
            allocated = len(message.dst_indices) * self.settings.block_size
            return self._dst_change("dst_init", message, allocated, 1)
        return self._dst_change("dst_init", message, message.allocated_tokens, 0)

    def dst_resume(self, message: Resume) -> Outcome:
        return self._dst_change("dst_resume", message, message.sent_tokens, message.allocated_tokens)

    def _dst_change(self, script: str, message: Init | Resume, *tokens: int) -> Outcome:
        return Outcome.parse(self._run(
            script, message.room, message.session_id, f"{message.ip}:{message.status_port}",
            ",".join(map(str, message.dst_indices)), message.required_dst_info_num, *tokens,
            sessions=(message.session_id,)))

    # ---- encoder side
    def publish_source(self, room: int, total_tokens: int, src_indices) -> Outcome:
        """The blocks must be the room's own allocation (``alloc_blocks``)."""
        return Outcome.parse(self._run("publish_source", room, total_tokens,
                                       ",".join(map(str, src_indices))))

    def fail_room(self, room: int, reason: str, mode: str = "", failure_class: str = "aborted") -> Outcome:
        """mode '' (abort, bad message), 'expired' (a due deadline), 'encoder' (the encoder's
        abort: an unpublished allocation goes back too); see fail_room.lua. ``failure_class``:
        the kind of failure for metrics (``FAILURE_CLASSES``). ``notify``: Failed is due now
        (no write of the room is in flight)."""
        return Outcome.parse(self._run("fail_room", room, reason, mode, failure_class))

    def room(self, room: int) -> dict[str, str]:
        return _hash(self.client.hgetall(self.keys.room(room)))

    def status(self, room: int) -> Status | None:
        """The room's recorded status; None when there is no record (unknown or expired)."""
        value = self.client.hget(self.keys.room(room), "status")
        return Status(int(value)) if value is not None else None

    def failure(self, room: int) -> str | None:
        reason = self.client.hget(self.keys.room(room), "failure")
        return _text(reason) if reason else None

    # ---- workers
    def begin_round(self, work: Round, consumer: str, lease_ms: int) -> tuple[Take | None, str]:
        """Take the round: (Take, '') with a fencing epoch, or (None, why it is stale)."""
        return self.take_from(self._run("begin_round", work.room, work.round, work.entry_id, consumer,
                                        lease_ms, sessions=work.sessions))

    @staticmethod
    def take_from(reply) -> tuple[Take | None, str]:
        """begin_round's reply (also NotReplicated's, for a take no replica confirmed)."""
        verdict = _text(reply[0])
        if verdict == "stale":
            return None, _text(reply[1])
        return Take(_text(reply[1]), _hash(reply[2]), [_hash(s) for s in reply[3:]], verdict == "redo"), ""

    def keep_lease(self, work: Round, consumer: str, epoch: str, lease_ms: int) -> tuple[bool, int | str]:
        """Renew the holder's lease: (True, room status) or (False, why the round is not held)."""
        reply = self._run("keep_lease", work.room, work.entry_id, consumer, epoch, lease_ms)
        if _text(reply[0]) == "ok":
            return True, int(reply[1])
        return False, _text(reply[1])

    def commit_round(self, work: Round, consumer: str, epoch: str, sent_after: list[int],
                     read_next: int = 0, written: int = 0) -> tuple[str, Outcome | str]:
        """('ok', Outcome) committed; ('ended', Outcome) the room failed while we wrote (it is
        settled now, Failed due); ('stale', why) this holder no longer holds the round.
        ``read_next``: on the direct path without replica waits, send the consumer's next
        read (blocking that many ms) in the same write; ``read_rounds`` takes its reply.
        ``written``: the bytes the round wrote (counted with the commit)."""
        ahead = self._read_command(consumer, 1, read_next) if read_next else ()
        reply = self._run("commit_round", work.room, work.round, work.entry_id, consumer, epoch,
                          written, *sent_after, ahead=ahead)
        verdict = _text(reply[0])
        if verdict == "stale":
            return verdict, _text(reply[1])
        return verdict, Outcome.parse(reply[1:])

    def fail_held_round(self, work: Round, consumer: str, epoch: str, reason: str,
                        failure_class: str = "internal") -> Outcome:
        """The holder fails its own round (its write is over): lets go and acknowledges."""
        return Outcome.parse(self._run("fail_room", work.room, reason, "holder", failure_class, consumer,
                                       epoch, work.entry_id))

    def hand_back(self, consumer: str, room: int, entry_id: str = "") -> tuple[str, Outcome | None]:
        """A stopped worker's entry or hold goes back (the fencer): (verdict, Outcome) with
        verdict 'requeued', 'dead', 'ended', 'stale' or 'none'."""
        reply = self._run("hand_back", room, consumer, entry_id, self.settings.max_deliveries)
        verdict = _text(reply[0])
        return verdict, Outcome.parse(reply[1:]) if len(reply) > 1 else None

    def pending(self, consumer: str | None = None, min_idle_ms: int | None = None,
                count: int = 100) -> list[tuple[str, str]]:
        """(entry id, consumer) of pending entries: of one consumer, or idle at least ``min_idle_ms``."""
        found = self.client.xpending_range(self.keys.stream, GROUP, min="-", max="+", count=count,
                                           consumername=consumer, idle=min_idle_ms)
        return [(_text(p["message_id"]), _text(p["consumer"])) for p in found]

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

    def count(self, counter: str, amount: int = 1) -> None:
        """Bump a node counter (``stats`` hash: handed_back, writers_fenced, dead_letters, ...)."""
        self.client.hincrby(self.keys.stats, counter, amount)

    def count_confirmed(self, counter: str, amount: int = 1) -> None:
        """Bump a counter and return once ``min_replicas`` replicas have it: they then hold
        every earlier write of this primary too, so a status read here may be pushed. (A
        resend while waiting for a replica counts again: a counter, no harm.)"""
        if self.settings.min_replicas:
            self._replicated(lambda pipe: pipe.hincrby(self.keys.stats, counter, amount), f"count {counter}")
        else:
            self.count(counter, amount)

    def _add_counts(self, pipe, counts: dict[str, float]) -> None:
        for name, amount in counts.items():
            if isinstance(amount, float):
                if amount > 0:
                    pipe.hincrbyfloat(self.keys.stats, name, amount)
            elif amount:
                pipe.hincrby(self.keys.stats, name, amount)

    def add_counts(self, counts: dict[str, float]) -> None:
        """Add a process's counts (ints, and floats such as seconds) to the node's, in one
        round trip."""
        pipe = self.client.pipeline(transaction=False)
        self._add_counts(pipe, counts)
        if len(pipe):
            pipe.execute()

    def stats(self) -> dict[str, int]:
        return {k: int(v) for k, v in _hash(self.client.hgetall(self.keys.stats)).items()
                if v.lstrip("-").isdigit()}

    def rejected_messages(self) -> int:
        """Messages the ingress refused, for every reason (``ingress_rejected:<kind>``)."""
        return sum(v for k, v in self.stats().items() if k.startswith("ingress_rejected:"))

    def heartbeat(self, consumer: str, counters: dict[str, int] | None = None) -> list[Round]:
        """The worker is alive; adds ``counters`` to the node's stats in the same round trip.
        Returns the entries pending on it (between rounds there should be none: a read whose
        reply was lost and retried leaves one behind, which the worker then does itself) —
        unless a read sent ahead waits, whose entry would look left behind."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(self.keys.workers, consumer, int(time.time() * 1000))
        self._add_counts(pipe, counters or {})
        if self.read_ahead():
            pipe.execute()
            return []
        pipe.xreadgroup(GROUP, consumer, {self.keys.stream: "0"}, count=10)
        return self._rounds(pipe.execute()[-1])

    def mark_stopped(self, consumer: str, for_s: float) -> None:
        """The lane stopped cleanly: it pushed every status it committed (kept ``for_s``)."""
        self.client.set(self.keys.stopped(consumer), 1, px=int(for_s * 1000))

    def stopped_cleanly(self, consumers: list[str]) -> set[str]:
        """Those of ``consumers`` marked by ``mark_stopped``."""
        pipe = self.client.pipeline(transaction=False)
        for consumer in consumers:
            pipe.exists(self.keys.stopped(consumer))
        return {consumer for consumer, marked in zip(consumers, pipe.execute() if consumers else []) if marked}

    def live_workers(self, within_s: float = 5.0) -> list[str]:
        cutoff = (time.time() - within_s) * 1000
        return [name for name, seen in _hash(self.client.hgetall(self.keys.workers)).items()
                if int(seen) >= cutoff]

    def _group_consumers(self) -> list[dict]:
        try:
            return self.client.xinfo_consumers(self.keys.stream, GROUP)
        except redis.ResponseError:
            return []  # no stream or group yet

    def consumers(self) -> dict[str, int]:
        """Every consumer name in the node's group -> entries pending on it."""
        return {_text(c["name"]): int(c["pending"]) for c in self._group_consumers()}

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
                if self._scripts["forget_consumer"](keys=[self.keys.stream], args=[GROUP, name]):
                    removed.append(name)
        silent = [name for name, seen in beats.items() if gone(name, seen)]
        if silent:
            self.client.hdel(self.keys.workers, *silent)
        return removed

    # ---- the node record and its source block pool
    def record(self) -> dict[str, str]:
        """The node record: the encoder side reads the pool's shape and layout from it."""
        return _hash(self.client.hgetall(self.keys.record))

    def init_pool(self, num_blocks: int, description: dict[str, str]) -> bool:
        """Write the node record; make the free list unless a pool of the same shape exists.
        True if the free list was (re)made."""
        current = self.record()
        wanted = self._record_fields(num_blocks, description)
        if current and all(current.get(k) == wanted[k] for k in ("num_blocks", "shm", "size", "layout",
                                                                   "block_size") if k in wanted):
            self.client.hset(self.keys.record, mapping=wanted)
            return False
        self._write_pool(range(num_blocks), wanted)
        return True

    def rebuild_pool(self, num_blocks: int, description: dict[str, str]) -> int | None:
        """If Redis lost the node record and free list (a restart without AOF, a flush), make
        them again: every block free except those a surviving ``pool:owned`` list holds.
        Returns the free count when it rebuilt, None when nothing was lost."""
        if self.client.exists(self.keys.record, self.keys.pool_free):
            return None
        held = set()
        for key in self.node_keys(self.keys.pool_owned("*")):
            held.update(int(b) for b in self.client.lrange(key, 0, -1))
        free = [b for b in range(num_blocks) if b not in held]
        self._write_pool(free, self._record_fields(num_blocks, description))
        return len(free)

    def _record_fields(self, num_blocks: int, description: dict[str, str]) -> dict[str, str]:
        """The node record: the pool's shape, ``description`` and the node's policy, which
        every script reads from here (the Lua prelude)."""
        return {"num_blocks": str(num_blocks), **self.settings.policy(), **{k: str(v) for k, v in description.items()}}

    def _write_pool(self, free_blocks, record: dict[str, str]) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self.keys.pool_free)
        free_blocks = list(free_blocks)
        for start in range(0, len(free_blocks), 10_000):
            pipe.zadd(self.keys.pool_free, {str(b): b for b in free_blocks[start:start + 10_000]})
        pipe.hset(self.keys.record, mapping=record)
        pipe.execute()

    def alloc_blocks(self, room: int, count: int) -> Allocation | None:
        """The lowest ``count`` free blocks, leased to ``room`` until published; None if too
        few. A retry (or a second call for the room) gets the same blocks."""
        reply = self._run("pool_alloc", room, count)
        if reply is None:
            return None
        return Allocation([int(b) for b in reply[1:]], int(reply[0]))

    def release_blocks(self, room: int) -> int:
        """Give an ended room's blocks back now; raises while it is live or being written."""
        return int(self._run("release", room))

    def expire_allocations(self, now_ms: int) -> tuple[int, list[tuple[int, Outcome]]]:
        """Return the blocks of allocations neither published nor renewed before their lease
        ran out (their encoder stopped): (blocks released, [(room, Outcome)] of the live
        rooms that failed for it, whose language side is to be told)."""
        released, failed = 0, []
        for holder in self.due(self.keys.pool_leases, now_ms):
            reply = self._run("pool_expire", holder)
            released += int(reply[0])
            if len(reply) > 1:
                failed.append((int(holder), Outcome.parse(reply[1:])))
        return released, failed

    # ---- allocations an encoder scheduler makes per request (xferd.sglang_encoder)
    def alloc_for_request(self, request: str, count: int, attempt: int, lease_ms: int,
                          agree: bool) -> tuple[list[int] | None, int]:
        """(blocks, None) or (None, free blocks): attempt ``attempt`` of every TP rank gets
        one answer (``request_alloc.lua``)."""
        reply = self._run("request_alloc", f"req:{request}", count, attempt, lease_ms, int(agree),
                          extra=(self.keys.request(request),))
        if int(reply[0]) == 1:
            return [int(b) for b in reply[1:]], 0
        return None, int(reply[1])

    def bind_request(self, request: str, room: int, lease_ms: int) -> None:
        """The request's blocks become the room's allocation, still leased until published."""
        self._run("request_bind", room, f"req:{request}", lease_ms,
                  extra=(self.keys.request(request), self.keys.pool_owned(f"req:{request}")))

    def release_request(self, request: str) -> int:
        """Give back a request's blocks that never became a room's."""
        return int(self._run("release", f"req:{request}"))

    def keep_allocations(self, holders: list[str], lease_ms: int) -> list[str]:
        """Renew unpublished allocations; returns the holders whose lease is gone."""
        if not holders:
            return []
        return [_text(h) for h in self._scripts["keep_allocations"](keys=[self.keys.pool_leases],
                                                                      args=[lease_ms, *holders])]

    def free_blocks(self) -> int:
        return int(self.client.zcard(self.keys.pool_free))

    def held_blocks(self, room: int) -> int:
        return int(self.client.llen(self.keys.pool_owned(room)))

    # ---- janitor
    def now_ms(self) -> int:
        """Redis' clock: the scripts stamp deadlines with it, so compare against it too."""
        seconds, micros = self.primary.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def due(self, key: str, now_ms: int, limit: int = 100) -> list[int | str]:
        """Members whose score passed: rooms as ints, request allocations ('req:<rid>') as str."""
        members = (_text(m) for m in self.client.zrangebyscore(key, "-inf", now_ms, start=0, num=limit))
        return [int(m) if m.lstrip("-").isdigit() else m for m in members]
