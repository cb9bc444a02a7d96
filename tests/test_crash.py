"""A worker SIGKILLed at each point of a round loses nothing and sends nothing twice;
every timeout fires with its reason and gives the source blocks back. Real processes,
real Redis, real Mooncake."""
from __future__ import annotations

import random
import time

import pytest
import torch

from conftest import clients, start_node, start_room, wait_for
from xferd.node import faults
from xferd.client.receiver import Receiver
from xferd.client.sender import Sender
from xferd.protocol.status import Status
from xferd_lab.synthetic import room_data

pytestmark = pytest.mark.integration


@pytest.fixture(params=["after_begin", "after_write", "after_commit"])
def faulty_node(request, redis_url, tmp_path_factory):
    node = start_node(redis_url, tmp_path_factory, env={"XFERD_FAULT": request.param}, lease=1.0)
    yield node, request.param
    node.stop()


def test_worker_killed_mid_round_loses_nothing(faulty_node):
    node, point = faulty_node
    with clients(node, fallback_after=0.5) as (sender, rx):
        time.sleep(0.2)
        room, data = start_room(sender, rx, 2000, list(range(8)), 1024)
        assert rx.wait(room, 20) == Status.Transferring
        assert faults.reached(node.store, point), "a worker reached the point and killed itself"
        assert torch.equal(rx.pool.read_tokens(0, list(range(8)), 1024), data[0][:1024])
        rx.pool.buffers[3].zero_()
        rx.resume(room, list(range(8, 16)), 1024, 976)
        assert rx.wait(room, 20) == Status.Success
        assert torch.equal(rx.pool.read_tokens(0, list(range(8, 16)), 976), data[0][1024:])
        assert not rx.pool.buffers[3].any(), "aux not re-sent by the redone round"
        record = node.store.room(room)
        assert (record["round"], record["sent_tokens"], record["status_name"]) == ("2", "2000", "Success")
        assert all(s in (Status.Transferring, Status.Success) for s in rx.history.get(room, []))
        assert rx.history.get(room, []).count(Status.Success) <= 1
        if point == "after_commit":
            assert rx.fallbacks >= 1, "the killed worker never pushed the status: Redis told"
        assert wait_for(lambda: node.store.free_blocks() == node.settings.pool_blocks)
        # the fencer hands a dead worker's round on at once, maybe before serve logs the restart
        assert wait_for(lambda: "restarting" in open(node.log_path).read()), "serve restarted the killed worker"


@pytest.fixture(scope="module")
def impatient_node(redis_url, tmp_path_factory):
    node = start_node(redis_url, tmp_path_factory, bootstrap_timeout=1.0, waiting_timeout=1.0,
                      transfer_timeout=1.0)
    yield node
    node.stop()


@pytest.mark.parametrize("phase,needle", [
    ("bootstrap", "bootstrap timeout"),
    ("waiting", "waiting timeout"),
    ("transferring", "transferring timeout"),
])
def test_each_timeout_fails_the_room_and_releases_blocks(impatient_node, phase, needle):
    node = impatient_node
    layout, room = node.settings.buffer_layout, random.getrandbits(62)
    with clients(node) as (sender, rx):
        time.sleep(0.2)
        if phase != "waiting":
            sender.send(room, 2000, room_data(room, 2000, layout))
        if phase != "bootstrap":
            rx.init(room, list(range(8)), 1024)
        if phase == "transferring":
            assert rx.wait(room, 10) == Status.Transferring  # and then never resume
        if phase == "bootstrap":  # no destination to notify: the encoder sees it
            assert wait_for(lambda: sender.poll(room) == Status.Failed)
        else:  # the janitor pushes Failed to the destination
            assert wait_for(lambda: rx.poll(room) == Status.Failed)
        assert needle in node.store.room(room)["failure"]
        if phase == "waiting":  # the encoder publishes after the room died: blocks come back
            sender.send(room, 2000, room_data(room, 2000, layout))
        assert wait_for(lambda: node.store.free_blocks() == node.settings.pool_blocks)


@pytest.fixture(scope="module")
def short_transfer_node(redis_url, tmp_path_factory):
    node = start_node(redis_url, tmp_path_factory, transfer_timeout=2.0)
    yield node
    node.stop()


def test_a_killed_destination_fails_its_rooms_and_no_other(short_transfer_node):
    import multiprocessing

    from conftest import receiver_process
    from xferd.protocol.wire import Init

    node = short_transfer_node
    layout, store = node.settings.buffer_layout, node.store
    sender = Sender(node.settings, store)
    partial, unsent, elsewhere = (random.getrandbits(62) for _ in range(3))
    context = multiprocessing.get_context("spawn")
    sessions = context.Queue()
    doomed = context.Process(target=receiver_process, args=(
        node.settings.ingress, node.settings, [(partial, list(range(8)), 1024), (unsent, list(range(8, 24)), 2000)],
        sessions))
    doomed.start()
    rx = Receiver(node.settings.ingress, layout, 64, store=store)
    try:
        doomed_session = sessions.get(timeout=60)
        rx.register()
        sender.send(partial, 2000, room_data(partial, 2000, layout))
        assert wait_for(lambda: store.status(partial) == Status.Transferring), "round 1 landed"
        doomed.kill()
        doomed.join()
        # a round for the dead process: the write fails, the room fails with the reason
        sender.send(unsent, 2000, room_data(unsent, 2000, layout))
        assert wait_for(lambda: store.status(unsent) == Status.Failed)
        assert "Mooncake write" in store.failure(unsent) and doomed_session in store.failure(unsent)
        # a room waiting on the dead process for a resume: the transferring timeout
        assert wait_for(lambda: store.status(partial) == Status.Failed)
        assert "transferring timeout" in store.failure(partial)
        # the session stays failed until it registers again
        session_record = store.client.hget(store.keys.session(doomed_session), "failed")
        assert session_record and b"Mooncake write" in session_record
        late = store.dst_init(Init(random.getrandbits(62), "127.0.0.1", 1, doomed_session, (0,), 1, 100))
        assert late.failed and "marked failed" in late.note
        # every other session carries on
        data = room_data(elsewhere, 2000, layout)
        sender.send(elsewhere, 2000, data)
        rx.init(elsewhere, list(range(16)), 2000)
        assert rx.wait(elsewhere, 20) == Status.Success
        assert torch.equal(rx.pool.read_tokens(0, list(range(16)), 2000), data[0])
        assert wait_for(lambda: store.free_blocks() == node.settings.pool_blocks)
    finally:
        if doomed.is_alive():
            doomed.kill()
        rx.close()


def test_a_lost_consumer_group_is_recreated_and_rooms_go_on(short_transfer_node):
    from xferd.state.keys import GROUP

    node, store = short_transfer_node, short_transfer_node.store
    with clients(node) as (sender, rx):
        room, data = start_room(sender, rx, 2000, list(range(8)), 1024)
        assert rx.wait(room, 20) == Status.Transferring
        store.client.xgroup_destroy(store.keys.stream, GROUP)  # an operator's mistake, or a failover
        rx.resume(room, list(range(8, 16)), 1024, 976)
        assert rx.wait(room, 20) == Status.Success
        assert torch.equal(rx.pool.read_tokens(0, list(range(8, 16)), 976), data[0][1024:])
        assert store.room(room)["round"] == "2"
        assert "consumer group was lost" in open(node.log_path).read()


def test_a_success_its_worker_died_before_pushing_is_pushed_by_the_janitor(redis_url, tmp_path_factory):
    """The worker commits a one-round room's Success and is SIGKILLed before it pushes it. A
    language side without Redis to read (as the reference) still gets Success: the janitor
    sees the committing worker gone and pushes it again (the statuses_repushed counter)."""
    node = start_node(redis_url, tmp_path_factory, env={"XFERD_FAULT": "after_commit"}, lease=1.0)
    rx = Receiver(node.settings.ingress, node.settings.buffer_layout, 64)  # no store: pushes only
    try:
        rx.register()
        sender = Sender(node.settings, node.store)
        room = 7_300_001
        data = room_data(room, 300, sender.layout)
        sender.send(room, 300, data)
        rx.init(room, [0, 1, 2], 384)
        assert rx.wait(room, 15) == Status.Success
        assert faults.reached(node.store, "after_commit"), "the worker died between its commit and its push"
        assert rx.history[room] == [Status.Success]
        assert node.store.stats().get("statuses_repushed") == 1
        assert torch.equal(rx.pool.read_tokens(0, [0, 1, 2], 300), data[0])
    finally:
        rx.close()
        node.stop()
