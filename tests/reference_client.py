"""A language side that behaves as the reference fork's does, for the conformance tests.

Written from the behaviour of ZhengWG/sglang (branch vl-dis-1030): its multimodal
connector's language side (``MooncakeEmbeddingReceiver`` and its manager), its block
buffers (``MultimodalDataBuffers``) and its language scheduler queues. None of xferd's
client code is used here, so a test cannot pass on a shared mistake:

* bootstrap over HTTP: ``/route?engine_rank=-1&target_dp_group=-1`` for the embedding
  side's TP/DP sizes, ``/route?engine_rank=R&target_dp_group=G`` for the rank's endpoint,
  ``/health`` polled by a heartbeat thread (two misses fail every room it tracks);
* one Mooncake engine per rank, each buffer registered on its own; register is 5 frames
  (no buffer lengths), init 7 frames with ``allocated_tokens`` = blocks x block size (or
  the older 6 frames), resume 8 frames;
* a status thread that unpacks exactly two frames and dies on anything else;
* statuses merge upwards (Failed overrides); a Transferring push ends a round;
* the buffers: embeddings (bf16), fill ids (int32), M-RoPE positions (int32, (3, n) per
  block), aux (16 int32: total length, position delta), deepstack (bf16, optional); read
  back block by block as the fork's ``get_buf`` does and merged across rounds.
"""
from __future__ import annotations

import json
import os
import random
import struct
import threading
import time
import urllib.request
from dataclasses import dataclass, field

import torch
import zmq
from mooncake.engine import TransferEngine

os.environ.setdefault("MC_LOG_LEVEL", "ERROR")
FAILED, BOOTSTRAPPING, WAITING, TRANSFERRING, SUCCESS = range(5)
SENTINEL = 0x3C


def http_get(url: str, timeout: float = 3.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


class ReferenceBuffers:
    """The language side's block buffers, one tensor per buffer type, block-major."""

    def __init__(self, blocks: int, block_size: int, hidden: int, deepstack: int = 0):
        self.block_size, self.hidden, self.deepstack = block_size, hidden, deepstack
        self.embeddings = torch.zeros((blocks, block_size * hidden), dtype=torch.bfloat16)
        self.fill_ids = torch.zeros((blocks, block_size), dtype=torch.int32)
        self.mrope = torch.zeros((blocks, 3 * block_size), dtype=torch.int32)
        self.aux = torch.zeros((blocks, 16), dtype=torch.int32)
        self.deep = (torch.zeros((blocks, block_size * hidden * deepstack), dtype=torch.bfloat16)
                     if deepstack else None)

    @property
    def tensors(self) -> list[torch.Tensor]:
        out = [self.embeddings, self.fill_ids, self.mrope, self.aux]
        return out + [self.deep] if self.deep is not None else out

    def fill(self, blocks: list[int]) -> None:
        for tensor in self.tensors:
            raw = tensor.view(torch.uint8)
            for block in blocks:
                raw[block].fill_(SENTINEL)

    def read(self, blocks: list[int], tokens: int) -> dict[str, torch.Tensor]:
        """The first ``tokens`` tokens held by ``blocks``, as the fork's get_buf gathers them."""
        parts: dict[str, list[torch.Tensor]] = {"embeddings": [], "fill_ids": [], "mrope": [], "deep": []}
        gathered = 0
        for block in blocks:
            n = min(self.block_size, tokens - gathered)
            if n <= 0:
                break
            parts["embeddings"].append(self.embeddings[block, :n * self.hidden].reshape(n, self.hidden))
            parts["fill_ids"].append(self.fill_ids[block, :n])
            parts["mrope"].append(self.mrope[block, :3 * n].reshape(3, n))
            if self.deep is not None:
                width = self.hidden * self.deepstack
                parts["deep"].append(self.deep[block, :n * width].reshape(n, width))
            gathered += n
        out = {"embeddings": torch.cat(parts["embeddings"]), "fill_ids": torch.cat(parts["fill_ids"]),
               "mrope": torch.cat(parts["mrope"], dim=-1), "aux": self.aux[blocks[0]].clone()}
        if self.deep is not None:
            out["deep"] = torch.cat(parts["deep"])
        return {k: v.clone() for k, v in out.items()}

    def untouched_tails(self, blocks: list[int], tokens: int) -> bool:
        """Bytes past the last token of the last block still hold the sentinel."""
        last, n = blocks[(tokens - 1) // self.block_size], (tokens - 1) % self.block_size + 1
        per_token = [t.view(torch.uint8).shape[1] // self.block_size for t in self.tensors]
        for index, tensor in enumerate(self.tensors):
            if index == 3:
                continue  # aux: one item per request
            tail = tensor.view(torch.uint8)[last, n * per_token[index]:]
            if not bool((tail == SENTINEL).all()):
                return False
        return True


class ReferenceRank:
    """One TP rank of a reference language node, talking to one embedding node."""

    def __init__(self, bootstrap_addr: str, buffers: ReferenceBuffers, engine_rank: int = 0,
                 tp_size: int = 1, dp_size: int = 1, host: str = "127.0.0.1",
                 heartbeat_interval: float = 0.5, max_failures: int = 2):
        self.bootstrap_addr, self.buffers, self.host = bootstrap_addr, buffers, host
        self.engine = TransferEngine()
        if self.engine.initialize(host, "P2PHANDSHAKE", "tcp", "") != 0:
            raise RuntimeError("Mooncake engine did not start")
        self.session_id = f"{host}:{self.engine.get_rpc_port()}"
        for tensor in buffers.tensors:
            if self.engine.register_memory(tensor.data_ptr(), tensor.nbytes) != 0:
                raise RuntimeError("register_memory failed")
        self.context = zmq.Context()
        self.pull = self.context.socket(zmq.PULL)
        self.pull.setsockopt(zmq.LINGER, 0)
        self.rank_port = self.pull.bind_to_random_port(f"tcp://{host}")
        self.lock = threading.Lock()
        self.request_status: dict[int, int] = {}
        self.transferring_pushes: dict[int, int] = {}
        self.failure_records: dict[int, str] = {}
        self.status_thread_error: BaseException | None = None
        self.heartbeat_failures = 0
        self.tracked: set[int] = set()
        self.closing = False
        threading.Thread(target=self._status_thread, daemon=True).start()
        # the handshake: parallel sizes, then this rank's target, then register once
        code, body = http_get(f"http://{bootstrap_addr}/route?engine_rank=-1&target_dp_group=-1")
        if code != 200:
            raise RuntimeError(f"bootstrap parallel info: {code} {body}")
        info = json.loads(body)
        embedding_tp, self.embedding_dp = int(info["embedding_tp_size"]), int(info["embedding_dp_size"])
        local_tp = tp_size // dp_size
        if local_tp <= embedding_tp:
            self.target_tp_rank, self.required_dst_info_num = engine_rank % local_tp, 1
        else:
            self.target_tp_rank, self.required_dst_info_num = engine_rank % embedding_tp, local_tp // embedding_tp
        code, body = http_get(f"http://{bootstrap_addr}/route?engine_rank={self.target_tp_rank}"
                              f"&target_dp_group=0")
        if code != 200:
            raise RuntimeError(f"bootstrap route: {code} {body}")
        route = json.loads(body)
        self.push = self.context.socket(zmq.PUSH)
        self.push.connect(f"tcp://{route['rank_ip']}:{route['rank_port']}")
        packed = b"".join(struct.pack("Q", t.data_ptr()) for t in buffers.tensors)
        self.push.send_multipart([b"None", host.encode(), str(self.rank_port).encode(),
                                  self.session_id.encode(), packed])
        self.heartbeat_interval, self.max_failures = heartbeat_interval, max_failures
        threading.Thread(target=self._heartbeat, daemon=True).start()

    # ---- threads
    def _status_thread(self) -> None:
        poller = zmq.Poller()
        poller.register(self.pull, zmq.POLLIN)
        try:
            while not self.closing:
                if not poller.poll(100):
                    continue
                (room, status) = self.pull.recv_multipart()  # exactly two frames, or this thread dies
                room, status = int(room.decode("ascii")), int(status.decode("ascii"))
                if status == FAILED:
                    self.failure_records[room] = "failed on the embedding side"
                self._update(room, status)
        except BaseException as error:  # the fork's thread dies here; the tests look at it
            self.status_thread_error = error

    def _update(self, room: int, status: int) -> None:
        with self.lock:
            current = self.request_status.get(room)
            self.request_status[room] = FAILED if status == FAILED or current == FAILED else max(current or 0, status)
            if status == TRANSFERRING:
                self.transferring_pushes[room] = self.transferring_pushes.get(room, 0) + 1

    def _heartbeat(self) -> None:
        while not self.closing:
            time.sleep(self.heartbeat_interval)
            try:
                code, _ = http_get(f"http://{self.bootstrap_addr}/health", timeout=3)
            except OSError:
                code = 0
            if code == 200:
                self.heartbeat_failures = 0
                continue
            self.heartbeat_failures += 1
            if self.heartbeat_failures >= self.max_failures:  # the fork fails every tracked room
                for room in list(self.tracked):
                    if self.request_status.get(room) != SUCCESS:
                        self.failure_records[room] = "lost the embedding node (heartbeat)"
                        self._update(room, FAILED)

    # ---- messages
    def _frames(self, room: int, blocks: list[int]) -> list[bytes]:
        return [str(room).encode(), self.host.encode(), str(self.rank_port).encode(),
                self.session_id.encode(), ",".join(map(str, blocks)).encode(),
                str(self.required_dst_info_num).encode()]

    def init(self, room: int, blocks: list[int], six_frames: bool = False) -> None:
        with self.lock:
            self.request_status[room] = WAITING
            self.tracked.add(room)
        allocated = len(blocks) * self.buffers.block_size  # whole blocks, as the fork rounds
        extra = [] if six_frames else [str(allocated).encode()]
        self.push.send_multipart(self._frames(room, blocks) + extra)

    def resume(self, room: int, blocks: list[int], sent_tokens: int) -> None:
        allocated = len(blocks) * self.buffers.block_size
        self.push.send_multipart(self._frames(room, blocks) + [str(sent_tokens).encode(),
                                                               str(allocated).encode()])

    def poll(self, room: int) -> int:
        with self.lock:
            return self.request_status.get(room, BOOTSTRAPPING)

    def pushes(self, room: int) -> int:
        with self.lock:
            return self.transferring_pushes.get(room, 0)

    def close(self) -> None:
        self.closing = True
        time.sleep(0.2)
        self.pull.close(0)
        self.push.close(0)
        self.context.term()


@dataclass
class Received:
    status: int
    rounds: int
    data: dict[str, torch.Tensor] = field(default_factory=dict)
    tails_untouched: bool = True
    allocations: list[int] = field(default_factory=list)  # allocated_tokens sent, per round


def receive(ranks: list[ReferenceRank], room: int, free: list[list[int]], first_tokens: int,
            round_cap: int, six_frames: bool = False, timeout: float = 30.0) -> list[Received]:
    """One request through the fork's language flow on every rank: allocate, init, and on
    each Transferring read what landed, allocate for the rest (block-rounded, at most
    ``round_cap`` tokens) and resume; on Success read the rest and merge. ``free``: each
    rank's free destination blocks (shuffled, so runs are short)."""
    block = ranks[0].buffers.block_size

    def take(r: int, tokens: int) -> list[int]:
        count = -(-tokens // block)
        taken, free[r][:] = free[r][:count], free[r][count:]
        ranks[r].buffers.fill(taken)
        return taken

    blocks = [take(r, first_tokens) for r in range(len(ranks))]
    for r, rank in enumerate(ranks):
        rank.init(room, blocks[r], six_frames)
    results = [Received(WAITING, 0, allocations=[len(blocks[r]) * block]) for r in range(len(ranks))]
    partial: list[dict[str, list[torch.Tensor]]] = [{} for _ in ranks]
    total, sent = None, 0
    deadline = time.monotonic() + timeout
    while True:
        statuses = [rank.poll(room) for rank in ranks]
        ended = [s in (FAILED, SUCCESS) or rank.pushes(room) > results[r].rounds
                 for r, (s, rank) in enumerate(zip(statuses, ranks))]
        if FAILED in statuses:
            for r in range(len(ranks)):
                results[r].status = FAILED
            return results
        if not all(ended):
            dead = [rank.status_thread_error for rank in ranks if rank.status_thread_error]
            if dead:
                raise RuntimeError(f"room {room}: a status thread died: {dead[0]!r}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"room {room}: statuses {statuses} after {results[0].rounds} rounds")
            time.sleep(0.002)
            continue
        for r, rank in enumerate(ranks):
            tokens = len(blocks[r]) * block if total is None else min(len(blocks[r]) * block, total - sent)
            got = rank.buffers.read(blocks[r], min(tokens, int(rank.buffers.aux[blocks[r][0]][0]))
                                    if total is None else tokens)
            if total is None:
                partial[r]["aux"] = [got["aux"]]
            n = got["fill_ids"].shape[0]
            results[r].tails_untouched &= rank.buffers.untouched_tails(blocks[r], n)
            for key, value in got.items():
                if key != "aux":
                    partial[r].setdefault(key, []).append(value)
            results[r].rounds += 1
            free[r].extend(blocks[r])
        if total is None:
            total = int(partial[0]["aux"][0][0])  # the fork reads the total from aux[0]
        sent += partial[0]["fill_ids"][-1].shape[0]
        if all(s == SUCCESS for s in statuses):
            for r in range(len(ranks)):
                merged = {key: torch.cat(parts, dim=-1 if key == "mrope" else 0)
                          for key, parts in partial[r].items() if key != "aux"}
                merged["aux"] = partial[r]["aux"][0]
                results[r].status, results[r].data = SUCCESS, merged
            return results
        remaining = total - sent
        blocks = [take(r, min(remaining, round_cap)) for r in range(len(ranks))]
        for r, rank in enumerate(ranks):
            rank.resume(room, blocks[r], sent)
            results[r].allocations.append(len(blocks[r]) * block)


def free_lists(ranks: int, blocks: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    out = []
    for _ in range(ranks):
        order = list(range(blocks))
        rng.shuffle(order)
        out.append(order)
    return out
