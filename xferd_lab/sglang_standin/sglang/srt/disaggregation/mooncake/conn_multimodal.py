"""Stand-in of SGLang's multimodal Mooncake connector, encoder side: the in-process design
xferd replaces, written from reading the fork's ``conn_multimodal.py`` (its names, messages,
threads and arithmetic; none of its code). One process holds everything: a thread turns
the language side's register/init/resume messages into ``transfer_infos``, a few queues
each served by a thread write a round with one Mooncake entry per block and buffer type
through ``batch_transfer_sync_write`` and push the round's status, and the scheduler polls
an in-memory status table. Under `xferd sglang-encoder` the encode-mode classes here are
replaced by xferd's; run without it, this is what the bench compares xferd with.

Only the encode mode runs here (the language side is the tests' own client); each encoder
TP rank serves the language ranks the route sends it, as in the fork.
"""
from __future__ import annotations

import json
import logging
import os
import struct
import threading
import time
import urllib.request
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import zmq

from sglang.srt.disaggregation.base import KVPoll

logger = logging.getLogger(__name__)
HOST = "127.0.0.1"  # the fork asks the route to a remote host for its own address
AUX = 3  # the aux buffer: sent whole, with the first block of the first round only


class EmbeddingTransferError(Exception):
    def __init__(self, bootstrap_room: int, failure_reason: str):
        super().__init__(failure_reason)
        self.bootstrap_room = bootstrap_room
        self.failure_reason = failure_reason

    def __str__(self):
        return f"EmbeddingTransferError(bootstrap_room={self.bootstrap_room}): {self.failure_reason}"


@dataclass
class TransferEmbeddingChunk:
    room: int
    embedding_indices: list
    is_last: bool
    total_tokens: int


@dataclass
class TransferEmbeddingInfo:
    """One destination session of a room: where its current round goes."""
    room: int
    endpoint: str
    dst_port: int
    mooncake_session_id: str
    dst_embedding_indices: list
    required_dst_info_num: int
    sent_tokens: int = 0
    allocated_tokens: int | None = None
    src_embedding_indices: list | None = None
    total_tokens: int = 0
    resume_ready: bool = False

    @classmethod
    def from_zmq(cls, msg: list[bytes]) -> "TransferEmbeddingInfo":
        text = msg[4].decode("ascii")
        resume = len(msg) >= 8
        return cls(room=int(msg[0]), endpoint=msg[1].decode("ascii"), dst_port=int(msg[2]),
                   mooncake_session_id=msg[3].decode("ascii"),
                   dst_embedding_indices=[int(x) for x in text.split(",")] if text else [],
                   required_dst_info_num=int(msg[5]), sent_tokens=int(msg[6]) if resume else 0,
                   allocated_tokens=int(msg[7 if resume else 6]) if len(msg) >= 7 else None)


class FastQueue:
    def __init__(self):
        self._items, self._ready = deque(), threading.Condition()

    def put(self, item) -> None:
        with self._ready:
            self._items.append(item)
            self._ready.notify()

    def get(self):
        with self._ready:
            while not self._items:
                self._ready.wait()
            return self._items.popleft()


class MooncakeEmbeddingManager:
    def __init__(self, args, disaggregation_mode, server_args, *rest, **options):
        self.data_args, self.disaggregation_mode = args, disaggregation_mode
        if getattr(disaggregation_mode, "value", disaggregation_mode) != "encode":
            return  # the language side's threads are not in the stand-in
        from mooncake.engine import TransferEngine
        self.engine = TransferEngine()
        if self.engine.initialize(HOST, "P2PHANDSHAKE", "tcp", "") != 0:
            raise RuntimeError("Mooncake engine initialize failed")
        for ptr, length in zip(args.aux_data_ptrs, args.aux_data_lens):
            self.engine.register_memory(ptr, length)
        self.bootstrap_port = server_args.disaggregation_bootstrap_port
        self.tp_size, self.dp_size = server_args.tp_size, 1
        self.request_status: dict[int, int] = {}
        self.failure_records: dict[int, str] = {}
        self.failure_lock, self.session_lock = threading.Lock(), threading.Lock()
        self.transfer_infos: dict[int, dict[str, TransferEmbeddingInfo]] = {}
        self.language_args_table: dict[str, list[int]] = {}
        self.failed_sessions: set[str] = set()
        self.context = zmq.Context()
        self.server_socket = self.context.socket(zmq.PULL)
        self.rank_port = self.server_socket.bind_to_random_port(f"tcp://{HOST}")
        self._push: dict[str, zmq.Socket] = {}
        threading.Thread(target=self._embedding_thread, daemon=True).start()
        self.transfer_queues = [FastQueue() for _ in range(int(os.environ.get("SGLANG_DISAGGREGATION_QUEUE_SIZE", 4)))]
        for queue in self.transfer_queues:
            threading.Thread(target=self._transfer_worker, args=(queue,), daemon=True).start()
        self.bootstrap_time_out = int(os.environ.get("SGLANG_DISAGGREGATION_BOOTSTRAP_TIMEOUT", 30))
        self._register_to_bootstrap()

    def get_session_id(self) -> str:
        return f"{HOST}:{self.engine.get_rpc_port()}"

    # ---- statuses, as the fork keeps them: forward only, Failed overrides
    def check_status(self, room: int):
        return self.request_status[room]

    def update_status(self, room: int, status: int) -> None:
        now = self.request_status.get(room)
        self.request_status[room] = status if now is None or status == KVPoll.Failed else max(now, status)

    def record_failure(self, room: int, reason: str) -> None:
        with self.failure_lock:
            self.failure_records[room] = reason

    def sync_status_to_language_endpoint(self, remote: str, dst_port: int, room: int, status: int) -> None:
        endpoint = f"tcp://{remote.split(':')[0]}:{dst_port}"
        if endpoint not in self._push:
            self._push[endpoint] = self.context.socket(zmq.PUSH)
            self._push[endpoint].connect(endpoint)
        self._push[endpoint].send_multipart([str(room).encode("ascii"), str(int(status)).encode("ascii")])

    # ---- the language side's messages
    def _embedding_thread(self) -> None:
        while True:
            msg = self.server_socket.recv_multipart()
            session = msg[3].decode("ascii")
            if msg[0] == b"None":
                self.language_args_table[session] = list(struct.unpack(f"{len(msg[4]) // 8}Q", msg[4]))
                with self.session_lock:
                    self.failed_sessions.discard(session)
                continue
            room, info = int(msg[0]), TransferEmbeddingInfo.from_zmq(msg)
            infos = self.transfer_infos.setdefault(room, {})
            if len(msg) < 8:  # init
                infos[session] = info
                if len(infos) == info.required_dst_info_num:
                    self.update_status(room, KVPoll.WaitingForInput)
                continue
            known = infos.get(session)
            if known is None:
                logger.error("Cannot resume: room=%s session=%s not found in transfer_infos", room, session)
                continue
            known.sent_tokens, known.allocated_tokens = info.sent_tokens, info.allocated_tokens
            known.dst_embedding_indices, known.resume_ready = info.dst_embedding_indices, True
            if all(i.resume_ready for i in infos.values()) and known.src_embedding_indices is not None:
                for each in infos.values():
                    each.resume_ready = False
                self._queue_for(room).put(TransferEmbeddingChunk(room, known.src_embedding_indices, True,
                                                                 known.total_tokens))

    def _queue_for(self, room: int) -> FastQueue:
        ports = sum(int(session.split(":")[1]) for session in self.transfer_infos[room])
        return self.transfer_queues[ports % len(self.transfer_queues)]

    # ---- the encoder's send
    def add_transfer_request(self, room: int, embedding_indices, is_last: bool, total_tokens: int,
                             block_size: int) -> None:
        assert is_last
        if room not in self.request_status or self.check_status(room) in (KVPoll.Failed, KVPoll.Transferring,
                                                                          KVPoll.Success):
            return
        if room not in self.transfer_infos:
            return
        self._queue_for(room).put(TransferEmbeddingChunk(room, embedding_indices, is_last, total_tokens))

    def _transfer_worker(self, queue: FastQueue) -> None:
        while True:
            chunk = queue.get()
            polls, endpoints, partial = [], [], False
            for info in list(self.transfer_infos.get(chunk.room, {}).values()):
                with self.session_lock:
                    dead = info.mooncake_session_id in self.failed_sessions
                if dead:
                    self._fail(chunk.room, info, f"Language instance could be dead, remote mooncake session "
                                                 f"{info.mooncake_session_id} is not alive")
                    break
                if info.src_embedding_indices is None:
                    info.src_embedding_indices, info.total_tokens = chunk.embedding_indices, chunk.total_tokens
                try:
                    ret, partial = self.send_embedding(info, chunk.embedding_indices, chunk.total_tokens)
                except ValueError as error:
                    self._fail(chunk.room, info, str(error))
                    break
                if ret != 0:
                    with self.session_lock:
                        self.failed_sessions.add(info.mooncake_session_id)
                    self._fail(chunk.room, info, f"Failed to send embedding chunk of {chunk.room} to "
                                                 f"{info.endpoint}:{info.dst_port}")
                    break
                info.sent_tokens += min(chunk.total_tokens - info.sent_tokens, info.allocated_tokens)
                polls.append(True)
                endpoints.append((info.endpoint, info.dst_port, info.room))
                if len(polls) == info.required_dst_info_num:
                    status = KVPoll.Transferring if partial else KVPoll.Success
                    self.update_status(info.room, status)
                    for endpoint, port, room in endpoints:
                        self.sync_status_to_language_endpoint(endpoint, port, room, status)
            if chunk.room not in self.request_status or self.request_status[chunk.room] == KVPoll.Success:
                self.transfer_infos.pop(chunk.room, None)

    def _fail(self, room: int, info: TransferEmbeddingInfo, reason: str) -> None:
        self.record_failure(room, reason)
        self.update_status(room, KVPoll.Failed)
        self.sync_status_to_language_endpoint(info.endpoint, info.dst_port, info.room, KVPoll.Failed)

    def send_embedding(self, info: TransferEmbeddingInfo, embedding_indices, total_tokens: int):
        """One round to one destination: (Mooncake's return code, whether more is left)."""
        item_lens = self.data_args.aux_item_lens
        block_size = item_lens[1] // 4  # token ids are int32
        dst_blocks, sent = info.dst_embedding_indices, info.sent_tokens
        allocated = info.allocated_tokens
        if allocated is None:
            allocated = len(dst_blocks) * block_size
        elif allocated // max(len(dst_blocks), 1) != block_size:
            raise ValueError(f"Block size mismatch: Embedding side uses {block_size}, but Language side allocated "
                             f"{allocated} tokens for {len(dst_blocks)} blocks")
        remaining = total_tokens - sent
        tokens, partial = min(remaining, allocated), remaining > allocated
        needed = -(-tokens // block_size)
        if needed > len(dst_blocks):
            raise ValueError(f"Insufficient dst blocks: need {needed} blocks for {tokens} tokens, but only have "
                             f"{len(dst_blocks)} blocks")
        src_blocks = embedding_indices[sent // block_size: sent // block_size + needed]
        dst_ptrs = self.language_args_table[info.mooncake_session_id]
        src, dst, lengths, done = [], [], [], 0
        for position, (src_block, dst_block) in enumerate(zip(src_blocks, dst_blocks[:needed])):
            in_block = min(block_size, tokens - done)
            for kind, item_len in enumerate(item_lens):
                if kind == AUX and (sent or position):
                    continue
                src.append(self.data_args.aux_data_ptrs[kind] + src_block * item_len)
                dst.append(dst_ptrs[kind] + dst_block * item_len)
                lengths.append(item_len if kind == AUX else item_len * in_block // block_size)
            done += in_block
        return self.engine.batch_transfer_sync_write(info.mooncake_session_id, src, dst, lengths), partial

    def _register_to_bootstrap(self) -> None:
        body = json.dumps({"role": "Encode", "tp_size": self.tp_size, "dp_size": self.dp_size, "rank_ip": HOST,
                           "rank_port": self.rank_port, "engine_rank": self.data_args.engine_rank}).encode()
        request = urllib.request.Request(f"http://{HOST}:{self.bootstrap_port}/route", data=body, method="PUT",
                                         headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(request, timeout=5).close()
        except Exception as error:  # noqa: BLE001 - as the fork: logged, not raised
            logger.error("Embedding instance failed to register to bootstrap server: %s", error)


class MooncakeEmbeddingSender:
    def __init__(self, mgr, bootstrap_addr: str, bootstrap_room: int, dest_tp_ranks=None, pp_rank: int = 0):
        self.embedding_mgr, self.bootstrap_room = mgr, bootstrap_room
        mgr.update_status(bootstrap_room, KVPoll.Bootstrapping)
        self.embedding_indices, self.bootstrap_server_url = None, bootstrap_addr
        self.conclude_state, self.init_time = None, None
        self.dest_tp_ranks, self.pp_rank = dest_tp_ranks, pp_rank

    def init(self, embedding_indices=None) -> None:
        self.embedding_indices, self.init_time = embedding_indices, time.time()

    def send(self, kv_indices=None) -> None:
        pass

    def send_embedding(self, embedding_indices=None, last_chunk: bool = True, total_tokens: int = None,
                       block_size: int = None) -> None:
        self.embedding_mgr.add_transfer_request(self.bootstrap_room, embedding_indices, last_chunk, total_tokens,
                                                block_size)

    def poll(self):
        if self.conclude_state is not None:
            return self.conclude_state
        status = self.embedding_mgr.check_status(self.bootstrap_room)
        if status in (KVPoll.Success, KVPoll.Failed):
            self.conclude_state = status
        elif status == KVPoll.Bootstrapping and self.init_time is not None:
            elapsed = time.time() - self.init_time
            if elapsed >= self.embedding_mgr.bootstrap_time_out:
                self.embedding_mgr.record_failure(self.bootstrap_room, f"Request {self.bootstrap_room} timed out "
                                                                       f"after {elapsed:.1f}s in KVPoll.Bootstrapping")
                self.conclude_state = KVPoll.Failed
                return KVPoll.Failed
        return status

    def clear(self) -> None:
        self.embedding_mgr.request_status.pop(self.bootstrap_room, None)
        self.embedding_mgr.transfer_infos.pop(self.bootstrap_room, None)

    def failure_exception(self):
        self.clear()
        if self.conclude_state is None:
            self.conclude_state = KVPoll.Failed
        with self.embedding_mgr.failure_lock:
            reason = self.embedding_mgr.failure_records.pop(self.bootstrap_room,
                                                            "Failed due to an unknown reason from another rank")
        raise EmbeddingTransferError(self.bootstrap_room, reason)


class MooncakeEmbeddingReceiver:
    def __init__(self, *args, **kwargs):
        raise RuntimeError("the SGLang stand-in has the encoder side of the connector only")


class _RouteHandler(BaseHTTPRequestHandler):
    server: "_RouteServer"

    def log_message(self, *args) -> None:
        pass

    def _reply(self, code: int, body: str, kind: str = "text/plain") -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_PUT(self) -> None:  # noqa: N802 - http.server's name
        data = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        table = self.server.table
        table.setdefault("tp_size", data["tp_size"])
        table.setdefault("dp_size", data["dp_size"])
        if data["role"] == "Encode":
            rank = int(data["engine_rank"])
            table.setdefault("ranks", {})[(rank // table["tp_size"], rank % table["tp_size"])] = {
                "rank_ip": data["rank_ip"], "rank_port": int(data["rank_port"])}
        self._reply(200, "OK")

    def do_GET(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        if url.path == "/health":
            return self._reply(200, "OK")
        query = parse_qs(url.query)
        if url.path != "/route" or "engine_rank" not in query or "target_dp_group" not in query:
            return self._reply(400, "Missing inputs for bootstrap server.")
        rank, group = int(query["engine_rank"][0]), int(query["target_dp_group"][0])
        table = self.server.table
        if (rank, group) == (-1, -1):
            return self._reply(200, json.dumps({"embedding_tp_size": table.get("tp_size"),
                                                "embedding_dp_size": table.get("dp_size")}), "application/json")
        info = table.get("ranks", {}).get((group, rank))
        if info is None:
            return self._reply(404, "Bootstrap info not Found")
        self._reply(200, json.dumps(info), "application/json")


class _RouteServer(ThreadingHTTPServer):
    daemon_threads = True
    table: dict


class MooncakeEmbeddingBootstrapServer:
    """The route table the language side asks for an encoder rank's address, and /health."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.server = _RouteServer((host or "", port), _RouteHandler)
        self.server.table = {}
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.run()

    def run(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()

    def poll(self):
        return None
