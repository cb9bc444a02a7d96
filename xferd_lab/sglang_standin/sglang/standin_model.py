"""What the stand-in's "model" computes for a request: deterministic in the room, so the
language side of a test knows every byte it must receive."""
from __future__ import annotations

import torch


def request_data(room: int, tokens: int, hidden: int, deepstack: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(room % (1 << 62))
    width = hidden * (1 + deepstack)
    return {"embedding": torch.randn((tokens, width), generator=gen).to(torch.bfloat16),
            "input_ids": torch.randint(0, 150_000, (tokens,), generator=gen, dtype=torch.int32),
            "mrope_positions": torch.randint(0, 1 << 20, (3, tokens), generator=gen, dtype=torch.int32),
            "mrope_position_delta": torch.tensor([[-(room % 977)]], dtype=torch.int64)}
