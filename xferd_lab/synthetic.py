"""Deterministic per-room data and workloads, for the demo, the tests and benchmarks.

Both sides derive a room's content from its number alone, so the language side can check
every landed byte without being told what was sent.
"""
from __future__ import annotations

import random
import struct
from dataclasses import dataclass

import torch

from xferd.protocol.layout import Layout


ROW_SHIFT = 61  # prime, so rows never line up with any buffer's width


def room_data(room: int, total_tokens: int, layout: Layout) -> list[torch.Tensor]:
    """One uint8 tensor per buffer type, in its natural shape (``Sender.write`` takes it):
    (tokens, token_bytes), or (C, tokens, token_bytes / C) for a buffer of C components;
    a first-block item as (item_len,), starting with int32 total tokens as the reference's aux."""
    generator = torch.Generator().manual_seed(room & 0x7FFF_FFFF_FFFF_FFFF)
    out = []
    for index, buffer in enumerate(layout.buffers):
        if not buffer.per_token:
            aux = struct.pack("<iiq", total_tokens, room % 1000, room & 0x7FFF_FFFF_FFFF_FFFF)
            out.append(torch.frombuffer(bytearray(aux.ljust(buffer.item_len, b"\x5a")), dtype=torch.uint8))
            continue
        # Row t is the window at byte t*ROW_SHIFT of one random buffer: every row differs
        # (a misplaced token or block shows), at the cost of one small random draw.
        width = layout.token_bytes(index)
        noise = torch.randint(0, 256, (total_tokens * ROW_SHIFT + width,), dtype=torch.uint8,
                              generator=generator)
        rows = noise.as_strided((total_tokens, width), (ROW_SHIFT, 1))
        if buffer.components > 1:
            rows = rows.reshape(total_tokens, buffer.components, -1).permute(1, 0, 2)
        out.append(rows)
    return out


@dataclass(frozen=True)
class Request:
    room: int
    total_tokens: int
    ranks: int  # required_dst_info_num


def workload(count: int, seed: int, min_tokens: int = 64, max_tokens: int = 8192,
             two_rank_share: float = 0.3, room_base: int = 1_000_000) -> list[Request]:
    rng = random.Random(seed)
    return [Request(room_base + i, rng.randint(min_tokens, max_tokens),
                    2 if rng.random() < two_rank_share else 1) for i in range(count)]
