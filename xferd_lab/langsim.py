"""A simulated language side: Receivers for one or more ranks, a deliberately small
destination pool, resume rounds, and a check of every landed byte.

Used by `xferd demo` and the end-to-end tests. Each round it fills the blocks it hands
out with a sentinel, then checks that (a) the delivered tokens equal the room's
deterministic content, (b) the bytes past the last token of a partial block are
untouched, (c) the aux item arrived with the first round only.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from xferd.protocol.layout import Layout
from xferd.client.receiver import Receiver
from xferd.protocol.status import Status
from xferd.state.store import Store
from xferd_lab.synthetic import Request, room_data

SENTINEL = 0xA5


@dataclass
class RoomRun:
    request: Request
    expected: list[torch.Tensor]
    started: float
    sent: int = 0
    allocated: int = 0
    blocks: list[list[int]] = field(default_factory=list)  # per rank, this round
    rounds: int = 0
    waiting_for_blocks: bool = False
    last_progress: float = 0.0


@dataclass
class Result:
    room: int
    total_tokens: int
    ranks: int
    status: Status
    rounds: int
    latency: float
    bytes: int
    wrong_bytes: int
    reason: str = ""


def _diff(got: torch.Tensor, want) -> int:
    """Number of differing bytes; the cheap equality test first."""
    if isinstance(want, int):
        want = torch.full_like(got, want)
    if torch.equal(got, want):
        return 0
    return int((got != want).sum())


class LanguageSim:
    def __init__(self, ingress: str, layout: Layout, ranks: int = 2, pool_blocks: int = 64,
                 max_round_blocks: int = 16, store: Store | None = None, concurrency: int = 8,
                 stall_timeout: float = 60.0, resend_after: float = 5.0):
        self.layout = layout
        self.max_round_blocks = max_round_blocks
        self.concurrency = concurrency
        self.stall_timeout = stall_timeout
        self.receivers = [Receiver(ingress, layout, pool_blocks, store=store, resend_after=resend_after)
                          for _ in range(ranks)]
        self.free = [list(range(pool_blocks)) for _ in range(ranks)]
        for receiver in self.receivers:
            receiver.register()
        self.active: dict[int, RoomRun] = {}
        self.results: list[Result] = []
        self.bytes_landed = 0
        self.wrong_bytes = 0

    # ---- destination blocks
    def _take(self, ranks: int, count: int) -> list[list[int]] | None:
        if any(len(self.free[r]) < count for r in range(ranks)):
            return None
        taken = []
        for r in range(ranks):
            self.free[r].sort()
            taken.append(self.free[r][:count])
            del self.free[r][:count]
            for buffer in self.receivers[r].pool.buffers:
                for block in taken[-1]:
                    buffer[block].fill_(SENTINEL)
        return taken

    def _give_back(self, run: RoomRun) -> None:
        for r, blocks in enumerate(run.blocks):
            self.free[r].extend(blocks)
        run.blocks = []

    def _allocate(self, run: RoomRun) -> bool:
        remaining = run.request.total_tokens - run.sent
        count = min(self.layout.blocks_for(remaining), self.max_round_blocks)
        count = max(count, 1) if remaining else 0
        blocks = self._take(run.request.ranks, count)
        if blocks is None:
            return False
        run.blocks = blocks
        run.allocated = min(remaining, count * self.layout.block_size)  # partial rounds stay aligned
        return True

    # ---- rooms
    def start(self, request: Request) -> bool:
        run = RoomRun(request, [], time.monotonic())
        if not self._allocate(run):
            return False
        run.expected = room_data(request.room, request.total_tokens, self.layout)
        run.last_progress = time.monotonic()
        for r in range(request.ranks):
            self.receivers[r].init(request.room, run.blocks[r], run.allocated, request.ranks)
        self.active[request.room] = run
        return True

    def step(self, run: RoomRun) -> bool:
        """Advance one room if its round ended; True when something happened."""
        room, request = run.request.room, run.request
        if run.waiting_for_blocks:
            if not self._allocate(run):
                return False
            run.waiting_for_blocks = False
            self._resume(run)
            return True
        statuses = [self.receivers[r].poll(room) for r in range(request.ranks)]
        if Status.Failed in statuses:
            reason = next((rx.failure(room) for rx in self.receivers if rx.failure(room)), None)
            self._finish(run, Status.Failed, reason or "Failed reported over ZMQ")
            return True
        if not all(s in (Status.Transferring, Status.Success) for s in statuses):
            if time.monotonic() - run.last_progress > self.stall_timeout:
                self._finish(run, Status.Failed, f"stalled: no status for {self.stall_timeout:.0f}s "
                                                 f"in round {run.rounds + 1} ({statuses})")
                return True
            return False
        tokens = min(request.total_tokens - run.sent, run.allocated)
        for r in range(request.ranks):
            self.wrong_bytes += self._check(run, r, tokens)
        run.sent += tokens
        run.rounds += 1
        run.last_progress = time.monotonic()
        self.bytes_landed += request.ranks * self._round_bytes(run, tokens)
        self._give_back(run)
        done = run.sent == request.total_tokens
        said_success = all(s == Status.Success for s in statuses)
        if said_success != done:
            self._finish(run, Status.Failed, f"status {statuses} after {run.sent} of "
                                             f"{request.total_tokens} tokens")
        elif done:
            self._finish(run, Status.Success)
        elif self._allocate(run):
            self._resume(run)
        else:
            run.waiting_for_blocks = True
        return True

    def _resume(self, run: RoomRun) -> None:
        for r in range(run.request.ranks):
            self.receivers[r].resume(run.request.room, run.blocks[r], run.sent, run.allocated)

    def _round_bytes(self, run: RoomRun, tokens: int) -> int:
        return self.layout.bytes_for(tokens, first_round=run.sent == tokens)

    def _check(self, run: RoomRun, rank: int, tokens: int) -> int:
        """Wrong bytes in this round's blocks on one rank (0 when everything is right)."""
        pool, layout, block_size = self.receivers[rank].pool, self.layout, self.layout.block_size
        blocks, wrong = run.blocks[rank], 0
        for index, buffer in enumerate(layout.buffers):
            view = pool.buffers[index]
            if not buffer.per_token:  # the aux item: in the first block of the first round only
                for i, block in enumerate(blocks):
                    first = i == 0 and run.sent == 0 and tokens
                    wrong += _diff(view[block], run.expected[index] if first else SENTINEL)
                continue
            width = layout.token_bytes(index)
            for i, block in enumerate(blocks):
                count = max(0, min(block_size, tokens - i * block_size))
                start = run.sent + i * block_size
                want = buffer.token_range(run.expected[index], start, count).reshape(-1)  # as the block holds it
                wrong += _diff(view[block, :count * width], want)
                wrong += _diff(view[block, count * width:], SENTINEL)  # past the last token: untouched
        return wrong

    def _finish(self, run: RoomRun, status: Status, reason: str = "") -> None:
        self._give_back(run)
        request = run.request
        total_bytes = request.ranks * sum(
            t.numel() for t, b in zip(run.expected, self.layout.buffers))
        self.results.append(Result(request.room, request.total_tokens, request.ranks, status, run.rounds,
                                   time.monotonic() - run.started, total_bytes if status == Status.Success else 0,
                                   0, reason))
        for r in range(request.ranks):
            self.receivers[r].forget(request.room)
        del self.active[request.room]

    def run(self, requests: list[Request], progress=None) -> list[Result]:
        queue = list(requests)
        queue.reverse()
        while queue or self.active:
            while queue and len(self.active) < self.concurrency and self.start(queue[-1]):
                queue.pop()
            moved = False
            for run in list(self.active.values()):
                moved |= self.step(run)
            if progress is not None and moved:
                progress(self)
            if not moved:
                time.sleep(0.001)
        return self.results

    def close(self) -> None:
        for receiver in self.receivers:
            receiver.close()
