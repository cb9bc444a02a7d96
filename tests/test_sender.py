"""The encoder API: the node's layout from Redis, natural-shape tensors laid out in blocks
as the reference language side reads them."""
from __future__ import annotations

import struct
import uuid

import pytest
import torch

from xferd.transfer.pool import SourcePool, describe_pool
from xferd.client.sender import NodeNotFound, Sender


@pytest.fixture
def node_pool(store):
    """A node record (as `serve` writes it) and its shared-memory pool, deepstack layout."""
    settings = store.settings.replace(layout="deepstack:1", block_size=4, hidden_size=2, pool_blocks=16,
                                      pool_name=f"xferd-test-{uuid.uuid4().hex[:8]}")
    pool = SourcePool(settings.buffer_layout, 16, settings.shm_name, create=True)
    store.init_pool(16, describe_pool(settings.buffer_layout, 16, settings.shm_name))
    yield store, pool
    pool.unlink()


def test_the_encoder_reads_the_layout_from_the_node_record(node_pool):
    store, pool = node_pool
    sender = Sender(store.settings, store)  # settings say nothing of deepstack: Redis does
    assert sender.layout == pool.layout and sender.pool.num_blocks == 16


def test_for_node_needs_only_where_the_node_is(node_pool, monkeypatch):
    store, pool = node_pool
    monkeypatch.setenv("XFERD_PREFIX", "not-this-one")
    if store.client.__class__.__name__ != "CountingRedis":
        pytest.skip("a URL of the real single Redis (the other variants are not reached by one)")
    url = store.client.connection_pool.connection_kwargs
    sender = Sender.for_node(store.settings.node, f"redis://{url['host']}:{url['port']}/{url.get('db', 0)}",
                             prefix=store.settings.prefix)
    assert sender.layout == pool.layout and sender.pool.num_blocks == 16 and sender.pool.path == pool.path


def test_natural_tensors_land_as_the_reference_reads_them(node_pool):
    store, pool = node_pool
    sender = Sender(store.settings, store)
    total, blocks = 6, [9, 2]
    embeddings = torch.arange(12, dtype=torch.float32).reshape(6, 2).to(torch.bfloat16)
    positions = torch.arange(100, 118, dtype=torch.int32).reshape(3, 6)
    deep = torch.full((6, 2), 1.5, dtype=torch.bfloat16)
    sender.write(blocks, embeddings=embeddings, token_ids=torch.arange(6, dtype=torch.int32),
                 mrope_positions=positions, aux=[total, -3], deepstack_embeddings=deep)
    mrope = pool.buffers[2].view(torch.int32)
    assert torch.equal(mrope[9, :12], positions[:, :4].flatten()), "block 1: (3, 4), component-major"
    assert torch.equal(mrope[2, :6], positions[:, 4:].flatten()), "block 2: (3, 2)"
    assert torch.equal(pool.buffers[0].view(torch.bfloat16)[2, :4], embeddings[4:].flatten())
    assert torch.equal(pool.buffers[1].view(torch.int32)[9], torch.arange(4, dtype=torch.int32))
    assert struct.unpack("2i", pool.read_item(3, 9)[:8]) == (6, -3), "aux: int32s in the first block"
    assert torch.equal(pool.buffers[4].view(torch.bfloat16)[2, :4], deep[4:].flatten())


def test_write_takes_a_sequence_in_layout_order(node_pool):
    store, pool = node_pool
    ids = torch.arange(3, dtype=torch.int32)
    Sender(store.settings, store).write([5], [None, ids])
    assert torch.equal(pool.buffers[1].view(torch.int32)[5, :3], ids)


@pytest.mark.parametrize("items,needle", [
    ({"mrope_positions": torch.zeros((6, 3), dtype=torch.int32)}, r"expected shape \(3, T, \.\.\.\)"),
    ({"embeddings": torch.zeros((6, 3), dtype=torch.bfloat16)}, "6 bytes per token, the layout says 4"),
    ({"token_ids": torch.zeros(9, dtype=torch.int32)}, "9 tokens do not fit 2 blocks"),
    ({"token_ids": torch.zeros(6, dtype=torch.int32), "embeddings": torch.zeros((5, 2), dtype=torch.bfloat16)},
     "different token counts"),
    ({"pixels": torch.zeros(1)}, "no buffer named"),
    ({"aux": list(range(17))}, "68 bytes exceed item_len 64"),
])
def test_bad_data_is_refused_with_the_reason(node_pool, items, needle):
    store, _ = node_pool
    with pytest.raises(ValueError, match=needle):
        Sender(store.settings, store).write([0, 1], items)


def test_an_encoder_for_a_node_that_is_not_there(store):
    store.client.delete(store.keys.record)
    with pytest.raises(NodeNotFound, match="is `xferd serve` running"):
        Sender(store.settings, store)


def test_nothing_is_written_or_taken_for_bad_data(node_pool):
    store, pool = node_pool
    sender = Sender(store.settings, store)
    before = pool.buffers[1].clone()
    with pytest.raises(ValueError, match="bytes per token"):
        sender.write([0, 1], token_ids=torch.ones(6, dtype=torch.int32), embeddings=torch.zeros((6, 7)))
    assert torch.equal(pool.buffers[1], before), "the good buffer was not written either"
    free = store.free_blocks()
    with pytest.raises(ValueError, match=r"expected shape \(3, T"):
        sender.send(77, 6, {"mrope_positions": torch.zeros((6, 3), dtype=torch.int32)})
    assert store.free_blocks() == free, "no source block was taken"
