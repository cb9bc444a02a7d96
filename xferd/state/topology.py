"""Which Redis a URL names, and a client for it: one Redis, a Redis Cluster or a
Sentinel-managed master.

  redis://[user:pass@]host:port[/db]        one Redis, or any node of a cluster (detected)
  rediss://...                              the same over TLS
  unix://[user:pass@]/path/redis.sock[?db=N]
  redis://host:port,host:port,...           a cluster, listing several seed nodes
  redis+sentinel://[user:pass@]host:port[,host:port...]/service_name[/db]
  rediss+sentinel://...                     the master over TLS (sentinels too)

User and password in the URL are the data nodes'; sentinels that want their own give
``?sentinel_password=...``. Every form reaches the node's keys through one primary: the
one holding the node's hash-tag slot (cluster), the current master (Sentinel), the server.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import parse_url
from redis.sentinel import Sentinel

from xferd.state.records import _text

log = logging.getLogger("xferd")
SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel")
URL_FORMS = ("redis://[user:pass@]host:port[/db] (one Redis, or any node of a cluster: detected); "
             "redis://host:port,host:port (cluster seeds); rediss:// (TLS); unix:///path.sock; "
             "redis+sentinel://host:port[,host:port]/service_name (rediss+sentinel:// for TLS)")


class BadRedisURL(ValueError):
    """The URL names no Redis xferd can use; the message is one line for the operator."""


@dataclass(frozen=True)
class Topology:
    kind: str  # "single", "cluster" (known from several seeds) or "sentinel"
    url: str  # for "single": the URL itself; else one host's URL, to read options from
    hosts: tuple[tuple[str, int], ...] = ()
    service: str = ""
    sentinel_options: dict = field(default_factory=dict)


def redact(url: str) -> str:
    """The URL with any password (user-info or ``?password=``) replaced, fit for logs."""
    url = re.sub(r"([?&]password=)[^&#]*", r"\1***", url, flags=re.IGNORECASE)
    parts = urlsplit(url)
    if parts.password is None and "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}" if user else f"***@{host}"))


def _host_port(text: str) -> tuple[str, int]:
    """'host', 'host:port' or '[v6 address]:port'."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, ""
    try:
        return host, int(port) if port else 6379
    except ValueError:
        raise BadRedisURL(f"bad port in Redis host {text!r}") from None


def parse(url: str) -> Topology:
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in SCHEMES:
        raise BadRedisURL(f"unsupported Redis URL {redact(url)!r}; use {URL_FORMS}")
    if scheme == "unix":
        return Topology("single", url)
    parts = urlsplit(url)
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    hosts = tuple(_host_port(h) for h in hostlist.split(",") if h.strip())
    if not hosts:
        raise BadRedisURL("the Redis URL names no host")
    base = scheme.split("+")[0]

    def one_host(path: str, query: str) -> str:
        first = f"[{hosts[0][0]}]" if ":" in hosts[0][0] else hosts[0][0]
        netloc = f"{userinfo}@{first}:{hosts[0][1]}" if userinfo else f"{first}:{hosts[0][1]}"
        return urlunsplit((base, netloc, path, query, ""))

    if scheme.endswith("+sentinel"):
        query = dict(parse_qsl(parts.query))
        sentinel_password = query.pop("sentinel_password", None)
        service, _, db = parts.path.strip("/").partition("/")
        if not service:
            raise BadRedisURL("a redis+sentinel:// URL needs the master's service name: "
                              "redis+sentinel://host:port[,host:port]/service_name")
        options = {"password": sentinel_password} if sentinel_password else {}
        return Topology("sentinel", one_host(f"/{db}" if db else "", urlencode(query)), hosts, service, options)
    if len(hosts) > 1:
        return Topology("cluster", one_host(parts.path, parts.query), hosts)
    return Topology("single", url, hosts)


def _is_cluster(url: str, patience_s: float = 10.0) -> bool:
    """Whether the one node the URL names runs in cluster mode (INFO cluster). A node that
    does not answer is asked again for ``patience_s`` (a process restarted during a Redis
    restart), then taken for one Redis, with a warning; with no patience its error is raised."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            probe = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
            try:
                return bool(int(probe.info("cluster").get("cluster_enabled", 0)))
            finally:
                probe.close()
        except (redis.ResponseError, redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError):
            # no INFO sections (fakeredis); refused credentials: the next command says so
            return False
        except (redis.ConnectionError, redis.TimeoutError) as error:
            if patience_s <= 0:
                raise
            if time.monotonic() >= deadline:
                log.warning("could not tell whether %s is a cluster node (%s); treating it as one Redis "
                            "(list several cluster nodes in the URL to say it is a cluster)",
                            redact(url), type(error).__name__)
                return False
            time.sleep(0.2)


def make_client(url: str, single_class: type[redis.Redis], cluster_class: type[RedisCluster],
                probe_patience_s: float = 10.0, **options) -> redis.Redis | RedisCluster:
    """A client of the right kind for ``url``; ``options`` are connection settings (timeouts,
    retry) given to every connection, to sentinels and cluster nodes too.
    ``probe_patience_s``: how long a one-host URL is asked whether it is a cluster node."""
    topology = parse(url)
    if topology.kind == "sentinel":
        node_options = {k: v for k, v in parse_url(topology.url).items() if k not in ("host", "port")}
        sentinel_options = {**options, **topology.sentinel_options}
        if "connection_class" in node_options:  # TLS: the sentinels speak it too
            sentinel_options["connection_class"] = node_options["connection_class"]
        sentinel = Sentinel(list(topology.hosts), sentinel_kwargs=sentinel_options, **options, **node_options)
        client = sentinel.master_for(topology.service, redis_class=single_class)
        client.xferd_sentinel = sentinel
        return client
    if topology.kind == "cluster" or (not url.startswith("unix:") and _is_cluster(url, probe_patience_s)):
        node_options = {k: v for k, v in parse_url(topology.url).items() if k not in ("host", "port", "db")}
        if node_options.pop("connection_class", None) is not None:
            node_options["ssl"] = True
        seeds = [ClusterNode(h, p) for h, p in topology.hosts]
        client = cluster_class(startup_nodes=seeds, **options, **node_options)
        return client
    client = single_class.from_url(url, **options)
    return client


def is_cluster(client) -> bool:
    return isinstance(client, RedisCluster)


def primary(client, key: str) -> redis.Redis:
    """A plain client on the primary that holds ``key`` now: for commands that must run on
    that server and on one connection (WAIT after a write, TIME, SCAN of one node's keys)."""
    if is_cluster(client):
        return client.get_redis_connection(client.get_node_from_key(key))
    return client


def refresh(client) -> None:
    """After an error from a primary reached directly: learn the cluster's slots again."""
    if is_cluster(client):
        client.nodes_manager.initialize()


def where(client, key: str) -> str:
    """Which server holds ``key``, for operators: 'host:port (how it was found)'."""
    if is_cluster(client):
        node = client.get_node_from_key(key)
        return f"{node.host}:{node.port} (cluster primary of slot {client.keyslot(key)})"
    sentinel = getattr(client, "xferd_sentinel", None)
    if sentinel is not None:
        service = client.connection_pool.service_name
        host, port = sentinel.discover_master(service)
        return f"{host}:{port} (sentinel master {service!r})"
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', '127.0.0.1')}:{kwargs.get('port', 6379)} (single Redis)"


def redis_warnings(client, min_replicas: int = 0) -> list[str]:
    """Warnings for the operator when the Redis holding the node would lose or roll back
    state (docs/guarantees.md): AOF off or not fsynced always, eviction on, fewer replicas than
    ``min_replicas`` (or replicas that a status does not wait for)."""
    warnings = []
    try:
        config = {_text(k): _text(v) for k, v in client.config_get("*").items()
                  if _text(k) in ("appendonly", "appendfsync", "maxmemory-policy")}
    except redis.ResponseError:
        config = {}  # CONFIG disabled (managed Redis): cannot tell
    if config.get("appendonly") == "no":
        warnings.append("Redis runs without AOF (appendonly no): a Redis restart loses every room in flight")
    elif config.get("appendfsync", "always") != "always":
        warnings.append(f"Redis AOF uses appendfsync {config['appendfsync']}: a Redis crash can roll back "
                        "the last second, and a rolled-back round is written again into destination blocks "
                        "the language side may have reused; use appendfsync always")
    if config.get("maxmemory-policy", "noeviction") != "noeviction":
        warnings.append(f"Redis maxmemory-policy is {config['maxmemory-policy']}: eviction can drop a room "
                        "mid-transfer; use noeviction")
    try:
        replicas = int(client.info("replication").get("connected_slaves", 0))
    except redis.ResponseError:
        return warnings  # INFO disabled or not offered (fakeredis): cannot tell
    if replicas < min_replicas:
        warnings.append(f"min_replicas is {min_replicas} but the node's primary has {replicas} replica(s): "
                        "takes and statuses wait replica_timeout, then their rooms fail")
    elif replicas and not min_replicas:
        warnings.append(f"the node's primary has {replicas} replica(s) but min_replicas is 0: a failover can "
                        "roll back a status the language side acted on; set --min-replicas 1")
    return warnings
