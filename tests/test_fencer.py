"""The fencer (fencer.py): a round moves on only after its holder's process is provably
stopped. Worker processes are stand-ins here (sleeping processes whose identity names the
consumer); the rounds and the Redis side are real (fakeredis and Redis)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from test_store import init, publish, register, take, writing
from xferd.node.fencer import Fencer
from xferd.node.stopping import Identity
from xferd.protocol.status import Status


class Pushes:
    def __init__(self):
        self.sent = []

    def send(self, endpoints, room, status):
        self.sent.append((tuple(endpoints), room, int(status)))


@pytest.fixture
def stand_in():
    """A process standing in for a worker: (its consumer name, the process)."""
    made = []

    def make():
        process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        made.append(process)
        return Identity.of(process.pid).name("w0"), process

    yield make
    for process in made:
        process.kill()
        process.wait()


def fencer_for(store, lease=0.1):
    store.settings.lease = lease
    pushes = Pushes()
    return Fencer(store, store.settings, pushes), pushes


def round_taken_by(store, room, name):
    """``name`` took the room's round under the store's (short) lease."""
    return writing(store, room, name, lease_ms=int(store.settings.lease * 1000))


def test_a_paused_holder_is_killed_before_its_round_is_handed_back(store, stand_in):
    name, process = stand_in()
    fencer, _ = fencer_for(store)
    work, _ = round_taken_by(store, 1, name)
    os.kill(process.pid, signal.SIGSTOP)  # paused mid-write
    assert fencer.pass_once() == 0, "within its lease: left alone"
    time.sleep(0.15)
    assert fencer.pass_once() == 1
    assert process.poll() == -signal.SIGKILL, "stopped for certain before the hand-back"
    assert store.stats()["writers_fenced"] == 1 and store.stats()["handed_back"] == 1
    record = store.room(1)
    assert "holder" not in record and record["entry"] != work.entry_id
    assert store.free_blocks() == store.settings.pool_blocks - 1, "the blocks stay with the room"


def test_a_dead_holder_is_handed_back_at_once_and_its_failed_room_settled(store, stand_in):
    name, process = stand_in()
    fencer, pushes = fencer_for(store, lease=60)
    round_taken_by(store, 2, name)
    outcome = store.fail_room(2, "aborted by the language side")
    assert outcome.failed and not outcome.notify
    assert fencer.pass_once() == 0 and pushes.sent == [], "alive, within its lease: the write goes on"
    process.kill()
    process.wait()
    assert fencer.pass_once() == 1
    assert store.stats().get("writers_fenced", 0) == 0, "nothing to kill"
    assert pushes.sent == [(("127.0.0.1:7000",), 2, int(Status.Failed))], "Failed once the write is over"
    assert store.free_blocks() == store.settings.pool_blocks


def test_a_live_holder_that_renews_is_never_touched(store, stand_in):
    name, process = stand_in()
    fencer, _ = fencer_for(store, lease=0.2)
    work, epoch = round_taken_by(store, 3, name)
    for _ in range(5):
        time.sleep(0.08)
        assert store.keep_lease(work, name, epoch, 200)[0]
        assert fencer.pass_once() == 0
    assert process.poll() is None and store.room(3)["holder"] == name


def test_an_entry_read_but_not_begun_by_a_paused_worker(store, stand_in):
    name, process = stand_in()
    fencer, _ = fencer_for(store)
    register(store)
    init(store, 4, indices=[0], allocated=100)
    publish(store, 4, 100)
    take(store, 4, name)
    os.kill(process.pid, signal.SIGSTOP)
    time.sleep(0.15)
    assert fencer.pass_once() == 1 and process.poll() == -signal.SIGKILL
    assert [w.room for w in store.read_rounds("other", count=5, block_ms=10)] == [4]


def test_names_that_are_no_process_are_never_handed_back_on_a_guess(store):
    fencer, _ = fencer_for(store)
    round_taken_by(store, 5, "w1")
    time.sleep(0.15)
    assert fencer.pass_once() == 0
    assert store.room(5)["holder"] == "w1", "it cannot be proven stopped: the round waits"


def test_after_a_redis_outage_live_holders_get_a_lease_to_renew(store, stand_in, monkeypatch):
    from xferd.node import fencer as module

    name, process = stand_in()
    fencer, _ = fencer_for(store)
    round_taken_by(store, 6, name)
    time.sleep(0.15)
    monkeypatch.setattr(module, "last_recovery", lambda: time.monotonic())
    assert fencer.pass_once() == 0 and process.poll() is None
    monkeypatch.setattr(module, "last_recovery", lambda: time.monotonic() - 1)
    assert fencer.pass_once() == 1 and process.poll() == -signal.SIGKILL

