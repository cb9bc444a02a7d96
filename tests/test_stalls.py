"""Stops that are not deaths (docs/guarantees.md), end to end: a destination that stalls mid-write
while its room is ended, and a worker cut off from Redis while its write to the language
side goes on. Real `xferd serve`, Redis, Mooncake; the language side is its own process
(SIGSTOPped here) with no Redis, so every status it acts on came by push; every byte is
compared."""
from __future__ import annotations

import random
import signal
import time

import pytest
import zmq

from conftest import start_node, wait_for
from xferd_lab.peer import SPAWN, Peer
from xferd.node import worker
from xferd.node.stopping import Identity
from xferd.node.lease import SELF_FENCE_EXIT
from xferd.client.sender import Sender
from xferd.protocol.status import Status
from xferd_lab.redis_proxy import RedisProxy
from xferd_lab.synthetic import room_data
from xferd.protocol.wire import encode_abort

pytestmark = pytest.mark.integration
BIG = 8192  # tokens: 64 blocks, 64 MiB of embeddings (hidden 4096, bf16)


def warm_up(sender: Sender, destination: Peer) -> None:
    """One small room, so that the worker's Mooncake engine knows the destination before it stalls."""
    room = random.getrandbits(62)
    destination.init(room, 128, [64])
    sender.send(room, 128, room_data(room, 128, sender.layout))
    assert destination.status() == (Status.Success, True)


def start_stalled_round(node, sender: Sender, destination: Peer) -> tuple[int, list[int]]:
    """A 64 MiB round whose destination is SIGSTOPped before the write starts: the write is
    in flight and cannot finish. Returns (room, source blocks)."""
    room, store = random.getrandbits(62), node.store
    destination.init(room, BIG, list(range(64)))
    assert wait_for(lambda: store.room(room).get("dst_count") == "1"), "init recorded"
    destination.pause()
    sender.send(room, BIG, room_data(room, BIG, sender.layout))
    assert wait_for(lambda: "holder" in store.room(room)), "a worker took the round"
    time.sleep(0.5)
    return room, [int(b) for b in store.room(room)["src_indices"].split(",")]


@pytest.fixture(scope="module")
def stall_node(redis_url, tmp_path_factory):
    node = start_node(redis_url, tmp_path_factory, workers=1, hidden_size=4096, pool_blocks=96, lease=1.0,
                      round_timeout=2.0, drain_timeout=1.0)
    yield node
    node.stop()


@pytest.mark.parametrize("ender", ["language abort", "encoder abort", "round timeout"])
def test_a_destination_stalled_mid_write_while_its_room_ends(stall_node, ender):
    node, store = stall_node, stall_node.store
    sender = Sender(node.settings, store)
    destination = Peer(node.settings)
    other = random.getrandbits(62)
    try:
        warm_up(sender, destination)
        room, busy = start_stalled_round(node, sender, destination)
        if ender == "language abort":  # the language side's own abort, from another of its threads
            push = zmq.Context.instance().socket(zmq.PUSH)
            push.connect(node.settings.ingress)
            push.send_multipart(encode_abort(room, destination.session_id))
            push.close(linger=2000)
        elif ender == "encoder abort":
            outcome = sender.abort(room)
            assert outcome.failed and not outcome.notify, "no Failed while the write is in flight"
        assert wait_for(lambda: store.status(room) == Status.Failed), "Redis says Failed at once"
        time.sleep(2.5)  # past two leases: the holder keeps renewing while its write runs
        record = store.room(room)
        assert "holder" in record and store.stats().get("writers_fenced", 0) == 0
        assert store.held_blocks(room) == 64, "a write still reads these blocks"
        # a room allocated meanwhile gets none of them, and writes its own data into its blocks
        meanwhile = sender.allocate(other, store.free_blocks() * 128)
        assert not set(meanwhile) & set(busy)
        sender.write(meanwhile, room_data(other, len(meanwhile) * 128, sender.layout))
        destination.resume()
        status, landed = destination.status()
        assert status == Status.Failed and landed, "Failed arrived only once every byte of the write had"
        assert destination.holds(room, BIG, list(range(64))), "nothing of another room reached it"
        assert wait_for(lambda: store.held_blocks(room) == 0), "the blocks went back after the write"
        assert "holder" not in store.room(room)
    finally:
        destination.stop()
        sender.abort(other)
    assert wait_for(lambda: store.free_blocks() == node.settings.pool_blocks)


def test_a_worker_cut_off_from_redis_is_stopped_before_its_round_is_redone(redis_url, tmp_path_factory):
    proxy = RedisProxy(redis_url)
    node = start_node(redis_url, tmp_path_factory, workers=0, rounds_per_worker=1, hidden_size=4096,
                      pool_blocks=96, lease=1.0, drain_timeout=1.0)
    store, sender = node.store, Sender(node.settings, node.store)
    cut_off = SPAWN.Process(target=worker.main, args=(node.settings.replace(redis_url=proxy.url), 1))
    healthy = SPAWN.Process(target=worker.main, args=(node.settings, 2))
    destination = None
    try:
        cut_off.start()
        assert wait_for(lambda: store.live_workers(), 60), "the worker behind the proxy is up"
        destination = Peer(node.settings)
        warm_up(sender, destination)
        room, _ = start_stalled_round(node, sender, destination)
        assert Identity.parse(store.room(room)["holder"]).pid == cut_off.pid
        healthy.start()
        assert wait_for(lambda: len(store.live_workers()) == 2, 60)
        proxy.freeze()  # its Redis stops answering; its write to the language side goes on
        cut_off.join(20)
        stopped_at = time.time()
        assert cut_off.exitcode in (SELF_FENCE_EXIT, -signal.SIGKILL), cut_off.exitcode
        destination.resume()
        status, landed = destination.status()
        assert status == Status.Success and landed, "every byte of the redone round is right"
        record = store.room(room)
        assert (record["epoch"], record["rewrites"], record["status_name"]) == ("2", "1", "Success")
        assert int(record["taken_at"]) / 1000 > stopped_at, "the round was taken again only after"
        assert store.stats()["handed_back"] >= 1
        assert wait_for(lambda: store.free_blocks() == node.settings.pool_blocks)
    finally:
        if destination is not None:
            destination.stop()
        for process in (cut_off, healthy):
            if process.is_alive():
                process.kill()
            process.join()
        proxy.close()
        node.stop()
