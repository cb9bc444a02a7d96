"""The encoder process's node handle (``xferd/sglang_encoder/node.py``) and its background
calls (``background.py``): statuses come from the node's status stream without polling,
only move forward (Failed overrides), and are read again after a lost stream; calls the
scheduler does not wait for run in order and hand their errors to whoever asks."""
from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from conftest import wait_for
from test_store import init, register
from xferd.sglang_encoder import node as node_module
from xferd.sglang_encoder.background import Background
from xferd.sglang_encoder.node import EncoderNode
from xferd.protocol.status import Status


@pytest.fixture
def encoder(store):
    """An EncoderNode on the test store (no pool: statuses and leases only)."""
    store.init_pool(4, {"shm": "test"})
    made = EncoderNode(store.settings, SimpleNamespace(store=store))
    yield made
    made.close()


def test_statuses_only_move_forward_and_failed_overrides(encoder):
    encoder.watch(7)
    assert encoder.background.drain(5)
    assert encoder.status(7) == (None, None), "no record yet"
    for seen, want in [(2, Status.WaitingForInput), (1, Status.WaitingForInput), (4, Status.Success),
                       (3, Status.Success)]:
        encoder._learn(7, str(seen).encode())
        assert encoder.status(7)[0] == want
    encoder.watch(8)
    encoder._learn(8, b"3")
    encoder._learn(8, b"0")
    encoder._learn(8, b"4")
    assert encoder.status(8) == (Status.Failed, None), "Failed overrides, and stays"
    encoder._learn(8, b"0", b"the reason")
    assert encoder.status(8) == (Status.Failed, "the reason"), "the record's reason joins the stream's Failed"
    encoder._learn(99, b"2")
    assert encoder.status(99) == (None, None), "rooms nobody watches are not kept"
    encoder.forget(7)
    assert encoder.status(7) == (None, None)


def test_a_watched_room_follows_redis_with_no_poll_while_idle(encoder, store):
    register(store)
    encoder.watch(11)
    time.sleep(0.3)  # the follower blocks on the stream now
    init(store, 11)  # the language side is ready: WaitingForInput
    assert wait_for(lambda: encoder.status(11)[0] == Status.WaitingForInput, 2)
    store.fail_room(11, "aborted by the test")
    assert wait_for(lambda: encoder.status(11)[0] == Status.Failed, 2)
    init(store, 12)
    encoder.watch(12)  # a room that changed before it was watched: its first read tells
    assert wait_for(lambda: encoder.status(12)[0] == Status.WaitingForInput, 2)
    before = store.client.round_trips if hasattr(store.client, "round_trips") else None
    time.sleep(0.5)
    if before is not None:
        assert store.client.round_trips - before <= 2, "an idle encoder only waits on the stream"


def test_a_change_the_stream_lost_is_read_again(encoder, store, monkeypatch):
    monkeypatch.setattr(node_module, "STATUS_RESYNC_S", 0.2)
    register(store)
    init(store, 21)
    encoder.watch(21)
    assert wait_for(lambda: encoder.status(21)[0] == Status.WaitingForInput, 2)
    store.client.hset(store.keys.room(21), "status", 0)  # as if its stream entry was trimmed away
    store.client.hset(store.keys.room(21), "failure", "lost in the stream")
    assert wait_for(lambda: encoder.status(21) == (Status.Failed, "lost in the stream"), 3)


def test_background_calls_run_in_order_and_keep_their_errors():
    background, done = Background("test-calls"), []
    gate = threading.Event()
    first = background.submit(lambda: (gate.wait(5), done.append(1))[1], "first")
    failing = background.submit(lambda: 1 / 0, "dividing")
    last = background.submit(lambda: done.append(3) or "third", "third")
    assert not background.drain(0.1), "a call is still running"
    gate.set()
    assert background.drain(5) and done == [1, 3]
    assert first.result() is None and last.result() == "third"
    assert isinstance(failing.exception(), ZeroDivisionError)
