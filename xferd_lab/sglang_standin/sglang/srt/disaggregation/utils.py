"""Stand-in of ``sglang.srt.disaggregation.utils`` (encoder side): the enums, the block
allocator, the multimodal block buffers, get_kv_class and poll_and_all_reduce, with the
fork's names, signatures and semantics."""
from __future__ import annotations

import random
from collections import deque
from enum import Enum

import torch
import torch.distributed as dist

FAKE_BOOTSTRAP_HOST = "2.2.2.2"


class DisaggregationMode(Enum):
    NULL = "null"
    PREFILL = "prefill"
    DECODE = "decode"
    ENCODE = "encode"
    LANGUAGE = "language"


class TransferBackend(Enum):
    MOONCAKE = "mooncake"
    FAKE = "fake"


class KVClassType(Enum):
    KVARGS = "kvargs"
    MANAGER = "manager"
    SENDER = "sender"
    RECEIVER = "receiver"
    BOOTSTRAP_SERVER = "bootstrap_server"


def poll_and_all_reduce(pollers, gloo_group):
    """Every TP rank's polls, reduced to their minimum (Failed wins), as uint8."""
    polls = torch.tensor([int(p.poll()) for p in pollers], dtype=torch.uint8)
    dist.all_reduce(polls, op=dist.ReduceOp.MIN, group=gloo_group)
    return polls.tolist()


def prepare_abort(req, error_message: str, status_code=None):
    from sglang.srt.managers.schedule_batch import FINISH_ABORT
    req.finished_reason = FINISH_ABORT(error_message, status_code)


class ReqToMetadataIdxAllocator:  # imported by the embedding side, used by the text side
    def __init__(self, size: int):
        self.size, self.free_slots = size, deque(range(size))


class ReqToMetadataBlockAllocator:
    """Blocks of ``block_size`` tokens for a request; None when too few are free."""

    def __init__(self, size: int, block_size: int = None):
        self.total_blocks, self.block_size = size, block_size
        self.free_blocks = deque(range(size))
        self.req_to_blocks = {}

    def available_size(self):
        return len(self.free_blocks)

    def alloc(self, num_tokens: int = None, req_id: str = None, fake: bool = False):
        if fake:
            return [random.randint(0, self.total_blocks - 1)]
        needed = 1 if num_tokens is None else -(-num_tokens // self.block_size)
        if len(self.free_blocks) < needed:
            return None
        blocks = [self.free_blocks.popleft() for _ in range(needed)]
        if req_id is not None:
            self.req_to_blocks[req_id] = blocks
        return blocks

    def free(self, block_indices: list = None, req_id: str = None, fake: bool = False):
        if fake:
            return
        if block_indices is not None:
            self.free_blocks.extend(block_indices)
        elif req_id is not None and req_id in self.req_to_blocks:
            self.free_blocks.extend(self.req_to_blocks.pop(req_id))
        else:
            raise ValueError("Either block_indices or req_id must be provided")

    def free_with_req(self, req):
        self.free(block_indices=req.embedding_indices, req_id=req.rid,
                  fake=req.bootstrap_host == FAKE_BOOTSTRAP_HOST)


class MultimodalDataBuffers:
    """Per block: embeddings (bf16), fill ids, M-RoPE positions (3 per token,
    component-major), 16 int32 of aux (first block: length, position delta), and with
    deepstack a fifth buffer of K extra embeddings per token."""

    def __init__(self, size: int, block_size: int, embedding_dim: int = 8192, num_deepstack_embeddings: int = 0):
        self.total_blocks, self.block_size = size, block_size
        self.embedding_dim, self.num_deepstack_embeddings = embedding_dim, num_deepstack_embeddings
        self.input_embeddings = torch.zeros((size, block_size * embedding_dim), dtype=torch.bfloat16)
        self.fill_ids = torch.zeros((size, block_size), dtype=torch.int32)
        self.mrope_positions = torch.zeros((size, 3 * block_size), dtype=torch.int32)
        self.aux_datas = torch.zeros((size, 16), dtype=torch.int32)
        self.deepstack_embeddings = (
            torch.zeros((size, block_size * embedding_dim * num_deepstack_embeddings), dtype=torch.bfloat16)
            if num_deepstack_embeddings > 0 else None)

    def _tensors(self):
        out = [self.input_embeddings, self.fill_ids, self.mrope_positions, self.aux_datas]
        return out + ([self.deepstack_embeddings] if self.deepstack_embeddings is not None else [])

    def get_buf_infos(self):
        tensors = self._tensors()
        return ([t.data_ptr() for t in tensors], [t.nbytes for t in tensors], [t[0].nbytes for t in tensors])

    def _split(self, embedding: torch.Tensor):
        if self.deepstack_embeddings is None:
            return embedding, None
        if embedding.shape[-1] // self.embedding_dim > 1:
            return embedding[:, :self.embedding_dim], embedding[:, self.embedding_dim:]
        return embedding, torch.zeros((embedding.shape[0], self.embedding_dim * self.num_deepstack_embeddings),
                                      dtype=embedding.dtype)

    def set_buf(self, req):
        length = req.embedding.shape[0]
        embeds, deep = self._split(req.embedding)
        mm = req.multimodal_inputs
        for position, block in enumerate(req.embedding_indices):
            start = position * self.block_size
            end = min(start + self.block_size, length)
            if end <= start:
                break
            n = end - start
            self.fill_ids[block, :n] = torch.tensor(req.fill_ids[start:end])
            self.input_embeddings[block, :n * self.embedding_dim] = embeds[start:end].flatten()
            if mm is not None and mm.mrope_positions is not None:
                self.mrope_positions[block, :3 * n] = mm.mrope_positions[:, start:end].flatten()
            if deep is not None:
                self.deepstack_embeddings[block, :deep.shape[1] * n] = deep[start:end].flatten()
            if position == 0:
                self.aux_datas[block][0] = length
                if mm is not None and mm.mrope_position_delta is not None:
                    self.aux_datas[block][1] = mm.mrope_position_delta[0][0]


def get_kv_class(transfer_backend: TransferBackend, class_type: KVClassType, is_multimodal: bool = False):
    from sglang.srt.disaggregation.fake import FakeKVReceiver, FakeKVSender
    if transfer_backend == TransferBackend.MOONCAKE:
        from sglang.srt.disaggregation.base import KVArgs
        from sglang.srt.disaggregation.mooncake import (MooncakeKVBootstrapServer, MooncakeKVManager,
                                                         MooncakeKVReceiver, MooncakeKVSender)
        from sglang.srt.disaggregation.mooncake.conn_multimodal import (MooncakeEmbeddingBootstrapServer,
                                                                         MooncakeEmbeddingManager,
                                                                         MooncakeEmbeddingReceiver,
                                                                         MooncakeEmbeddingSender)
        return {KVClassType.KVARGS: KVArgs,
                KVClassType.MANAGER: MooncakeEmbeddingManager if is_multimodal else MooncakeKVManager,
                KVClassType.SENDER: MooncakeEmbeddingSender if is_multimodal else MooncakeKVSender,
                KVClassType.RECEIVER: MooncakeEmbeddingReceiver if is_multimodal else MooncakeKVReceiver,
                KVClassType.BOOTSTRAP_SERVER: (MooncakeEmbeddingBootstrapServer if is_multimodal
                                               else MooncakeKVBootstrapServer)}.get(class_type)
    if transfer_backend == TransferBackend.FAKE:
        from sglang.srt.disaggregation.base import KVArgs
        return {KVClassType.KVARGS: KVArgs, KVClassType.SENDER: FakeKVSender,
                KVClassType.RECEIVER: FakeKVReceiver}.get(class_type)
    raise ValueError(f"Unsupported transfer backend: {transfer_backend}")
