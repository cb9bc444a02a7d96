"""The node's source block pool, as ``Store`` methods: the free list, allocations leased
to a room (or to an encoder scheduler's request) until published, and their return."""
from __future__ import annotations

from xferd.state.records import Allocation, Outcome, Verdict, _text
from xferd.state.retry import door


class BlockPool:
    """Mixed into ``Store`` (which gives ``client``, ``keys``, ``settings`` and ``_run``)."""

    # ---- the node record and its source block pool
    @door("init pool")
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

    @door("rebuild pool")
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

    @door("alloc blocks")
    def alloc_blocks(self, room: int, count: int) -> Allocation | None:
        """The lowest ``count`` free blocks, leased to ``room`` until published; None if too
        few. A retry (or a second call for the room) gets the same blocks."""
        reply = self._run("pool_alloc", room, count)
        if reply.verdict is Verdict.short:
            return None
        expires_at, *blocks = reply.data
        return Allocation([int(b) for b in blocks], int(expires_at))

    @door("release blocks")
    def release_blocks(self, room: int) -> int:
        """Give an ended room's blocks back now; raises while it is live or being written."""
        return int(self._run("release", room).data[0])

    @door("expire allocations")
    def expire_allocations(self, now_ms: int) -> tuple[int, list[tuple[int, Outcome]]]:
        """Return the blocks of allocations neither published nor renewed before their lease
        ran out (their encoder stopped): (blocks released, [(room, Outcome)] of the live
        rooms that failed for it, whose language side is to be told)."""
        released, failed = 0, []
        for holder in self.due(self.keys.pool_leases, now_ms):
            reply = self._run("pool_expire", holder)
            released += int(reply.data[0])
            if reply.verdict is Verdict.failed:
                failed.append((int(holder), reply.outcome))
        return released, failed

    # ---- allocations an encoder scheduler makes per request (xferd.sglang_encoder)
    @door("alloc for request")
    def alloc_for_request(self, request: str, count: int, attempt: int, lease_ms: int,
                          agree: bool) -> tuple[list[int] | None, int]:
        """(blocks, None) or (None, free blocks): attempt ``attempt`` of every TP rank gets
        one answer (``request_alloc.lua``)."""
        reply = self._run("request_alloc", f"req:{request}", f"req:{request}", count, attempt, lease_ms, int(agree),
                          request=request)
        if reply.verdict is Verdict.ok:
            return [int(b) for b in reply.data], 0
        return None, int(reply.data[0])

    @door("bind request")
    def bind_request(self, request: str, room: int, lease_ms: int) -> None:
        """The request's blocks become the room's allocation, still leased until published."""
        self._run("request_bind", room, f"req:{request}", lease_ms, request=request)

    @door("release request")
    def release_request(self, request: str) -> int:
        """Give back a request's blocks that never became a room's."""
        return int(self._run("release", f"req:{request}").data[0])

    @door("keep allocations")
    def keep_allocations(self, holders: list[str], lease_ms: int) -> list[str]:
        """Renew unpublished allocations; returns the holders whose lease is gone."""
        if not holders:
            return []
        return [_text(h) for h in self._run("keep_allocations", "", lease_ms, *holders).data]

    @door("free blocks")
    def free_blocks(self) -> int:
        return int(self.client.zcard(self.keys.pool_free))

    @door("held blocks")
    def held_blocks(self, room: int) -> int:
        return int(self.client.llen(self.keys.pool_owned(room)))

