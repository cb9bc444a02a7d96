"""Logs: one line per ended room, whoever ended it, with its outcome, class, rounds, bytes,
duration and reason; `--log-format json` gives one JSON object a line from every process."""
from __future__ import annotations

import json

from conftest import clients, start_node, start_room, wait_for
from xferd.protocol.status import Status
from xferd_lab.synthetic import room_data


def lines(node) -> list[str]:
    with open(node.log_path) as handle:
        return handle.read().splitlines()


def test_json_logs_have_one_line_per_ended_room_with_its_fields(redis_url, tmp_path_factory):
    node = start_node(redis_url, tmp_path_factory, workers=1, hidden_size=256, log_format="json")
    try:
        with clients(node) as (sender, rx):
            room, _ = start_room(sender, rx, 2000, list(range(8)), 1024)
            assert rx.wait(room, 10) == Status.Transferring
            rx.resume(room, list(range(8, 16)), 1024, 1024)
            assert rx.wait(room, 10) == Status.Success
            aborted = 9_100_001
            sender.send(aborted, 300, room_data(aborted, 300, sender.layout))
            sender.abort(aborted, reason="the encoder gave up")

        def ended() -> dict[str, dict]:
            records = [json.loads(line) for line in lines(node) if line.startswith("{")]
            return {r["room"]: r for r in records if r.get("message", "").startswith("room ") and "outcome" in r}
        assert wait_for(lambda: {str(room), str(aborted)} <= set(ended()), 10), lines(node)[-20:]
        success, failed = ended()[str(room)], ended()[str(aborted)]
        layout = node.settings.buffer_layout
        per_token = sum(layout.token_bytes(i) for i, b in enumerate(layout.buffers) if b.per_token)
        aux = sum(b.item_len for b in layout.buffers if not b.per_token)
        assert success["outcome"] == "Success" and success["rounds"] == 2 and success["level"] == "INFO"
        assert success["bytes"] == 2000 * per_token + aux and success["duration_ms"] >= 0
        assert success["role"] == "janitor" and success["node"] == node.settings.node
        assert failed["outcome"] == "Failed" and failed["failure_class"] == "aborted"
        assert failed["reason"] == "the encoder gave up" and failed["bytes"] == 0 and failed["level"] == "WARNING"
        assert sum(1 for r in ended().values() if r["room"] == str(room)) == 1
        every = [line for line in lines(node) if line.strip()]
        assert every and all(line.startswith("{") for line in every), "every process logs JSON"
        roles = {json.loads(line).get("role") for line in every}
        assert {"serve", "ingress", "janitor", "worker 0"} <= roles
    finally:
        node.stop()


def test_text_logs_name_the_role_and_node_and_end_each_room_in_one_line(redis_url, tmp_path_factory):
    node = start_node(redis_url, tmp_path_factory, workers=1)
    try:
        with clients(node) as (sender, rx):
            room, _ = start_room(sender, rx, 300, [0, 1, 2], 300)
            assert rx.wait(room, 10) == Status.Success
        assert wait_for(lambda: any(f"room {room} ended: Success, 1 rounds" in line for line in lines(node)), 10)
        line = next(line for line in lines(node) if f"room {room} ended" in line)
        assert "janitor[" in line and f" {node.settings.node} INFO " in line
    finally:
        node.stop()
