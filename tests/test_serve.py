"""`xferd serve` start-up: it tells the operator when Redis would lose or roll back state."""
from __future__ import annotations

import redis

from xferd.embedded import EmbeddedRedis
from xferd.serve import check_durability


def test_no_warning_for_aof_with_fsync_always():
    with EmbeddedRedis(aof=True) as server:
        assert check_durability(redis.Redis.from_url(server.url)) is None


def test_warnings_for_no_aof_and_for_everysec():
    with EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url)
        assert "without AOF" in check_durability(client)
        client.config_set("appendonly", "yes")
        client.config_set("appendfsync", "everysec")
        assert "appendfsync everysec" in check_durability(client)
