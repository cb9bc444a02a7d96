"""The Redis side of xferd: records, queues and the Lua scripts that change them.

Every state transition is one Lua script (``xferd/lua``), run by EVALSHA through
``register_script``; this module only names keys and converts replies.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import resources

import redis

from .keys import GROUP, Keys
from .settings import Settings
from .status import Status
from .wire import Init, Register, Resume

SCRIPTS = ("publish_source", "dst_init", "dst_resume", "begin_round", "keep_lease", "commit_round",
           "fail_room", "requeue", "pool_alloc", "pool_release", "pool_expire")


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _hash(reply) -> dict[str, str]:
    """A hash as str -> str, from HGETALL's dict or a script's flat list."""
    if isinstance(reply, dict):
        return {_text(k): _text(v) for k, v in reply.items()}
    items = [_text(v) for v in reply]
    return dict(zip(items[0::2], items[1::2]))


@dataclass(frozen=True)
class Outcome:
    """What a state transition did: the room's status, a note, whom to notify, and whether
    the room ended with no write in flight, so its source blocks may go back now."""

    status: int
    note: str
    endpoints: tuple[str, ...] = ()
    release_now: bool = False

    @classmethod
    def parse(cls, reply) -> "Outcome":
        """``{status, note}`` or ``{status, note, release_now, endpoints...}``."""
        return cls(int(reply[0]), _text(reply[1]), tuple(_text(e) for e in reply[3:]),
                   len(reply) > 2 and int(reply[2]) == 1)

    @property
    def failed(self) -> bool:
        return self.status == Status.Failed


@dataclass(frozen=True)
class Allocation:
    """Source blocks taken for a room, leased until ``expires_at`` (Redis ms) unless published."""

    blocks: list[int]
    expires_at: int


@dataclass(frozen=True)
class Round:
    """A work entry read from a shard stream."""

    shard: int
    entry_id: str
    room: int
    round: int
    sessions: tuple[str, ...]


def _load(name: str) -> str:
    folder = resources.files("xferd") / "lua"
    return (folder / "_prelude.lua").read_text() + "\n" + (folder / f"{name}.lua").read_text()


class Store:
    def __init__(self, client: redis.Redis, settings: Settings):
        self.client = client
        self.settings = settings
        self.keys: Keys = settings.keys
        self.policy = settings.policy()
        self._scripts = {name: client.register_script(_load(name)) for name in SCRIPTS}
        # every read of the worker's loop names all shard streams: built once
        self._shard_of_stream = {self.keys.stream(shard): shard for shard in range(self.keys.shards)}
        self._new_entries = dict.fromkeys(self._shard_of_stream, ">")

    def _run(self, name: str, keys: list[str], room: int | str, *args):
        return self._scripts[name](keys=keys, args=[self.policy, str(room), *args])

    # ---- shard plumbing
    def _room_keys(self, room: int) -> tuple[str, str, str, str, int]:
        shard = self.keys.shard_of(room)
        k = self.keys
        return k.room(room), k.stream(shard), k.timeouts(shard), k.release(shard), shard

    def _create_group(self, shard: int, start: str) -> bool:
        try:
            self.client.xgroup_create(self.keys.stream(shard), GROUP, id=start, mkstream=True)
            return True
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
            return False

    def load_scripts(self) -> None:
        """Load every script into Redis's cache in one round trip, at start and after a Redis
        restart, so the hot path never pays a NOSCRIPT miss (EVALSHA still reloads on one)."""
        pipe = self.client.pipeline(transaction=False)
        for script in self._scripts.values():
            pipe.script_load(script.script)
        pipe.execute()

    def ensure_groups(self) -> None:
        """Create each shard's consumer group at first start (from the stream's beginning)."""
        for shard in range(self.keys.shards):
            self._create_group(shard, "0")

    def recover_groups(self) -> int:
        """Recreate consumer groups that were lost (NOGROUP): at the stream's end, so old
        entries are not replayed as new, then queue again the pending round of every live
        room of that shard (its entry went with the group). Returns rounds queued again."""
        requeued = 0
        for shard in range(self.keys.shards):
            if not self._create_group(shard, "$"):
                continue  # the group exists: another process recovered it, or it was never lost
            keys = self.keys
            for member in self.client.zrange(keys.timeouts(shard), 0, -1):
                room = int(_text(member))
                requeued += int(self._run("requeue", [keys.room(room), keys.stream(shard),
                                                      keys.timeouts(shard)], room))
        return requeued

    # ---- language side
    def register_session(self, message: Register, owner: str = "") -> None:
        """Record a session in every shard (scripts read it in their own slot); clears failure.
        ``owner``: the CurveZMQ key of the peer that registered it ('' without CURVE)."""
        fields = {
            "owner": owner,
            "session": message.session_id,
            "endpoint": f"{message.ip}:{message.status_port}",
            "ptrs": ",".join(map(str, message.ptrs)),
            "lens": ",".join(map(str, message.lens)) if message.lens else "",
            "registered_at": int(time.time() * 1000),
        }
        pipe = self.client.pipeline(transaction=False)
        for shard in range(self.keys.shards):
            key = self.keys.session(shard, message.session_id)
            pipe.hdel(key, "failed")
            pipe.hset(key, mapping=fields)
        pipe.execute()

    def session_owner(self, session_id: str) -> str | None:
        """The key of the peer that registered the session; None when it is not registered."""
        owner = self.client.hget(self.keys.session(0, session_id), "owner")
        return None if owner is None else _text(owner)

    def destinations(self, room: int) -> list[str]:
        """The sessions that sent init for ``room`` (empty when none or no record)."""
        count = int(self.client.hget(self.keys.room(room), "dst_count") or 0)
        if not count:
            return []
        return [_text(s) for s in self.client.hmget(self.keys.room(room),
                                                   [f"dst{k}.session" for k in range(count)]) if s]

    def mark_session_failed(self, session_id: str, reason: str) -> None:
        pipe = self.client.pipeline(transaction=False)
        for shard in range(self.keys.shards):
            key = self.keys.session(shard, session_id)
            pipe.hset(key, "failed", reason)
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
        room_key, stream, timeouts, release, shard = self._room_keys(message.room)
        keys = [room_key, self.keys.session(shard, message.session_id), stream, timeouts, release]
        return Outcome.parse(self._run(
            script, keys, message.room, message.session_id, f"{message.ip}:{message.status_port}",
            ",".join(map(str, message.dst_indices)), message.required_dst_info_num, *tokens))

    # ---- encoder side
    def publish_source(self, room: int, total_tokens: int, src_indices,
                       expires_at: int | None = None) -> Outcome:
        """``expires_at``: the block allocation's lease (``Allocation``); past it the room fails."""
        room_key, stream, timeouts, release, _ = self._room_keys(room)
        return Outcome.parse(self._run("publish_source", [room_key, stream, timeouts, release], room,
                                       total_tokens, ",".join(map(str, src_indices)),
                                       "" if expires_at is None else expires_at))

    def fail_room(self, room: int, reason: str, entry_id: str = "", expired: bool = False,
                  consumer: str = "") -> Outcome:
        room_key, stream, timeouts, release, _ = self._room_keys(room)
        return Outcome.parse(self._run("fail_room", [room_key, timeouts, release, stream], room,
                                       reason, entry_id, GROUP, "expired" if expired else "", consumer))

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
    def read_rounds(self, consumer: str, count: int, block_ms: int, release: tuple[int, ...] = ()) -> list[Round]:
        """Take up to ``count`` new round entries, waiting up to ``block_ms``. ``release``:
        ended rooms whose blocks go back in the same round trip (a pipeline ahead of the read).
        Their release-queue entries stay: the janitor drops them (a no-op release) once due,
        so a worker killed while this read blocks can never lose a release."""
        streams = self._new_entries
        if not release:
            reply = self.client.xreadgroup(GROUP, consumer, streams, count=count, block=block_ms)
            return self._rounds(reply or [])
        # EVALSHA by hand: a Script in a pipeline costs an extra SCRIPT EXISTS round trip
        sha = self._scripts["pool_release"].sha
        pipe = self.client.pipeline(transaction=False)
        for room in release:
            pipe.evalsha(sha, 3, *self._pool_keys(room), self.policy, str(room))
        pipe.xreadgroup(GROUP, consumer, streams, count=count, block=block_ms)
        replies = pipe.execute(raise_on_error=False)
        for room, reply in zip(release, replies):
            if isinstance(reply, redis.exceptions.NoScriptError):  # not loaded yet: load and redo
                self.release_blocks(room)
            elif isinstance(reply, Exception):
                raise reply
        if isinstance(replies[-1], Exception):
            raise replies[-1]
        return self._rounds(replies[-1] or [])

    def _rounds(self, reply) -> list[Round]:
        out = []
        for stream, entries in reply:
            shard = self._shard_of_stream[_text(stream)]
            for entry_id, fields in entries:
                if fields is None:  # deleted while pending
                    continue
                out.append(self.round_from(shard, _text(entry_id), fields))
        return out

    def round_from(self, shard: int, entry_id: str, fields) -> Round:
        f = {_text(k): _text(v) for k, v in fields.items()}
        sessions = tuple(s for s in f.get("sessions", "").split(",") if s)
        return Round(shard, entry_id, int(f["room"]), int(f["round"]), sessions)

    def count(self, counter: str, amount: int = 1) -> None:
        """Bump a node counter (``stats`` hash: reclaimed, redone_rounds, dead_letters, ...)."""
        self.client.hincrby(self.keys.stats, counter, amount)

    def stats(self) -> dict[str, int]:
        return {k: int(v) for k, v in _hash(self.client.hgetall(self.keys.stats)).items()
                if v.lstrip("-").isdigit()}

    def heartbeat(self, consumer: str, counters: dict[str, int] | None = None) -> None:
        """The worker is alive; adds ``counters`` to the node's stats in the same round trip."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(self.keys.workers, consumer, int(time.time() * 1000))
        for name, amount in (counters or {}).items():
            if amount:
                pipe.hincrby(self.keys.stats, name, amount)
        pipe.execute()

    def live_workers(self, within_s: float = 5.0) -> list[str]:
        cutoff = (time.time() - within_s) * 1000
        return [name for name, seen in _hash(self.client.hgetall(self.keys.workers)).items()
                if int(seen) >= cutoff]

    def _group_consumers(self):
        """(stream, consumer info) for every consumer of every shard's group."""
        for shard in range(self.keys.shards):
            stream = self.keys.stream(shard)
            try:
                found = self.client.xinfo_consumers(stream, GROUP)
            except redis.ResponseError:
                continue  # no stream or group yet
            for consumer in found:
                yield stream, consumer

    def consumers(self) -> dict[str, int]:
        """Every consumer name in the node's groups -> entries pending on it."""
        names: dict[str, int] = {}
        for _, consumer in self._group_consumers():
            name = _text(consumer["name"])
            names[name] = names.get(name, 0) + int(consumer["pending"])
        return names

    def remove_dead_consumers(self, silent_ms: int) -> list[str]:
        """Forget workers silent for ``silent_ms``: their heartbeat, and their consumer in each
        group once nothing is pending on it (reclaimed first: DELCONSUMER drops pending)."""
        cutoff = int(time.time() * 1000) - silent_ms
        beats = {name: int(seen) for name, seen in _hash(self.client.hgetall(self.keys.workers)).items()}
        removed = []
        for stream, consumer in self._group_consumers():
            name = _text(consumer["name"])
            if beats.get(name, 0) >= cutoff or consumer["pending"] or consumer["idle"] < silent_ms:
                continue
            self.client.xgroup_delconsumer(stream, GROUP, name)
            removed.append(name)
        gone = [name for name, seen in beats.items() if seen < cutoff]
        if gone:
            self.client.hdel(self.keys.workers, *gone)
        return removed

    def reclaim(self, consumer: str, min_idle_ms: int, limit: int = 1, max_pages: int = 4) -> list[Round]:
        """Take over up to ``limit`` entries idle longer than the lease (a dead worker's).

        Claim only what will be processed now: a claimed entry counts a delivery, and one
        that waits behind others would be charged again if this worker died meanwhile.
        Bounded: fakeredis' XAUTOCLAIM cursor differs from Redis', never loop on it alone."""
        out: list[Round] = []
        for shard in range(self.keys.shards):
            cursor = "0-0"
            for _ in range(max_pages):
                if len(out) >= limit:
                    return out
                reply = self.client.xautoclaim(self.keys.stream(shard), GROUP, consumer, min_idle_ms,
                                               start_id=cursor, count=limit - len(out))
                cursor, entries = _text(reply[0]), reply[1]
                for entry_id, fields in entries:
                    if fields:  # None: the entry was trimmed while pending
                        out.append(self.round_from(shard, _text(entry_id), fields))
                if cursor == "0-0" or not entries:
                    break
        return out

    def begin_round(self, work: Round, consumer: str, lease_ms: int):
        """Take the write lease: ((room, sessions), 'ok' | 'redo') or (None, why stale)."""
        keys = [self.keys.room(work.room), self.keys.stream(work.shard)]
        keys += [self.keys.session(work.shard, s) for s in work.sessions]
        reply = self._run("begin_round", keys, work.room, work.round, work.entry_id, GROUP,
                          consumer, lease_ms)
        verdict = _text(reply[0])
        if verdict == "stale":
            return None, _text(reply[1])
        return (_hash(reply[1]), [_hash(s) for s in reply[2:]]), verdict

    def keep_lease(self, work: Round, consumer: str, write_lease_ms: int) -> tuple[str, str]:
        """Renew this worker's claim on a round it is still writing: ('ok', ''), or
        ('ended' | 'taken', why the claim is lost)."""
        reply = self._run("keep_lease", [self.keys.room(work.room), self.keys.stream(work.shard)],
                          work.room, work.round, work.entry_id, GROUP, consumer, write_lease_ms)
        return _text(reply[0]), _text(reply[1]) if len(reply) > 1 else ""

    def commit_round(self, work: Round, consumer: str, sent_after: list[int]) -> Outcome | None:
        room_key, stream, timeouts, release, _ = self._room_keys(work.room)
        reply = self._run("commit_round", [room_key, stream, timeouts, release], work.room,
                          work.round, work.entry_id, GROUP, consumer, *sent_after)
        if _text(reply[0]) != "ok":
            return None
        return Outcome(int(reply[1]), "committed", tuple(_text(e) for e in reply[3:]), int(reply[2]) == 1)

    # ---- source block pool
    def init_pool(self, num_blocks: int, description: dict[str, str]) -> bool:
        """Create the node's free list unless a pool of the same shape exists; True if created."""
        current = _hash(self.client.hgetall(self.keys.pool))
        wanted = {"num_blocks": str(num_blocks), **{k: str(v) for k, v in description.items()}}
        if current and all(current.get(k) == v for k, v in wanted.items()):
            return False
        self._write_pool(range(num_blocks), wanted)
        return True

    def rebuild_pool(self, num_blocks: int, description: dict[str, str]) -> int | None:
        """If Redis lost the pool record and free list (a restart without AOF, a flush), make
        them again: every block free except those a surviving ``pool:owned`` list holds.
        Returns the free count when it rebuilt, None when nothing was lost."""
        if self.client.exists(self.keys.pool, self.keys.pool_free):
            return None
        held = set()
        for key in self.client.scan_iter(self.keys.pool_owned("*"), count=1000):
            held.update(int(b) for b in self.client.lrange(key, 0, -1))
        free = [b for b in range(num_blocks) if b not in held]
        self._write_pool(free, {"num_blocks": str(num_blocks), **description})
        return len(free)

    def _write_pool(self, free_blocks, record: dict[str, str]) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self.keys.pool_free, self.keys.pool)
        free_blocks = list(free_blocks)
        for start in range(0, len(free_blocks), 10_000):
            pipe.zadd(self.keys.pool_free, {str(b): b for b in free_blocks[start:start + 10_000]})
        pipe.hset(self.keys.pool, mapping=record)
        pipe.execute()

    def pool_info(self) -> dict[str, str]:
        return _hash(self.client.hgetall(self.keys.pool))

    def _pool_keys(self, room: int) -> list[str]:
        return [self.keys.pool_free, self.keys.pool_owned(room), self.keys.pool_leases]

    def alloc_blocks(self, room: int, count: int) -> Allocation | None:
        """The lowest ``count`` free blocks, leased to ``room`` until published; None if too few."""
        reply = self._run("pool_alloc", self._pool_keys(room), room, count)
        if reply is None:
            return None
        return Allocation([int(b) for b in reply[1:]], int(reply[0]))

    def release_blocks(self, room: int) -> int:
        return int(self._run("pool_release", self._pool_keys(room), room))

    def expire_allocations(self, now_ms: int) -> int:
        """Return the blocks of allocations never published before their lease ran out (the
        encoder died between allocating and publishing); published ones are forgotten."""
        released = 0
        for room in self.due(self.keys.pool_leases, now_ms):
            published = self.client.hexists(self.keys.room(room), "total_tokens")
            released += int(self._run("pool_expire", self._pool_keys(room), room, int(published)))
        return released

    def free_blocks(self) -> int:
        return int(self.client.zcard(self.keys.pool_free))

    # ---- janitor
    def now_ms(self) -> int:
        """Redis' clock: the scripts stamp deadlines with it, so compare against it too."""
        seconds, micros = self.client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def due(self, key: str, now_ms: int, limit: int = 100) -> list[int]:
        return [int(_text(m)) for m in self.client.zrangebyscore(key, "-inf", now_ms, start=0, num=limit)]

    def release_room(self, room: int) -> int:
        """Return one ended room's blocks and drop it from the release queue; idempotent.
        Only once its last write is over: ``Outcome.release_now`` or a due queue entry."""
        released = self.release_blocks(room)
        self.client.zrem(self.keys.release(self.keys.shard_of(room)), str(room))
        return released

    def release_due(self, shard: int, now_ms: int) -> int:
        """Return the blocks of every ended room whose last write is over (the janitor)."""
        return sum(self.release_room(room) for room in self.due(self.keys.release(shard), now_ms))
