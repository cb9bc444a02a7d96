"""A worker SIGKILLed at each point of a round loses nothing and sends nothing twice;
every timeout fires with its reason and gives the source blocks back. Real processes,
real Redis, real Mooncake."""
from __future__ import annotations

import random
import time

import pytest
import torch

from conftest import start_node
from xferd.receiver import Receiver
from xferd.sender import Sender
from xferd.status import Status
from xferd.synthetic import room_data

pytestmark = pytest.mark.integration


@pytest.fixture(params=["after_begin", "after_write", "after_commit"])
def faulty_node(request, redis_url, tmp_path_factory):
    node = start_node(redis_url, tmp_path_factory, env={"XFERD_FAULT": request.param}, lease=1.0)
    yield node, request.param
    node.stop()


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_worker_killed_mid_round_loses_nothing(faulty_node):
    node, point = faulty_node
    layout = node.settings.layout
    sender = Sender(node.settings, node.store)
    rx = Receiver(node.settings.ingress, layout, 64, store=node.store, fallback_after=0.5)
    try:
        rx.register()
        time.sleep(0.2)
        room = random.getrandbits(62)
        data = room_data(room, 2000, layout)
        sender.send(room, 2000, data)
        rx.init(room, list(range(8)), 1024)
        assert rx.wait(room, 20) == Status.Transferring
        died = node.store.client.get(f"{node.store.keys.stats}:fault:{point}")
        assert died is not None, "the fault point was reached and a worker killed itself"
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
        assert "restarting" in open(node.log_path).read(), "serve restarted the killed worker"
    finally:
        rx.close()


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
    layout, room = node.settings.layout, random.getrandbits(62)
    sender = Sender(node.settings, node.store)
    rx = Receiver(node.settings.ingress, layout, 64, store=node.store)
    try:
        rx.register()
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
    finally:
        rx.close()
