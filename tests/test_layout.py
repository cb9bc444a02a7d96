"""Layouts: presets, specs, validation, and the natural-shape block layout."""
from __future__ import annotations

import pytest
import torch

from xferd.protocol.layout import BufferType, Layout, LayoutError, parse_layout, reference_layout
from xferd.transfer.pool import DestPool


def test_reference_preset_is_the_reference_four_buffers():
    layout = parse_layout("reference", 128, 4096)
    assert [(b.name, b.item_len, b.per_token) for b in layout.buffers] == [
        ("embeddings", 128 * 4096 * 2, True), ("token_ids", 512, True),
        ("mrope_positions", 1536, True), ("aux", 64, False)]
    assert layout.buffers[2].components == 3
    assert layout == reference_layout(128, 4096)


def test_deepstack_preset_adds_a_fifth_per_token_buffer_after_aux():
    layout = parse_layout("deepstack:3", 64, 256)
    assert [b.name for b in layout.buffers] == ["embeddings", "token_ids", "mrope_positions", "aux",
                                                "deepstack_embeddings"]
    assert layout.buffers[4].item_len == 64 * 256 * 2 * 3 and layout.buffers[4].per_token


@pytest.mark.parametrize("spec", ["reference", "deepstack:1", "deepstack:4"])
def test_the_canonical_spec_names_the_same_layout(spec):
    layout = parse_layout(spec, 16, 32)
    assert parse_layout(layout.spec(), 16) == layout


def test_a_custom_layout_in_every_unit():
    layout = parse_layout("vision=1024/token, ids=2x4/token, pooled=512/block, header=32/first", 8)
    assert [(b.name, b.item_len, b.per_token, b.components) for b in layout.buffers] == [
        ("vision", 8192, True, 1), ("ids", 64, True, 2), ("pooled", 512, True, 1), ("header", 32, False, 1)]
    assert layout.spec() == "vision=1024/token,ids=2x4/token,pooled=64/token,header=32/first"


@pytest.mark.parametrize("spec,needle", [
    ("nope", "not one of"),
    ("deepstack:0", "deepstack:K"),
    ("deepstack:x", "deepstack:K"),
    ("a=4/token,a=8/token", "repeat"),
    ("a=0/token", "positive"),
    ("a=4/tokens", "name=N/UNIT"),
    ("a=100/block", "not a multiple of block_size"),
    ("a=2x4/first", "need the unit token"),
    ("bad name=4/token", "name=N/UNIT"),
])
def test_bad_specs_say_what_is_wrong(spec, needle):
    with pytest.raises(LayoutError, match=needle):
        parse_layout(spec, 8)


def test_layout_validation():
    with pytest.raises(ValueError, match="multiple of block_size"):
        Layout(4, (BufferType("x", 6),))
    with pytest.raises(ValueError, match="components"):
        Layout(4, (BufferType("x", 20, components=3),))


def test_components_are_stored_component_major_per_block():
    """A (3, T) M-RoPE tensor lands in each block as the reference reads it: the first 3n
    int32 of a block of n tokens are positions[:, start:start+n]."""
    layout = reference_layout(block_size=4, hidden_size=2)
    pool = DestPool(layout, 4)
    positions = torch.arange(30, dtype=torch.int32).reshape(3, 10)
    natural = positions.view(torch.uint8).reshape(3, 10, 4)
    pool.write_tokens(2, [3, 0, 1], natural)
    as_int32 = pool.buffers[2].view(torch.int32)  # (blocks, 3 * block_size)
    for i, block in enumerate([3, 0, 1]):
        n = min(4, 10 - 4 * i)
        assert torch.equal(as_int32[block, :3 * n], positions[:, 4 * i:4 * i + n].flatten())
    assert torch.equal(pool.read_tokens(2, [3, 0, 1], 10), natural)
    assert torch.equal(pool.read_tokens(2, [3, 0], 8), natural[:, :8])  # whole blocks: as written


def test_bytes_for_counts_every_per_token_buffer_and_the_first_round_items():
    from xferd.protocol.layout import reference_layout

    layout = reference_layout(block_size=128, hidden_size=64)
    per_token = sum(layout.token_bytes(i) for i, b in enumerate(layout.buffers) if b.per_token)
    first = sum(b.item_len for b in layout.buffers if not b.per_token)
    assert layout.bytes_for(300) == 300 * per_token + first
    assert layout.bytes_for(300, first_round=False) == 300 * per_token
