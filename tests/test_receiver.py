"""The language-side Receiver on its own: what it does when the ingress takes nothing."""
from __future__ import annotations

import time

import pytest
import zmq

from conftest import wait_for
from xferd_lab.embedded import free_port
from xferd.protocol.layout import reference_layout
from xferd.client.receiver import IngressUnreachable, Receiver
from xferd.protocol.status import Status
from xferd.protocol.wire import encode_status

pytestmark = pytest.mark.integration


def test_a_send_never_blocks_forever_when_the_ingress_takes_nothing():
    # nobody listens: libzmq queues up to its high-water mark, then a send would block
    rx = Receiver(f"tcp://127.0.0.1:{free_port()}", reference_layout(hidden_size=64), 4, send_timeout=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(IngressUnreachable, match="took no message for 0.5s"):
            for _ in range(100_000):
                rx.abort(1)
        assert time.monotonic() - started < 30
    finally:
        rx.close()


@pytest.mark.parametrize("previous_push", ["late", "lost"])
def test_the_previous_rounds_push_never_passes_for_the_next_rounds(store, previous_push):
    """A status message carries no round. Redis told the Receiver first that round 1 is over
    (a fallback); round 1's push then comes only after the resume ("late"), or never (its
    worker died after committing, "lost"). Round 2 is over only when it is."""
    ingress = zmq.Context.instance().socket(zmq.PULL)  # swallows what the Receiver sends
    port = ingress.bind_to_random_port("tcp://127.0.0.1")
    rx = Receiver(f"tcp://127.0.0.1:{port}", store.settings.buffer_layout, 8, store=store, fallback_after=0.1)
    pusher = zmq.Context.instance().socket(zmq.PUSH)
    pusher.connect(f"tcp://127.0.0.1:{rx.status_port}")
    room, record = 77, store.keys.room(77)
    try:
        rx.init(room, [0, 1], 256)
        store.client.hset(record, mapping={"status": int(Status.Transferring), "round": 1})
        assert rx.wait(room, 5) == Status.Transferring and rx.fallbacks == 1, "Redis said first"
        rx.resume(room, [2, 3], 256, 256)
        if previous_push == "late":
            pusher.send_multipart(encode_status(room, Status.Transferring, 0))
            assert wait_for(lambda: rx.notifications == 1, 5)
            assert rx.wait(room, 0.5) == Status.WaitingForInput, "round 2 is not over"
        store.client.hset(record, "round", 2)  # round 2 committed, and pushed:
        pusher.send_multipart(encode_status(room, Status.Transferring, 0))
        assert rx.wait(room, 5) == Status.Transferring
    finally:
        pusher.close(0)
        rx.close()
        ingress.close(0)


def test_failed_from_redis_waits_until_no_write_is_in_flight(store):
    """Failed is the drain acknowledgment: Redis says Failed at once, but while a holder
    still writes the room's blocks the Receiver's fallback does not report it."""
    ingress = zmq.Context.instance().socket(zmq.PULL)
    port = ingress.bind_to_random_port("tcp://127.0.0.1")
    rx = Receiver(f"tcp://127.0.0.1:{port}", store.settings.buffer_layout, 8, store=store, fallback_after=0.1)
    room, record = 78, store.keys.room(78)
    try:
        rx.init(room, [0, 1], 256)
        store.client.hset(record, mapping={"status": int(Status.Failed), "round": 0, "holder": "w1"})
        assert rx.wait(room, 0.6) == Status.WaitingForInput and rx.fallbacks == 0
        store.client.hdel(record, "holder")  # the write ended
        assert rx.wait(room, 5) == Status.Failed and rx.fallbacks == 1
    finally:
        rx.close()
        ingress.close(0)
