"""Buffer layout: the block size and the buffer types a block is made of.

The same layout must be used by the embedding node and the language side; the register
message carries one pointer per buffer type, in this order. A layout is named by a spec
(``XFERD_LAYOUT``, ``--layout``), kept in the node's Redis record for the encoder side
and ``inspect``:

  reference            embeddings (bf16, hidden), token_ids (int32), mrope_positions
                       (3 x int32, component-major), aux (16 int32, first block only)
  deepstack:K          the reference's four, then deepstack_embeddings (K x hidden bf16)
  name=SIZE/UNIT,...   any list, in register order. SIZE is N bytes, or CxN: C components
                       of N bytes per token, stored component-major in each block (a block
                       of n tokens holds (C, n)). UNIT: ``token`` (N bytes per token),
                       ``block`` (N bytes per full block of per-token data) or ``first``
                       (one N-byte item, sent with the first block of the first round)

Per-token data is handed over in its natural shape: ``(T, ...)``, or ``(C, T, ...)`` for a
buffer of C components (the reference's M-RoPE positions are ``(3, T)``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

AUX_ITEM_LEN = 64  # the reference's aux item: 16 int32 (total length, M-RoPE position delta, ...)
PRESETS = ("reference", "deepstack:K")
_ENTRY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]{0,63})=(?:([0-9]+)x)?([0-9]+)/(token|block|first)$")


class LayoutError(ValueError):
    """A layout spec that cannot be used; the message says why."""


@dataclass(frozen=True)
class BufferType:
    name: str
    item_len: int  # bytes per block
    per_token: bool = True  # False: one item per request, sent with the first block only
    components: int = 1  # > 1: a block of n tokens stores (components, n) items, component-major

    # The natural shape of per-token data: (T, token_bytes), or (C, T, token_bytes / C) for a
    # buffer of C components. Every reader and writer of per-token data goes through these.
    @property
    def token_axis(self) -> int:
        return 0 if self.components == 1 else 1

    def natural_shape(self, tokens: int, token_bytes: int) -> tuple[int, ...]:
        if self.components == 1:
            return (tokens, token_bytes)
        return (self.components, tokens, token_bytes // self.components)

    def token_range(self, natural, start: int, count: int):
        """Tokens [start, start + count) of data in its natural shape."""
        return natural[start:start + count] if self.components == 1 else natural[:, start:start + count]

    def token_count(self, natural) -> int:
        return natural.shape[self.token_axis]


@dataclass(frozen=True)
class Layout:
    block_size: int
    buffers: tuple[BufferType, ...]

    def __post_init__(self) -> None:
        if self.block_size <= 0:
            raise LayoutError(f"block_size must be positive, got {self.block_size}")
        if not self.buffers:
            raise LayoutError("a layout needs at least one buffer type")
        names = [b.name for b in self.buffers]
        if len(set(names)) != len(names):
            raise LayoutError(f"buffer names repeat: {names}")
        for buffer in self.buffers:
            if buffer.item_len <= 0:
                raise LayoutError(f"buffer {buffer.name!r}: item_len must be positive")
            if not buffer.per_token:
                if buffer.components != 1:
                    raise LayoutError(f"buffer {buffer.name!r}: a first-block item has no components")
                continue
            if buffer.item_len % self.block_size:
                # A partial block copies item_len * tokens / block_size bytes: keep it whole.
                raise LayoutError(f"buffer {buffer.name!r}: item_len {buffer.item_len} is not a "
                                  f"multiple of block_size {self.block_size}")
            if buffer.components < 1 or (buffer.item_len // self.block_size) % buffer.components:
                raise LayoutError(f"buffer {buffer.name!r}: {buffer.item_len // self.block_size} "
                                  f"bytes per token do not split into {buffer.components} components")

    @property
    def block_bytes(self) -> int:
        return sum(buffer.item_len for buffer in self.buffers)

    def token_bytes(self, buffer_index: int) -> int:
        return self.buffers[buffer_index].item_len // self.block_size

    def bytes_for(self, tokens: int, first_round: bool = True) -> int:
        """Bytes one destination receives for ``tokens`` tokens: every per-token buffer's,
        and the first-block items when the round is the first."""
        per_token = sum(self.token_bytes(i) for i, b in enumerate(self.buffers) if b.per_token)
        return per_token * tokens + (sum(b.item_len for b in self.buffers if not b.per_token) if first_round else 0)

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def spec(self) -> str:
        """The canonical spec: ``parse_layout(layout.spec(), layout.block_size)`` is this layout."""
        parts = []
        for buffer in self.buffers:
            if not buffer.per_token:
                parts.append(f"{buffer.name}={buffer.item_len}/first")
                continue
            per_token = buffer.item_len // self.block_size
            size = (f"{buffer.components}x{per_token // buffer.components}" if buffer.components > 1
                    else str(per_token))
            parts.append(f"{buffer.name}={size}/token")
        return ",".join(parts)

    def describe(self) -> str:
        return f"block_size={self.block_size} [{self.spec()}]"


def reference_layout(block_size: int = 128, hidden_size: int = 4096, deepstack: int = 0) -> Layout:
    """The reference EPD layout: embeddings (bf16), token ids, M-RoPE positions, aux; with
    ``deepstack`` > 0 the reference's deepstack variant (a fifth, per-token buffer)."""
    buffers = [
        BufferType("embeddings", block_size * hidden_size * 2),
        BufferType("token_ids", block_size * 4),
        BufferType("mrope_positions", block_size * 12, components=3),
        BufferType("aux", AUX_ITEM_LEN, per_token=False),
    ]
    if deepstack:
        buffers.append(BufferType("deepstack_embeddings", block_size * hidden_size * 2 * deepstack))
    return Layout(block_size, tuple(buffers))


def parse_layout(spec: str, block_size: int, hidden_size: int = 4096) -> Layout:
    """A Layout from a spec (see the module doc); LayoutError says what is wrong with it."""
    text = spec.strip()
    if text == "reference":
        return reference_layout(block_size, hidden_size)
    if text.startswith("deepstack:"):
        layers = text.partition(":")[2]
        if not layers.isdigit() or not 1 <= int(layers) <= 64:
            raise LayoutError(f"layout {spec!r}: deepstack:K needs K, the deepstack layers, in 1..64")
        return reference_layout(block_size, hidden_size, int(layers))
    if "=" not in text:
        raise LayoutError(f"layout {spec!r} is not one of {', '.join(PRESETS)} nor a list of "
                          "name=SIZE/UNIT entries (UNIT: token, block or first)")
    buffers = []
    for entry in text.split(","):
        match = _ENTRY.match(entry.strip())
        if not match:
            raise LayoutError(f"layout entry {entry.strip()!r} is not name=N/UNIT or name=CxN/token "
                              "(UNIT: token, block or first)")
        name, components, size, unit = match.groups()
        components, size = int(components or 1), int(size)
        if components > 1 and unit != "token":
            raise LayoutError(f"layout entry {entry.strip()!r}: components (CxN) need the unit token")
        if unit == "first":
            buffers.append(BufferType(name, size, per_token=False))
        elif unit == "token":
            buffers.append(BufferType(name, components * size * block_size, components=components))
        else:
            buffers.append(BufferType(name, size))
    return Layout(block_size, tuple(buffers))
