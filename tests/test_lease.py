"""Lease keep-alive and self-fencing (lease.py): a worker whose write outlasts the lease
keeps its claim — the round is not handed back, not written twice, and completes once (real
processes, Redis and Mooncake); a worker that was frozen asks Redis before it writes again;
one cut off from Redis mid-write ends itself."""
from __future__ import annotations

import time

import pytest
import torch

from conftest import clients, start_node, start_room, wait_for
from xferd.node import faults
from xferd.protocol.status import Status



def test_a_frozen_worker_asks_redis_before_writing_again(store):
    from test_store import writing
    from xferd.node.lease import LeaseKeeper

    work, epoch = writing(store, 90)
    keeper = LeaseKeeper(store, "w1", lease_ms=10_000)  # its thread stays idle here
    try:
        with keeper.hold(work, epoch):
            assert keeper.may_write()
            store.hand_back("w1", 90, work.entry_id)  # the fencer stopped "w1" (as it thought)
            assert keeper.may_write(), "within half a lease of the last confirmation: no Redis call"
            keeper._confirmed -= 6.0  # as if the process had been frozen for 6 s
            assert not keeper.may_write()
            assert "no longer holds the round" in keeper.lost
    finally:
        keeper.close()


def test_a_failed_room_stops_further_writes_but_not_the_lease(store):
    from test_store import writing
    from xferd.node.lease import LeaseKeeper

    work, epoch = writing(store, 91)
    keeper = LeaseKeeper(store, "w1", lease_ms=10_000)
    try:
        with keeper.hold(work, epoch):
            store.fail_room(91, "aborted by the language side")
            keeper._confirmed -= 6.0
            assert not keeper.may_write() and keeper.room_failed and not keeper.lost
            assert store.room(91)["holder"] == "w1", "still held: the blocks wait for this write"
    finally:
        keeper.close()


def test_a_worker_cut_off_from_redis_ends_itself_during_a_write(store, monkeypatch):
    """The self-fence: with a write in flight and no confirmation for 3/4 of a lease, the
    process ends (here: the exit callback) before the fencer could hand the round on."""
    import threading

    import redis

    from test_store import writing
    from xferd.node.lease import SELF_FENCE_EXIT, LeaseKeeper

    work, epoch = writing(store, 92)
    exits = []
    exited = threading.Event()
    keeper = LeaseKeeper(store, "w1", lease_ms=400, exit=lambda code: (exits.append(code), exited.set()))
    try:
        with keeper.hold(work, epoch):
            time.sleep(0.4)
            assert not exits, "renewals keep the claim confirmed: no exit"
            monkeypatch.setattr(store, "keep_lease", lambda *a: (_ for _ in ()).throw(redis.ConnectionError()))
            time.sleep(0.5)
            assert not exits, "no write in flight: nothing to fence"
            cut_at = time.monotonic()
            with keeper.writing():
                assert exited.wait(2.0)
            assert exits == [SELF_FENCE_EXIT]
            assert time.monotonic() - cut_at < 0.4, "before the lease ran out"
    finally:
        keeper.close()


@pytest.fixture
def slow_node(redis_url, tmp_path_factory):
    node = start_node(redis_url, tmp_path_factory, lease=1.0,
                      env={"XFERD_FAULT": "stall_write", "XFERD_FAULT_STALL": "3.5"})
    yield node
    node.stop()


@pytest.mark.integration
def test_a_write_longer_than_the_lease_keeps_its_claim(slow_node):
    node = slow_node
    with clients(node) as (sender, rx):
        room, data = start_room(sender, rx, 2000, list(range(16)), 2000)
        assert rx.wait(room, 20) == Status.Success
        assert faults.reached(node.store, "stall_write"), "a worker stalled 3.5 leases mid-write"
        assert torch.equal(rx.pool.read_tokens(0, list(range(16)), 2000), data[0])
        stats = node.store.stats()
        assert stats.get("writers_fenced", 0) == 0 and stats.get("handed_back", 0) == 0, stats
        assert stats.get("redone_rounds", 0) == 0, stats
        record = node.store.room(room)
        assert "rewrites" not in record and record["round"] == "1"
        assert rx.history[room].count(Status.Success) == 1
        assert wait_for(lambda: node.store.free_blocks() == node.settings.pool_blocks)
