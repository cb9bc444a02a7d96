"""Block planning for one round, as pure functions.

For one destination and one round: ``remaining = total - sent``; ``n = min(remaining,
allocated)``; the round is partial when ``remaining > allocated``. Source blocks
``src[sent//B : sent//B + ceil(n/B)]`` go to ``dst[:ceil(n/B)]``; every per-token buffer
copies ``item_len * tokens_in_block / B`` bytes per block; the aux buffer goes once,
with the first block of the first round. Runs of blocks contiguous on both sides become
one Mooncake entry per buffer type.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from xferd.protocol.layout import Layout


class PlanError(ValueError):
    """The round cannot be planned without corrupting data; the message says why."""


@dataclass(frozen=True)
class Entry:
    """One Mooncake write: ``length`` bytes of buffer type ``buffer``, offsets from its base."""

    buffer: int
    src_offset: int
    dst_offset: int
    length: int


@dataclass(frozen=True)
class RoundPlan:
    tokens: int  # tokens this round delivers
    partial: bool  # more remain after this round
    sent_after: int  # the destination's sent_tokens once the round is committed
    blocks: int  # destination blocks used
    entries: tuple[Entry, ...]
    runs: int = 0  # runs of blocks contiguous on both sides

    @property
    def bytes(self) -> int:
        return sum(entry.length for entry in self.entries)


def runs(src: Sequence[int], dst: Sequence[int]) -> list[tuple[int, int]]:
    """Split paired block lists into (start, length) runs contiguous on both sides."""
    out: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(src) + 1):
        if i == len(src) or src[i] != src[i - 1] + 1 or dst[i] != dst[i - 1] + 1:
            if i > start:
                out.append((start, i - start))
            start = i
    return out


def check_allocation(layout: Layout, allocated_tokens: int | None, dst_count: int) -> None:
    """Catch a block-size mismatch from the shape of an init or resume alone.

    The language side sends ``allocated_tokens`` for ``dst_count`` blocks of its own
    block size; with the same block size the count is ``ceil(allocated / B)`` (the
    reference rounds up to whole blocks: 1024 for 976 tokens left is 8 blocks either way).
    None (the 6-frame init) carries no size information.
    """
    if allocated_tokens is None:
        return
    if allocated_tokens < 0:
        raise PlanError(f"allocated_tokens {allocated_tokens} is negative")
    expected = layout.blocks_for(allocated_tokens)
    if dst_count != expected:
        raise PlanError(
            f"block size mismatch: {allocated_tokens} allocated tokens need {expected} blocks "
            f"of {layout.block_size} tokens, but {dst_count} destination blocks were sent"
        )


def plan_round(
    layout: Layout,
    *,
    total_tokens: int,
    sent_tokens: int,
    allocated_tokens: int,
    src_indices: Sequence[int],
    dst_indices: Sequence[int],
    src_num_blocks: int | None = None,
    dst_num_blocks: Sequence[int | None] | None = None,
    one_round: bool = False,
) -> RoundPlan:
    """Plan one round for one destination; raise PlanError instead of writing wrong data.

    ``src_num_blocks`` bounds source indices (the node's pool); ``dst_num_blocks`` bounds
    destination indices per buffer type (None where the language side did not say).
    ``one_round``: the 6-frame init, whose blocks must hold every remaining token.
    """
    block = layout.block_size
    if total_tokens < 0:
        raise PlanError(f"total_tokens {total_tokens} is negative")
    if not 0 <= sent_tokens <= total_tokens:
        raise PlanError(f"sent_tokens {sent_tokens} is outside [0, total_tokens={total_tokens}]")
    if sent_tokens % block and sent_tokens != total_tokens:
        raise PlanError(f"sent_tokens {sent_tokens} is not aligned to block size {block}")
    if allocated_tokens < 0:
        raise PlanError(f"allocated_tokens {allocated_tokens} is negative")
    if len(src_indices) < layout.blocks_for(total_tokens):
        raise PlanError(
            f"source holds {len(src_indices)} blocks, {total_tokens} tokens need "
            f"{layout.blocks_for(total_tokens)}"
        )

    remaining = total_tokens - sent_tokens
    tokens = min(remaining, allocated_tokens)
    partial = remaining > allocated_tokens
    if partial and one_round:
        raise PlanError(
            f"the 6-frame init asks for all {remaining} tokens in one round, but its "
            f"{len(dst_indices)} destination blocks hold {allocated_tokens}"
        )
    if partial and not tokens:
        raise PlanError(f"allocated_tokens 0 with {remaining} tokens remaining: the round would send nothing")
    if partial and allocated_tokens % block:
        raise PlanError(
            f"partial round of {allocated_tokens} tokens (of {remaining} remaining) is not a "
            f"multiple of block size {block}: sent_tokens would become unaligned"
        )
    nblocks = layout.blocks_for(tokens)
    if nblocks > len(dst_indices):
        raise PlanError(
            f"{tokens} tokens need {nblocks} destination blocks, only {len(dst_indices)} given"
        )
    first = sent_tokens // block
    src = list(src_indices[first : first + nblocks])
    dst = list(dst_indices[:nblocks])
    _check_bounds(src, dst, src_num_blocks, dst_num_blocks, layout)

    block_runs = runs(src, dst)
    entries: list[Entry] = []
    for buffer_index, buffer in enumerate(layout.buffers):
        item = buffer.item_len
        if not buffer.per_token:
            if sent_tokens == 0 and nblocks:
                entries.append(Entry(buffer_index, src[0] * item, dst[0] * item, item))
            continue
        for start, length in block_runs:
            end_token = min((start + length) * block, tokens)
            run_tokens = end_token - start * block
            entries.append(
                Entry(buffer_index, src[start] * item, dst[start] * item, item * run_tokens // block)
            )
    return RoundPlan(tokens, partial, sent_tokens + tokens, nblocks, tuple(entries), len(block_runs))


def _check_bounds(
    src: list[int],
    dst: list[int],
    src_num_blocks: int | None,
    dst_num_blocks: Sequence[int | None] | None,
    layout: Layout,
) -> None:
    if len(set(dst)) != len(dst):
        raise PlanError(f"destination block indices repeat within one round: {dst}")
    if len(set(src)) != len(src):
        raise PlanError(f"source block indices repeat within one round: {src}")
    for index in src:
        if index < 0 or (src_num_blocks is not None and index >= src_num_blocks):
            raise PlanError(f"source block {index} is outside the pool of {src_num_blocks} blocks")
    for index in dst:
        if index < 0:
            raise PlanError(f"destination block {index} is negative")
    if dst_num_blocks is None or not dst:
        return
    top = max(dst)
    for buffer, limit in zip(layout.buffers, dst_num_blocks):
        if limit is not None and top >= limit:
            raise PlanError(
                f"destination block {top} is outside the registered {buffer.name} buffer "
                f"({limit} blocks)"
            )


# ---- a round of every destination, planned from the room's and sessions' records
def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")] if text else []


@dataclass(frozen=True)
class Target:
    """One destination's share of a round: where to write and what it leaves sent."""

    session_id: str
    plan: RoundPlan
    dst_ptrs: tuple[int, ...]
    registration: str = ""  # when the session last registered: a new one may be a restarted peer


def plan_targets(layout: Layout, src_num_blocks: int, room: dict[str, str],
                 sessions: list[dict[str, str]], expected: tuple[str, ...],
                 strict_bounds: bool = False) -> list[Target]:
    """Plan every destination of a round from the room's and its sessions' records (what the
    take returns); PlanError names what is wrong.
    ``strict_bounds``: refuse a destination registered without buffer lengths."""
    count = int(room["dst_count"])
    if count != len(expected) or count != len(sessions):
        raise PlanError(f"room has {count} destinations, the round entry names {len(expected)}")
    total = int(room["total_tokens"])
    src = _ints(room["src_indices"])
    targets = []
    for k in range(count):
        d = f"dst{k}."
        session_id = room[d + "session"]
        record = sessions[k]
        if session_id != expected[k] or not record:
            raise PlanError(f"session {session_id} is not registered")
        if "failed" in record:
            raise PlanError(f"session {session_id} is marked failed: {record['failed']}")
        ptrs = tuple(_ints(record["ptrs"]))
        if len(ptrs) != len(layout.buffers):
            raise PlanError(f"session {session_id} registered {len(ptrs)} buffers, "
                            f"the layout has {len(layout.buffers)}")
        lens = _ints(record.get("lens", ""))
        if strict_bounds and not lens:
            raise PlanError(f"session {session_id} registered no buffer lengths (strict bounds)")
        dst_blocks = [n // b.item_len for n, b in zip(lens, layout.buffers)] if lens else None
        dst = _ints(room[d + "dst_indices"])
        allocated = int(room[d + "allocated_tokens"])
        check_allocation(layout, allocated, len(dst))
        plan = plan_round(layout, total_tokens=total, sent_tokens=int(room[d + "sent_tokens"]),
                          allocated_tokens=allocated, src_indices=src, dst_indices=dst,
                          src_num_blocks=src_num_blocks, dst_num_blocks=dst_blocks,
                          one_round=room.get(d + "one_round") == "1")
        targets.append(Target(session_id, plan, ptrs, record.get("registered_at", "")))
    return targets
