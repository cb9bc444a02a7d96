"""Buffer layout: the block size and the buffer types a block is made of.

The same layout must be used by the embedding node and the language side; the
register message carries one pointer per buffer type, in this order.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BufferType:
    name: str
    item_len: int  # bytes per block
    per_token: bool = True  # False: one item per request, sent with the first block only


@dataclass(frozen=True)
class Layout:
    block_size: int
    buffers: tuple[BufferType, ...]

    def __post_init__(self) -> None:
        if self.block_size <= 0:
            raise ValueError(f"block_size must be positive, got {self.block_size}")
        if not self.buffers:
            raise ValueError("a layout needs at least one buffer type")
        for buffer in self.buffers:
            if buffer.item_len <= 0:
                raise ValueError(f"buffer {buffer.name!r}: item_len must be positive")
            if buffer.per_token and buffer.item_len % self.block_size:
                # A partial block copies item_len * tokens / block_size bytes: keep it whole.
                raise ValueError(
                    f"buffer {buffer.name!r}: item_len {buffer.item_len} is not a multiple "
                    f"of block_size {self.block_size}"
                )

    @property
    def block_bytes(self) -> int:
        return sum(buffer.item_len for buffer in self.buffers)

    def token_bytes(self, buffer_index: int) -> int:
        return self.buffers[buffer_index].item_len // self.block_size

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def describe(self) -> str:
        parts = ", ".join(f"{b.name}={b.item_len}B" for b in self.buffers)
        return f"block_size={self.block_size} [{parts}]"


AUX_ITEM_LEN = 64


def reference_layout(block_size: int = 128, hidden_size: int = 4096) -> Layout:
    """The reference EPD layout: embeddings (bf16), token ids, M-RoPE positions, aux."""
    return Layout(
        block_size=block_size,
        buffers=(
            BufferType("embeddings", block_size * hidden_size * 2),
            BufferType("token_ids", block_size * 4),
            BufferType("mrope_positions", block_size * 12),
            BufferType("aux", AUX_ITEM_LEN, per_token=False),
        ),
    )
