"""Stand-in of SGLang's scheduler, encode mode only: one per TP rank (a process each), its
set-up as the fork's (the block allocator and the multimodal buffers from
SGLANG_EMBEDDING_CACHE_BUFFER_SIZE / _BLOCK_SIZE, imported by name at import time), requests
received on rank 0 and broadcast to every rank each loop, a "model" whose embeddings are
``standin_model.request_data``. Outcomes go to a JSON-lines file per rank."""
from __future__ import annotations

import functools
import json
import os
import resource
import time
from types import SimpleNamespace

import torch
import torch.distributed as dist

from sglang.srt.disaggregation.multimodal_embedding import (MultimodalEmbeddingBootstrapQueue,
                                                            SchedulerDisaggregationMultimodalEmbeddingMixin)
from sglang.srt.disaggregation.utils import (FAKE_BOOTSTRAP_HOST, DisaggregationMode, MultimodalDataBuffers,
                                             ReqToMetadataBlockAllocator, TransferBackend)
from sglang.srt.managers.schedule_batch import (FINISH_LENGTH, MultimodalInputs, Req, ScheduleBatch,
                                                get_global_server_args)
from sglang.standin_model import request_data

IDLE_S = 0.0002  # the stand-in sleeps this long on a loop with nothing to run (SGLang's spins)


class Scheduler(SchedulerDisaggregationMultimodalEmbeddingMixin):
    def __init__(self, server_args, tp_rank: int, plan: list[dict], results_path: str):
        self.server_args, self.tp_rank, self.tp_size = server_args, tp_rank, server_args.tp_size
        self.gpu_id = tp_rank
        self.attn_tp_cpu_group = dist.group.WORLD
        self.disaggregation_mode = DisaggregationMode(server_args.disaggregation_mode)
        self.transfer_backend = TransferBackend(server_args.disaggregation_transfer_backend)
        assert self.disaggregation_mode == DisaggregationMode.ENCODE, "the stand-in runs the encode mode only"
        buffer_size = int(os.environ.get("SGLANG_EMBEDDING_CACHE_BUFFER_SIZE", "64"))
        block_size = int(os.environ.get("SGLANG_EMBEDDING_CACHE_BLOCK_SIZE", "8192"))
        self.req_to_metadata_buffer_idx_allocator = ReqToMetadataBlockAllocator(buffer_size, block_size=block_size)
        self.disagg_metadata_buffers = MultimodalDataBuffers(buffer_size, block_size, server_args.hidden_size,
                                                             num_deepstack_embeddings=server_args.deepstack)
        self.disagg_embedding_bootstrap_queue = MultimodalEmbeddingBootstrapQueue(
            req_to_metadata_buffer_idx_allocator=self.req_to_metadata_buffer_idx_allocator,
            metadata_buffers=self.disagg_metadata_buffers, tp_rank=self.tp_rank, tp_size=self.tp_size,
            bootstrap_port=server_args.disaggregation_bootstrap_port, gloo_group=self.attn_tp_cpu_group,
            transfer_backend=self.transfer_backend, scheduler=self)
        self.disagg_embedding_inflight_queue = []
        self.waiting_queue = []
        get_global_server_args().max_micro_batch_size = server_args.max_micro_batch
        self.plan = sorted(plan, key=lambda e: e.get("at_s", 0.0))
        self.by_rid = {entry["rid"]: entry for entry in self.plan}
        self.arrived, self.aborted = 0, set()
        self.outcomes: dict[str, dict] = {}
        self.results = open(results_path, "a", buffering=1)
        self.started = time.monotonic()
        self.model_cpu_s = 0.0  # spent "computing" embeddings: not the transfer's
        self._shape = (server_args.hidden_size, server_args.deepstack)
        cached = functools.lru_cache(maxsize=8)(lambda tokens: request_data(1, tokens, *self._shape))
        self._data = ((lambda room, tokens: cached(tokens)) if server_args.model == "cached"
                      else (lambda room, tokens: request_data(room, tokens, *self._shape)))

    def model(self, entry: dict) -> dict:
        started = time.thread_time()
        try:
            return self._data(entry["room"], entry["tokens"])
        finally:
            self.model_cpu_s += time.thread_time() - started

    # ---- requests: rank 0 receives, every rank gets the same list (SGLang broadcasts them)
    def recv_requests(self):
        now = time.monotonic() - self.started
        news, aborts = [], []
        if self.tp_rank == 0:
            while self.arrived < len(self.plan) and self.plan[self.arrived].get("at_s", 0.0) <= now:
                news.append(self.plan[self.arrived]["rid"])
                self.arrived += 1
            aborts = [e["rid"] for e in self.plan
                      if e.get("abort_at_s") is not None and e["abort_at_s"] <= now and e["rid"] not in self.aborted]
        if self.tp_size > 1:
            box = [(news, aborts)]
            dist.broadcast_object_list(box, src=0, group=self.attn_tp_cpu_group)
            news, aborts = box[0]
        self.aborted.update(aborts)
        return [("req", rid) for rid in news] + [("abort", rid) for rid in aborts]

    def process_input_requests(self, recv_reqs):
        for kind, rid in recv_reqs:
            entry = self.by_rid[rid]
            if kind == "abort":
                self.abort_request(rid)
                continue
            data = self.model(entry)
            req = Req(rid=rid, origin_input_ids=data["input_ids"].tolist(),
                      bootstrap_host=FAKE_BOOTSTRAP_HOST if entry.get("fake") else "127.0.0.1",
                      bootstrap_room=entry["room"],
                      multimodal_inputs=MultimodalInputs(data["mrope_positions"], data["mrope_position_delta"]))
            self.disagg_embedding_bootstrap_queue.add(req)

    def abort_request(self, rid: str):
        """As SGLang's abort in the encode mode: the senders of matching requests abort."""
        for req in self.disagg_embedding_bootstrap_queue.queue + self.disagg_embedding_inflight_queue:
            if req.rid.startswith(rid) and hasattr(req.disagg_embedding_sender, "abort"):
                req.disagg_embedding_sender.abort()

    # ---- the "model"
    def get_new_batch_prefill(self):
        if not self.waiting_queue:
            return None
        size = get_global_server_args().max_micro_batch_size
        reqs, self.waiting_queue = self.waiting_queue[:size], self.waiting_queue[size:]
        return ScheduleBatch(reqs)

    def run_batch(self, batch):
        parts = []
        for req in batch.reqs:
            entry = self.by_rid[req.rid]
            time.sleep(entry.get("compute_s", 0.0))
            parts.append(self.model(entry)["embedding"])
        return SimpleNamespace(embeddings=torch.cat(parts))

    # ---- outputs
    def stream_output(self, reqs, return_logprob, *rest):
        for req in reqs:
            ok = isinstance(req.finished_reason, FINISH_LENGTH)
            record = {"rank": self.tp_rank, "rid": req.rid, "room": req.bootstrap_room,
                      "outcome": "Success" if ok else "Failed",
                      "error": None if ok else req.finished_reason.message,
                      "done_s": round(time.monotonic() - self.started, 6)}
            self.outcomes[req.rid] = record
            self.results.write(json.dumps(record) + "\n")

    stream_output_generation = stream_output

    def all_done(self) -> bool:
        if len(self.outcomes) == len(self.plan):
            return True
        if time.monotonic() - self.started > self.server_args.deadline_s:
            missing = [e["rid"] for e in self.plan if e["rid"] not in self.outcomes]
            raise TimeoutError(f"rank {self.tp_rank}: {len(missing)} requests unfinished after "
                               f"{self.server_args.deadline_s}s: {missing[:5]}")
        return False

    def idle(self):
        time.sleep(IDLE_S)

    def summary(self) -> dict:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {"rank": self.tp_rank, "summary": True, "requests": len(self.outcomes),
                "model_cpu_s": self.model_cpu_s,
                "cpu_s": usage.ru_utime + usage.ru_stime, "wall_s": time.monotonic() - self.started,
                "max_rss_kib": usage.ru_maxrss}
