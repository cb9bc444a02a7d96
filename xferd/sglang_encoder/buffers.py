"""The scheduler's ``MultimodalDataBuffers`` over the node's shared-memory source pool.

A subclass of SGLang's own class: the constructor maps the pool instead of allocating
tensors, and everything else (``set_buf``, ``get_buf``, ``get_buf_infos``, the deepstack
split) is SGLang's code running on views of the blocks xferd's workers send from, so the
embeddings are written once, where they are sent from. The node's layout must be the one
the scheduler's constructor arguments describe; anything else is a fatal one-line error.
"""
from __future__ import annotations

import logging

import torch

from xferd.protocol.layout import reference_layout
from xferd.transfer.pool import layout_of
from xferd.sglang_encoder.node import EncoderNode, fatal

log = logging.getLogger("xferd.sglang_encoder")

# the reference's buffers, in register order: attribute, dtype
VIEWS = (("input_embeddings", torch.bfloat16), ("fill_ids", torch.int32), ("mrope_positions", torch.int32),
         ("aux_datas", torch.int32), ("deepstack_embeddings", torch.bfloat16))


def layout_problem(record: dict[str, str], block_size: int, embedding_dim: int, deepstack: int) -> str | None:
    """Why the node's pool cannot hold what the scheduler writes, or None."""
    wanted = reference_layout(block_size, embedding_dim, deepstack)
    try:
        have = layout_of(record)
    except Exception as error:  # noqa: BLE001 - an unreadable record is a mismatch too
        return f"the node's layout record is unreadable ({error})"
    if have == wanted:
        return None
    return (f"the node's source pool is {have.describe()}, but this encoder writes {wanted.describe()} "
            f"(block size {block_size}, hidden size {embedding_dim}, {deepstack} deepstack layers): "
            f"start `xferd serve` with --block-size {block_size} --hidden-size {embedding_dim} "
            f"--layout {'deepstack:%d' % deepstack if deepstack else 'reference'}, or fix "
            f"SGLANG_EMBEDDING_CACHE_BLOCK_SIZE")


def buffers_class(original: type) -> type:
    class XferdMultimodalDataBuffers(original):
        """SGLang's MultimodalDataBuffers, its tensors views of the node's source pool."""

        def __init__(self, size: int, block_size: int, embedding_dim: int = 8192,
                     num_deepstack_embeddings: int = 0) -> None:
            node = EncoderNode.get()
            problem = layout_problem(node.record, block_size, embedding_dim, num_deepstack_embeddings)
            if problem:
                fatal(problem)
            pool = node.sender.pool
            if size != pool.num_blocks:
                log.info("the scheduler asked for %d blocks; the node's pool has %d, all of them shared "
                         "with xferd's workers", size, pool.num_blocks)
            self.total_blocks, self.block_size = pool.num_blocks, block_size
            self.embedding_dim, self.num_deepstack_embeddings = embedding_dim, num_deepstack_embeddings
            self.deepstack_embeddings = None
            for (name, dtype), view in zip(VIEWS, pool.buffers):
                setattr(self, name, view.view(dtype))
            self.xferd_node = node

        def set_buf(self, req) -> None:
            """SGLang's scatter into the request's blocks, on the rank that writes and only
            while the blocks are still this encoder's (their lease held)."""
            sender = getattr(req, "disagg_embedding_sender", None)
            check = getattr(sender, "may_write", None)
            if check is not None and not check():
                return  # another TP rank writes; or the lease is gone and the sender fails the room
            super().set_buf(req)

    XferdMultimodalDataBuffers.__qualname__ = XferdMultimodalDataBuffers.__name__
    return XferdMultimodalDataBuffers
