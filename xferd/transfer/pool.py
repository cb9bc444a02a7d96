"""Block buffer pools.

``SourcePool``: the node's source blocks in one named shared-memory file, so that the
encoder writes embeddings into it and every worker process maps it and registers it with
its own Mooncake engine. (On GPUs the same role is played by CUDA IPC handles: a pool that
exposes ``base_ptr``, ``size`` and per-buffer offsets is all a worker needs.)

``DestPool``: the language side's blocks, plain torch tensors in process memory.
Both are viewed as one uint8 tensor of shape (num_blocks, item_len) per buffer type.
Workers need only the source pool's address and offsets, so torch is imported when a
tensor view is first needed: a restarted worker is ready seconds sooner.
"""
from __future__ import annotations

import ctypes
import functools
import mmap
import os
from typing import TYPE_CHECKING

from xferd.protocol.layout import Layout, parse_layout

if TYPE_CHECKING:
    import torch

SHM_DIR = "/dev/shm"
ALIGN = 4096


class BlockBuffers:
    layout: Layout
    num_blocks: int
    buffers: list[torch.Tensor]

    def ptr(self, buffer_index: int) -> int:
        return self.buffers[buffer_index].data_ptr()

    def write_tokens(self, buffer_index: int, blocks, data: torch.Tensor) -> None:
        """Write per-token data into ``blocks`` in order: uint8 in its natural shape,
        (T, token_bytes), or (C, T, token_bytes / C) for a buffer of C components (each block
        then holds its tokens component-major, as the reference language side reads them)."""
        buffer, block = self.layout.buffers[buffer_index], self.layout.block_size
        view = self.buffers[buffer_index]
        for i, index in enumerate(blocks):
            chunk = buffer.token_range(data, i * block, block)
            if not buffer.token_count(chunk):
                break
            flat = chunk.reshape(-1)
            view[index, :flat.numel()] = flat

    def read_tokens(self, buffer_index: int, blocks, tokens: int) -> torch.Tensor:
        """The first ``tokens`` tokens held by ``blocks``, uint8 in their natural shape (as
        ``write_tokens`` takes them)."""
        import torch

        buffer, block = self.layout.buffers[buffer_index], self.layout.block_size
        per_token = self.layout.token_bytes(buffer_index)
        view = self.buffers[buffer_index]
        parts = []
        for i, index in enumerate(blocks):
            count = min(block, tokens - i * block)
            if count <= 0:
                break
            parts.append(view[index, :count * per_token].reshape(buffer.natural_shape(count, per_token)))
        if not parts:
            return torch.empty(buffer.natural_shape(0, per_token), dtype=torch.uint8)
        return torch.cat(parts, dim=buffer.token_axis)

    def write_item(self, buffer_index: int, block: int, data: bytes) -> None:
        import torch

        view = self.buffers[buffer_index]
        view[block, :len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)

    def read_item(self, buffer_index: int, block: int) -> bytes:
        return bytes(self.buffers[buffer_index][block].numpy().tobytes())


def _offsets(layout: Layout, num_blocks: int) -> tuple[list[int], int]:
    offsets, size = [], 0
    for buffer in layout.buffers:
        offsets.append(size)
        size += -(-buffer.item_len * num_blocks // ALIGN) * ALIGN
    return offsets, size


def describe_pool(layout: Layout, num_blocks: int, name: str) -> dict[str, str]:
    """What the node's pool record in Redis says of the shared-memory file and its layout
    (the encoder side and ``inspect`` read it: see ``layout_of``)."""
    return {"shm": os.path.join(SHM_DIR, name), "block_size": str(layout.block_size),
            "layout": layout.spec(), "size": str(_offsets(layout, num_blocks)[1])}


def layout_of(record: dict[str, str]) -> Layout:
    """The layout a node's pool record names."""
    return parse_layout(record["layout"], int(record["block_size"]))


def remove_unless_mapped(path: str) -> str:
    """Unlink a pool file no other process maps (``mapped_by``); says what was done,
    '<path> kept: ...' or '<path> removed ...'."""
    users = mapped_by(path)
    if users:
        return f"{path} kept: mapped by pids {', '.join(map(str, users))}"
    try:
        size = os.path.getsize(path)
        os.unlink(path)
    except FileNotFoundError:
        return f"{path} was already gone"
    return f"{path} removed ({size / 2**20:.0f} MiB)"


def mapped_by(path: str) -> list[int]:
    """Pids of the other processes that map ``path`` (Linux /proc; an encoder's Sender)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/maps") as handle:
                if any(line.rstrip().endswith(path) for line in handle):
                    found.append(int(entry))
        except OSError:
            continue  # gone, or not ours to read
    return found


class SourcePool(BlockBuffers):
    """The node's source blocks in ``/dev/shm/<name>``; ``create`` makes or resizes the file."""

    @staticmethod
    def path_of(name: str) -> str:
        return os.path.join(SHM_DIR, name)

    @staticmethod
    def size_of(layout: Layout, num_blocks: int) -> int:
        """Bytes of the pool file."""
        return _offsets(layout, num_blocks)[1]

    def __init__(self, layout: Layout, num_blocks: int, name: str, create: bool = False):
        self.layout, self.num_blocks, self.name = layout, num_blocks, name
        self.path = self.path_of(name)
        self.offsets, self.size = _offsets(layout, num_blocks)
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        try:
            fd = os.open(self.path, flags, 0o600)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"source pool {self.path} does not exist: is `xferd serve` running for this node?"
            ) from None
        try:
            if create and os.fstat(fd).st_size != self.size:
                os.ftruncate(fd, self.size)
            if os.fstat(fd).st_size != self.size:
                raise ValueError(f"source pool {self.path} is {os.fstat(fd).st_size} bytes, "
                                 f"the layout needs {self.size}")
            self._map = mmap.mmap(fd, self.size)
        finally:
            os.close(fd)
        self.base_ptr = ctypes.addressof(ctypes.c_char.from_buffer(self._map))

    @functools.cached_property
    def buffers(self) -> list[torch.Tensor]:
        import torch

        whole = torch.frombuffer(self._map, dtype=torch.uint8)
        return [whole[offset:offset + b.item_len * self.num_blocks].view(self.num_blocks, b.item_len)
                for offset, b in zip(self.offsets, self.layout.buffers)]

    def unlink(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class DestPool(BlockBuffers):
    """The language side's blocks: one contiguous torch tensor per buffer type.

    ``guard_bytes`` > 0 surrounds each buffer with guard regions of a known pattern, all
    registered with Mooncake but not announced to xferd: a write that strays outside the
    announced buffer lands there instead of in unrelated memory, and ``guards_intact``
    tells (fuzz and bounds tests)."""

    GUARD = 0x5A

    def __init__(self, layout: Layout, num_blocks: int, guard_bytes: int = 0):
        import torch

        self.layout, self.num_blocks, self.guard_bytes = layout, num_blocks, guard_bytes
        self._backing = [torch.full((2 * guard_bytes + num_blocks * b.item_len,), self.GUARD, dtype=torch.uint8)
                         for b in layout.buffers]
        self.buffers = [backing[guard_bytes:guard_bytes + num_blocks * b.item_len].view(num_blocks, b.item_len)
                        for backing, b in zip(self._backing, layout.buffers)]
        for buffer in self.buffers:
            buffer.zero_()

    @property
    def regions(self) -> list[tuple[int, int]]:
        """(pointer, length) of the memory to register with Mooncake, guards included."""
        return [(backing.data_ptr(), backing.numel()) for backing in self._backing]

    def guards_intact(self) -> bool:
        g = self.guard_bytes
        return all(bool((backing[:g] == self.GUARD).all()) and bool((backing[len(backing) - g:] == self.GUARD).all())
                   for backing in self._backing)

    @property
    def lens(self) -> list[int]:
        return [t.numel() for t in self.buffers]
