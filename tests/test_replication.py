"""Every transition waits for min_replicas (WAIT on its own connection, sent again after a
lost connection); what no replica confirms is not acted on, and its room fails with the reason. Failover chaos on a local Redis Cluster and on
Sentinel (``scripts/chaos.py --cluster`` / ``--sentinel`` are the long versions)."""
from __future__ import annotations

import random
import time

import pytest
import redis

from conftest import clients, make_settings, start_node, wait_for
from test_chaos import chaos_run
from xferd_lab.chaos import Chaos
from xferd.state.connections import connect
from xferd.state.replication import NotReplicated, run_replicated
from xferd.client.sender import Sender
from xferd.protocol.status import Status
from xferd.state.store import Store
from xferd_lab.synthetic import room_data


def on(connection: int) -> dict:
    """CLIENT INFO of one connection."""
    return {"id": connection, "addr": f"127.0.0.1:{40000 + connection}", "laddr": "127.0.0.1:6379"}


class Primary:
    """A primary whose pipelines answer from a script: each item is a list of replies (the
    last two CLIENT INFO's and WAIT's) or an exception to raise; the last answer repeats."""

    def __init__(self, answers):
        self.answers, self.sent = list(answers), []

    def pipeline(self, transaction=False):
        primary = self

        class Pipe:
            def __init__(self):
                self.commands = []

            def execute_command(self, *args):
                self.commands.append(args)

            def __len__(self):
                return len(self.commands)

            def execute(self):
                primary.sent.append(self.commands)
                answer = primary.answers.pop(0) if len(primary.answers) > 1 else primary.answers[0]
                if isinstance(answer, Exception):
                    raise answer
                return answer
        return Pipe()


def stage(pipe):
    pipe.execute_command("EVALSHA", "x")


def test_the_first_reply_is_kept_while_wait_catches_up_and_every_resend_is_counted():
    primary = Primary([["first", on(1), 0], ["again", 7, on(1), 0], ["again", 8, on(1), 1]])
    count = lambda pipe: pipe.execute_command("HINCRBY", "stats", "replica_waits", 1)  # noqa: E731
    assert run_replicated(lambda: primary, stage, 1, 5.0, "t", count_wait=count) == "first"
    assert [c[-1][:2] for c in primary.sent] == [("WAIT", 1)] * 3, "each send ends with WAIT"
    assert all(c[0] == ("EVALSHA", "x") for c in primary.sent), "the command goes again with it"
    assert [len(c) for c in primary.sent] == [3, 4, 4], "the count rides with each send again"
    assert primary.sent[0][-1][2] == 100 and primary.sent[1][-1][2] == 1000, "a short first WAIT"


def test_a_lost_connection_sends_the_command_again_to_the_primary_found_anew():
    primary, found = Primary([redis.ConnectionError("gone"), ["applied", on(1), 1]]), []
    assert run_replicated(lambda: primary, stage, 1, 5.0, "t", lost_primary=lambda: found.append(1)) == "applied"
    assert found == [1] and len(primary.sent) == 2


@pytest.mark.parametrize("between", [[redis.ConnectionError("primary killed")], []])
def test_after_a_reconnect_the_reply_of_the_connection_wait_confirms_on_is_returned(between):
    """The old primary answered (blocks 7, 8) but no replica confirmed; the next send reached
    a promoted replica that never saw it (after an error, or by redis-py's own reconnect
    inside the call) and allocated blocks 3, 4 there: those are the room's."""
    primary = Primary([[["7", "8"], on(1), 0], *between, [["3", "4"], on(9), 0], [["3", "4"], on(9), 1]])
    assert run_replicated(lambda: primary, stage, 1, 5.0, "t") == ["3", "4"]


def test_a_script_error_is_not_retried():
    primary = Primary([redis.ResponseError("commit would move dst0.sent_tokens")])
    with pytest.raises(redis.ResponseError, match="commit would move"):
        run_replicated(lambda: primary, stage, 1, 5.0, "t")


def test_no_replica_in_time_is_not_replicated_with_the_reply():
    primary = Primary([["applied", on(1), 0]])
    with pytest.raises(NotReplicated, match="t reached 0 of 1 replica") as caught:
        run_replicated(lambda: primary, stage, 1, 0.05, "t")
    assert caught.value.reply == "applied"


def test_a_transition_no_replica_confirms_raises_and_is_on_the_primary_only(redis_url):
    store = Store(connect(redis_url), make_settings(redis_url=redis_url, min_replicas=1, replica_timeout=0.5))
    store.client.hset(store.keys.record, mapping=store.settings.policy())  # as serve writes it
    started = time.monotonic()
    with pytest.raises(NotReplicated, match="fail_room of room 7 reached 0 of 1 replica"):
        store.fail_room(7, "test")
    assert 0.5 <= time.monotonic() - started < 3
    assert store.status(7) == Status.Failed
    store.client.delete(*store.node_keys())


def test_a_transition_a_replica_confirms_costs_one_round_trip(redis_sentinel):
    store = Store(connect(redis_sentinel.url), make_settings(redis_url=redis_sentinel.url, min_replicas=1))
    store.client.hset(store.keys.record, mapping=store.settings.policy())  # as serve writes it
    store.load_scripts()  # as every process does at start: no NOSCRIPT miss below
    before = store.client.round_trips
    assert store.fail_room(7, "test").status == Status.Failed
    trips = store.client.round_trips - before
    sent_again = store.stats().get("replica_waits", 0)  # a replica slower than 100 ms (a busy machine)
    assert trips == 1 + sent_again and sent_again <= 1
    replica = redis.Redis(port=next(p for p in redis_sentinel.data_ports if p != redis_sentinel.primary_port()))
    assert replica.hget(store.keys.room(7), "status") == b"0", "the replica has it"
    store.client.delete(*store.node_keys())


@pytest.mark.integration
def test_without_replicas_nothing_is_acted_on_and_rooms_fail_with_the_reason(redis_url, tmp_path_factory):
    """A node asking for a replica its Redis does not have: an encoder is refused blocks; a
    room whose source came from an encoder that does not wait fails at its take, with
    nothing written and no status pushed (Redis has the reason)."""
    node = start_node(redis_url, tmp_path_factory, min_replicas=1, replica_timeout=0.5)
    try:
        with clients(node, fallback_after=30) as (_, rx):
            room = random.getrandbits(62)
            with pytest.raises(NotReplicated, match="pool_alloc of room .* reached 0 of 1 replica"):
                Sender(node.settings, node.store, redis_patience=1.0).allocate(room, 2000)
            hasty = node.settings.replace(min_replicas=0)
            data = room_data(room, 2000, node.settings.buffer_layout)
            for buffer in rx.pool.buffers:
                buffer.fill_(0xA5)
            Sender(hasty, Store(connect(redis_url), hasty)).send(room, 2000, data)
            rx.init(room, list(range(8)), 1024)
            assert wait_for(lambda: node.store.status(room) == Status.Failed, timeout=15)
            assert "the take of round 1 was not confirmed: begin_round of room" in node.store.failure(room)
            assert all(bool((buffer == 0xA5).all()) for buffer in rx.pool.buffers), "nothing written"
            assert rx.history.get(room, []) == [], "no status pushed"
            assert wait_for(lambda: node.store.free_blocks() == node.settings.pool_blocks)
            assert int(node.store.stats()["not_replicated"]) >= 3  # allocation, init, take, its Failed
    finally:
        node.stop()


@pytest.mark.integration
@pytest.mark.parametrize("failover,requests", [("cluster", 40), ("sentinel", 30)])
def test_the_nodes_primary_killed_mid_run_loses_and_rolls_back_nothing(tmp_path, failover, requests):
    report = chaos_run(tmp_path, requests, Chaos(kill_every=(0.5, 1.0), failover=failover, failover_at=(0.4,)))
    (event,) = report["failovers"]
    assert event["promoted_s"] > 0 and event["stalled_s"] >= event["promoted_s"]
    assert report["statuses_rolled_back"] == 0 and report["not_replicated"] == 0
