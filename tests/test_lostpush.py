"""lostpush.py: a Success is pushed again to the room's destinations exactly when the
worker that committed it is gone, only once, and not for a worker still running, one of
another host, or past the horizon. (The whole path, a worker SIGKILLed between its commit
and its push: test_crash.)"""
from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace

from test_store import init, register
from xferd.fencing import Identity
from xferd.lostpush import LostPushes
from xferd.status import Status


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


def test_a_gone_workers_success_is_pushed_again_once_a_live_ones_is_not(store):
    register(store)
    init(store, 41, indices=[0])
    init(store, 42, indices=[1])
    pushes = Pushes()
    lost = LostPushes(store, pushes, horizon_s=60)
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
    lost = LostPushes(store, pushes, horizon_s=0.2)
    lost.watch(50, Identity.current().name("w0"))
    lost.watch(51, replace(Identity.current(), host="elsewhere").name("w0"))
    assert lost.pass_once() == 0
    assert list(lost.watched) == [Identity.current()]
    time.sleep(0.3)
    assert lost.pass_once() == 0 and lost.watched == {} and pushes.sent == []
