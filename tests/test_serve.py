"""`xferd serve`: it tells the operator when Redis would lose or roll back state; its
children never outlive it."""
from __future__ import annotations

import os
import signal

import pytest
import redis

from conftest import start_node, wait_for
from xferd_lab.chaos import children_of, running
from xferd_lab.embedded import EmbeddedRedis
from xferd.state.topology import redis_warnings


def test_no_warning_for_aof_with_fsync_always():
    with EmbeddedRedis(aof=True) as server:
        assert redis_warnings(redis.Redis.from_url(server.url)) == []


def test_warnings_for_no_aof_everysec_eviction_and_missing_replicas():
    with EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url)
        assert "without AOF" in " ".join(redis_warnings(client))
        client.config_set("appendonly", "yes")
        client.config_set("appendfsync", "everysec")
        assert "appendfsync everysec" in " ".join(redis_warnings(client))
        client.config_set("appendfsync", "always")
        client.config_set("maxmemory-policy", "allkeys-lru")
        assert ["Redis maxmemory-policy is allkeys-lru: eviction can drop a room mid-transfer; use noeviction"] \
            == redis_warnings(client)
        client.config_set("maxmemory-policy", "noeviction")
        (warning,) = redis_warnings(client, min_replicas=1)
        assert "min_replicas is 1 but the node's primary has 0 replica(s)" in warning


def test_a_replicated_primary_without_min_replicas_is_named(redis_sentinel):
    primary = redis.Redis(port=redis_sentinel.primary_port())
    (warning,) = redis_warnings(primary)
    assert "has 1 replica(s) but min_replicas is 0" in warning
    assert redis_warnings(primary, min_replicas=1) == []


@pytest.mark.integration
def test_no_child_outlives_a_killed_serve(redis_url, tmp_path_factory):
    """kill -9 of `serve` itself: its ingress, workers and janitor stop too, so a restarted
    `serve` does not find an orphaned ingress on its port."""
    node = start_node(redis_url, tmp_path_factory)
    children: list[int] = []
    try:
        children = children_of(node.process.pid)
        assert len(children) >= 2 + node.settings.workers  # ingress, janitor, workers
        node.process.send_signal(signal.SIGKILL)
        node.process.wait()
        assert wait_for(lambda: not any(running(pid) for pid in children), timeout=15)
    finally:
        for pid in children:  # orphans, if the test failed
            if running(pid):
                os.kill(pid, signal.SIGKILL)
        node.stop()
