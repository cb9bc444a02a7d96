"""Store: the one door through which every xferd process reads and changes a node's state.

Every state transition is one Lua script (``lua/``, loaded by ``scripts``), run by EVALSHA
with every key of the node under one hash tag and only the keys its header declares. The
Store builds those keys, turns the scripts' one reply envelope into plain values
(``records``), waits for replicas where the node asks for it, and retries Redis trouble
under the process's ``Patience`` (``retry.door``). Its methods live by concept: the work
queue (``work.py``), rooms (``rooms.py``), the block pool (``blocks.py``); this module has
the machinery, counters, the node record and the reads of the operator's views.
"""
from __future__ import annotations

import copy
import os
import time
from dataclasses import replace

import redis

from xferd.settings import Settings
from xferd.state import node_record, scripts
from xferd.state.blocks import BlockPool
from xferd.state.connections import DirectCalls
from xferd.state.keys import GROUP, Keys
from xferd.state.records import Allocation, Outcome, Reply, Round, Take, _hash, _text  # noqa: F401 - callers import them from here
from xferd.state.replication import NotReplicated, run_replicated
from xferd.state.retry import Patience, door
from xferd.state.room import FAILURE_CLASSES  # noqa: F401 - callers import it from here
from xferd.state.rooms import Rooms
from xferd.state.topology import is_cluster, primary, redis_warnings, refresh, where
from xferd.state.work import WorkQueue

# a lease renewal acted on by nobody but the fencer, where losing one is safe (a live
# worker fenced); every other transition waits for min_replicas
UNREPLICATED = ("keep_lease", "keep_allocations", "forget_consumer")


class Store(Rooms, WorkQueue, BlockPool):
    def __init__(self, client: redis.Redis, settings: Settings, direct: bool = False,
                 patience: Patience | None = None):
        """``direct``: run the transition scripts through ``DirectCalls`` (the worker's and
        the ingress's hot path). ``patience``: how every method rides out Redis trouble (None:
        one try, errors raised)."""
        self.client = client
        self.settings = settings
        self.patience = patience
        self.keys: Keys = settings.keys
        self._cluster = is_cluster(client)
        self._scripts, self._calls = {}, {}
        for name in scripts.names():
            loaded = scripts.load(name)
            self._scripts[name] = client.register_script(loaded.source)
            # what a call needs: the script, its KEYS, whether its ARGV start with the room
            self._calls[name] = (self._scripts[name], self.keys.for_script(loaded.keys), loaded.argv[0] == "room")
        self._new_entries = {self.keys.stream: ">"}
        self._direct = DirectCalls(lambda: self.primary, self._count_trip, self._lost_primary) if direct else None

    def with_patience(self, **changes) -> "Store":
        """This Store (same connection and scripts) under other patience: ``give_up_after``,
        ``stop``, ``also`` changed, or ``None`` for one try (``once``)."""
        other = copy.copy(self)
        other.patience = replace(self.patience or Patience(), **changes)
        return other

    def once(self) -> "Store":
        """This Store with no retries: a caller that has its own answer to Redis trouble."""
        other = copy.copy(self)
        other.patience = None
        return other

    @property
    def round_trips(self) -> int:
        """Round trips this process's client made (a counting client; 0 otherwise)."""
        return getattr(self.client, "round_trips", 0)

    def _run(self, name: str, room: int | str = "", *args, sessions: tuple[str, ...] = (), request: str = "",
             ahead: tuple = ()) -> Reply:
        """Run a transition script; its envelope parsed (``scripts.Reply``; a refusal raises
        ``scripts.Refused``). With min_replicas, only confirmed by that many replicas
        (``replication.run_replicated``; NotReplicated if not in time). ``ahead``: a command
        sent in the same write on the direct path (``DirectCalls.script``), else not sent."""
        return Reply.parse(self._run_raw(name, room, *args, sessions=sessions, request=request, ahead=ahead))

    def _run_raw(self, name: str, room: int | str, *args, sessions: tuple[str, ...] = (), request: str = "",
                 ahead: tuple = ()):
        script, keys, args = self._call(name, room, *args, sessions=sessions, request=request)
        if not self.settings.min_replicas or name in UNREPLICATED:
            if self._direct is None:
                return script(keys=keys, args=args)
            return self._direct.script(script, keys, args, ahead)
        return self._replicated(lambda pipe: pipe.evalsha(script.sha, len(keys), *keys, *args),
                                f"{name} of room {room}", load=lambda connection: connection.script_load(script.script))

    def _call(self, name: str, room: int | str, *args, sessions: tuple[str, ...] = (), request: str = ""):
        """(script, KEYS, ARGV) of one call of the script ``name``."""
        script, keys_of, room_first = self._calls[name]
        keys = keys_of(room, sessions, request)
        return script, keys, [str(a) for a in (room, *args)] if room_first else [str(a) for a in args]

    @property
    def batches(self) -> bool:
        """Whether several transitions may go in one write (``commit_and_take``): the direct
        path, with no replica wait to confirm each."""
        return self._direct is not None and not self.settings.min_replicas

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

    @door("load scripts")
    def load_scripts(self) -> None:
        """Load every script into Redis's cache (on every primary of a cluster), at start and
        after a restart or failover, so the hot path never pays a NOSCRIPT miss (EVALSHA still
        reloads on one: a promoted replica's cache starts empty)."""
        if self._cluster:
            for script in self._scripts.values():
                self.client.script_load(script.script)  # sent to every primary
            return
        pipe = self.client.pipeline(transaction=False)
        for script in self._scripts.values():
            pipe.script_load(script.script)
        pipe.execute()

    @property
    def primary(self) -> redis.Redis:
        """A plain client on the server that holds the node's keys now (a cluster's node that
        owns the node's slot; the client itself otherwise, asked on every call)."""
        return primary(self.client, self.keys.record) if self._cluster else self.client

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

    def delete_keys(self, keys: list) -> None:
        """Remove keys of this node (``xferd cleanup``, of a node that is down)."""
        for start in range(0, len(keys), 500):
            self.primary.delete(*keys[start:start + 500])

    @door("find the node's primary")
    def where(self) -> str:
        """Which Redis server holds the node's keys, for a log line."""
        return where(self.client, self.keys.record)

    @door("check redis")
    def redis_warnings(self) -> list[str]:
        """What the operator should know of the Redis holding the node (persistence,
        eviction, replicas): ``topology.redis_warnings``."""
        return redis_warnings(self.primary, self.settings.min_replicas)

    @door("check schema")
    def check_schema(self) -> None:
        node_record.check_schema(self)

    @door("claim node")
    def claim(self, me, take_over: bool = False) -> None:
        """Record ``me`` as the node's serve, or raise NodeRefused naming who holds it."""
        node_record.claim(self, me, take_over)

    # ---- fault injection (node/faults.py): markers under the stats key
    def has_marker(self, name: str) -> bool:
        return bool(self.client.exists(f"{self.keys.stats}:fault:{name}"))

    def set_marker_once(self, name: str) -> bool:
        """True for the one caller that sets the marker first."""
        return bool(self.client.set(f"{self.keys.stats}:fault:{name}", os.getpid(), nx=True))

    @door("count")
    def count(self, counter: str, amount: int = 1) -> None:
        """Bump a node counter (``stats`` hash: handed_back, writers_fenced, dead_letters, ...)."""
        self.client.hincrby(self.keys.stats, counter, amount)

    @door("count confirmed")
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

    @door("add counts")
    def add_counts(self, counts: dict[str, float]) -> None:
        """Add a process's counts (ints, and floats such as seconds) to the node's, in one
        round trip."""
        pipe = self.client.pipeline(transaction=False)
        self._add_counts(pipe, counts)
        if len(pipe):
            pipe.execute()

    def _numbers(self) -> dict[str, int | float]:
        """The numeric fields of the stats hash: counters as ints (exact however large),
        HINCRBYFLOAT sums (seconds, the step timings ``*_ms:*``) as floats."""
        out: dict[str, int | float] = {}
        for name, value in _hash(self.client.hgetall(self.keys.stats)).items():
            for kind in (int, float):
                try:
                    out[name] = kind(value)
                    break
                except ValueError:
                    pass
        return out

    @door("stats")
    def stats(self) -> dict[str, int]:
        """The node's counters."""
        return {k: v for k, v in self._numbers().items() if isinstance(v, int)}

    @door("measures")
    def measures(self) -> dict[str, float]:
        """Every numeric field of the stats hash, the step timings included."""
        return {k: float(v) for k, v in self._numbers().items()}

    @door("rejected messages")
    def rejected_messages(self) -> int:
        """Messages the ingress refused, for every reason (``ingress_rejected:<kind>``)."""
        return sum(v for k, v in self.stats().items() if k.startswith("ingress_rejected:"))

    @door("record")
    def record(self) -> dict[str, str]:
        """The node record: the encoder side reads the pool's shape and layout from it."""
        return _hash(self.client.hgetall(self.keys.record))

    @door("now ms")
    def now_ms(self) -> int:
        """Redis' clock: the scripts stamp deadlines with it, so compare against it too."""
        seconds, micros = self.primary.time()
        return int(seconds) * 1000 + int(micros) // 1000

    @door("due rooms")
    def due_rooms(self, now_ms: int, limit: int = 100) -> list[int]:
        """Rooms whose deadline passed (``timeouts``)."""
        return [m for m in self.due(self.keys.timeouts, now_ms, limit) if isinstance(m, int)]

    @door("due")
    def due(self, key: str, now_ms: int, limit: int = 100) -> list[int | str]:
        """Members whose score passed: rooms as ints, request allocations ('req:<rid>') as str."""
        members = (_text(m) for m in self.client.zrangebyscore(key, "-inf", now_ms, start=0, num=limit))
        return [int(m) if m.lstrip("-").isdigit() else m for m in members]

    # ---- what the operator's views read (ops/nodeview.py)
    def node_snapshot(self, recent_ends: int) -> list:
        """In one pipelined read, raw: Redis' TIME, the node record, the workers' heartbeats,
        the group's info, its pending summary, the dead-letter count, the free blocks, the
        last ``recent_ends`` ended rooms and the stats hash (an error in place of a reply
        that failed: a stream not made yet)."""
        k = self.keys
        pipe = self.primary.pipeline(transaction=False)
        pipe.time()
        pipe.hgetall(k.record)
        pipe.hgetall(k.workers)
        pipe.xinfo_groups(k.stream)
        pipe.xpending(k.stream, GROUP)
        pipe.xlen(k.dead)
        pipe.zcard(k.pool_free)
        pipe.xrevrange(k.ended, count=recent_ends)
        pipe.hgetall(k.stats)
        return pipe.execute(raise_on_error=False)

    def room_rows(self, fields: tuple[str, ...], limit: int) -> tuple[list[tuple[str, list]], bool]:
        """(room id, its ``fields``) of every room record of the node, up to ``limit``
        (scanned on the primary, read in pipelined batches), and whether that was all."""
        prefix = self.keys.room("")
        names, complete = [], True
        for key in self.node_keys(f"{prefix}*"):
            names.append(key)
            if len(names) >= limit:
                complete = False
                break
        rows = []
        for start in range(0, len(names), 1000):
            pipe = self.primary.pipeline(transaction=False)
            for key in names[start:start + 1000]:
                pipe.hmget(key, fields)
            for key, values in zip(names[start:start + 1000], pipe.execute()):
                if values[0] is not None:  # else expired between the scan and the read
                    rows.append((_text(key)[len(prefix):], [_text(v) if v is not None else None for v in values]))
        return rows, complete
