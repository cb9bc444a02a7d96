"""Stand-in of SGLang's encode-mode scheduling (bootstrap queue, send, inflight queue):
the same calls on the same objects in the same order, from reading the fork's
``multimodal_embedding.py``; the loop ends when the stand-in scheduler has nothing left."""
from __future__ import annotations

import logging

import torch

from sglang.srt.disaggregation.base import KVArgs, KVPoll
from sglang.srt.disaggregation.fake.conn import FakeKVSender
from sglang.srt.disaggregation.utils import (FAKE_BOOTSTRAP_HOST, DisaggregationMode, KVClassType,
                                             TransferBackend, get_kv_class, poll_and_all_reduce,
                                             prepare_abort)
from sglang.srt.managers.schedule_batch import FINISH_LENGTH

logger = logging.getLogger(__name__)


class MultimodalEmbeddingBootstrapQueue:
    def __init__(self, req_to_metadata_buffer_idx_allocator, metadata_buffers, tp_rank, tp_size, bootstrap_port,
                 gloo_group, transfer_backend, scheduler):
        self.req_to_metadata_buffer_idx_allocator = req_to_metadata_buffer_idx_allocator
        self.metadata_buffers = metadata_buffers
        self.tp_rank, self.tp_size = tp_rank, tp_size
        self.transfer_backend, self.scheduler = transfer_backend, scheduler
        self.data_manager = self._init_data_manager()
        self.queue = []
        self.gloo_group, self.bootstrap_port = gloo_group, bootstrap_port

    def _init_data_manager(self):
        kv_args = KVArgs()
        kv_args.engine_rank = self.tp_rank
        kv_args.aux_data_ptrs, kv_args.aux_data_lens, kv_args.aux_item_lens = self.metadata_buffers.get_buf_infos()
        kv_args.ib_device = None
        kv_args.gpu_id = self.tp_rank
        manager_class = get_kv_class(self.transfer_backend, KVClassType.MANAGER, is_multimodal=True)
        return manager_class(kv_args, DisaggregationMode.ENCODE, self.scheduler.server_args)

    def add(self, req):
        backend = TransferBackend.FAKE if req.bootstrap_host == FAKE_BOOTSTRAP_HOST else self.transfer_backend
        sender_class = get_kv_class(backend, KVClassType.SENDER, is_multimodal=True)
        req.disagg_embedding_sender = sender_class(
            mgr=self.data_manager, bootstrap_addr=f"{req.bootstrap_host}:{self.bootstrap_port}",
            bootstrap_room=req.bootstrap_room, dest_tp_ranks=[self.tp_rank], pp_rank=0)
        self.queue.append(req)

    def pop_bootstrapped(self):
        if not self.queue:
            return []
        polls = poll_and_all_reduce([req.disagg_embedding_sender for req in self.queue], self.gloo_group)
        popped, remove = [], set()
        for i, (req, poll) in enumerate(zip(self.queue, polls)):
            if poll == KVPoll.Bootstrapping:
                continue
            if poll == KVPoll.Failed:
                message = f"MultimodalEmbedding bootstrap failed for request rank={self.tp_rank} {req.rid=}"
                try:
                    req.disagg_embedding_sender.failure_exception()
                except Exception as e:  # noqa: BLE001 - as the fork: the reason goes into the message
                    message += f" with exception {e}"
                prepare_abort(req, message, status_code=500)
                self.scheduler.stream_output([req], req.return_logprob)
                remove.add(i)
                continue
            indices = self.req_to_metadata_buffer_idx_allocator.alloc(
                num_tokens=len(req.origin_input_ids), req_id=req.rid,
                fake=isinstance(req.disagg_embedding_sender, FakeKVSender))
            if indices is None:
                continue
            req.embedding_indices = indices
            req.disagg_embedding_sender.init(embedding_indices=req.embedding_indices)
            popped.append(req)
            remove.add(i)
        self.queue = [req for i, req in enumerate(self.queue) if i not in remove]
        return popped


class SchedulerDisaggregationMultimodalEmbeddingMixin:
    @torch.no_grad()
    def event_loop_normal_disagg_multimodal_embedding(self):
        while not self.all_done():
            recv_reqs = self.recv_requests()
            self.process_input_requests(recv_reqs)
            self.waiting_queue.extend(self.disagg_embedding_bootstrap_queue.pop_bootstrapped())
            batch = self.get_new_batch_prefill()
            if batch:
                result = self.run_batch(batch)
                self.process_batch_result_disagg_multimodal_embedding(batch, result)
            if self.disagg_embedding_inflight_queue:
                self.process_multimodal_embedding_inflight_queue()
            if batch is None:
                self.idle()

    def process_batch_result_disagg_multimodal_embedding(self, batch, result):
        offset = 0
        for req in batch.reqs:
            if req.is_retracted:
                continue
            embedding = result.embeddings[offset:offset + req.extend_input_len]
            req.embedding = embedding if req.embedding is None else torch.cat([req.embedding, embedding])
            offset += req.extend_input_len
            req.output_ids.append(0)
            self.disagg_embedding_inflight_queue.append(req)
            self.send_embedding_chunk(req, last_chunk=True)

    def process_multimodal_embedding_inflight_queue(self):
        polls = poll_and_all_reduce([req.disagg_embedding_sender for req in self.disagg_embedding_inflight_queue],
                                    self.attn_tp_cpu_group)
        done, undone = [], []
        for req, poll in zip(self.disagg_embedding_inflight_queue, polls):
            if poll in (KVPoll.WaitingForInput, KVPoll.Transferring):
                undone.append(req)
            elif poll == KVPoll.Success:
                req.finished_reason = FINISH_LENGTH(length=0)
                req.embedding = [0]
                if hasattr(req.disagg_embedding_sender, "clear"):
                    req.disagg_embedding_sender.clear()
                done.append(req)
            elif poll == KVPoll.Failed:
                message = f"MultimodalEmbedding transfer failed for request rank={self.tp_rank} {req.rid=}"
                try:
                    req.disagg_embedding_sender.failure_exception()
                except Exception as e:  # noqa: BLE001 - as the fork
                    message += f" with exception {e}"
                prepare_abort(req, message, status_code=500)
                done.append(req)
            # anything else (Bootstrapping) drops the request, as the fork does
        self.stream_output_generation(done, False, None)
        for req in done:
            self.req_to_metadata_buffer_idx_allocator.free(
                block_indices=req.embedding_indices, req_id=req.rid,
                fake=isinstance(req.disagg_embedding_sender, FakeKVSender))
            req.embedding_indices = None
        self.disagg_embedding_inflight_queue = undone
        return done

    def send_embedding_chunk(self, req, last_chunk: bool = False):
        assert last_chunk
        if not isinstance(req.disagg_embedding_sender, FakeKVSender):
            self.disagg_metadata_buffers.set_buf(req)
        req.disagg_embedding_sender.send_embedding(
            embedding_indices=req.embedding_indices, last_chunk=last_chunk, total_tokens=len(req.fill_ids),
            block_size=self.disagg_metadata_buffers.block_size)
