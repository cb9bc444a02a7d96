"""The Redis contract (docs/protocol.md) on fakeredis and real Redis: each transition, each
compare-and-set, each fencing rule."""
from __future__ import annotations

import time

import pytest
import redis

from conftest import make_settings
from xferd.state.connections import connect
from xferd.state.keys import GROUP
from xferd.protocol.status import Status
from xferd.state.store import Store
from xferd.protocol.wire import Init, Register, Resume

SESSION = "127.0.0.1:9000"
OTHER = "127.0.0.1:9001"


def set_policy(store, **seconds) -> None:
    """The node's policy changes (as when `serve` restarts with other settings): its record."""
    for name, value in seconds.items():
        setattr(store.settings, name, value)
    store.client.hset(store.keys.record, mapping=store.settings.policy())


def register(store, session=SESSION):
    store.register_session(Register("127.0.0.1", 7000, session, (1, 2, 3, 4), (10, 20, 30, 40)))


def init(store, room, session=SESSION, indices=(0, 1, 2, 3, 4, 5, 6, 7), required=1, allocated=1024):
    return store.dst_init(Init(room, "127.0.0.1", 7000, session, tuple(indices), required, allocated))


def resume(store, room, sent, allocated, indices=(0, 1, 2, 3, 4, 5, 6, 7), session=SESSION, required=1):
    return store.dst_resume(Resume(room, "127.0.0.1", 7000, session, tuple(indices), required, sent, allocated))


def publish(store, room, total):
    """Allocate the room's source blocks and publish them, as the Sender does."""
    blocks = store.alloc_blocks(room, -(-total // 128)).blocks
    return store.publish_source(room, total, blocks)


def queued(store, room):
    return [e for e in store.client.xrange(store.keys.stream) if int(e[1][b"room"]) == room]


def take(store, room, consumer="w1"):
    works = [w for w in store.read_rounds(consumer, count=100, block_ms=10) if w.room == room]
    assert len(works) == 1
    return works[0]


def begin(store, work, consumer="w1", lease_ms=30_000):
    taken, why = store.begin_round(work, consumer, lease_ms)
    assert taken is not None, why
    return taken


def run_round(store, work, sent_after, consumer="w1"):
    verdict, outcome = store.commit_round(work, consumer, begin(store, work, consumer).epoch, sent_after)
    assert verdict == "ok", outcome
    return outcome


def writing(store, room, consumer="w1", tokens=100, lease_ms=30_000):
    """A one-destination room whose round ``consumer`` has taken: (work, epoch)."""
    register(store)
    init(store, room, indices=[0], allocated=tokens)
    publish(store, room, tokens)
    work = take(store, room, consumer)
    return work, begin(store, work, consumer, lease_ms).epoch


def pending_on(store, entry_id):
    found = store.client.xpending_range(store.keys.stream, GROUP, min=entry_id, max=entry_id, count=1)
    return found[0]["consumer"].decode() if found else None


# ---- queueing and the compare-and-set
@pytest.mark.parametrize("source_first", [True, False])
def test_round_is_queued_once_when_source_and_destination_are_both_known(store, source_first):
    register(store)
    room = 11
    if source_first:
        assert publish(store, room, 2000).status == Status.Bootstrapping
        assert not queued(store, room)
        assert init(store, room).status == Status.WaitingForInput
    else:
        assert init(store, room).status == Status.WaitingForInput
        assert not queued(store, room)
        publish(store, room, 2000)
    assert len(queued(store, room)) == 1
    record = store.room(room)
    assert record["status_name"] == "WaitingForInput" and record["queued_round"] == "1"
    assert record["src_indices"] == ",".join(map(str, range(16)))
    assert record["entry"] == queued(store, room)[0][0].decode()


def test_resume_round_trip_and_compare_and_set(store):
    register(store)
    room = 12
    init(store, room)
    publish(store, room, 2000)
    work = take(store, room)
    outcome = run_round(store, work, [1024])
    assert outcome.status == Status.Transferring and outcome.notify
    assert outcome.endpoints == ("127.0.0.1:7000",)
    # the same entry redelivered after its commit: stale, nothing double-counted
    assert store.begin_round(work, "w1", 30_000)[0] is None
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
    # a late duplicate of the first resume cannot move anything backwards, nor push anything
    late = resume(store, room, 1024, 976)
    assert late.status == Status.Success and not late.notify
    assert store.room(room)["status"] == str(int(Status.Success))


def test_duplicate_init_never_queues_twice(store):
    register(store)
    room = 13
    init(store, room)
    assert init(store, room).note == "duplicate init ignored"
    publish(store, room, 100)
    assert init(store, room).note == "duplicate init ignored"
    assert len(queued(store, room)) == 1


def test_round_waits_for_every_required_destination(store):
    register(store)
    register(store, OTHER)
    room = 14
    publish(store, room, 2000)
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
    publish(store, room, 2000)
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
        publish(store, room, 2000)
        if case == "wrong sent":
            run_round(store, take(store, room), [1024])
            outcome = resume(store, room, 512, 976)
        elif case == "before transferring":
            outcome = resume(store, room, 0, 1024)
        elif case == "too many sessions":
            outcome = init(store, room, session=OTHER)
        else:
            outcome = init(store, room, session=OTHER, required=2)
    assert outcome.failed and needle in outcome.note and outcome.notify
    record = store.room(room)
    assert record["status_name"] == "Failed" and needle in record["failure"]


def test_a_commit_with_bad_counts_changes_nothing(store):
    work, epoch = writing(store, 17)
    with pytest.raises(redis.ResponseError, match="would move dst0.sent_tokens"):
        store.commit_round(work, "w1", epoch, [5000])
    record = store.room(17)
    assert record["holder"] == "w1" and record["round"] == "0", "checked before anything was written"
    assert pending_on(store, work.entry_id) == "w1"


# ---- Failed is the drain acknowledgment (docs/protocol.md)
@pytest.mark.parametrize("mode", ["", "encoder", "expired"])
def test_an_ended_room_keeps_its_blocks_and_its_failed_until_the_write_ends(store, mode):
    room = 18
    work, epoch = writing(store, room)
    assert store.free_blocks() == 255
    if mode == "expired":
        store.client.hset(store.keys.room(room), mapping={"deadline": 1, "deadline_reason": "round timeout"})
    outcome = store.fail_room(room, "aborted", mode=mode)
    assert outcome.failed and not outcome.notify, "no Failed while a write is in flight"
    assert store.status(room) == Status.Failed, "Redis says Failed at once: nothing new starts"
    assert store.free_blocks() == 255, "a write may still read these blocks"
    assert store.client.pttl(store.keys.room(room)) == -1, "the record outlives the write"
    again = store.fail_room(room, "aborted again")
    assert again.failed and not again.notify
    held, status = store.keep_lease(work, "w1", epoch, 30_000)
    assert held and status == Status.Failed, "the holder keeps its lease while it writes"
    verdict, ended = store.commit_round(work, "w1", epoch, [100])
    assert verdict == "ended" and ended.failed and ended.notify and ended.endpoints == ("127.0.0.1:7000",)
    assert store.free_blocks() == 256 and pending_on(store, work.entry_id) is None
    assert store.client.pttl(store.keys.room(room)) > 0
    late = store.fail_room(room, "aborted once more")
    assert late.failed and late.notify, "Failed again, now due: it contradicts nothing"


def test_a_room_with_no_write_in_flight_fails_and_releases_at_once(store):
    register(store)
    init(store, 19, indices=[0], allocated=100)
    publish(store, 19, 100)  # queued, not taken
    outcome = store.fail_room(19, "aborted by the language side")
    assert outcome.failed and outcome.notify and store.free_blocks() == 256
    work = take(store, 19)
    assert store.begin_round(work, "w1", 30_000) == (None, "room is Failed")
    assert pending_on(store, work.entry_id) is None, "the stale entry is acknowledged by its owner"


def test_a_worker_failing_its_own_round_releases_at_once_and_a_retry_gets_the_same_answer(store):
    work, epoch = writing(store, 21)
    outcome = store.fail_held_round(work, "w1", epoch, "write failed")
    assert outcome.failed and outcome.notify and store.free_blocks() == 256
    assert pending_on(store, work.entry_id) is None
    assert store.fail_held_round(work, "w1", epoch, "write failed") == outcome, "retried: same answer"


def test_success_gives_the_blocks_back_in_the_commit_and_a_retried_commit_repeats_it(store):
    work, epoch = writing(store, 23)
    verdict, outcome = store.commit_round(work, "w1", epoch, [100])
    assert verdict == "ok" and outcome.status == Status.Success and outcome.notify
    assert store.free_blocks() == 256 and store.held_blocks(23) == 0
    assert store.commit_round(work, "w1", epoch, [100]) == (verdict, outcome), \
        "a commit retried after a lost reply finds its own work done"
    assert store.room(23)["sent_tokens"] == "100"


def test_late_messages_on_a_room_that_succeeded_push_nothing(store):
    work, epoch = writing(store, 24)
    store.commit_round(work, "w1", epoch, [100])
    register(store, OTHER)
    for outcome in (init(store, 24), init(store, 24, session=OTHER), resume(store, 24, 0, 100),
                    store.publish_source(24, 100, [0]), store.publish_source(24, 200, [5])):
        assert outcome.status == Status.Success and not outcome.notify and not outcome.endpoints, outcome
    assert store.status(24) == Status.Success


# ---- the fencing epoch (docs/guarantees.md)
def test_a_stale_epoch_cannot_commit_acknowledge_or_renew(store):
    room = 30
    old, old_epoch = writing(store, room)
    assert store.hand_back("w1", room, old.entry_id)[0] == "requeued"  # w1 was stopped
    new = take(store, room, "w2")
    new_epoch = begin(store, new, "w2").epoch
    assert int(new_epoch) == int(old_epoch) + 1 and new.entry_id != old.entry_id
    assert store.room(room)["rewrites"] == "1"
    assert store.commit_round(old, "w1", old_epoch, [100])[0] == "stale"
    assert store.keep_lease(old, "w1", old_epoch, 30_000)[0] is False
    assert store.fail_held_round(old, "w1", old_epoch, "late").status == Status.WaitingForInput
    assert store.begin_round(old, "w1", 30_000)[0] is None
    record = store.room(room)
    assert (record["holder"], record["epoch"], record["round"]) == ("w2", new_epoch, "0")
    assert pending_on(store, new.entry_id) == "w2", "the stale holder acknowledged nothing"
    assert store.free_blocks() == 255, "the new holder's blocks are untouched"
    verdict, outcome = store.commit_round(new, "w2", new_epoch, [100])
    assert verdict == "ok" and outcome.status == Status.Success and store.free_blocks() == 256


def test_a_forged_epoch_does_not_shorten_the_holders_hold(store):
    room = 31
    work, epoch = writing(store, room)
    store.fail_room(room, "aborted")
    forged = str(int(epoch) + 1)
    assert store.commit_round(work, "w1", forged, [100])[0] == "stale"
    assert store.commit_round(work, "w2", epoch, [100])[0] == "stale"
    assert store.keep_lease(work, "w2", epoch, 1)[0] is False
    assert store.free_blocks() == 255 and store.room(room)["holder"] == "w1", "still held by w1"
    assert store.hand_back("w2", room, work.entry_id) == ("none", None), "w2 never held it"
    assert store.free_blocks() == 255
    assert store.commit_round(work, "w1", epoch, [100])[0] == "ended" and store.free_blocks() == 256


def test_only_the_entry_owner_may_begin_and_a_retried_begin_is_the_same_take(store):
    register(store)
    init(store, 32, indices=[0], allocated=100)
    publish(store, 32, 100)
    work = take(store, 32, "w1")
    assert store.begin_round(work, "w2", 30_000) == (None, f"entry {work.entry_id} is not pending on this worker")
    assert pending_on(store, work.entry_id) == "w1"
    first, second = begin(store, work), begin(store, work)
    assert first.epoch == second.epoch == store.room(32)["epoch"] and not first.redo


def test_keep_lease_resets_idle_without_counting_a_delivery(store):
    work, epoch = writing(store, 33)
    time.sleep(0.05)
    before = store.client.xpending_range(store.keys.stream, GROUP, min=work.entry_id, max=work.entry_id, count=1)[0]
    assert store.keep_lease(work, "w1", epoch, 90_000) == (True, int(Status.WaitingForInput))
    after = store.client.xpending_range(store.keys.stream, GROUP, min=work.entry_id, max=work.entry_id, count=1)[0]
    assert after["time_since_delivered"] < before["time_since_delivered"]
    assert after["times_delivered"] == before["times_delivered"] == 1
    assert int(store.room(33)["lease_until"]) >= store.now_ms() + 80_000
    assert store.pending(min_idle_ms=40) == []
    [(room, holder, until)] = store.holds()
    assert (room, holder) == (33, "w1") and until >= store.now_ms() + 80_000


# ---- hand-back (the fencer's side; fencing itself is tested in test_fencer.py)
def test_a_handed_back_round_is_queued_again_and_its_blocks_never_leave_meanwhile(store):
    room = 34
    work, epoch = writing(store, room)
    verdict, outcome = store.hand_back("w1", room, work.entry_id)
    assert verdict == "requeued" and not outcome.notify
    record = store.room(room)
    assert "holder" not in record and record["handbacks"] == "1" and store.free_blocks() == 255
    assert store.hand_back("w1", room, work.entry_id) == ("none", None), "idempotent"
    redo = take(store, room, "w2")
    assert redo.entry_id == record["entry"] != work.entry_id
    assert begin(store, redo, "w2").redo


def test_a_round_read_but_never_begun_is_handed_back_too(store):
    register(store)
    init(store, 35, indices=[0], allocated=100)
    publish(store, 35, 100)
    work = take(store, 35, "w1")  # read, then w1 stopped before begin_round
    assert store.hand_back("w1", 35, work.entry_id)[0] == "requeued"
    assert pending_on(store, work.entry_id) is None
    assert run_round(store, take(store, 35, "w2"), [100], "w2").status == Status.Success


def test_handing_back_an_ended_room_settles_it(store):
    room = 36
    work, _ = writing(store, room)
    store.fail_room(room, "aborted")
    verdict, outcome = store.hand_back("w1", room)  # by the hold alone
    assert verdict == "ended" and outcome.failed and outcome.notify
    assert store.free_blocks() == 256 and pending_on(store, work.entry_id) is None


def test_past_the_delivery_limit_a_round_is_dead_lettered(store):
    store.settings.max_deliveries = 2
    room = 37
    work, _ = writing(store, room)
    assert store.hand_back("w1", room, work.entry_id)[0] == "requeued"
    again = take(store, room, "w2")
    begin(store, again, "w2")
    verdict, outcome = store.hand_back("w2", room, again.entry_id)
    assert verdict == "dead" and outcome.failed and outcome.notify
    assert "delivered 2 times" in outcome.note and store.free_blocks() == 256
    [(_, fields)] = store.client.xrange(store.keys.dead)
    assert fields[b"room"] == b"37" and fields[b"last_holder"] == b"w2"


def test_a_second_entry_yields_to_the_holder_and_comes_back_if_it_dies(store):
    room = 38
    work, epoch = writing(store, room)
    store.client.xgroup_destroy(store.keys.stream, GROUP)  # the group was lost mid-write
    assert store.recover_groups() == 1
    duplicate = take(store, room, "w2")
    assert store.begin_round(duplicate, "w2", 30_000) == (None, "round 1 is held by w1")
    assert store.room(room)["entry"] == work.entry_id
    assert store.hand_back("w1", room)[0] == "requeued", "its holder died: the round is queued again"
    assert run_round(store, take(store, room, "w3"), [100], "w3").status == Status.Success


# ---- source blocks
def test_pool_allocation_is_all_or_nothing_and_a_retried_allocation_takes_blocks_once(store):
    store.init_pool(4, {"shm": "test"})
    first = store.alloc_blocks(1, 3)
    assert first.blocks == [0, 1, 2]
    assert store.alloc_blocks(1, 3) == first, "a retry after a lost reply gets the same blocks"
    assert store.free_blocks() == 1
    with pytest.raises(redis.ResponseError, match="already holds 3"):
        store.alloc_blocks(1, 2)
    assert store.alloc_blocks(2, 2) is None
    assert store.free_blocks() == 1
    assert store.init_pool(4, {"shm": "test"}) is False, "same shape: kept, not reset"


def test_a_publish_must_name_the_rooms_own_allocation(store):
    mine = store.alloc_blocks(40, 2).blocks
    theirs = store.alloc_blocks(41, 1).blocks
    outcome = store.publish_source(40, 200, [mine[0], theirs[0]])
    assert outcome.failed and f"source block {theirs[0]} is not allocated to this room" in outcome.note
    assert "src_indices" not in store.room(40), "blocks it does not own are never named"
    assert store.held_blocks(41) == 1 and store.free_blocks() == 255, "40's went back, 41's stay"
    assert store.publish_source(42, 100, [7]).failed, "never allocated"


def test_an_unpublished_allocation_expires_and_its_blocks_go_back(store):
    set_policy(store, alloc_timeout=0.05)
    store.init_pool(8, {"shm": "test"})
    store.alloc_blocks(70, 3)
    published = store.alloc_blocks(72, 2)
    late = store.alloc_blocks(74, 1)
    store.publish_source(72, 200, published.blocks)
    assert store.expire_allocations(store.now_ms()) == (0, []), "not expired yet"
    time.sleep(0.08)
    assert store.expire_allocations(store.now_ms()) == (4, []), "the orphan (3) and the late one (1) go back"
    outcome = store.publish_source(74, 100, late.blocks)
    assert outcome.failed and "not allocated to this room" in outcome.note
    assert "src_indices" not in store.room(74)
    assert store.free_blocks() == 6, "the published room keeps its 2 until it ends"
    store.fail_room(72, "ended")
    assert store.free_blocks() == 8


def test_an_encoder_abort_before_publishing_returns_its_allocation(store):
    store.alloc_blocks(75, 3)
    outcome = store.fail_room(75, "aborted by the encoder", mode="encoder")
    assert outcome.failed and store.free_blocks() == 256
    store.alloc_blocks(76, 2)
    assert store.fail_room(76, "aborted by the language side").failed
    assert store.free_blocks() == 254, "the encoder may still be writing into them: they wait"
    assert store.publish_source(76, 200, [2, 3]).failed and store.free_blocks() == 256


def test_release_refuses_while_live_or_written(store):
    work, epoch = writing(store, 77)
    with pytest.raises(redis.ResponseError, match="abort it first"):
        store.release_blocks(77)
    store.fail_room(77, "aborted")
    with pytest.raises(redis.ResponseError, match="in flight"):
        store.release_blocks(77)
    store.commit_round(work, "w1", epoch, [100])
    assert store.release_blocks(77) == 0, "its end gave them back already"


def test_a_lost_pool_is_rebuilt_around_blocks_still_held(store):
    store.init_pool(6, {"shm": "test"})
    held = store.alloc_blocks(80, 2).blocks
    assert store.rebuild_pool(6, {"shm": "test"}) is None, "nothing was lost"
    store.client.delete(store.keys.record, store.keys.pool_free)  # Redis lost them
    assert store.rebuild_pool(6, {"shm": "test"}) == 4
    assert store.free_blocks() == 4 and store.record()["num_blocks"] == "6"
    taken = store.alloc_blocks(81, 4).blocks
    assert not set(taken) & set(held), "a block still held is never handed out twice"
    assert store.rebuild_pool(6, {"shm": "test"}) is None, "an empty free list is not a loss"


# ---- timeouts, the queue's upkeep
def test_timeouts_fire_with_their_reason(store):
    set_policy(store, bootstrap_timeout=0.05)
    register(store)
    publish(store, 19, 100)
    time.sleep(0.1)
    assert store.due(store.keys.timeouts, store.now_ms()) == [19]
    outcome = store.fail_room(19, "", mode="expired")
    assert outcome.failed and "bootstrap timeout" in outcome.note
    assert "bootstrap timeout" in store.room(19)["failure"]
    assert store.free_blocks() == 256


def test_janitor_trims_acknowledged_entries_but_never_pending_ones(store):

    register(store)
    for room in (40, 42, 44, 46):
        init(store, room, indices=[0], allocated=100)
        publish(store, room, 100)
    works = store.read_rounds("w1", count=10, block_ms=10)
    for work in works[:3]:
        run_round(store, work, [100])
    assert store.client.xlen(store.keys.stream) == 4
    store.trim_rounds()
    assert store.client.xlen(store.keys.stream) == 1, "only the pending entry is kept"
    assert store.pending() == [(works[3].entry_id, "w1")]


def test_a_lost_group_is_recreated_at_the_end_and_live_rounds_queued_again(store):
    register(store)
    for room in (50, 52):  # 50 committed, 52 queued and never done
        init(store, room, indices=[0], allocated=100)
        publish(store, room, 100)
    run_round(store, take(store, 50), [100])
    store.client.xgroup_destroy(store.keys.stream, GROUP)
    with pytest.raises(Exception, match="NOGROUP"):
        store.read_rounds("w1", count=10, block_ms=10)
    assert store.recover_groups() == 1
    assert store.recover_groups() == 0, "a second recovery finds the group and does nothing"
    works = store.read_rounds("w1", count=10, block_ms=10)
    assert [(w.room, w.round) for w in works] == [(52, 1)], "old entries are not replayed"
    assert run_round(store, works[0], [100]).status == Status.Success


def test_gone_consumers_are_removed_once_nothing_is_pending(store):
    register(store)
    init(store, 60, indices=[0], allocated=100)
    publish(store, 60, 100)
    store.heartbeat("dead")
    work = take(store, 60, consumer="dead")
    store.heartbeat("alive")
    store.read_rounds("alive", count=1, block_ms=10)
    def gone(name, _seen):
        return name == "dead"

    assert store.remove_dead_consumers(gone) == [] and store.consumers()["dead"] == 1, \
        "kept while an entry is pending on it"
    assert store.live_workers() == ["alive"], "its heartbeat went"
    store.hand_back("dead", 60, work.entry_id)
    assert store.remove_dead_consumers(gone) == ["dead"]
    assert "dead" not in store.consumers()


def test_a_gone_consumer_that_gets_an_entry_after_the_check_is_kept(store):
    """The race a dead worker's still-blocked read makes: the consumer had nothing pending
    when listed, an entry reached it before the delete; deleting it would drop that entry."""
    register(store)
    init(store, 61, indices=[0], allocated=100)
    store.heartbeat("dead")
    store.read_rounds("dead", count=1, block_ms=10)  # the consumer exists, nothing pending

    raced = []

    def gone(name, _seen):
        if name == "dead" and not raced:
            raced.append(1)
            publish(store, 61, 100)  # the round is queued now ...
            assert store.read_rounds("dead", count=1, block_ms=10), "... and delivered to it"
        return name == "dead"

    assert store.remove_dead_consumers(gone) == [] and store.consumers()["dead"] == 1, "its entry is kept"
    assert len(store.pending(consumer="dead")) == 1


def test_scripts_are_loaded_up_front_so_the_first_round_pays_no_miss(store):
    store.client.script_flush()  # a fresh or restarted Redis holds no scripts
    shas = [script.sha for script in store._scripts.values()]
    assert not any(store.client.script_exists(*shas))
    store.load_scripts()
    assert all(store.client.script_exists(*shas))
    work, epoch = writing(store, 90)
    before = getattr(store.client, "round_trips", None)
    store.commit_round(work, "w1", epoch, [100])
    if before is not None:  # EVALSHA hits at once: no NOSCRIPT, no SCRIPT LOAD
        assert store.client.round_trips - before == 1


def test_every_key_of_the_node_shares_one_hash_tag(store):
    work, epoch = writing(store, 91)
    store.heartbeat("w1")
    store.count("x")
    keys = [k.decode() for k in store.client.scan_iter(store.keys.all_pattern(), count=1000)]
    assert len(keys) >= 8
    assert {k.split("{", 1)[1].split("}", 1)[0] for k in keys} == {store.settings.node}


def test_an_entry_left_behind_by_a_lost_read_reply_comes_back_with_the_heartbeat(store):
    register(store)
    init(store, 92, indices=[0], allocated=100)
    publish(store, 92, 100)
    work = take(store, 92)  # as if the reply was lost and redis-py's retry read again
    assert store.heartbeat("w1") == [work]
    run_round(store, work, [100])
    assert store.heartbeat("w1") == []


# ---- bounds and the node's policy
def test_a_session_record_expires_a_retention_after_its_last_use(store):
    set_policy(store, session_retention=60.0)
    register(store)
    key = store.keys.session(SESSION)
    assert 0 < store.client.pttl(key) <= 60_000
    store.client.pexpire(key, 5_000)  # as if most of the retention had passed
    init(store, 31)
    assert store.client.pttl(key) > 50_000, "an init is a use: the retention starts again"
    store.client.pexpire(key, 5_000)
    publish(store, 31, 2000)
    work = store.read_rounds("w1", count=1, block_ms=10)[0]
    take, _ = store.begin_round(work, "w1", 5000)
    store.commit_round(work, "w1", take.epoch, [1024])
    resume(store, 31, 1024, 1024)
    assert store.client.pttl(key) > 50_000, "so is a resume"
    store.mark_session_failed(SESSION, "write failed")
    assert 0 < store.client.pttl(key) <= 60_000, "a failure mark keeps the bound"
    store.client.delete(key)
    store.mark_session_failed("127.0.0.1:9009", "a session that had expired")
    assert 0 < store.client.pttl(store.keys.session("127.0.0.1:9009")) <= 60_000


def test_a_rooms_deadlines_are_the_nodes_whatever_the_caller_was_configured_with(store):
    """An encoder whose own settings say 300 s cannot give the node's rooms other deadlines:
    every script reads the policy from the node record."""
    set_policy(store, bootstrap_timeout=5.0, alloc_timeout=7.0)
    encoder = Store(store.client, store.settings.replace(bootstrap_timeout=300.0, alloc_timeout=300.0))
    assert encoder.settings.policy_disagreement(store.record()) == \
        "bootstrap_timeout 300s (the node: 5s), alloc_timeout 300s (the node: 7s)"
    now = store.now_ms()
    encoder.alloc_blocks(33, 2)
    assert abs(int(store.client.zscore(store.keys.pool_leases, "33")) - (now + 7_000)) < 1_000
    publish(encoder, 35, 100)
    assert abs(int(store.room(35)["deadline"]) - (now + 5_000)) < 1_000, store.room(35)
    store.client.hdel(store.keys.record, "bootstrap_timeout_ms")
    with pytest.raises(redis.ResponseError, match="has no policy"):
        publish(encoder, 36, 100)


def test_a_commit_takes_the_round_read_ahead_and_reads_the_next_in_one_round_trip(redis_url):
    """Under load a lane's commit carries the take of the entry it read ahead and a read of
    one more: one round trip, and each answer is what its own call would have said."""
    settings = make_settings(redis_url=redis_url)
    store = Store(connect(redis_url), settings, direct=True)
    try:
        store.ensure_groups()
        store.load_scripts()
        store.init_pool(64, {"shm": "test"})
        register(store)
        for room in (1, 2, 3):
            init(store, room, indices=[room], allocated=100)
            publish(store, room, 100)
        first, second = store.read_rounds("w1", count=2, block_ms=10)
        epoch = begin(store, first).epoch
        assert store.batches
        trips = store.round_trips
        verdict, outcome, (taken, why), more = store.commit_and_take(first, "w1", epoch, [100], 1000, second, 30_000)
        assert store.round_trips - trips == 1
        assert verdict == "ok" and outcome.status == Status.Success
        assert taken is not None and store.room(2)["holder"] == "w1" and store.room(2)["epoch"] == taken.epoch
        assert [w.room for w in more] == [3] and {e for e, _ in store.pending("w1")} == {second.entry_id, more[0].entry_id}
        # a retry (its reply lost) finds the commit and the take done, and reads nothing more
        again = store.commit_and_take(first, "w1", epoch, [100], 1000, second, 30_000)
        assert again[0] == "ok" and again[2][0].epoch == taken.epoch and again[3] == []
        assert store.stats()["rounds"] == 1
        # the round taken ahead commits as any other
        assert store.commit_round(second, "w1", taken.epoch, [100])[0] == "ok"
        assert store.room(1)["status_name"] == store.room(2)["status_name"] == "Success"
    finally:
        store.delete_keys(list(store.node_keys()))
