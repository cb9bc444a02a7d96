"""lostpush.py: a Success is pushed again to the room's destinations exactly when the
worker that committed it is gone without stopping cleanly, only once, and not for a
worker still running, one of another host, or past the horizon. (The whole path, a worker SIGKILLed between its commit
and its push: test_crash.)"""
from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace

from test_store import init, register
from xferd.node.stopping import Identity
from xferd.node.lostpush import LostPushes
from xferd.protocol.status import Status


class Pushes:
    """A Notifier that keeps what it was asked to send."""

    def __init__(self):
        self.sent = []

    def send(self, endpoints, room, status):
        self.sent.append((tuple(endpoints), room, status))


def gone_worker() -> str:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    identity = Identity.of(child.pid)
    child.wait()
    return identity.name("w0")


def watching(store, *rooms: int) -> tuple[Pushes, LostPushes]:
    """Rooms with one destination each (endpoint 127.0.0.1:7000), and a watch over them."""
    register(store)
    for block, room in enumerate(rooms):
        init(store, room, indices=[block])
    pushes = Pushes()
    return pushes, LostPushes(store, pushes, horizon=60)


def test_a_gone_workers_success_is_pushed_again_once_a_live_ones_is_not(store):
    pushes, lost = watching(store, 41, 42)
    lost.watch(41, gone_worker())
    lost.watch(42, Identity.current().name("w1"))  # this test's process: running
    lost.watch(43, "not-a-worker-name")
    assert lost.pass_once() == 1
    assert pushes.sent == [(("127.0.0.1:7000",), 41, Status.Success)]
    assert lost.pass_once() == 0 and len(pushes.sent) == 1, "once"
    assert store.stats().get("statuses_repushed") == 1
    assert list(lost.watched.values()) == [{42: lost.watched[Identity.current()][42]}]


def test_a_live_worker_is_watched_until_the_horizon_and_another_hosts_not_at_all(store):
    pushes = Pushes()
    lost = LostPushes(store, pushes, horizon=0.2)
    lost.watch(50, Identity.current().name("w0"))
    lost.watch(51, replace(Identity.current(), host="elsewhere").name("w0"))
    assert lost.pass_once() == 0
    assert list(lost.watched) == [Identity.current()]
    time.sleep(0.3)
    assert lost.pass_once() == 0 and lost.watched == {} and pushes.sent == []


def test_a_lane_that_stopped_cleanly_pushed_everything(store):
    pushes, lost = watching(store, 61, 62)
    clean, killed = gone_worker(), gone_worker()
    store.mark_stopped(clean, 60)
    lost.watch(61, clean)
    lost.watch(62, killed)
    assert lost.pass_once() == 1 and pushes.sent == [(("127.0.0.1:7000",), 62, Status.Success)]
    assert lost.watched == {}
