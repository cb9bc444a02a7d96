"""Encoder-side API: take source blocks, write embeddings into them, publish, poll, abort.

    sender = Sender(settings)
    blocks = sender.allocate(room, total_tokens)
    sender.write(blocks, [embeddings, token_ids, mrope_positions, aux_bytes])
    sender.publish(room, blocks, total_tokens)
    sender.poll(room)  # Status

Blocks come from the node's pool in Redis and go back by themselves once the room ends
(Success, Failed, timeout or abort) and no write from them can still be in flight.
"""
from __future__ import annotations

import time
from typing import Sequence

import torch

from .connections import connect, with_retry
from .pool import SourcePool
from .settings import Settings
from .status import Status
from .store import Outcome, Store


class PoolExhausted(TimeoutError):
    pass


class Sender:
    def __init__(self, settings: Settings, store: Store | None = None, redis_patience: float = 60.0):
        self.settings = settings
        self.layout = settings.layout
        self.store = store or Store(connect(settings.redis_url), settings)
        self.pool = SourcePool(self.layout, settings.pool_blocks, settings.shm_name)
        self._leases: dict[int, int] = {}  # room -> when its unpublished allocation expires
        self.redis_patience = redis_patience

    def _redis(self, action, what: str):
        """Ride out a Redis restart or short outage; give up after ``redis_patience`` s."""
        return with_retry(action, what, give_up_after=self.redis_patience)

    def allocate(self, room: int, total_tokens: int, timeout: float = 30.0) -> list[int]:
        """Source blocks for ``total_tokens``; waits up to ``timeout`` s for enough to be free.
        Publish within ``settings.alloc_timeout``: past it the blocks go back to the pool."""
        count = self.layout.blocks_for(total_tokens)
        if count > self.pool.num_blocks:
            raise ValueError(f"{total_tokens} tokens need {count} blocks; the pool has {self.pool.num_blocks}")
        deadline = time.monotonic() + timeout
        delay = 0.002
        while True:
            allocation = self._redis(lambda: self.store.alloc_blocks(room, count), "allocate")
            if allocation is not None:
                self._leases[room] = allocation.expires_at
                return allocation.blocks
            if time.monotonic() >= deadline:
                raise PoolExhausted(f"no {count} free source blocks within {timeout}s")
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def write(self, blocks: Sequence[int], data: Sequence[torch.Tensor | bytes | None]) -> None:
        """Write one item per buffer type: per-token tensors (first dimension = tokens) and
        the aux bytes (written into the first block). ``None`` leaves a buffer as it is."""
        for index, (buffer, item) in enumerate(zip(self.layout.buffers, data)):
            if item is None:
                continue
            if not buffer.per_token:
                raw = bytes(item) if not isinstance(item, torch.Tensor) else item.contiguous().view(torch.uint8).numpy().tobytes()
                if len(raw) > buffer.item_len:
                    raise ValueError(f"{buffer.name}: {len(raw)} bytes exceed item_len {buffer.item_len}")
                self.pool.write_item(index, blocks[0], raw)
                continue
            rows = item.contiguous().view(torch.uint8).reshape(item.shape[0], -1)
            if rows.shape[1] != self.layout.token_bytes(index):
                raise ValueError(f"{buffer.name}: {rows.shape[1]} bytes per token, layout says "
                                 f"{self.layout.token_bytes(index)}")
            if self.layout.blocks_for(rows.shape[0]) > len(blocks):
                raise ValueError(f"{buffer.name}: {rows.shape[0]} tokens do not fit {len(blocks)} blocks")
            self.pool.write_tokens(index, blocks, rows)

    def publish(self, room: int, blocks: Sequence[int], total_tokens: int) -> Outcome:
        """Room ``room``'s embeddings are in ``blocks``: queue the transfer when destinations are ready."""
        if self.layout.blocks_for(total_tokens) > len(blocks):
            raise ValueError(f"{total_tokens} tokens need {self.layout.blocks_for(total_tokens)} blocks, "
                             f"{len(blocks)} given")
        outside = [b for b in blocks if not 0 <= b < self.pool.num_blocks]
        if outside:
            raise ValueError(f"source blocks {outside[:8]} are outside the pool of {self.pool.num_blocks}")
        expires_at = self._leases.pop(room, None)
        return self._redis(lambda: self.store.publish_source(room, total_tokens, blocks, expires_at),
                           "publish")

    def send(self, room: int, total_tokens: int, data, timeout: float = 30.0) -> Outcome:
        blocks = self.allocate(room, total_tokens, timeout)
        self.write(blocks, data)
        return self.publish(room, blocks, total_tokens)

    def poll(self, room: int) -> Status:
        status = self._redis(lambda: self.store.status(room), "poll")  # Failed is 0: test for None
        return Status.Bootstrapping if status is None else status

    def failure(self, room: int) -> str | None:
        return self.store.failure(room)

    def abort(self, room: int, reason: str = "aborted by the encoder") -> Outcome:
        """Fail the room; its blocks go back once no write from them can be in flight."""
        return self._redis(lambda: self.store.fail_room(room, reason), "abort")

    def release(self, room: int) -> int:
        """Give an ended room's blocks back now (they also go back by themselves); returns
        how many. Refuses while the room is live or a write from its blocks may be in flight."""
        record = self.store.room(room)
        if record and not Status(int(record["status"])).terminal:
            raise RuntimeError(f"room {room} is {record['status_name']}: abort it first")
        if "write_until" in record and int(record["write_until"]) > self.store.now_ms():
            raise RuntimeError(f"room {room}: a write from its blocks may still be in flight")
        return self.store.release_blocks(room)
