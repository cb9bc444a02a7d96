"""The language-side Receiver on its own: what it does when the ingress takes nothing."""
from __future__ import annotations

import time

import pytest

from xferd.embedded import free_port
from xferd.layout import reference_layout
from xferd.receiver import IngressUnreachable, Receiver

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
