"""DirectCalls, the hot path's way to Redis (real Redis): a connection per thread, a script
loaded again after Redis lost it, a dropped connection replaced on the next call, and a
thread's connection given back when the thread ends. And what is waited out: a Redis that
refuses writes, by its reason, counted and logged."""
from __future__ import annotations

import gc
import threading

import pytest
import redis

from xferd.state import connections, retry
from xferd.state.connections import DirectCalls, connect


@pytest.fixture
def client(redis_url):
    return connect(redis_url)


def test_a_script_runs_and_is_loaded_again_after_redis_lost_it(client):
    calls = []
    direct = DirectCalls(lambda: client, lambda: calls.append(1))
    script = client.register_script("return {KEYS[1], ARGV[1]}")
    client.script_flush()
    assert direct.script(script, ["xferd-test:k"], ["v"]) == [b"xferd-test:k", b"v"]
    assert len(calls) == 3, "the failed EVALSHA, SCRIPT LOAD and EVALSHA are counted"
    assert direct.script(script, ["xferd-test:k"], ["w"]) == [b"xferd-test:k", b"w"] and len(calls) == 4
    with pytest.raises(redis.ResponseError, match="boom"):
        direct.script(client.register_script("return redis.error_reply('boom')"), [], [])


def test_each_thread_has_its_own_connection_and_a_dropped_one_is_replaced(client):
    direct = DirectCalls(lambda: client)
    mine = direct.call("CLIENT", "ID")
    seen = []
    thread = threading.Thread(target=lambda: seen.append(direct.call("CLIENT", "ID")))
    thread.start()
    thread.join()
    assert seen and seen[0] != mine and direct.call("CLIENT", "ID") == mine
    client.client_kill_filter(_id=mine)
    with pytest.raises(redis.ConnectionError):
        direct.call("PING")
    assert direct.call("PING") in (b"PONG", "PONG", True) and direct.call("CLIENT", "ID") != mine


def test_a_thread_that_ends_gives_its_connection_back(client):
    direct = DirectCalls(lambda: client)
    pool = client.connection_pool
    before = len(pool._in_use_connections)
    threads = [threading.Thread(target=lambda: direct.call("PING")) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    del thread, threads
    gc.collect()
    assert len(pool._in_use_connections) == before


@pytest.mark.parametrize("reply,code", [
    ("OOM command not allowed when used memory > 'maxmemory'.", "OOM"),
    ("READONLY You can't write against a read only replica.", "READONLY"),
    ("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.", "MASTERDOWN"),
    ("BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.", "BUSY"),
    ("MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.",
     "MISCONF"),
    ("NOREPLICAS Not enough good replicas to write.", "NOREPLICAS"),
])
def test_a_redis_refusing_writes_is_waited_out_and_counted(reply, code, caplog):
    from redis._parsers.base import BaseParser
    refused = BaseParser.parse_error(reply)
    assert connections.refusal(refused) == code and isinstance(refused, connections.TRANSIENT)
    answers = iter([refused, refused, "done"])

    def call():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    with retry.trouble():  # start from nothing counted
        pass
    with caplog.at_level("WARNING", logger="xferd"):
        assert retry.with_retry(call, "a test write", max_delay=0.01) == "done"
    assert f"redis refuses writes during a test write ({code}: " in caplog.text
    with retry.trouble() as counted:
        assert counted[f"redis_refused:{code}"] == 2 and counted["redis_errors"] == 2
    assert retry.failing_for() == 0.0, "it got through"


def test_other_errors_are_not_refusals():
    from redis._parsers.base import BaseParser
    for reply in ("BUSYGROUP Consumer Group name already exists", "ERR unknown command", "WRONGTYPE Operation"):
        error = BaseParser.parse_error(reply)
        assert connections.refusal(error) is None and not isinstance(error, connections.TRANSIENT)


def test_how_long_calls_have_been_failing():
    def down():
        raise redis.ConnectionError("refused")

    with pytest.raises(redis.ConnectionError):
        retry.with_retry(down, "a test call", give_up_after=0.2, max_delay=0.05)
    assert retry.failing_for() >= 0.2, "failing since the first error, until one gets through"
    retry.with_retry(lambda: 1, "a test call")
    assert retry.failing_for() == 0.0
