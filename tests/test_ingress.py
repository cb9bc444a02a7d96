"""The ingress against hostile input (docs/protocol.md), one named test per bad input: the
offending room fails with a readable reason, nothing else is touched, and the ingress
returns to serve the next message. Real Redis; messages go straight to ``handle``."""
from __future__ import annotations

import pytest

from conftest import _cleanup, make_settings
from xferd.node.auth import keygen
from xferd_lab.embedded import free_port
from xferd.node.ingress import Ingress
from xferd.protocol.status import Status
from xferd.protocol.wire import encode_abort, encode_init, encode_register, encode_resume

SESSION = "127.0.0.1:9100"
PTRS = [4096 * (i + 1) for i in range(4)]


@pytest.fixture
def make_ingress(redis_url):
    made = []

    def make(**overrides) -> Ingress:
        settings = make_settings(redis_url=redis_url, ingress=f"tcp://127.0.0.1:{free_port()}", **overrides)
        made.append(Ingress(settings))
        made[-1].store.ensure_groups()
        made[-1].store.init_pool(settings.pool_blocks, {"shm": "test"})
        return made[-1]

    yield make
    for ingress in made:
        ingress.close()
        _cleanup(ingress.store.client, ingress.settings)


@pytest.fixture
def ingress(make_ingress):
    made = make_ingress()
    made.handle(encode_register("127.0.0.1", 7100, SESSION, PTRS, [1 << 20] * 4))
    return made


def rejected(ingress) -> int:
    return ingress.store.rejected_messages()


def failure(ingress, room) -> str:
    assert ingress.store.status(room) == Status.Failed
    return ingress.store.failure(room)


def init(room, indices=(0, 1), allocated=256, session=SESSION):
    return encode_init(room, "127.0.0.1", 7100, session, list(indices), 1, allocated)


def test_wrong_frame_count(ingress):
    ingress.handle([b"5", b"127.0.0.1", b"7100", SESSION.encode(), b"0"])  # init needs 6 or 7
    assert rejected(ingress) == 1 and ingress.store.status(5) is None, "no room can be named"


def test_non_numeric_field(ingress):
    ingress.handle(init(6)[:6] + [b"lots"])
    assert "allocated_tokens 'lots' is not a non-negative integer" in failure(ingress, 6)


def test_negative_number(ingress):
    ingress.handle(init(7)[:6] + [b"-128"])
    assert "not a non-negative integer" in failure(ingress, 7)


def test_huge_number(ingress):
    ingress.handle(init(8)[:6] + [b"99999999999999"])
    assert "is outside [0, 2147483647]" in failure(ingress, 8)


def test_block_size_mismatch(ingress):
    ingress.handle(init(9, indices=range(16), allocated=1024))  # 16 blocks cannot hold 1024 / 128
    assert "block size mismatch" in failure(ingress, 9)


def test_init_from_an_unregistered_session(ingress):
    ingress.handle(init(10, session="127.0.0.1:9999"))
    assert "unregistered session" in failure(ingress, 10)


def test_resume_for_an_unknown_room(ingress):
    ingress.handle(encode_resume(11, "127.0.0.1", 7100, SESSION, [0], 1, 128, 128))
    assert "resume for unknown room 11" in failure(ingress, 11)


def transferring(ingress, room):
    """Room ``room``: 512 tokens, the first 256 sent (a worker's round, done by hand)."""
    store = ingress.store
    ingress.handle(init(room))
    store.publish_source(room, 512, store.alloc_blocks(room, 4).blocks)
    assert commit(store, room, 256).status == Status.Transferring


def commit(store, room, sent):
    """A worker's round of ``room``, done by hand."""
    [work] = [w for w in store.read_rounds("w", count=10, block_ms=10) if w.room == room]
    verdict, outcome = store.commit_round(work, "w", store.begin_round(work, "w", 30_000)[0].epoch, [sent])
    assert verdict == "ok"
    return outcome


def test_sent_tokens_that_disagree_with_the_record(ingress):
    transferring(ingress, 12)
    ingress.handle(encode_resume(12, "127.0.0.1", 7100, SESSION, [0, 1], 1, 128, 256))
    assert "sent_tokens 128 disagrees with the record (256 sent" in failure(ingress, 12)


def test_resume_for_a_finished_room_changes_nothing(ingress):
    transferring(ingress, 14)
    ingress.handle(encode_resume(14, "127.0.0.1", 7100, SESSION, [2, 3], 1, 256, 256))
    assert commit(ingress.store, 14, 512).status == Status.Success
    ingress.handle(encode_resume(14, "127.0.0.1", 7100, SESSION, [0, 1], 1, 512, 256))
    record = ingress.store.room(14)
    assert record["status_name"] == "Success" and record["round"] == "2"


def test_indices_beyond_the_limit_and_oversized_messages(ingress):
    ingress.handle(init(15, indices=range(2_000_000)))
    assert "exceeds the limit" in failure(ingress, 15)
    ingress.handle([b"x" * 64] * 9)
    assert rejected(ingress) == 2


def test_abort_only_from_a_destination_of_the_room(ingress):
    ingress.handle(encode_register("127.0.0.1", 7101, "127.0.0.1:9101", PTRS, [1 << 20] * 4))
    ingress.handle(init(16))
    ingress.handle(encode_abort(16, "127.0.0.1:9101"))  # a session with no part in room 16
    assert ingress.store.status(16) == Status.WaitingForInput and rejected(ingress) == 1
    ingress.handle(encode_abort(16, SESSION))
    assert "aborted by language session" in failure(ingress, 16)


def test_strict_bounds_refuses_registration_without_lengths(make_ingress):
    strict = make_ingress(strict_bounds=True)
    strict.handle(encode_register("127.0.0.1", 7100, SESSION, PTRS))
    assert rejected(strict) == 1 and strict.store.session_owner(SESSION) is None
    strict.handle(encode_register("127.0.0.1", 7100, SESSION, PTRS, [1 << 20] * 4))
    assert strict.store.session_owner(SESSION) == ""


def test_with_curve_a_peer_acts_only_for_its_own_sessions(make_ingress, tmp_path):
    keygen(str(tmp_path / "server"), "ingress")
    keygen(str(tmp_path / "clients"), "lang")
    curved = make_ingress(curve_secret_file=str(tmp_path / "server" / "ingress.key_secret"),
                          curve_clients_dir=str(tmp_path / "clients"))
    curved.handle(encode_register("127.0.0.1", 7100, SESSION, PTRS, [1 << 20] * 4), peer="alice")
    curved.handle(encode_register("127.0.0.1", 7100, SESSION, PTRS, [1 << 20] * 4), peer="mallory")
    assert curved.store.session_owner(SESSION) == "alice" and rejected(curved) == 1
    curved.handle(init(17), peer="mallory")
    assert curved.store.status(17) is None and rejected(curved) == 2, "refused; the room untouched"
    curved.handle(init(17), peer="alice")
    assert curved.store.status(17) == Status.WaitingForInput
    curved.handle(init(17)[:6] + [b"junk"], peer="mallory")  # malformed, naming alice's room
    assert curved.store.status(17) == Status.WaitingForInput, "another peer cannot fail it"
    curved.handle(init(17)[:6] + [b"junk"], peer="alice")
    assert "not a non-negative integer" in failure(curved, 17)


def test_one_bad_message_never_stops_the_next(ingress):
    for frames in ([], [b"\xff" * 10], [b"None"] * 5, init(18)[:6] + [b"\xfe"]):
        ingress.handle(frames)
    assert rejected(ingress) == 4 and "not ASCII" in failure(ingress, 18)
    ingress.handle(init(19))
    assert ingress.store.status(19) == Status.WaitingForInput


def test_a_refused_registration_is_the_reason_its_rooms_fail(ingress):
    """A registration the node cannot take (3 buffers for a 4-buffer layout): the session's
    next init fails with that reason, not as 'unregistered'."""
    ingress.handle(encode_register("127.0.0.1", 7102, "127.0.0.1:9102", PTRS[:3]))
    assert rejected(ingress) == 1
    ingress.handle(init(20, session="127.0.0.1:9102"))
    reason = failure(ingress, 20)
    assert "registration refused: 3 buffer pointers, the node's layout has 4" in reason


def test_strict_bounds_take_reference_registrations_given_the_destination_pool_size(make_ingress):
    """The reference client never sends buffer lengths: with dst_pool_blocks configured, its
    registration is bounded by that pool size, so strict mode accepts it."""
    strict = make_ingress(strict_bounds=True, dst_pool_blocks=32)
    strict.handle(encode_register("127.0.0.1", 7100, SESSION, PTRS))
    assert rejected(strict) == 0 and strict.store.session_owner(SESSION) == ""
    record = strict.store.client.hget(strict.store.keys.session(SESSION), "lens").decode()
    layout = strict.settings.buffer_layout
    assert record == ",".join(str(32 * b.item_len) for b in layout.buffers)


def test_six_frame_init_asks_for_everything_in_one_round(ingress):
    ingress.handle(init(21, indices=(4, 5, 6))[:6])
    record = ingress.store.room(21)
    assert (record["dst0.allocated_tokens"], record["dst0.one_round"]) == ("384", "1")
    ingress.handle(init(22, indices=(4, 5), allocated=200))
    assert "dst0.one_round" not in ingress.store.room(22)


def test_a_stopping_ingress_takes_every_message_that_already_arrived(ingress):
    """ZMQ drops what a closed PULL socket had queued and the reference language side never
    sends a message again: a drain must not lose an init that reached the node."""
    import time

    import zmq

    push = zmq.Context.instance().socket(zmq.PUSH)
    push.connect(ingress.settings.ingress)
    try:
        rooms = range(3_000, 3_050)
        for room in rooms:
            push.send_multipart(init(room))
        time.sleep(0.5)  # arrived, not yet read
        ingress.stopping = True  # SIGTERM before the loop read any of them
        ingress.run()
        assert [ingress.store.status(room) for room in rooms] == [Status.WaitingForInput] * len(rooms)
    finally:
        push.close(0)


def test_an_init_redis_will_not_take_in_its_bootstrap_timeout_is_failed_to_its_sender():
    """Redis refuses writes (out of memory): the ingress holds the init, retrying, for what
    its room's bootstrap timeout allows, then tells its sender Failed (nothing of it was
    recorded, so no write can target its blocks); once Redis takes writes, inits go in."""
    import time

    import redis as redis_py
    import zmq

    from xferd_lab.embedded import EmbeddedRedis
    with EmbeddedRedis() as private:
        if not private.kind.startswith("private"):
            pytest.skip("needs redis-server (fakeredis has no maxmemory)")
        ingress = Ingress(make_settings(redis_url=private.url, ingress=f"tcp://127.0.0.1:{free_port()}",
                                        bootstrap_timeout=1.0))
        ingress.store.ensure_groups()
        ingress.store.init_pool(ingress.settings.pool_blocks, {"shm": "test"})
        ingress.handle(encode_register("127.0.0.1", 7100, SESSION, PTRS, [1 << 20] * 4))
        status = zmq.Context.instance().socket(zmq.PULL)
        port = status.bind_to_random_port("tcp://127.0.0.1")
        admin = redis_py.Redis.from_url(private.url)
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", 1)
        try:
            started = time.monotonic()
            ingress.handle(encode_init(41, "127.0.0.1", port, SESSION, [0, 1], 1, 256))
            assert 0.9 <= time.monotonic() - started < 5, "held for the room's bootstrap timeout"
            assert status.poll(2000), "its sender was told"
            assert status.recv_multipart() == [b"41", b"0"]
            assert ingress.store.status(41) is None, "nothing of it was recorded"
            admin.config_set("maxmemory", 0)
            ingress.handle(init(42))
            assert ingress.store.status(42) == Status.WaitingForInput
            assert ingress.counts["ingress_rejected:redis_refused"] == 1
        finally:
            admin.config_set("maxmemory", 0)
            status.close(0)
            ingress.close()
