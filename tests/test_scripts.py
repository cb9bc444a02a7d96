"""The scripts' loader (xferd/state/scripts.py): headers declare keys and arguments, includes
are checked against them, the declaration's constants reach Lua, one reply envelope."""
from __future__ import annotations

import re

import fakeredis
import pytest

from xferd.state import records, room, scripts
from xferd.state.records import Verdict

from conftest import make_settings
from xferd.state.store import Store
from test_store import init, register


def test_every_script_loads_and_declares_its_keys_and_arguments():
    for name in scripts.names():
        script = scripts.load(name)
        assert script.keys and script.argv, name
        assert "KEYS[" not in script.source.split(f"-- {name}.lua", 1)[1], f"{name} reaches KEYS by number"
        assert "ARGV[" not in script.source.split(f"-- {name}.lua", 1)[1], f"{name} reaches ARGV by number"


def test_a_script_that_includes_a_function_without_its_keys_does_not_load(tmp_path, monkeypatch):
    (tmp_path / "includes").mkdir()
    (tmp_path / "includes" / "uses_room.lua").write_text("--@keys room\nlocal function f(K) return K.room end\n")
    (tmp_path / "broken.lua").write_text("--[[ x\n  KEYS record\n  ARGV room\n]]\n--@include uses_room\n")
    monkeypatch.setattr(scripts, "_folder", lambda: tmp_path)
    with pytest.raises(ValueError, match=r"includes uses_room, whose functions use keys \['room'\]"):
        scripts.load("broken")


def test_every_verdict_a_script_answers_is_declared():
    said = set()
    for name in scripts.names():
        source = scripts.load(name).source
        said |= set(re.findall(r"(?:envelope|room_reply\(K,)\s*\(?'(\w+)'", source))
    assert said and said <= {v.value for v in Verdict}, said - {v.value for v in Verdict}


def test_every_failure_class_a_script_names_is_declared():
    said = set()
    for name in scripts.names():
        source = scripts.load(name).source
        start = source.find("fail(K, ")
        while start >= 0:  # the call's last argument, up to its closing parenthesis
            depth, end = 0, start
            for end in range(start, len(source)):
                depth += {"(": 1, ")": -1}.get(source[end], 0)
                if depth == 0 and source[end] == ")":
                    break
            last = source[start:end].rsplit(",", 1)[1].strip()
            if last.startswith("'"):
                said.add(last.strip("'"))
            start = source.find("fail(K, ", end)
    assert said and said <= set(room.FAILURE_CLASSES), said - set(room.FAILURE_CLASSES)


def test_an_undeclared_constant_stops_the_load(tmp_path, monkeypatch):
    (tmp_path / "includes").mkdir()
    (tmp_path / "typo.lua").write_text("--[[ x\n  KEYS room\n  ARGV room\n]]\nreturn STATUS.Sucess\n")
    monkeypatch.setattr(scripts, "_folder", lambda: tmp_path)
    with pytest.raises(ValueError, match="typo names STATUS.Sucess, which room.py does not declare"):
        scripts.load("typo")


def test_a_changed_declaration_reaches_lua(monkeypatch):
    """The scripts' deadlines, reasons and transitions come from room.py when they load."""
    deadlines = tuple(room.Deadline(d.phase, d.when, d.start, d.policy,
                                    "no init yet ({dst_count}/{required_dst_info_num}), limit {limit}")
                      if d.phase == "bootstrap" else d for d in room.DEADLINES)
    monkeypatch.setattr(room, "DEADLINES", deadlines)
    scripts.constants.cache_clear()
    try:
        store = Store(fakeredis.FakeRedis(server=fakeredis.FakeServer()), make_settings(redis_url=None,
                                                                                        bootstrap_timeout=7))
        store.init_pool(64, {"shm": "test"})
        register(store)
        init(store, 5, required=2)
        assert store.room(5)["deadline_reason"] == "no init yet (1/2), limit 7s"
    finally:
        scripts.constants.cache_clear()


def test_a_transition_the_declaration_lacks_is_an_error(monkeypatch):
    """set_status checks every move against the declaration (an assertion: no input reaches it)."""
    transitions = tuple(t for t in room.TRANSITIONS if t.after != room.Status.WaitingForInput)
    monkeypatch.setattr(room, "TRANSITIONS", transitions)
    scripts.constants.cache_clear()
    try:
        store = Store(fakeredis.FakeRedis(server=fakeredis.FakeServer()), make_settings(redis_url=None))
        store.init_pool(64, {"shm": "test"})
        register(store)
        with pytest.raises(Exception, match="no transition from Bootstrapping to WaitingForInput"):
            init(store, 6)
    finally:
        scripts.constants.cache_clear()


def test_a_refusal_raises_with_the_scripts_reason_and_writes_nothing():
    with pytest.raises(records.Refused, match="abort it first"):
        records.Reply.parse([b"refused", -1, b"room 3 is Transferring: abort it first", 0, [], []])
    reply = records.Reply.parse([b"ok", 3, b"committed", 1, [b"10.0.0.1:7000", b""], [b"x"]])
    assert reply.outcome.endpoints == ("10.0.0.1:7000",) and reply.outcome.notify and reply.data == [b"x"]
