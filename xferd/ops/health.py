"""Whether a node can serve: its ingress is up, a worker is ready, Redis answers.

``check`` is asked by the bootstrap server's ``/health``, which the reference language side
polls every few seconds with a 3 s read timeout (two misses fail every room it tracks): a
check answers within about a second and is cached briefly, so a burst of pollers costs one
Redis PING. ``alive`` and ``ready`` answer the operator's ``/healthz`` and ``/readyz``
(``monitor.py``): every process runs; every part is ready and the source pool is there.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Callable

import redis
from xferd.state.connections import DEFAULT_REDIS_URL, connect_once, redact

PING_TIMEOUT_S = 1.0


class Health:
    def __init__(self, redis_url: str | None, processes: Callable[[], dict[str, bool]],
                 cache_s: float = 1.0, running: Callable[[], dict[str, bool]] | None = None,
                 pool_path: str = "", draining: Callable[[], bool] = lambda: False):
        """``processes``: each child's name -> whether it is alive and ready (``serve``'s view);
        ``running``: whether it is alive at all; ``pool_path``: the source pool's file;
        ``draining``: whether serve is stopping (not ready for new work; rounds in flight
        finish, so the bootstrap's /health stays as it is)."""
        self.url = redis_url or DEFAULT_REDIS_URL
        self.processes = processes
        self.running = running or processes
        self.pool_path = pool_path
        self.draining = draining
        self.cache_s = cache_s
        # one try: a Redis that does not answer within a second is the answer (any URL form:
        # one Redis, a cluster, a Sentinel master)
        self._client = connect_once(self.url, timeout_s=PING_TIMEOUT_S)
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
        return problems + self._redis_problem()

    def _redis_problem(self) -> list[str]:
        try:
            self._client.ping()
            return []
        except redis.RedisError as error:
            return [f"Redis at {redact(self.url)} does not answer ({type(error).__name__})"]

    def alive(self) -> tuple[bool, str]:
        """Every child process runs (``/healthz``: restart the node when not)."""
        down = sorted(name for name, up in self.running().items() if not up)
        return (False, "not running: " + ", ".join(down)) if down else (True, "OK")

    def ready(self) -> tuple[bool, str]:
        """The ingress is bound, every worker is ready, Redis answers and the source pool is
        there (``/readyz``: send work here only when it is)."""
        ready = self.processes()
        problems = ["draining: serve is stopping"] if self.draining() else []
        problems += [f"{name} is not ready" for name, up in sorted(ready.items()) if not up]
        if self.pool_path and not os.path.exists(self.pool_path):
            problems.append(f"the source pool {self.pool_path} is missing")
        problems += self._redis_problem()
        return (not problems, "; ".join(problems) or "OK")

    def close(self) -> None:
        self._client.close()
