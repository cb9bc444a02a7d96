"""The scheduler's ``ReqToMetadataBlockAllocator`` backed by the node's pool in Redis.

``alloc`` takes blocks for a request (``request_alloc.lua``): every TP rank asks for the
same request and gets the same blocks, and attempt n has one answer on every rank, so the
ranks' schedulers stay in step even while the pool is short. The sender binds the
allocation to its room at ``init``; from then on xferd returns the blocks when the room ends
and no write reads them. ``free`` gives back what never became a room's, and a room's
blocks if it has ended; it never returns a block twice nor one a write may still read.
The warm-up path (``fake=True``) touches nothing, as in SGLang.
"""
from __future__ import annotations

import logging
import random
import time

from xferd.state.connections import TRANSIENT
from xferd.sglang_encoder.node import EncoderNode

log = logging.getLogger("xferd.sglang_encoder")
SHORT_RETRY_S = 0.001  # one rank alone: ask Redis again for a short request this often at most


def allocator_class(original: type) -> type:
    class XferdBlockAllocator(original):
        """SGLang's block allocator contract on the node's shared pool."""

        def __init__(self, size: int, block_size: int | None = None):
            self.node = EncoderNode.get()
            self.total_blocks = self.node.sender.pool.num_blocks
            self.block_size = block_size or self.node.sender.layout.block_size
            self.req_to_blocks: dict[str, list[int]] = {}
            self._attempts: dict[str, int] = {}
            self._short_until: dict[str, float] = {}

        def available_size(self) -> int:
            try:
                return self.node.store.free_blocks()
            except TRANSIENT:  # Redis away: nothing can be allocated now
                return 0

        def alloc(self, num_tokens: int | None = None, req_id: str | None = None, fake: bool = False):
            if fake:
                return [random.randint(0, self.total_blocks - 1)]
            count = 1 if num_tokens is None else -(-num_tokens // self.block_size)
            if req_id is None:
                raise ValueError("xferd allocates per request: alloc() needs req_id")
            agree = self.node.tp_size > 1
            if not agree and time.monotonic() < self._short_until.get(req_id, 0.0):
                return None
            attempt = self._attempts.get(req_id, 0) + 1
            self._attempts[req_id] = attempt
            try:
                blocks, _ = self.node.store.alloc_for_request(req_id, count, attempt, self.node.lease_ms, agree)
            except TRANSIENT as error:  # Redis away or refusing writes: as a short pool, asked again
                self._attempts[req_id] = attempt - 1
                self.node.redis_trouble("allocate source blocks", error)
                blocks = None
            if blocks is None:
                self._short_until[req_id] = time.monotonic() + SHORT_RETRY_S
                return None
            self._short_until.pop(req_id, None)
            self.node.allocated(req_id, blocks)
            self.req_to_blocks[req_id] = blocks
            return blocks

        def free(self, block_indices: list | None = None, req_id: str | None = None, fake: bool = False):
            if fake:
                return
            if req_id is None:
                raise ValueError("xferd frees per request: free() needs req_id")
            self.req_to_blocks.pop(req_id, None)
            self._attempts.pop(req_id, None)
            self._short_until.pop(req_id, None)
            self.node.free_request(req_id)

        def free_with_req(self, req) -> None:
            self.free(block_indices=req.embedding_indices, req_id=req.rid,
                      fake=getattr(req, "bootstrap_host", None) == "2.2.2.2")

    XferdBlockAllocator.__qualname__ = XferdBlockAllocator.__name__
    return XferdBlockAllocator
