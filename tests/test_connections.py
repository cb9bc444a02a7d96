"""DirectCalls, the hot path's way to Redis (real Redis): a connection per thread, a script
loaded again after Redis lost it, a dropped connection replaced on the next call, and a
thread's connection given back when the thread ends."""
from __future__ import annotations

import gc
import threading

import pytest
import redis

from xferd.connections import DirectCalls, connect


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
