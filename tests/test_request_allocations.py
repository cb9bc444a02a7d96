"""Allocations an encoder scheduler makes per request (``request_alloc``, ``request_bind``,
``keep_allocations``, ``pool_expire``): the TP ranks' agreement, exactly-once return of
blocks, and a stopped encoder's room failing when its lease runs out."""
from __future__ import annotations

import time

import pytest
import redis

from test_store import SESSION, init, register
from xferd.protocol.status import Status

LEASE_MS = 60_000


def test_every_tp_rank_gets_one_answer_per_attempt_and_one_allocation(store):
    store.init_pool(6, {"shm": "test"})
    assert store.alloc_for_request("a", 4, 1, LEASE_MS, True)[0] == [0, 1, 2, 3], "rank 0 first"
    assert store.alloc_for_request("a", 4, 1, LEASE_MS, True)[0] == [0, 1, 2, 3], "rank 1: the same blocks"
    assert store.free_blocks() == 2, "one allocation for the request, not one per rank"
    assert store.alloc_for_request("b", 3, 1, LEASE_MS, True) == (None, 2), "short: refused"
    store.release_request("a")
    assert store.free_blocks() == 6
    assert store.alloc_for_request("b", 3, 1, LEASE_MS, True) == (None, 6), \
        "the other rank's attempt 1 was refused: it is refused here too, so the ranks stay in step"
    assert store.alloc_for_request("b", 3, 2, LEASE_MS, True)[0] == [0, 1, 2]
    with pytest.raises(redis.ResponseError, match="already holds 3 blocks, not 2"):
        store.alloc_for_request("b", 2, 3, LEASE_MS, True)


def test_a_bound_request_is_the_rooms_and_comes_back_once(store):
    store.init_pool(8, {"shm": "test"})
    blocks, _ = store.alloc_for_request("r", 2, 1, LEASE_MS, False)
    store.bind_request("r", 91, LEASE_MS)
    store.bind_request("r", 91, LEASE_MS)  # every TP rank binds: idempotent
    with pytest.raises(redis.ResponseError, match="bound to room 91"):
        store.bind_request("r", 92, LEASE_MS)
    assert store.held_blocks(91) == 2 and store.release_request("r") == 0, "the request holds nothing now"
    register(store)
    init(store, 91)
    assert store.publish_source(91, 200, blocks).status in (Status.WaitingForInput, Status.Transferring)
    with pytest.raises(redis.ResponseError, match="abort it first"):
        store.release_blocks(91)  # the scheduler's free while the room is live: the room's end returns them
    store.fail_room(91, "ended")
    assert store.free_blocks() == 8
    assert store.release_blocks(91) == 0 and store.free_blocks() == 8, "never twice"


def test_binding_an_allocation_that_expired_is_refused(store):
    store.init_pool(4, {"shm": "test"})
    store.alloc_for_request("x", 2, 1, 30, False)
    time.sleep(0.06)
    assert store.expire_allocations(store.now_ms()) == (2, [])
    with pytest.raises(redis.ResponseError, match="holds no source blocks"):
        store.bind_request("x", 93, LEASE_MS)
    assert store.free_blocks() == 4


def test_renewed_leases_hold_and_a_stopped_encoders_room_fails_and_is_told(store):
    store.init_pool(4, {"shm": "test"})
    register(store)
    init(store, 95)
    store.alloc_for_request("k", 2, 1, 50, False)
    store.bind_request("k", 95, 50)
    store.alloc_for_request("q", 1, 1, 50, False)
    time.sleep(0.03)
    assert store.keep_allocations(["95", "req:q", "req:gone"], 50) == ["req:gone"]
    time.sleep(0.03)
    assert store.expire_allocations(store.now_ms()) == (0, []), "renewed in time"
    time.sleep(0.06)
    released, failed = store.expire_allocations(store.now_ms())
    assert released == 3 and [room for room, _ in failed] == [95]
    outcome = failed[0][1]
    assert outcome.status == Status.Failed and outcome.notify and outcome.endpoints
    assert "the encoder stopped" in store.room(95)["failure"]
    assert store.keep_allocations(["95"], 50) == ["95"], "gone: the encoder must not write into them"
    assert store.free_blocks() == 4 and SESSION
