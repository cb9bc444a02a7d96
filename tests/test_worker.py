"""The worker's hot path (issue 5): a round costs exactly three Redis round trips — the
read that brings it (with the previous room's block release in the same pipeline),
begin_round and commit_round — and as many Mooncake entries as contiguous runs × buffer
types. Real `xferd serve`, Redis and Mooncake; a long lease keeps renewals out."""
from __future__ import annotations

import time

import pytest
import torch

from conftest import clients, start_node, start_room, wait_for
from xferd.protocol.status import Status

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
        # begin and commit, and the read that brought the round unless the previous commit's
        # read (sent in the same write) did
        assert 2 * rounds <= stats["worker_round_trips"] <= 3 * rounds, stats
        assert stats["worker_entries"] == stats["worker_runs"], stats
        # contiguous source and destination blocks: one run, so 3 per-token buffers + aux in round 1
        assert stats["worker_entries"] == 4 * 4 + 3, stats
    finally:
        node.stop()


def test_rounds_back_to_back_cost_two_round_trips_each(redis_url, tmp_path_factory):
    """Under load the read of the next round rides with the commit of the last one."""
    node = start_node(redis_url, tmp_path_factory, workers=1, lease=60.0)
    try:
        with clients(node) as (sender, rx):
            time.sleep(0.3)
            rooms = [start_room(sender, rx, 256, [2 * i, 2 * i + 1], 256)[0] for i in range(12)]
            assert all(rx.wait(room, 10) == Status.Success for room in rooms)
        assert wait_for(lambda: node.store.stats().get("worker_rounds") == 12, timeout=5)
        stats = node.store.stats()
        # the first read, and an idle one or two while the rooms were being started
        assert stats["worker_round_trips"] <= 2 * 12 + 3, stats
    finally:
        node.stop()


def test_an_unexpected_error_after_the_take_fails_the_room_as_its_holder(lone_worker, monkeypatch):
    """The round this worker holds is let go with the room's failure: its blocks go back and
    Failed is due at once, with nothing left for the fencer (which would kill the worker)."""
    from test_store import init, publish, register
    from xferd.node import worker as module

    store, made = lone_worker
    register(store)
    init(store, 5, indices=[0], allocated=100)
    publish(store, 5, 100)
    [work] = store.read_rounds(made.consumer, count=1, block_ms=100)
    monkeypatch.setattr(module, "plan_targets", lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
    made.process_safely(work)
    record = store.room(5)
    assert record["status_name"] == "Failed" and "internal error in round 1: RuntimeError: boom" in record["failure"]
    assert "holder" not in record and "drained_at" in record, "let go by its holder"
    assert store.free_blocks() == 16 and store.pending() == []


def test_one_worker_process_writes_as_many_rounds_at_once_as_it_has_lanes(redis_url, tmp_path_factory):
    """rounds_per_worker 2: while one lane's round stalls after its write (holding the round),
    the other lane of the same process writes another room to the end."""
    from xferd.node.stopping import Identity

    node = start_node(redis_url, tmp_path_factory, workers=1, rounds_per_worker=2, lease=60.0,
                      env={"XFERD_FAULT": "stall_write", "XFERD_FAULT_STALL": "4"})
    try:
        names = node.store.live_workers()
        assert len(names) == 2 and len({Identity.parse(n).pid for n in names}) == 1, names
        with clients(node) as (sender, rx):
            stalled, _ = start_room(sender, rx, 256, [0, 1], 256)
            assert wait_for(lambda: node.store.room(stalled).get("holder"), timeout=5)
            started = time.monotonic()
            other, _ = start_room(sender, rx, 256, [4, 5], 256)
            assert rx.wait(other, 10) == Status.Success
            assert time.monotonic() - started < 3, "written beside the stalled round, not after it"
            assert node.store.room(stalled)["holder"] in names and node.store.room(stalled)["status_name"] != "Success"
            assert rx.wait(stalled, 10) == Status.Success
    finally:
        node.stop()


def test_a_stopping_worker_hands_back_the_round_its_last_commit_read_at_once(lone_worker):
    """A drain between a commit (which sent the next read with it) and the loop's check:
    the round that read brought is begun by no one, and goes straight back to the queue
    (another consumer reads it now, not after a lease); nothing stays pending on the lane."""
    from test_store import begin, init, publish, register, take

    store, made = lone_worker
    register(store)
    init(store, 5, indices=[5], allocated=100)
    publish(store, 5, 100)
    first = take(made.store, 5, made.consumer)
    taken = begin(made.store, first, made.consumer)
    init(store, 6, indices=[6], allocated=100)
    publish(store, 6, 100)
    verdict, _ = made.store.commit_round(first, made.consumer, taken.epoch, [100], read_next=200)
    assert verdict == "ok" and made.store.read_ahead(), "room 6's round was read with the commit"
    made.stopping = True  # SIGTERM now
    made.run()
    assert store.pending() == [], "nothing left pending on the stopped lane"
    assert store.stats().get("handed_back") == 1
    again = take(store, 6, "another")
    assert again.round == 1 and store.begin_round(again, "another", 60_000)[0] is not None


def test_a_lane_hands_back_the_round_it_read_ahead_when_its_write_is_slow(lone_worker):
    """The entry read ahead waits for the lane's current write; when that write is slow (a
    stalled destination), it goes back to the queue at once, for another lane, and nothing
    of it stays pending on this one."""
    from test_store import init, publish, register, take

    store, made = lone_worker
    register(store)
    for room in (5, 6):
        init(store, room, indices=[room], allocated=100)
        publish(store, room, 100)
    current, made._ahead = made.once.read_rounds(made.consumer, count=2, block_ms=100)
    made._let_ahead_go()  # what a slow write calls (Engine.write_all's on_slow)
    assert made._ahead is None and [e for e, _ in store.pending(made.consumer)] == [current.entry_id]
    again = take(store, 6, "another")
    assert again.round == 1 and store.begin_round(again, "another", 60_000)[0] is not None


def test_a_stopping_lane_hands_back_the_rounds_it_read_and_took_ahead(lone_worker):
    """A drain right after a commit that took the next round and read another: neither is
    written by this lane, both go back to the queue, and the taken one is let go (no hold
    left for the fencer)."""
    from test_store import begin, init, publish, register

    store, made = lone_worker
    register(store)
    for room in (5, 6, 7):
        init(store, room, indices=[room], allocated=100)
        publish(store, room, 100)
    first, second = made.once.read_rounds(made.consumer, count=2, block_ms=100)
    epoch = begin(made.store, first, made.consumer).epoch
    made._ahead = second
    assert made._commit_and_take(first, epoch, [100], 0)[0] == "ok"
    assert made._taken is not None and made._ahead is not None and store.room(6)["holder"] == made.consumer
    made.stopping = True
    made.run()
    assert store.pending() == [] and "holder" not in store.room(6)
    assert store.stats().get("handed_back") == 2
    assert sorted(w.room for w in store.read_rounds("another", count=10, block_ms=100)) == [6, 7]


def test_with_rounds_queued_each_commit_takes_the_next_round_in_its_own_round_trip(redis_url, tmp_path_factory):
    """A backlog (the lane's first round stalls while twelve more are queued): from then on
    a round costs one round trip, its take riding with the commit before it, and every room
    ends with its bytes."""
    node = start_node(redis_url, tmp_path_factory, workers=1, lease=60.0,
                      env={"XFERD_FAULT": "stall_write", "XFERD_FAULT_STALL": "1.5"})
    try:
        with clients(node) as (sender, rx):
            time.sleep(0.3)
            stalled, _ = start_room(sender, rx, 256, [0, 1], 256)
            assert wait_for(lambda: node.store.room(stalled).get("holder"), timeout=5)
            rooms = [(start_room(sender, rx, 256, [2 * i, 2 * i + 1], 256), [2 * i, 2 * i + 1])
                     for i in range(1, 13)]
            assert rx.wait(stalled, 10) == Status.Success
            layout = node.settings.buffer_layout
            for (room, data), blocks in rooms:
                assert rx.wait(room, 10) == Status.Success
                for index, buffer in enumerate(layout.buffers):
                    if buffer.per_token:
                        assert torch.equal(rx.pool.read_tokens(index, blocks, 256),
                                           buffer.token_range(data[index], 0, 256)), (room, buffer.name)
        assert wait_for(lambda: node.store.stats().get("worker_rounds") == 13, timeout=5)
        stats = node.store.stats()
        # the first round: a read, its take and its commit; the second its take and commit;
        # then one a round (and in every round one more, the stall fault asking for its marker)
        trips = stats["worker_round_trips"] - 13
        assert trips <= 3 + 2 + 11, {k: v for k, v in stats.items() if k.startswith("worker_")}
    finally:
        node.stop()
