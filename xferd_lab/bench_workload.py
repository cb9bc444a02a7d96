"""The bench's workloads and its measuring frame: requests shaped like the reference
client's (a request of TOTAL tokens whose destination takes PER_ROUND tokens a round), a
result row, a driver that keeps N requests in flight, and the Mooncake entries of a round."""
from __future__ import annotations

import queue
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from xferd.protocol.layout import Layout
from xferd.protocol.status import Status

MAX_BLOCKS = 64  # 8192 tokens / 128: the blocks one in-flight request owns on each side

# The reference client's shapes: a request of `total` tokens whose destination takes
# `per_round` tokens at a time, so it needs total/per_round - 1 resumes.
# shaped like the reference client's requests, and rounds of one block each, where the copy is
# nearly free and a round's coordination is most of its cost (what RDMA would leave)
WORKLOADS = {"2000/1024": (2000, 1024), "8192/2048": (8192, 2048), "256/128": (256, 128)}


@dataclass(frozen=True)
class Request:
    room: int
    total_tokens: int
    per_round: int  # tokens the destination allocates each round (whole blocks)

    @property
    def rounds(self) -> list[tuple[int, int]]:
        """(sent_before, tokens) of each round."""
        return [(sent, min(self.per_round, self.total_tokens - sent))
                for sent in range(0, self.total_tokens, self.per_round)]


def parse_workload(name: str) -> tuple[int, int]:
    """'TOTAL/PER_ROUND' -> (total tokens, tokens per round)."""
    try:
        total, per_round = (int(x) for x in name.split("/"))
    except ValueError:
        raise ValueError(f"workload {name!r}: expected TOTAL/PER_ROUND tokens, e.g. 2000/1024") from None
    if not 0 < per_round or not 0 < total <= MAX_BLOCKS * 128:
        raise ValueError(f"workload {name!r}: need 0 < PER_ROUND and 0 < TOTAL <= {MAX_BLOCKS * 128}")
    return total, per_round


def parse_workers(spec: str, rounds_per_worker: int = 1) -> tuple[int, int]:
    """'N' or 'NxR' -> (worker processes, rounds each writes at once; ``rounds_per_worker``
    when not given)."""
    try:
        count, x, rounds = spec.partition("x")
        parsed = int(count), int(rounds) if x else rounds_per_worker
    except ValueError:
        raise ValueError(f"workers {spec!r}: expected N or NxR (N processes, R rounds each at once)") from None
    if min(parsed) < 1:
        raise ValueError(f"workers {spec!r}: N and R must be at least 1")
    return parsed


def shaped(name: str, count: int, room_base: int = 0) -> list[Request]:
    total, per_round = parse_workload(name)
    return [Request(room_base + i, total, per_round) for i in range(count)]


def renamed(requests: list[Request], run: int) -> list[Request]:
    """The same requests as new rooms (room ids are never reused)."""
    return [Request(r.room + run * 10_000_000, r.total_tokens, r.per_round) for r in requests]


def request_bytes(layout: Layout, request: Request) -> int:
    return layout.bytes_for(request.total_tokens)


@dataclass
class Result:
    mode: str
    workload: str
    concurrency: int
    workers: int
    requests: list[Request] = field(repr=False)
    seconds: float
    bytes: int
    latencies_ms: list[float] = field(repr=False)
    cpu_s: dict[str, float] = field(default_factory=dict)  # process group -> CPU seconds
    extra: dict = field(default_factory=dict)
    rounds_per_worker: int = 1

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0

    @property
    def rounds(self) -> int:
        return sum(len(r.rounds) for r in self.requests)

    def row(self) -> dict:
        per_round = {name: round(seconds * 1000 / self.rounds, 3) for name, seconds in self.cpu_s.items()}
        return {"mode": self.mode, "workload": self.workload, "concurrency": self.concurrency,
                "workers": self.workers, "rounds_per_worker": self.rounds_per_worker,
                "requests": len(self.requests), "rounds": self.rounds,
                "p50_ms": round(self.percentile(0.5), 2), "p99_ms": round(self.percentile(0.99), 2),
                "gb_per_s": round(self.bytes / self.seconds / 1e9, 3),
                "req_per_s": round(len(self.requests) / self.seconds, 1),
                "rounds_per_s": round(self.rounds / self.seconds, 1),
                "cpu_ms_per_round": round(sum(per_round.values()), 3), "cpu_ms_per_round_by_process": per_round,
                **self.extra}


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


def round_entries(layout: Layout, src_base: int, src_offsets, src_block: int, dst_ptrs, dst_block: int,
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


def receive(receiver, request: Request, base: int, block_size: int) -> float:
    """The language side of one request, as the reference client does it: init, then a
    resume a round, each into blocks ``base``.. with a whole-block allocation; the latency
    in ms from the init to the last round's end. RuntimeError if a round does not end well."""
    started = time.perf_counter()
    for number, (sent, tokens) in enumerate(request.rounds):
        count = -(-tokens // block_size)
        dst = list(range(base, base + count))
        if number == 0:
            receiver.init(request.room, dst, count * block_size)
        else:
            receiver.resume(request.room, dst, sent, count * block_size)
        status = receiver.wait(request.room, 120)
        if status not in (Status.Transferring, Status.Success):
            raise RuntimeError(f"room {request.room}: {status.name} ({receiver.failure(request.room)})")
    latency = (time.perf_counter() - started) * 1000
    receiver.forget(request.room)
    return latency
