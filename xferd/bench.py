"""`xferd bench`: xferd against the two alternatives a user has, on the same bytes.

1. raw: one Mooncake batch call per request round, from one process, no coordination —
   the ceiling;
2. in-process: the reference design — an in-process queue and one transfer thread that
   issues one Mooncake entry per block per buffer type;
3. xferd: Sender → Redis → worker → Mooncake → status at the Receiver, end to end.

Every mode writes the same rounds (a request that needs a resume is written in two
rounds) from the same shared-memory source pool into the same kind of destination pool
over loopback TCP. Reports p50/p99 latency, GB/s, requests/s, and for xferd the Redis
round trips and Mooncake entries per round counted by the workers.
"""
from __future__ import annotations

import os
import queue
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .layout import Layout
from .bench_report import as_json, overhead, results_table, save_chart, summary
from .pool import DestPool, SourcePool
from .processes import start_serve, stop_process

MAX_BLOCKS = 64  # 8192 tokens / 128


@dataclass(frozen=True)
class Request:
    room: int
    total_tokens: int
    first_tokens: int  # tokens of the first round; < total_tokens when it needs a resume

    @property
    def rounds(self) -> list[tuple[int, int]]:
        """(sent_before, tokens) of each round."""
        if self.first_tokens >= self.total_tokens:
            return [(0, self.total_tokens)]
        return [(0, self.first_tokens), (self.first_tokens, self.total_tokens - self.first_tokens)]


def renamed(requests: list[Request], run: int) -> list[Request]:
    """The same requests as new rooms (room ids are never reused)."""
    return [Request(r.room + run * 10_000_000, r.total_tokens, r.first_tokens) for r in requests]


def workload(count: int, seed: int, block_size: int = 128, low: int = 256, high: int = 8192,
             resume_share: float = 0.3) -> list[Request]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        total = rng.randint(low, high)
        blocks = -(-total // block_size)
        first = total
        if blocks > 1 and rng.random() < resume_share:
            first = rng.randint(1, blocks - 1) * block_size  # a partial round is block-aligned
        out.append(Request(seed * 1_000_000 + i, total, first))
    return out


def request_bytes(layout: Layout, request: Request) -> int:
    per_token = sum(layout.token_bytes(i) for i, b in enumerate(layout.buffers) if b.per_token)
    aux = sum(b.item_len for b in layout.buffers if not b.per_token)
    return per_token * request.total_tokens + aux


@dataclass
class Result:
    mode: str
    concurrency: int
    workers: int
    requests: int
    seconds: float
    bytes: int
    latencies_ms: list[float] = field(repr=False)
    extra: dict = field(default_factory=dict)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0

    def row(self) -> dict:
        return {"mode": self.mode, "concurrency": self.concurrency, "workers": self.workers,
                "requests": self.requests, "p50_ms": round(self.percentile(0.5), 2),
                "p99_ms": round(self.percentile(0.99), 2), "gb_per_s": round(self.bytes / self.seconds / 1e9, 3),
                "req_per_s": round(self.requests / self.seconds, 1), **self.extra}


def drive(requests: list[Request], concurrency: int, one) -> tuple[list[float], float]:
    """Run ``one(request, slot)`` (returning its latency in ms) for every request, with
    ``concurrency`` in flight; each in-flight request owns a slot (its blocks). Returns the
    latencies and the wall time."""
    slots: queue.Queue = queue.Queue()
    for slot in range(concurrency):
        slots.put(slot)

    def run(request: Request) -> float:
        slot = slots.get()
        try:
            return one(request, slot)
        finally:
            slots.put(slot)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = list(pool.map(run, requests))
    return latencies, time.perf_counter() - started


def _entries(layout: Layout, src_base: int, src_offsets, src_block: int, dst_ptrs, dst_block: int,
             sent: int, tokens: int, per_block: bool) -> tuple[list[int], list[int], list[int]]:
    """One round's Mooncake entries: one per buffer type over contiguous blocks (raw), or one
    per block per buffer type (the reference design). Blocks ``src_block``.. and ``dst_block``..
    are contiguous slots; the round starts at token ``sent`` of the request."""
    block_size = layout.block_size
    first = sent // block_size
    count = -(-tokens // block_size)
    src, dst, lengths = [], [], []
    for index, buffer in enumerate(layout.buffers):
        if not buffer.per_token:
            if sent == 0:
                src.append(src_base + src_offsets[index] + src_block * buffer.item_len)
                dst.append(dst_ptrs[index] + dst_block * buffer.item_len)
                lengths.append(buffer.item_len)
            continue
        width = layout.token_bytes(index)
        spans = [(i, min(block_size, tokens - i * block_size)) for i in range(count)] if per_block \
            else [(0, tokens)]
        for i, span_tokens in spans:
            src.append(src_base + src_offsets[index] + (src_block + first + i) * buffer.item_len)
            dst.append(dst_ptrs[index] + (dst_block + i) * buffer.item_len)
            lengths.append(span_tokens * width)
    return src, dst, lengths


class Direct:
    """The raw and in-process modes: a writer engine on the source pool, a destination pool
    with its own engine, both in this process (loopback TCP between them)."""

    def __init__(self, layout: Layout, source: SourcePool, slots: int):
        from .engine import Engine

        self.layout, self.source = layout, source
        self.dest = DestPool(layout, slots * MAX_BLOCKS)
        self.dest_engine = Engine()
        for pointer, length in self.dest.regions:
            self.dest_engine.register(pointer, length)
        self.writer = Engine()
        self.writer.register(source.base_ptr, source.size)
        self.dst_ptrs = [t.data_ptr() for t in self.dest.buffers]

    def write_round(self, slot: int, sent: int, tokens: int, per_block: bool) -> int:
        src, dst, lengths = _entries(self.layout, self.source.base_ptr, self.source.offsets, slot * MAX_BLOCKS,
                                     self.dst_ptrs, slot * MAX_BLOCKS, sent, tokens, per_block)
        self.writer.write(self.dest_engine.session_id, src, dst, lengths)
        return len(src)

    def run_raw(self, requests: list[Request], concurrency: int) -> Result:
        def one(request: Request, slot: int) -> float:
            started = time.perf_counter()
            for sent, tokens in request.rounds:
                self.write_round(slot, sent, tokens, per_block=False)
            return (time.perf_counter() - started) * 1000

        latencies, elapsed = drive(requests, concurrency, one)
        return Result("raw", concurrency, 1, len(requests), elapsed,
                      sum(request_bytes(self.layout, r) for r in requests), latencies)

    def run_inprocess(self, requests: list[Request], concurrency: int) -> Result:
        """Clients keep ``concurrency`` requests queued; one transfer thread serves the queue,
        one round at a time, one entry per block per buffer type."""
        work: queue.Queue = queue.Queue()
        entries = [0, 0]  # entries, rounds

        def transfer() -> None:
            while (item := work.get()) is not None:
                slot, sent, tokens, done = item
                entries[0] += self.write_round(slot, sent, tokens, per_block=True)
                entries[1] += 1
                done.set()

        thread = threading.Thread(target=transfer, daemon=True)
        thread.start()

        def one(request: Request, slot: int) -> float:
            started = time.perf_counter()
            for sent, tokens in request.rounds:  # a resume waits for the previous round
                done = threading.Event()
                work.put((slot, sent, tokens, done))
                done.wait()
            return (time.perf_counter() - started) * 1000

        latencies, elapsed = drive(requests, concurrency, one)
        work.put(None)
        thread.join()
        return Result("in-process", concurrency, 1, len(requests), elapsed,
                      sum(request_bytes(self.layout, r) for r in requests), latencies,
                      {"entries_per_round": round(entries[0] / max(1, entries[1]), 1)})


class XferdNode:
    """`xferd serve` with N workers as a child, and a Sender and Receiver in this process."""

    def __init__(self, settings, workers: int, slots: int, log_path: str):
        from .connections import connect
        from .receiver import Receiver
        from .sender import Sender
        from .store import Store

        self.settings = settings.replace(workers=workers)
        self.store = Store(connect(self.settings.redis_url), self.settings)
        self.log = open(log_path, "a")
        self.process = start_serve(self.settings, self.store, self.log)
        self.sender = Sender(self.settings, self.store)
        self.receiver = Receiver(self.settings.ingress, self.settings.buffer_layout, slots * MAX_BLOCKS,
                                 store=self.store)
        self.receiver.register()
        time.sleep(0.3)

    def worker_counts(self) -> dict[str, int]:
        return {k: v for k, v in self.store.stats().items() if k.startswith("worker_")}

    def run(self, requests: list[Request], concurrency: int) -> Result:
        from .status import Status

        layout = self.settings.buffer_layout

        def one(request: Request, slot: int) -> float:
            base = slot * MAX_BLOCKS
            blocks = self.sender.allocate(request.room, request.total_tokens, timeout=120)
            self.sender.publish(request.room, blocks, request.total_tokens)  # the encoder is ready
            started = time.perf_counter()
            for number, (sent, tokens) in enumerate(request.rounds):
                count = -(-tokens // layout.block_size)
                dst = list(range(base, base + count))
                if number == 0:
                    self.receiver.init(request.room, dst, tokens)
                else:
                    self.receiver.resume(request.room, dst, sent, tokens)
                status = self.receiver.wait(request.room, 120)
                if status not in (Status.Transferring, Status.Success):
                    raise RuntimeError(f"room {request.room}: {status.name} "
                                       f"({self.receiver.failure(request.room)})")
            latency = (time.perf_counter() - started) * 1000
            self.receiver.forget(request.room)
            return latency

        before = self.worker_counts()
        latencies, elapsed = drive(requests, concurrency, one)
        time.sleep(1.2)  # the workers publish their counters with the heartbeat
        after = self.worker_counts()
        delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        rounds = max(1, delta.get("worker_rounds", 0))
        extra = {"redis_round_trips_per_round": round(delta.get("worker_round_trips", 0) / rounds, 2),
                 "entries_per_round": round(delta.get("worker_entries", 0) / rounds, 1),
                 "contiguous_runs_x_buffers_per_round": round(delta.get("worker_runs", 0) / rounds, 1)}
        return Result("xferd", concurrency, self.settings.workers, len(requests), elapsed,
                      sum(request_bytes(layout, r) for r in requests), latencies, extra)

    def close(self) -> None:
        """Stop the node and delete its keys."""
        self.receiver.close()
        stop_process(self.process)
        self.log.close()
        for key in self.store.node_keys():
            self.store.client.delete(key)


def run_bench(redis_url: str | None = None, requests: int = 48, concurrencies=(1, 8, 32), workers=(1, 2),
              small_requests: int = 100, seed: int = 1, hidden_size: int = 4096,
              json_path: str = "bench.json", chart_path: str = "bench.png", out=sys.stdout) -> dict:
    import json
    import tempfile

    from .embedded import free_port
    from .settings import Settings

    from .connections import DEFAULT_REDIS_URL
    from .embedded import local_or_embedded

    # the configured Redis, else the local one, else a private redis-server child
    url, embedded = (redis_url, None) if redis_url else local_or_embedded(DEFAULT_REDIS_URL)
    tag = f"bench{os.getpid()}"
    slots = max(concurrencies)
    settings = Settings(redis_url=url, prefix="xferd-bench", node=tag, hidden_size=hidden_size,
                        pool_blocks=slots * MAX_BLOCKS + MAX_BLOCKS, pool_name=f"xferd-{tag}",
                        ingress=f"tcp://127.0.0.1:{free_port()}")
    layout = settings.buffer_layout
    plan = workload(requests, seed, layout.block_size)

    small = [Request(r.room + 500_000, 256, 256) for r in workload(small_requests, seed + 1)]
    config = {"requests": requests, "concurrency": list(concurrencies), "workers": list(workers),
              "layout": layout.describe(), "tokens": "256-8192", "resumes": sum(len(r.rounds) > 1 for r in plan),
              "small_requests": small_requests, "redis": url.split("@")[-1]}
    log_path = os.path.join(tempfile.mkdtemp(prefix="xferd-bench-"), "serve.log")

    def say(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    say(f"xferd bench: {requests} requests (256-8192 tokens, {config['resumes']} with a resume), "
        f"{layout.describe()}; serve log {log_path}")
    source = SourcePool(layout, settings.pool_blocks, settings.shm_name, create=True)
    rows: list[dict] = []

    def measure(label: str, workers_: int, concurrency: int, run, requests_, warm_up=None) -> Result | None:
        """One row of the table. A run that fails is reported as a row with its error and the
        bench goes on: e.g. 32 threads sharing one engine on 2 cores can hit Mooncake's limit on
        one synchronous batch (MC_TRANSFER_TIMEOUT, 30 s by default)."""
        mode = label.split()[0]
        try:
            if warm_up is not None:
                run(warm_up, concurrency)  # connections, page faults
            result = run(requests_, concurrency)
        except RuntimeError as error:  # Mooncake's WriteError, a room that failed or timed out
            rows.append({"mode": mode, "concurrency": concurrency, "workers": workers_,
                         "requests": len(requests_), "error": str(error)[:300]})
            say(f"  {label:10s} concurrency {concurrency:2d}: FAILED: {error}")
            return None
        row = result.row()
        rows.append(row)
        trips = row.get("redis_round_trips_per_round")
        say(f"  {label:10s} concurrency {concurrency:2d}: {row['gb_per_s']} GB/s, p50 {row['p50_ms']} ms"
            + (f", {trips} Redis round trips/round" if trips is not None else ""))
        return result

    try:
        direct = Direct(layout, source, slots)
        for concurrency in concurrencies:
            for name, run in (("raw", direct.run_raw), ("in-process", direct.run_inprocess)):
                measure(name, 1, concurrency, run, plan, plan[:max(4, concurrency)])
        raw_small = direct.run_raw(small, 1)
        for count in workers:
            node = XferdNode(settings, count, slots, log_path)
            try:
                for concurrency in concurrencies:
                    run = 1 + 2 * (concurrency + 100 * count)
                    measure(f"xferd x{count}", count, concurrency, node.run, renamed(plan, run + 1),
                            renamed(plan[:max(4, concurrency)], run))
                if count == workers[0]:
                    xferd_small = node.run(renamed(small, 999), 1)
            finally:
                node.close()
    finally:
        source.unlink()
        if embedded is not None:
            embedded.stop()
    overheads = overhead(raw_small, xferd_small)
    overheads.update(raw_p50_ms=round(raw_small.percentile(0.5), 2), xferd_p50_ms=round(xferd_small.percentile(0.5), 2),
                     xferd_round_trips_per_round=xferd_small.extra["redis_round_trips_per_round"])
    targets = summary(rows, overheads)
    say("")
    say(results_table(rows))
    say("")
    for line in targets:
        say("  " + line)
    report = as_json(rows, overheads, targets, config)
    with open(json_path, "w") as handle:
        json.dump(report, handle, indent=2)
    say(f"JSON: {json_path}")
    if save_chart(rows, chart_path):
        say(f"chart: {chart_path}")
    else:
        say("chart: skipped (pip install matplotlib)")
    return report
