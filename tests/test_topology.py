"""Which Redis a URL names (one, a cluster, a Sentinel master) and a client for each; the
node's primary found and named; secrets never in the messages."""
from __future__ import annotations

import pytest
import redis
from redis.cluster import RedisCluster

from xferd.state.connections import connect, redact
from xferd.settings import ConfigError, Settings
from xferd.state.topology import BadRedisURL, parse, primary, where


@pytest.mark.parametrize("url,kind,hosts,service", [
    ("redis://127.0.0.1:6379/0", "single", (("127.0.0.1", 6379),), ""),
    ("rediss://user:pw@cache.example:6380", "single", (("cache.example", 6380),), ""),
    ("unix:///run/redis.sock?db=2", "single", (), ""),
    ("redis://:pw@10.0.0.1:7000,10.0.0.2:7001,10.0.0.3", "cluster",
     (("10.0.0.1", 7000), ("10.0.0.2", 7001), ("10.0.0.3", 6379)), ""),
    ("redis+sentinel://s1:26379,s2:26379,[::1]:26380/mymaster", "sentinel",
     (("s1", 26379), ("s2", 26379), ("::1", 26380)), "mymaster"),
    ("rediss+sentinel://u:pw@s1:26379/mymaster/3?sentinel_password=sp", "sentinel", (("s1", 26379),), "mymaster"),
])
def test_url_forms(url, kind, hosts, service):
    topology = parse(url)
    assert (topology.kind, topology.hosts, topology.service) == (kind, hosts, service)


def test_a_sentinel_url_keeps_auth_db_and_tls_for_the_master_and_its_own_password():
    topology = parse("rediss+sentinel://u:pw@s1:26379,s2:26379/mymaster/3?sentinel_password=sp")
    assert topology.url.startswith("rediss://u:pw@s1:26379/3") and "sentinel_password" not in topology.url
    assert topology.sentinel_options == {"password": "sp"}


@pytest.mark.parametrize("url,needle", [
    ("http://127.0.0.1:6379", "unsupported Redis URL 'http://127.0.0.1:6379'"),
    ("redis+sentinel://127.0.0.1:26379", "needs the master's service name"),
    ("redis://127.0.0.1:63x9", "bad port"),
])
def test_bad_urls_get_one_line(url, needle):
    with pytest.raises(BadRedisURL, match=needle):
        parse(url)
    with pytest.raises(ConfigError, match="redis_url: "):
        Settings(redis_url=url)


def test_a_bad_url_never_shows_its_password():
    with pytest.raises(ConfigError) as caught:
        Settings(redis_url="redis://:hunter2@host:notaport")
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in redact("redis+sentinel://u:hunter2@s1:26379,s2:26379/m")
    with pytest.raises(ConfigError) as caught:
        Settings(redis_url="tcp://:hunter2@host:6379")
    assert "hunter2" not in str(caught.value)


def test_any_cluster_node_url_gives_a_cluster_client(redis_cluster):
    client = connect(redis_cluster.url)
    assert isinstance(client, RedisCluster)
    for i in range(20):  # keys of every slot route to their primary
        client.set(f"xtopo:{{n{i}}}:k", i)
        assert int(client.get(f"xtopo:{{n{i}}}:k")) == i
        client.delete(f"xtopo:{{n{i}}}:k")
    seeds = ",".join(f"127.0.0.1:{p}" for p in redis_cluster.ports[1:3])
    assert isinstance(connect(f"redis://{seeds}"), RedisCluster)
    key = "xtopo:{n1}:node"
    port = redis_cluster.primary_port(key)
    assert where(client, key).startswith(f"127.0.0.1:{port} (cluster primary of slot ")
    assert primary(client, key).connection_pool.connection_kwargs["port"] == port


def test_a_sentinel_url_reaches_the_master(redis_sentinel):
    client = connect(redis_sentinel.url)
    client.set("xtopo:k", 1)
    assert client.get("xtopo:k") == b"1"
    client.delete("xtopo:k")
    assert where(client, "xtopo:k") == f"127.0.0.1:{redis_sentinel.primary_port()} (sentinel master 'xferd')"


def test_a_single_redis_is_not_a_cluster(redis_url):
    client = connect(redis_url)
    assert not isinstance(client, RedisCluster) and isinstance(client, redis.Redis)
    assert where(client, "k").endswith("(single Redis)")


@pytest.mark.parametrize("setup", ["redis_cluster", "redis_sentinel"])
def test_the_bootstraps_health_check_reaches_every_form(request, setup):
    """`/health` (polled by the reference language side) pings Redis through the same URL
    forms as everything else."""
    from xferd.ops.health import Health

    health = Health(request.getfixturevalue(setup).url, lambda: {"ingress": True, "worker0": True})
    try:
        assert health.check() == (True, "OK")
    finally:
        health.close()
