"""Every Redis key xferd uses, in one place (docs/protocol.md).

Every key of a node carries the node's hash tag ``{node}``, so that every Lua script of
the node (a round's commit together with the release of its source blocks, a publish
together with its block allocation) runs atomically in one Redis Cluster slot.

  {prefix}:{node}:node                 hash   the node record: schema, pool shape, layout, policy (the
                                              timeouts, retention and lease every script applies), who
                                              serves it
  {prefix}:{node}:room:{room}          hash   one room: status, tokens, blocks, dst<k>.*, epoch, holder
  {prefix}:{node}:session:{sid}        hash   a registered language session (expires session_retention
                                              after its last register, init or resume)
  {prefix}:{node}:rounds               stream round work, consumer group "workers"
  {prefix}:{node}:dead                 stream rounds handed back past the delivery limit
  {prefix}:{node}:ended                stream the last ~1000 rooms that ended: outcome, failure class, reason
  {prefix}:{node}:statuses             stream the last ~10000 room status changes (room, status): encoders
                                              block on it to see their rooms' statuses
  {prefix}:{node}:timeouts             zset   room -> deadline (ms)
  {prefix}:{node}:writing              zset   room -> when its holder's lease runs out (ms)
  {prefix}:{node}:pool:free            zset   free source blocks (score = index: lowest first)
  {prefix}:{node}:pool:owned:{room}    list   source blocks held by a room
  {prefix}:{node}:pool:leases          zset   room (or req:<rid>) -> when its unpublished allocation expires
  {prefix}:{node}:request:{rid}        hash   an encoder scheduler's allocation for request rid: blocks,
                                              attempt, room once bound (expires after the retention)
  {prefix}:{node}:stats                hash   counters (bad messages, writers fenced, rooms ended by
                                              outcome and class, ...) and histogram buckets
  {prefix}:{node}:workers              hash   worker consumer name -> last heartbeat (ms)
  {prefix}:{node}:stopped:{consumer}   string a worker lane that stopped cleanly, every status pushed
                                              (expires: lostpush.py needs it for two leases)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

GROUP = "workers"
KEPT = {"statuses": 10_000, "ended": 1_000, "dead": 10_000}  # the capped streams' bounds (MAXLEN ~)
SCHEMA = 2  # the key layout and record fields above; `serve` refuses a node record of another


@dataclass(frozen=True)
class Keys:
    prefix: str
    node: str

    def _key(self, suffix: str) -> str:
        return f"{self.prefix}:{{{self.node}}}:{suffix}"

    @property
    def record(self) -> str:
        return self._key("node")

    @property
    def legacy_record(self) -> str:
        """Schema 1 (per-shard hash tags) kept its node record here."""
        return self._key("pool")

    def room(self, room: int) -> str:
        return self._key(f"room:{room}")

    def session(self, session_id: str) -> str:
        return self._key(f"session:{session_id}")

    @property
    def stream(self) -> str:
        return self._key("rounds")

    @property
    def dead(self) -> str:
        return self._key("dead")

    @property
    def ended(self) -> str:
        return self._key("ended")

    @property
    def statuses(self) -> str:
        return self._key("statuses")

    @property
    def timeouts(self) -> str:
        return self._key("timeouts")

    @property
    def writing(self) -> str:
        return self._key("writing")

    @property
    def pool_free(self) -> str:
        return self._key("pool:free")

    @property
    def pool_leases(self) -> str:
        return self._key("pool:leases")

    def pool_owned(self, room: int | str) -> str:
        return self._key(f"pool:owned:{room}")

    def request(self, request_id: str) -> str:
        return self._key(f"request:{request_id}")

    @property
    def stats(self) -> str:
        return self._key("stats")

    @property
    def workers(self) -> str:
        return self._key("workers")

    def stopped(self, consumer: str) -> str:
        return self._key(f"stopped:{consumer}")

    def for_script(self, names: tuple[str, ...]) -> Callable[..., list[str]]:
        """The KEYS of a script whose header declares ``names`` (``scripts.Script.keys``), as
        a function of (room, sessions, request): the node's own keys are made once; the
        room's (or allocation holder's) keys for ``room``, a request's for ``request`` and
        one session key per entry of ``sessions`` (a trailing ``sessions...``) per call."""
        per_call = {"room": self.room, "pool_owned": self.pool_owned}
        fixed = {name: getattr(self, "stream" if name == "rounds" else name) for name in names if name not in per_call
                 and name not in ("sessions...", "request", "request_owned")}

        def keys(room: int | str = "", sessions: tuple[str, ...] = (), request: str = "") -> list[str]:
            out = []
            for name in names:
                if name in fixed:
                    out.append(fixed[name])
                elif name in per_call:
                    out.append(per_call[name](room))
                elif name == "sessions...":
                    out.extend(self.session(s) for s in sessions)
                elif name == "request":
                    out.append(self.request(request))
                else:  # request_owned
                    out.append(self.pool_owned(f"req:{request}"))
            return out
        return keys

    def all_pattern(self) -> str:
        """Glob matching every key of this node (for tests and cleanup)."""
        return f"{self.prefix}:{{{self.node}}}:*"
