"""Drop-in for the reference language side (docs/protocol.md): a client that behaves as the
fork's does (``reference_client.py``) finds `xferd serve` through the HTTP bootstrap,
registers 4 or 5 buffers without lengths, sends 7-frame inits with block-rounded
allocations, 8-frame resumes and the older 6-frame init, reads two-frame statuses with a
strict unpack, and reads what landed as the fork does. Every byte is compared with what the
encoder handed to ``Sender.write`` in its natural shapes."""
from __future__ import annotations

import json
import random
import threading
import time

import pytest
import torch

from conftest import start_node, wait_for
from reference_client import (FAILED, SUCCESS, TRANSFERRING, ReferenceBuffers, ReferenceRank, free_lists,
                              http_get, receive)
from xferd_lab.embedded import EmbeddedRedis, free_port
from xferd.client.sender import Sender

pytestmark = pytest.mark.integration
HIDDEN, BLOCK, DEST_BLOCKS = 64, 128, 96


def start(redis_url, tmp_path_factory, **overrides):
    return start_node(redis_url, tmp_path_factory, bootstrap=f"127.0.0.1:{free_port()}", hidden_size=HIDDEN,
                      block_size=BLOCK, pool_blocks=512, **overrides)


@pytest.fixture(scope="module")
def reference_node(redis_url, tmp_path_factory):
    """The reference layout; strict bounds, the fork clients bounded by the pool size."""
    node = start(redis_url, tmp_path_factory, strict_bounds=True, dst_pool_blocks=DEST_BLOCKS,
                 transfer_timeout=4.0)
    yield node
    node.stop()


@pytest.fixture(scope="module")
def deepstack_node(redis_url, tmp_path_factory):
    node = start(redis_url, tmp_path_factory, layout="deepstack:2")
    yield node
    node.stop()


def ranks_for(node, count: int, deepstack: int = 0) -> list[ReferenceRank]:
    made = [ReferenceRank(node.settings.bootstrap, ReferenceBuffers(DEST_BLOCKS, BLOCK, HIDDEN, deepstack),
                          engine_rank=r, tp_size=count) for r in range(count)]
    time.sleep(0.3)  # registrations land before the first init (separate sockets)
    return made


def close(ranks):
    for rank in ranks:
        assert rank.status_thread_error is None, f"the status thread died: {rank.status_thread_error!r}"
        assert rank.heartbeat_failures == 0
        rank.close()


def encode(node, room: int, total: int, deepstack: int = 0) -> dict:
    """The encoder's natural tensors for one request, published through the Sender."""
    gen = torch.Generator().manual_seed(room)
    items = {"embeddings": torch.randn((total, HIDDEN), generator=gen).to(torch.bfloat16),
             "token_ids": torch.randint(0, 150_000, (total,), generator=gen, dtype=torch.int32),
             "mrope_positions": torch.randint(0, 1 << 20, (3, total), generator=gen, dtype=torch.int32),
             "aux": [total, -(room % 977)]}
    if deepstack:
        items["deepstack_embeddings"] = torch.randn((total, HIDDEN * deepstack), generator=gen).to(torch.bfloat16)
    Sender(node.settings, node.store).send(room, total, items)
    return items


def assert_landed(result, sent: dict, total: int) -> None:
    """Every byte, as the fork's language side reads it."""
    data = result.data
    assert result.status == SUCCESS and result.tails_untouched
    assert torch.equal(data["embeddings"], sent["embeddings"])
    assert torch.equal(data["fill_ids"], sent["token_ids"])
    assert torch.equal(data["mrope"], sent["mrope_positions"]), "M-RoPE positions as (3, n) per block"
    assert data["aux"][:2].tolist() == sent["aux"], "aux: total length, position delta"
    if "deepstack_embeddings" in sent:
        assert torch.equal(data["deep"], sent["deepstack_embeddings"])
    assert data["embeddings"].shape[0] == total


@pytest.mark.parametrize("ranks,total,first,cap,six,rounds", [
    (1, 1000, 8192, 8192, False, 1),
    (1, 2000, 1024, 8192, False, 2),   # the resume allocates 1024 for the 976 tokens left
    (2, 5000, 1024, 1536, False, 4),
    (2, 700, 768, 768, True, 1),       # the older 6-frame init: all of it, one round
])
def test_reference_layout(reference_node, ranks, total, first, cap, six, rounds):
    node, room = reference_node, random.getrandbits(62)
    clients = ranks_for(node, ranks)
    try:
        sent = encode(node, room, total)
        results = receive(clients, room, free_lists(ranks, DEST_BLOCKS, room), first, cap, six_frames=six)
        for result in results:
            assert result.rounds == rounds
            assert_landed(result, sent, total)
        if (total, first) == (2000, 1024):
            assert results[0].allocations == [1024, 1024]
        record = node.store.room(room)
        assert (record["status_name"], record["round"]) == ("Success", str(rounds))
    finally:
        close(clients)


@pytest.mark.parametrize("ranks,total,first,cap,rounds", [(1, 3000, 1024, 1024, 3), (2, 2000, 1024, 8192, 2)])
def test_deepstack_layout_registers_five_buffers(deepstack_node, ranks, total, first, cap, rounds):
    node, room = deepstack_node, random.getrandbits(62)
    clients = ranks_for(node, ranks, deepstack=2)
    try:
        sent = encode(node, room, total, deepstack=2)
        for result in receive(clients, room, free_lists(ranks, DEST_BLOCKS, room), first, cap):
            assert result.rounds == rounds
            assert_landed(result, sent, total)
    finally:
        close(clients)


def test_bootstrap_exchange(reference_node):
    base = f"http://{reference_node.settings.bootstrap}"
    assert http_get(f"{base}/health") == (200, "OK")
    code, body = http_get(f"{base}/route?engine_rank=-1&target_dp_group=-1")
    assert code == 200 and json.loads(body) == {"embedding_tp_size": 1, "embedding_dp_size": 1}
    host, port = reference_node.settings.advertised_ingress()
    for group in (0, 3):  # every DP group maps to this node
        code, body = http_get(f"{base}/route?engine_rank=0&target_dp_group={group}")
        assert code == 200 and json.loads(body) == {"rank_ip": host, "rank_port": port}
    assert http_get(f"{base}/route?engine_rank=1&target_dp_group=0")[0] == 404
    assert http_get(f"{base}/route?engine_rank=0")[0] == 400
    assert http_get(f"{base}/nowhere")[0] == 404


def test_a_six_frame_init_with_too_few_blocks_fails_with_the_reason(reference_node):
    node, room = reference_node, random.getrandbits(62)
    [client] = ranks_for(node, 1)
    try:
        encode(node, room, 1000)
        [result] = receive([client], room, free_lists(1, DEST_BLOCKS, room), 512, 512, six_frames=True)
        assert result.status == FAILED and client.poll(room) == FAILED
        assert "6-frame init asks for all 1000 tokens in one round" in node.store.failure(room)
    finally:
        close([client])


def test_destination_indices_beyond_the_configured_pool_fail_the_room(reference_node):
    """Strict bounds with a fork client: no lengths registered, the configured pool size bounds it."""
    node, room = reference_node, random.getrandbits(62)
    [client] = ranks_for(node, 1)
    try:
        encode(node, room, 200)
        client.init(room, [DEST_BLOCKS + 1, 2])
        assert wait_for(lambda: client.poll(room) == FAILED)
        assert "outside the registered embeddings buffer (96 blocks)" in node.store.failure(room)
    finally:
        close([client])


def test_a_room_the_fork_abandons_times_out_and_releases_everything(reference_node):
    """The fork never sends ABORT: a room it drops after a partial round ends by the
    transferring timeout, which pushes Failed (two frames) and returns every source block."""
    node, room = reference_node, random.getrandbits(62)
    [client] = ranks_for(node, 1)
    try:
        encode(node, room, 2000)
        client.init(room, list(range(8)))
        assert wait_for(lambda: client.pushes(room) == 1 and client.poll(room) == TRANSFERRING)
        assert wait_for(lambda: client.poll(room) == FAILED, timeout=15)
        assert "transferring timeout" in node.store.failure(room)
        assert wait_for(lambda: node.store.free_blocks() == node.settings.pool_blocks, timeout=10)
    finally:
        close([client])


def test_a_client_with_another_layout_learns_why_its_room_fails(deepstack_node):
    node, room = deepstack_node, random.getrandbits(62)
    [client] = ranks_for(node, 1, deepstack=0)  # 4 buffers for a 5-buffer node
    try:
        client.init(room, [0, 1])
        assert wait_for(lambda: client.poll(room) == FAILED)
        assert "registration refused: 4 buffer pointers, the node's layout has 5" in node.store.failure(room)
    finally:
        close([client])


def test_health_follows_redis(tmp_path_factory):
    """/health is 503 (naming Redis) while Redis is down, 200 again once it is back."""
    with EmbeddedRedis() as server:
        node = start(server.url, tmp_path_factory)
        try:
            url = f"http://{node.settings.bootstrap}/health"
            assert http_get(url) == (200, "OK")
            seen = []
            down = threading.Thread(target=server.crash_restart, args=(4.0,))
            down.start()
            assert wait_for(lambda: seen.append(http_get(url)) or seen[-1][0] == 503, timeout=4)
            assert "Redis" in seen[-1][1] and "does not answer" in seen[-1][1]
            down.join()
            assert wait_for(lambda: http_get(url)[0] == 200, timeout=30)
        finally:
            node.stop()
