"""The Redis contract (SPEC §5) on fakeredis and real Redis: each transition, each CAS."""
from __future__ import annotations

import time

import pytest

from xferd.keys import GROUP
from xferd.status import Status
from xferd.wire import Init, Register, Resume

SESSION = "127.0.0.1:9000"
OTHER = "127.0.0.1:9001"


def register(store, session=SESSION):
    store.register_session(Register("127.0.0.1", 7000, session, (1, 2, 3, 4), (10, 20, 30, 40)))


def init(store, room, session=SESSION, indices=(0, 1, 2, 3, 4, 5, 6, 7), required=1, allocated=1024):
    return store.dst_init(Init(room, "127.0.0.1", 7000, session, tuple(indices), required, allocated))


def resume(store, room, sent, allocated, indices=(0, 1, 2, 3, 4, 5, 6, 7), session=SESSION, required=1):
    return store.dst_resume(Resume(room, "127.0.0.1", 7000, session, tuple(indices), required, sent, allocated))


def queued(store, room):
    shard = store.keys.shard_of(room)
    entries = store.client.xrange(store.keys.stream(shard))
    return [e for e in entries if int(e[1][b"room"]) == room]


def take(store, room, consumer="w1"):
    works = [w for w in store.read_rounds(consumer, count=100, block_ms=10) if w.room == room]
    assert len(works) == 1
    return works[0]


def run_round(store, work, sent_after, consumer="w1"):
    state, note = store.begin_round(work, consumer, 30_000)
    assert state is not None, note
    return store.commit_round(work, consumer, sent_after)


@pytest.mark.parametrize("source_first", [True, False])
def test_round_is_queued_once_when_source_and_destination_are_both_known(store, source_first):
    register(store)
    room = 11
    if source_first:
        assert store.publish_source(room, 2000, range(16)).status == Status.Bootstrapping
        assert not queued(store, room)
        assert init(store, room).status == Status.WaitingForInput
    else:
        assert init(store, room).status == Status.WaitingForInput
        assert not queued(store, room)
        store.publish_source(room, 2000, range(16))
    assert len(queued(store, room)) == 1
    record = store.room(room)
    assert record["status_name"] == "WaitingForInput" and record["queued_round"] == "1"
    assert record["src_indices"] == ",".join(map(str, range(16)))


def test_resume_round_trip_and_compare_and_set(store):
    register(store)
    room = 12
    init(store, room)
    store.publish_source(room, 2000, range(16))
    work = take(store, room)
    outcome = run_round(store, work, [1024])
    assert outcome.status == Status.Transferring and outcome.endpoints == ("127.0.0.1:7000",)
    # the same entry redelivered after its commit: stale, nothing double-counted
    assert store.begin_round(work, "w2", 30_000)[0] is None
    assert store.commit_round(work, "w2", [2048]) is None
    assert store.room(room)["sent_tokens"] == "1024"
    # resume queues round 2 exactly once, a duplicate resume changes nothing
    assert resume(store, room, 1024, 976).note == "ok"
    assert resume(store, room, 1024, 976).note == "duplicate resume ignored"
    assert len(queued(store, room)) == 2
    work2 = take(store, room)
    assert work2.round == 2
    assert run_round(store, work2, [2000]).status == Status.Success
    record = store.room(room)
    assert (record["status_name"], record["round"], record["dst0.sent_tokens"]) == ("Success", "2", "2000")
    assert store.client.pttl(store.keys.room(room)) > 0, "terminal records expire"
    # a late duplicate of the first resume cannot move anything backwards
    assert resume(store, room, 1024, 976).status == Status.Success
    assert store.room(room)["status"] == str(int(Status.Success))


def test_duplicate_init_never_queues_twice(store):
    register(store)
    room = 13
    init(store, room)
    assert init(store, room).note == "duplicate init ignored"
    store.publish_source(room, 100, [0])
    assert init(store, room).note == "duplicate init ignored"
    assert len(queued(store, room)) == 1


def test_round_waits_for_every_required_destination(store):
    register(store)
    register(store, OTHER)
    room = 14
    store.publish_source(room, 2000, range(16))
    assert init(store, room, required=2).status == Status.Bootstrapping
    assert not queued(store, room)
    assert init(store, room, session=OTHER, required=2).status == Status.WaitingForInput
    work = take(store, room)
    assert work.sessions == (SESSION, OTHER)
    assert run_round(store, work, [1024, 1024]).status == Status.Transferring
    assert store.room(room)["status_name"] == "Transferring"


def test_resume_for_round_two_needs_both_ranks(store):
    register(store)
    register(store, OTHER)
    room = 15
    store.publish_source(room, 2000, range(16))
    init(store, room, required=2)
    init(store, room, session=OTHER, required=2)
    run_round(store, take(store, room), [1024, 1024])
    assert resume(store, room, 1024, 976, required=2).note == "ok"
    assert len(queued(store, room)) == 1, "round 2 must wait for the second destination"
    assert store.room(room)["dst0.ready_round"] == "2"
    assert resume(store, room, 1024, 976, session=OTHER, required=2).note == "ok"
    assert len(queued(store, room)) == 2
    assert run_round(store, take(store, room), [2000, 2000]).status == Status.Success


@pytest.mark.parametrize("case,needle", [
    ("unknown room", "resume for unknown room"),
    ("wrong sent", "disagrees with the record"),
    ("before transferring", "resume follows Transferring"),
    ("unregistered", "unregistered session"),
    ("too many sessions", "beyond required_dst_info_num"),
    ("required mismatch", "disagrees with 1"),
])
def test_bad_transitions_fail_the_room_with_a_reason(store, case, needle):
    register(store)
    register(store, OTHER)
    room = 16
    if case == "unknown room":
        outcome = resume(store, room, 0, 128, indices=[0])
    elif case == "unregistered":
        outcome = init(store, room, session="127.0.0.1:1")
    else:
        init(store, room)
        store.publish_source(room, 2000, range(16))
        if case == "wrong sent":
            run_round(store, take(store, room), [1024])
            outcome = resume(store, room, 512, 976)
        elif case == "before transferring":
            outcome = resume(store, room, 0, 1024)
        elif case == "too many sessions":
            outcome = init(store, room, session=OTHER)
        else:
            outcome = init(store, room, session=OTHER, required=2)
    assert outcome.failed and needle in outcome.note
    record = store.room(room)
    assert record["status_name"] == "Failed" and needle in record["failure"]


def test_failed_room_ignores_later_commits_and_releases_blocks(store):
    store.init_pool(8, {"shm": "test"})
    register(store)
    room = 17
    blocks = store.alloc_blocks(room, 3).blocks
    assert blocks == [0, 1, 2] and store.free_blocks() == 5
    init(store, room, indices=[0, 1, 2], allocated=300)
    store.publish_source(room, 300, blocks)
    work = take(store, room)
    state, _ = store.begin_round(work, "w1", 30_000)
    assert state is not None
    assert store.fail_room(room, "aborted by test").failed
    assert store.commit_round(work, "w1", [300]) is None  # the write was over; status stays Failed
    assert store.room(room)["status_name"] == "Failed"
    assert store.release_due(store.keys.shard_of(room), store.now_ms() + 1) == 3
    assert store.release_due(store.keys.shard_of(room), store.now_ms() + 1) == 0  # idempotent
    assert store.free_blocks() == 8
    assert store.release_blocks(room) == 0


def writing(store, room):
    """A one-block room whose round worker "w1" has begun (holding a 60 s write lease)."""
    store.init_pool(4, {"shm": "test"})
    register(store)
    init(store, room, indices=[0], allocated=100)
    store.publish_source(room, 100, store.alloc_blocks(room, 1).blocks)
    work = take(store, room)
    assert store.begin_round(work, "w1", 60_000)[0] is not None
    return work


def test_blocks_wait_for_the_write_lease_before_release(store):
    room = 18
    work = writing(store, room)
    outcome = store.fail_room(room, "abort while writing")
    assert outcome.failed and not outcome.release_now
    shard = store.keys.shard_of(room)
    assert store.release_due(shard, store.now_ms()) == 0, "a write may still read these blocks"
    store.commit_round(work, "w1", [100])  # the write ended: the lease is over
    assert store.release_due(shard, store.now_ms() + 1) == 1


def test_a_worker_failing_its_own_round_releases_blocks_at_once(store):
    room = 21
    work = writing(store, room)
    outcome = store.fail_room(room, "write failed", entry_id=work.entry_id, consumer="w1")
    assert outcome.failed and outcome.release_now
    assert store.release_room(room) == 1
    assert store.release_due(store.keys.shard_of(room), store.now_ms() + 1) == 0, "dequeued too"


def test_success_lets_the_committing_worker_release_at_once(store):
    room = 23
    work = writing(store, room)
    outcome = store.commit_round(work, "w1", [100])
    assert outcome.status == Status.Success and outcome.release_now
    assert store.release_room(room) == 1 and store.free_blocks() == 4


def test_pool_allocation_is_all_or_nothing(store):
    store.init_pool(4, {"shm": "test"})
    assert store.alloc_blocks(1, 3).blocks == [0, 1, 2]
    assert store.alloc_blocks(2, 2) is None
    assert store.free_blocks() == 1
    assert store.init_pool(4, {"shm": "test"}) is False, "same shape: kept, not reset"


def test_timeouts_fire_with_their_reason(store):
    store.settings.bootstrap_timeout = 0.05
    store.policy = store.settings.policy()
    register(store)
    store.publish_source(19, 100, [0])
    time.sleep(0.1)
    now = store.now_ms()
    due = store.due(store.keys.timeouts(store.keys.shard_of(19)), now)
    assert due == [19]
    outcome = store.fail_room(19, "", expired=True)
    assert outcome.failed and "bootstrap timeout" in outcome.note
    assert "bootstrap timeout" in store.room(19)["failure"]


def test_reclaim_takes_over_a_dead_consumers_entries(store):
    register(store)
    init(store, 20, indices=[0], allocated=100)
    store.publish_source(20, 100, [0])
    take(store, 20, consumer="dead")
    time.sleep(0.05)
    init(store, 22, indices=[0], allocated=100)
    store.publish_source(22, 100, [0])
    take(store, 22, consumer="dead")
    time.sleep(0.05)
    reclaimed = store.reclaim("alive", min_idle_ms=10)
    assert [w.room for w in reclaimed] == [20], "one at a time, oldest first"
    assert [w.room for w in store.reclaim("alive", min_idle_ms=10)] == [22]
    assert store.reclaim("alive", min_idle_ms=10) == []
    pending = store.client.xpending(store.keys.stream(store.keys.shard_of(20)), GROUP)
    assert pending["pending"] == 2


def test_janitor_trims_acknowledged_entries_but_never_pending_ones(store):
    from xferd.janitor import Janitor

    register(store)
    for room in (40, 42, 44, 46):  # one shard
        init(store, room, indices=[0], allocated=100)
        store.publish_source(room, 100, [0])
    works = store.read_rounds("w1", count=10, block_ms=10)
    for work in works[:3]:
        run_round(store, work, [100])
    stream = store.keys.stream(store.keys.shard_of(40))
    assert store.client.xlen(stream) == 4
    Janitor(store.settings, store).trim()
    assert store.client.xlen(stream) == 1, "only the pending entry is kept"
    assert [w.room for w in store.reclaim("w2", min_idle_ms=0, limit=5)] == [works[3].room]


# ---- lease keep-alive, redone rounds
def pending_entry(store, work):
    stream = store.keys.stream(work.shard)
    return store.client.xpending_range(stream, GROUP, min=work.entry_id, max=work.entry_id, count=1)[0]


def test_keep_lease_resets_idle_without_counting_a_delivery(store):
    room = 30
    work = writing(store, room)
    time.sleep(0.05)
    before = pending_entry(store, work)
    assert store.keep_lease(work, "w1", 90_000) == ("ok", "")
    after = pending_entry(store, work)
    assert after["time_since_delivered"] < before["time_since_delivered"]
    assert after["times_delivered"] == before["times_delivered"] == 1
    assert int(store.room(room)["write_until"]) >= store.now_ms() + 80_000
    assert store.reclaim("w2", min_idle_ms=40) == [], "a renewed entry is not reclaimable"


def test_keep_lease_reports_a_lost_claim(store):
    room = 32
    work = writing(store, room)
    time.sleep(0.02)
    [taken] = store.reclaim("w2", min_idle_ms=1)  # w1 stalled past the lease
    verdict, why = store.keep_lease(work, "w1", 1000)
    assert verdict == "taken" and "no longer pending on this worker" in why
    state, begun = store.begin_round(taken, "w2", 30_000)
    assert state is not None and begun == "redo"
    assert store.room(room)["rewrites"] == "1"
    verdict, why = store.keep_lease(work, "w1", 1000)
    assert verdict == "taken" and "taken over by w2" in why
    assert store.keep_lease(taken, "w2", 1000) == ("ok", "")
    store.fail_room(room, "aborted")
    assert store.keep_lease(taken, "w2", 1000) == ("ended", "room is Failed")


# ---- lost consumer group
def test_a_lost_group_is_recreated_at_the_end_and_live_rounds_queued_again(store):
    register(store)
    for room in (50, 52):  # one shard: 50 committed, 52 queued and never done
        init(store, room, indices=[0], allocated=100)
        store.publish_source(room, 100, [0])
    done = take(store, 50)
    run_round(store, done, [100])
    stream = store.keys.stream(store.keys.shard_of(50))
    store.client.xgroup_destroy(stream, GROUP)
    with pytest.raises(Exception, match="NOGROUP"):
        store.read_rounds("w1", count=10, block_ms=10)
    assert store.recover_groups() == 1
    assert store.recover_groups() == 0, "a second recovery finds the group and does nothing"
    works = store.read_rounds("w1", count=10, block_ms=10)
    assert [(w.room, w.round) for w in works] == [(52, 1)], "old entries are not replayed"
    assert run_round(store, works[0], [100]).status == Status.Success


# ---- dead consumers
def test_dead_consumers_are_removed_once_nothing_is_pending(store):
    register(store)
    init(store, 60, indices=[0], allocated=100)
    store.publish_source(60, 100, [0])
    store.heartbeat("dead")
    take(store, 60, consumer="dead")
    store.heartbeat("alive")
    store.read_rounds("alive", count=1, block_ms=10)
    store.client.hset(store.keys.workers, "dead", 0)  # its last heartbeat: long ago
    time.sleep(0.05)
    store.heartbeat("alive")
    store.remove_dead_consumers(silent_ms=20)
    assert store.consumers().get("dead") == 1, "kept while it holds a pending entry"
    [work] = store.reclaim("alive", min_idle_ms=10)
    store.heartbeat("alive")
    assert "dead" in store.remove_dead_consumers(silent_ms=20)
    assert store.consumers() == {"alive": 1}, "the reclaimer holds the entry; the dead one is gone"
    assert store.live_workers() == ["alive"]
    assert pending_entry(store, work)["consumer"] in ("alive", b"alive")


# ---- allocation leases (encoder died between allocate and publish)
def test_an_unpublished_allocation_expires_and_its_blocks_go_back(store):
    store.settings.alloc_timeout = 0.05
    store.policy = store.settings.policy()
    store.init_pool(8, {"shm": "test"})
    orphan = store.alloc_blocks(70, 3)
    published = store.alloc_blocks(72, 2)
    late = store.alloc_blocks(74, 1)
    store.publish_source(72, 200, published.blocks, published.expires_at)
    assert store.expire_allocations(store.now_ms()) == 0, "not expired yet"
    time.sleep(0.08)
    outcome = store.publish_source(74, 100, late.blocks, late.expires_at)
    assert outcome.failed and "allocation expired" in outcome.note
    assert "src_indices" not in store.room(74), "blocks it no longer owns are never named"
    assert store.expire_allocations(store.now_ms()) == 4, "orphan (3) and late (1) go back"
    assert store.free_blocks() == 6, "the published room keeps its 2 until it ends"
    assert store.client.zcard(store.keys.pool_leases) == 0
    assert orphan.expires_at <= store.now_ms()
    store.fail_room(72, "ended")
    assert store.release_room(72) == 2 and store.free_blocks() == 8


def test_a_lost_pool_is_rebuilt_around_blocks_still_held(store):
    store.init_pool(6, {"shm": "test"})
    held = store.alloc_blocks(80, 2).blocks
    assert store.rebuild_pool(6, {"shm": "test"}) is None, "nothing was lost"
    store.client.delete(store.keys.pool, store.keys.pool_free)  # Redis lost them
    assert store.rebuild_pool(6, {"shm": "test"}) == 4
    assert store.free_blocks() == 4 and store.pool_info()["num_blocks"] == "6"
    taken = store.alloc_blocks(81, 4).blocks
    assert not set(taken) & set(held), "a block still held is never handed out twice"
    assert store.rebuild_pool(6, {"shm": "test"}) is None, "an empty free list is not a loss"


def test_the_last_writer_of_a_redone_round_lets_the_blocks_go(store):
    """w1 stalls, w2 redoes the round; w1 commits first. The blocks wait for w2's write,
    and go back as soon as w2's stale commit says it is over (not when its lease ends)."""
    room = 34
    slow = writing(store, room)
    time.sleep(0.02)
    [redo] = store.reclaim("w2", min_idle_ms=1)
    assert store.begin_round(redo, "w2", 60_000)[1] == "redo"
    outcome = store.commit_round(slow, "w1", [100])
    assert outcome.status == Status.Success and not outcome.release_now, "w2 may still be reading"
    shard = store.keys.shard_of(room)
    assert store.release_due(shard, store.now_ms()) == 0
    assert store.commit_round(redo, "w2", [100]) is None, "stale: the round is committed"
    assert store.release_due(shard, store.now_ms() + 1) == 1


def test_a_worker_returns_blocks_with_its_next_read(store):
    room = 36
    work = writing(store, room)
    assert store.commit_round(work, "w1", [100]).release_now
    assert store.free_blocks() == 3
    before = getattr(store.client, "round_trips", None)
    assert store.read_rounds("w1", count=1, block_ms=10, release=(room,)) == []
    if before is not None:  # the real Redis client counts: one pipeline, no SCRIPT EXISTS
        assert store.client.round_trips - before == 1
    assert store.free_blocks() == 4, "released in the same round trip as the read"
    assert store.due(store.keys.release(store.keys.shard_of(room)), store.now_ms()) == [room], \
        "the queue entry stays until the janitor has seen the room released"
    assert store.release_due(store.keys.shard_of(room), store.now_ms() + 1) == 0
    store.client.script_flush()  # as after a Redis restart: the script must be loaded again
    work = writing(store, 38)
    store.commit_round(work, "w1", [100])
    assert store.read_rounds("w1", count=1, block_ms=10, release=(38,)) == []
    assert store.free_blocks() == 4


def test_scripts_are_loaded_up_front_so_the_first_round_pays_no_miss(store):
    store.client.script_flush()  # a fresh or restarted Redis holds no scripts
    shas = [script.sha for script in store._scripts.values()]
    assert not any(store.client.script_exists(*shas))
    store.load_scripts()
    assert all(store.client.script_exists(*shas))
    work = writing(store, 40)
    before = getattr(store.client, "round_trips", None)
    store.commit_round(work, "w1", [100])
    if before is not None:  # EVALSHA hits at once: no NOSCRIPT, no SCRIPT LOAD
        assert store.client.round_trips - before == 1
