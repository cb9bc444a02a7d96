"""Encoder-side API: take source blocks, write embeddings into them, publish, poll, abort.

    sender = Sender(Settings.from_env())        # the node's layout and pool come from Redis
    blocks = sender.allocate(room, total_tokens)
    sender.write(blocks, embeddings=embeds,      # (T, hidden)
                 token_ids=ids,                  # (T,)
                 mrope_positions=positions,      # (3, T)
                 aux=[total_tokens, mrope_position_delta])
    sender.publish(room, blocks, total_tokens)
    sender.poll(room)  # Status

``write`` takes each buffer's data in its natural shape and lays it out in blocks as the
reference language side reads it (M-RoPE component-major per block, aux as int32s in the
first block). Blocks come from the node's pool in Redis and go back by themselves once the
room ends (Success, Failed, timeout or abort) and no write from them is in flight.
``abort`` fails the room at once and tells the language side (Failed, once no write into
its blocks is in flight) like every other path.
"""
from __future__ import annotations

import logging
import os
import struct
import time
from typing import Mapping, Sequence

import redis
import torch

from xferd.state.connections import connect

from xferd.node.notify import Notifier
from xferd.protocol.layout import BufferType
from xferd.transfer.pool import SourcePool, layout_of
from xferd.state.replication import NotReplicated
from xferd.settings import Settings
from xferd.protocol.status import Status
from xferd.state.store import Outcome, Store


log = logging.getLogger("xferd.sender")


class PoolExhausted(TimeoutError):
    pass


class NodeNotFound(RuntimeError):
    """No node record in Redis under these settings' prefix and node name."""


class Sender:
    def __init__(self, settings: Settings, store: Store | None = None, redis_patience: float = 60.0):
        self.settings = settings
        # ride out a Redis restart, a short outage or a failover (a new primary without its
        # replica yet: every call here is idempotent, so it is sent again until one confirms
        # it); give up after ``redis_patience`` s
        store = store or Store(connect(settings.redis_url), settings, direct=True)
        self.store = store.with_patience(give_up_after=redis_patience, also=(NotReplicated,))
        self.redis_patience = redis_patience
        record = self.store.record()
        if not record:
            raise NodeNotFound(f"node {settings.node!r} has no pool record under prefix "
                               f"{settings.prefix!r}: is `xferd serve` running for it?")
        self.layout = layout_of(record)
        disagreement = settings.policy_disagreement(record)
        if disagreement:  # said once, by the one place an encoder reads the record
            log.warning("this process's settings differ from node %s's policy, which applies to its rooms: %s",
                        settings.node, disagreement)
        self.pool = SourcePool(self.layout, int(record["num_blocks"]), os.path.basename(record["shm"]))
        # statuses in the node's form (the language side reads the node's, not this process's)
        self.notifier = Notifier.of(int(record.get("status_frames", settings.status_frames)),
                                    int(record.get("sender_rank", settings.sender_rank)))

    @classmethod
    def for_node(cls, node: str | None = None, redis_url: str | None = None, prefix: str | None = None,
                 **options) -> "Sender":
        """The encoder of a running node: XFERD_* settings (XFERD_REDIS_URL, XFERD_NODE,
        XFERD_PREFIX), overridden by what is given; the layout, pool size and shared-memory
        file come from the node's record in Redis."""
        given = {k: v for k, v in (("node", node), ("redis_url", redis_url), ("prefix", prefix)) if v is not None}
        return cls(Settings.from_env(**given), **options)

    def allocate(self, room: int, total_tokens: int, timeout: float = 30.0) -> list[int]:
        """Source blocks for ``total_tokens``; waits up to ``timeout`` s for enough to be free.
        Publish within ``settings.alloc_timeout``: past it the blocks go back to the pool."""
        count = self.layout.blocks_for(total_tokens)
        if count > self.pool.num_blocks:
            raise ValueError(f"{total_tokens} tokens need {count} blocks; the pool has {self.pool.num_blocks}")
        deadline = time.monotonic() + timeout
        delay = 0.002
        while True:
            allocation = self.store.alloc_blocks(room, count)
            if allocation is not None:
                return allocation.blocks
            if time.monotonic() >= deadline:
                raise PoolExhausted(f"no {count} free source blocks within {timeout}s")
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def write(self, blocks: Sequence[int], data: Sequence | Mapping | None = None, **items) -> None:
        """Write a request's data into its source blocks: by buffer name (``embeddings=...``),
        as a mapping, or as a sequence in layout order; a buffer left out (or None) keeps
        what it holds. Per-token data in its natural shape, any dtype: (T, ...), or (C, T, ...)
        for a buffer of C components (M-RoPE positions: (3, T)). A first-block item: bytes,
        a tensor, or a sequence of ints written as int32 (the reference's aux). Everything is
        checked before anything is written."""
        self._write(blocks, *self._prepare(data, items))

    def _prepare(self, data, items: dict) -> tuple[list[tuple[int, object]], int]:
        """Each given buffer's bytes, checked against the layout: ([(index, payload)], tokens)."""
        named = dict(data) if isinstance(data, Mapping) else {}
        if data is not None and not isinstance(data, Mapping):
            if len(data) > len(self.layout.buffers):
                raise ValueError(f"{len(data)} items for a layout of {len(self.layout.buffers)} buffers")
            named = {buffer.name: item for buffer, item in zip(self.layout.buffers, data)}
        named.update(items)
        unknown = set(named) - {buffer.name for buffer in self.layout.buffers}
        if unknown:
            raise ValueError(f"no buffer named {sorted(unknown)} in the layout ({self.layout.spec()})")
        payloads, tokens = [], {}
        for index, buffer in enumerate(self.layout.buffers):
            item = named.get(buffer.name)
            if item is None:
                continue
            if not buffer.per_token:
                payloads.append((index, _item_bytes(buffer, item)))
                continue
            natural = _natural_bytes(buffer, item, self.layout.token_bytes(index))
            tokens[buffer.name] = buffer.token_count(natural)
            payloads.append((index, natural))
        if len(set(tokens.values())) > 1:
            raise ValueError(f"buffers hold different token counts: {tokens}")
        return payloads, max(tokens.values(), default=0)

    def _write(self, blocks: Sequence[int], payloads: list[tuple[int, object]], tokens: int) -> None:
        if self.layout.blocks_for(tokens) > len(blocks):
            raise ValueError(f"{tokens} tokens do not fit {len(blocks)} blocks")
        for index, payload in payloads:
            if self.layout.buffers[index].per_token:
                self.pool.write_tokens(index, blocks, payload)
            else:
                self.pool.write_item(index, blocks[0], payload)

    def publish(self, room: int, blocks: Sequence[int], total_tokens: int) -> Outcome:
        """Room ``room``'s embeddings are in ``blocks``: queue the transfer when destinations are ready."""
        if self.layout.blocks_for(total_tokens) > len(blocks):
            raise ValueError(f"{total_tokens} tokens need {self.layout.blocks_for(total_tokens)} blocks, "
                             f"{len(blocks)} given")
        outside = [b for b in blocks if not 0 <= b < self.pool.num_blocks]
        if outside:
            raise ValueError(f"source blocks {outside[:8]} are outside the pool of {self.pool.num_blocks}")
        return self.store.publish_source(room, total_tokens, blocks)

    def send(self, room: int, total_tokens: int, data, timeout: float = 30.0) -> Outcome:
        """allocate + write + publish; bad data is refused before any block is taken."""
        prepared = self._prepare(data, {})
        blocks = self.allocate(room, total_tokens, timeout)
        self._write(blocks, *prepared)
        return self.publish(room, blocks, total_tokens)

    def poll(self, room: int) -> Status:
        status = self.store.status(room)  # Failed is 0: test for None
        return Status.Bootstrapping if status is None else status

    def failure(self, room: int) -> str | None:
        return self.store.once().failure(room)

    def abort(self, room: int, reason: str = "aborted by the encoder") -> Outcome:
        """Fail the room and push Failed to its destinations; with a write in flight, its
        writer pushes Failed and returns the blocks when the write ends. Blocks allocated
        but not published go back at once (this encoder writes no more into them)."""
        outcome = self.store.fail_room(room, reason, mode="encoder")
        if outcome.notify:
            self.notifier.send(outcome.endpoints, room, outcome.status)
        return outcome

    def release(self, room: int) -> int:
        """Give an ended room's blocks back now (they also go back by themselves); returns
        how many. Refuses while the room is live or a write from its blocks is in flight."""
        try:
            return self.store.once().release_blocks(room)
        except redis.ResponseError as error:
            raise RuntimeError(str(error)) from None


def _natural_bytes(buffer: BufferType, item: torch.Tensor, token_bytes: int) -> torch.Tensor:
    """``item`` as uint8 in its natural shape: (T, token_bytes) or (C, T, token_bytes / C)."""
    if not isinstance(item, torch.Tensor):
        raise TypeError(f"{buffer.name}: per-token data must be a tensor, not {type(item).__name__}")
    components = buffer.components
    if item.dim() < (1 if components == 1 else 2) or (components > 1 and item.shape[0] != components):
        want = "(T, ...)" if components == 1 else f"({components}, T, ...), component-major"
        raise ValueError(f"{buffer.name}: expected shape {want}, got {tuple(item.shape)}")
    count = buffer.token_count(item)
    raw = item.detach().cpu().contiguous().view(torch.uint8)
    if raw.numel() != count * token_bytes:
        raise ValueError(f"{buffer.name}: {raw.numel() // max(count, 1)} bytes per token, "
                         f"the layout says {token_bytes}")
    return raw.reshape(buffer.natural_shape(count, token_bytes))


def _item_bytes(buffer: BufferType, item) -> bytes:
    if isinstance(item, torch.Tensor):
        raw = item.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()
    elif isinstance(item, (bytes, bytearray, memoryview)):
        raw = bytes(item)
    else:
        values = [int(v) for v in item]
        raw = struct.pack(f"{len(values)}i", *values)
    if len(raw) > buffer.item_len:
        raise ValueError(f"{buffer.name}: {len(raw)} bytes exceed item_len {buffer.item_len}")
    return raw
