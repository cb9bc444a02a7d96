"""A worker whose write outlasts the lease keeps its claim (lease.py): the round is not
reclaimed, not written twice, and completes once. Real processes, Redis and Mooncake."""
from __future__ import annotations


import pytest
import torch

from conftest import clients, start_node, start_room, wait_for
from xferd import faults
from xferd.status import Status

pytestmark = pytest.mark.integration


@pytest.fixture
def slow_node(redis_url, tmp_path_factory):
    node = start_node(redis_url, tmp_path_factory, lease=1.0,
                      env={"XFERD_FAULT": "stall_write", "XFERD_FAULT_STALL": "3.5"})
    yield node
    node.stop()


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
