"""The worker's hot path (issue 5): a round costs exactly three Redis round trips — the
read that brings it (with the previous room's block release in the same pipeline),
begin_round and commit_round — and as many Mooncake entries as contiguous runs × buffer
types. Real `xferd serve`, Redis and Mooncake; a long lease keeps renewals out."""
from __future__ import annotations

import time

import pytest

from conftest import clients, start_node, start_room, wait_for
from xferd.status import Status

pytestmark = pytest.mark.integration


def test_three_round_trips_and_one_entry_per_run_and_buffer(redis_url, tmp_path_factory):
    node = start_node(redis_url, tmp_path_factory, workers=1, lease=60.0)
    try:
        with clients(node) as (sender, rx):
            time.sleep(0.3)
            rounds = 0
            for tokens, blocks in ((300, [0, 1, 2]), (1000, [4, 5, 6, 7, 8, 9, 10, 11]), (128, [20])):
                room, _ = start_room(sender, rx, tokens, blocks, tokens)
                assert rx.wait(room, 10) == Status.Success
                rounds += 1
            room, _ = start_room(sender, rx, 2000, list(range(30, 38)), 1024)  # and a resume
            assert rx.wait(room, 10) == Status.Transferring
            rx.resume(room, list(range(40, 48)), 1024, 976)
            assert rx.wait(room, 10) == Status.Success
            rounds += 2
        assert wait_for(lambda: node.store.stats().get("worker_rounds") == rounds, timeout=5)
        stats = node.store.stats()
        assert stats["worker_round_trips"] == 3 * rounds, stats
        assert stats["worker_entries"] == stats["worker_runs"], stats
        # contiguous source and destination blocks: one run, so 3 per-token buffers + aux in round 1
        assert stats["worker_entries"] == 4 * 4 + 3, stats
    finally:
        node.stop()
