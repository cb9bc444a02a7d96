"""The design xferd replaces, for the bench: the reference embedding side in one process.

A bootstrap thread turns the language side's register/init/resume messages (ZMQ, the same
wire format) into items on one in-process queue; one transfer thread serves the queue a
round at a time, with one Mooncake entry per block per buffer type through the synchronous
``batch_transfer_sync_write``, and pushes the round's status back over ZMQ. Driven by the
same ``Receiver`` as xferd, so the two differ only in the embedding side.
"""
from __future__ import annotations

import os
import queue
import threading
import time

import zmq

from xferd_lab.bench_workload import MAX_BLOCKS, Request, Result, drive, receive, request_bytes, round_entries
from xferd_lab.cpu import CpuMeter
from xferd.transfer.engine import Engine
from xferd.protocol.layout import Layout
from xferd.node.notify import Notifier
from xferd.transfer.pool import SourcePool
from xferd.client.receiver import Receiver
from xferd.protocol.status import Status
from xferd.protocol.wire import Init, Register, Resume, WireError, decode_request


class InProcessNode:
    def __init__(self, layout: Layout, source: SourcePool, slots: int, redis_pids: list[int]):
        self.layout, self.source = layout, source
        self.engine = Engine()
        self.engine.register(source.base_ptr, source.size)
        self.context = zmq.Context.instance()
        self._pull = self.context.socket(zmq.PULL)
        self._pull.setsockopt(zmq.LINGER, 0)
        port = self._pull.bind_to_random_port("tcp://127.0.0.1")
        self.notifier = Notifier(context=self.context)
        self.sessions: dict[str, tuple[int, ...]] = {}  # session -> destination buffer pointers
        self.sources: dict[int, tuple[int, int]] = {}  # room -> (first source block, total tokens)
        self.work: queue.Queue = queue.Queue()
        self.entries = [0, 0]  # Mooncake entries, rounds
        self._closing = False
        self._threads = [threading.Thread(target=self._bootstrap, daemon=True),
                         threading.Thread(target=self._transfer, daemon=True)]
        for thread in self._threads:
            thread.start()
        self.receiver = Receiver(f"tcp://127.0.0.1:{port}", layout, slots * MAX_BLOCKS)
        self.receiver.register()
        while self.receiver.session_id not in self.sessions:
            time.sleep(0.01)
        self.meter = CpuMeter({"client": [os.getpid()], "redis": redis_pids})

    def _bootstrap(self) -> None:
        self._pull.setsockopt(zmq.RCVTIMEO, 100)  # to see _closing
        while not self._closing:
            try:
                message = decode_request(self._pull.recv_multipart())
            except (zmq.Again, WireError):
                continue
            if isinstance(message, Register):
                self.sessions[message.session_id] = message.ptrs
            elif isinstance(message, (Init, Resume)):
                sent = message.sent_tokens if isinstance(message, Resume) else 0
                self.work.put((message, sent))

    def _transfer(self) -> None:
        while (item := self.work.get()) is not None:
            message, sent = item
            src_block, total = self.sources[message.room]
            tokens = min(total - sent, message.allocated_tokens)
            src, dst, lengths = round_entries(self.layout, self.source.base_ptr, self.source.offsets, src_block,
                                              self.sessions[message.session_id], message.dst_indices[0], sent,
                                              tokens, per_block=True)
            rc = self.engine.mooncake.batch_transfer_sync_write(message.session_id, src, dst, lengths)
            self.entries[0] += len(src)
            self.entries[1] += 1
            status = Status.Failed if rc else Status.Success if sent + tokens >= total else Status.Transferring
            self.notifier.send([f"{message.ip}:{message.status_port}"], message.room, status)

    def run(self, workload: str, requests: list[Request], concurrency: int) -> Result:
        def one(request: Request, slot: int) -> float:
            self.sources[request.room] = (slot * MAX_BLOCKS, request.total_tokens)  # the encoder is done
            return receive(self.receiver, request, slot * MAX_BLOCKS, self.layout.block_size)

        before = list(self.entries)
        self.meter.start()
        latencies, elapsed = drive(requests, concurrency, one)
        entries, rounds = (now - then for now, then in zip(self.entries, before))
        return Result("in-process", workload, concurrency, 1, requests, elapsed,
                      sum(request_bytes(self.layout, r) for r in requests), latencies, self.meter.stop(),
                      {"entries_per_round": round(entries / max(1, rounds), 1)})

    def close(self) -> None:
        self.work.put(None)
        self._closing = True
        for thread in self._threads:
            thread.join(timeout=2)
        self.receiver.close()
        self.notifier.close()
        self._pull.close()
