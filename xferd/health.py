"""Whether a node can serve: its ingress is up, a worker is ready, Redis answers.

Asked by the bootstrap server's ``/health``, which the reference language side polls every
few seconds with a 3 s read timeout (two misses fail every room it tracks): a check answers
within about a second and is cached briefly, so a burst of pollers costs one Redis PING.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from .connections import DEFAULT_REDIS_URL, redact
from .topology import make_client

PING_TIMEOUT_S = 1.0


class Health:
    def __init__(self, redis_url: str | None, processes: Callable[[], dict[str, bool]],
                 cache_s: float = 1.0):
        """``processes``: each child's name -> whether it is alive and ready (``serve``'s view)."""
        self.url = redis_url or DEFAULT_REDIS_URL
        self.processes = processes
        self.cache_s = cache_s
        # one try: a Redis that does not answer within a second is the answer (any URL form:
        # one Redis, a cluster, a Sentinel master)
        self._client = make_client(self.url, redis.Redis, RedisCluster, socket_timeout=PING_TIMEOUT_S,
                                   socket_connect_timeout=PING_TIMEOUT_S, retry=Retry(NoBackoff(), 0))
        self._lock = threading.Lock()
        self._cached: tuple[float, bool, str] | None = None

    def check(self) -> tuple[bool, str]:
        """(serving, why not) — "OK" when serving."""
        with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < self.cache_s:
                return self._cached[1], self._cached[2]
            problems = self._problems()
            result = (not problems, "; ".join(problems) or "OK")
            self._cached = (time.monotonic(), *result)
            return result

    def _problems(self) -> list[str]:
        problems = []
        ready = self.processes()
        if not ready.get("ingress"):
            problems.append("the ingress is not running")
        workers = [name for name in ready if name.startswith("worker")]
        if not any(ready[name] for name in workers):
            problems.append(f"none of {len(workers)} workers is ready")
        try:
            self._client.ping()
        except redis.RedisError as error:
            problems.append(f"Redis at {redact(self.url)} does not answer ({type(error).__name__})")
        return problems

    def close(self) -> None:
        self._client.close()
