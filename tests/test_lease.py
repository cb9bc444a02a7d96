"""Lease keep-alive (lease.py): a worker whose write outlasts the lease keeps its claim —
the round is not reclaimed, not written twice, and completes once (real processes, Redis
and Mooncake); a worker that was frozen asks Redis before it writes again."""
from __future__ import annotations

import pytest
import torch

from conftest import clients, start_node, start_room, wait_for
from xferd import faults
from xferd.status import Status



def test_a_frozen_worker_asks_redis_before_writing_again(store):
    from test_store import writing
    from xferd.lease import LeaseKeeper

    work = writing(store, 90)
    keeper = LeaseKeeper(store, "w1", lease_ms=10_000, write_lease_ms=60_000)  # thread idle here
    try:
        with keeper.hold(work):
            assert keeper.still_held()
            [taken] = store.reclaim("w2", min_idle_ms=0)  # w1 looked dead to the others
            assert keeper.still_held(), "within half a lease of the last renewal: no Redis call"
            keeper._renewed -= 6.0  # as if the process had been frozen for 6 s
            assert not keeper.still_held()
            assert "no longer pending on this worker" in keeper.lost and not keeper.room_ended
        with keeper.hold(taken):
            assert keeper.lost is None, "each round starts with a clean slate"
            store.fail_room(90, "aborted by the language side")
            keeper.renew()
            assert not keeper.still_held() and keeper.room_ended
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
        assert stats.get("reclaimed", 0) == 0 and stats.get("redone_rounds", 0) == 0, stats
        record = node.store.room(room)
        assert "rewrites" not in record and record["round"] == "1"
        assert rx.history[room].count(Status.Success) == 1
        assert wait_for(lambda: node.store.free_blocks() == node.settings.pool_blocks)
