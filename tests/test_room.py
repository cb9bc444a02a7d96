"""The room's declaration (xferd/state/room.py): its transitions and deadlines hold together,
every field a script writes is declared, and the docs and `xferd inspect` read it."""
from __future__ import annotations

import pathlib

from xferd.protocol.status import Status
from xferd.settings import POLICY
from xferd.state import room
from xferd.state.keys import GROUP

from test_store import begin, init, publish, register, resume, run_round, take

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_statuses_only_move_forward_and_failed_overrides_every_live_one():
    moves = room.allowed_moves()
    for before, after in moves.items():
        assert all(a >= before or a == Status.Failed for a in after), (before, after)  # Transferring again: a round
    assert all(Status.Failed in moves[s] for s in room.LIVE)
    assert moves[Status.Success] == moves[Status.Failed] == frozenset()


def test_every_deadline_names_a_policy_limit_and_a_room_field():
    for deadline in room.DEADLINES:
        assert deadline.policy in POLICY
        assert deadline.start in room.ROOM_FIELDS
        for name in (n.split("}")[0] for n in deadline.reason.split("{")[1:]):
            assert name == "limit" or name in room.ROOM_FIELDS, name


def _fields_are_declared(store, key, declared):
    fields = {k.decode() for k in store.client.hkeys(key)}
    assert fields and all(declared(f) for f in fields), sorted(f for f in fields if not declared(f))


def test_every_field_the_scripts_write_is_declared(store):
    # a two-rank room with a resume, to Success
    register(store)
    register(store, "127.0.0.1:9001")
    for session in ("127.0.0.1:9000", "127.0.0.1:9001"):
        init(store, 1, session=session, indices=[0, 1], required=2, allocated=256)
    publish(store, 1, 300)
    run_round(store, take(store, 1), [256, 256])
    for session in ("127.0.0.1:9000", "127.0.0.1:9001"):
        resume(store, 1, 256, 128, indices=[2], session=session, required=2)
    run_round(store, take(store, 1), [300, 300])
    assert store.status(1) == Status.Success
    # a room failed by a bad resume, one timed out waiting, one handed back by the fencer
    init(store, 2, indices=[0], allocated=128)
    resume(store, 2, 5, 128)
    init(store, 3, indices=[0], allocated=128)
    init(store, 4, indices=[0], allocated=128)
    publish(store, 4, 100)
    work = take(store, 4)
    begin(store, work)
    store.hand_back("w1", 4, work.entry_id)
    store.alloc_for_request("r1", 2, 1, 30_000, True)
    for r in (1, 2, 3, 4):
        _fields_are_declared(store, store.keys.room(r), room.declared_room_field)
    _fields_are_declared(store, store.keys.session("127.0.0.1:9000"), room.SESSION_FIELDS.__contains__)
    _fields_are_declared(store, store.keys.request("r1"), room.REQUEST_FIELDS.__contains__)
    assert store.client.xinfo_groups(store.keys.stream)[0]["name"].decode() == GROUP


def test_the_docs_show_the_declaration():
    page = (ROOT / "docs" / "state.md").read_text()
    assert room.markdown() in page, "docs/state.md is out of date: python -m xferd.state.room > the page's tables"
