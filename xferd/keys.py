"""Every Redis key xferd uses, in one place (SPEC §5).

Shard keys carry the hash tag ``{node.sK}`` so that one Lua script touching a room,
its sessions and its shard's stream stays in one Redis Cluster slot; the node's source
block pool lives under ``{node}``.

  {prefix}:{node.sK}:room:{room}       hash   one room: status, tokens, blocks, dst<k>.* fields
  {prefix}:{node.sK}:session:{sid}     hash   a registered language session (copy per shard)
  {prefix}:{node.sK}:rounds            stream round work, consumer group "workers"
  {prefix}:{node.sK}:dead              stream entries past the delivery limit
  {prefix}:{node.sK}:timeouts          zset   room -> deadline (ms)
  {prefix}:{node.sK}:release           zset   room -> earliest time its source blocks may go back
  {prefix}:{node}:pool                 hash   source pool description (blocks, shm name, layout)
  {prefix}:{node}:pool:free            zset   free source blocks (score = index: lowest first)
  {prefix}:{node}:pool:owned:{room}    list   source blocks held by a room
  {prefix}:{node}:pool:leases          zset   room -> when its unpublished allocation expires
  {prefix}:{node}:stats                hash   counters (bad messages, ...)
  {prefix}:{node}:workers              hash   worker consumer name -> last heartbeat (ms)
"""
from __future__ import annotations

from dataclasses import dataclass

GROUP = "workers"


@dataclass(frozen=True)
class Keys:
    prefix: str
    node: str
    shards: int

    def shard_of(self, room: int) -> int:
        return room % self.shards

    def _shard(self, shard: int, suffix: str) -> str:
        return f"{self.prefix}:{{{self.node}.s{shard}}}:{suffix}"

    def room(self, room: int) -> str:
        return self._shard(self.shard_of(room), f"room:{room}")

    def session(self, shard: int, session_id: str) -> str:
        return self._shard(shard, f"session:{session_id}")

    def stream(self, shard: int) -> str:
        return self._shard(shard, "rounds")

    def dead(self, shard: int) -> str:
        return self._shard(shard, "dead")

    def timeouts(self, shard: int) -> str:
        return self._shard(shard, "timeouts")

    def release(self, shard: int) -> str:
        return self._shard(shard, "release")

    def _node(self, suffix: str) -> str:
        return f"{self.prefix}:{{{self.node}}}:{suffix}"

    @property
    def pool(self) -> str:
        return self._node("pool")

    @property
    def pool_free(self) -> str:
        return self._node("pool:free")

    @property
    def pool_leases(self) -> str:
        return self._node("pool:leases")

    def pool_owned(self, room: int) -> str:
        return self._node(f"pool:owned:{room}")

    @property
    def stats(self) -> str:
        return self._node("stats")

    @property
    def workers(self) -> str:
        return self._node("workers")

    def all_pattern(self) -> str:
        """Glob matching every key of this node (for tests and cleanup)."""
        return f"{self.prefix}:{{{self.node}*"
