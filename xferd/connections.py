"""Redis connections: one client per process, retried with backoff, secrets kept out of logs."""
from __future__ import annotations

import logging
import time
from typing import Callable, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

log = logging.getLogger("xferd")
T = TypeVar("T")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
TRANSIENT = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, ConnectionError, OSError)


def redact(url: str) -> str:
    """The URL with any password replaced, fit for logs and `inspect` output."""
    parts = urlsplit(url)
    if parts.password is None and "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}" if user else f"***@{host}"))


def connect(url: str | None) -> redis.Redis:
    """A client for redis://, rediss:// (TLS) or unix:// URLs; retries transient errors."""
    client = redis.Redis.from_url(
        url or DEFAULT_REDIS_URL,
        socket_timeout=30,
        socket_connect_timeout=5,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=5),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )
    return client


def with_retry(action: Callable[[], T], what: str, stop: Callable[[], bool] = lambda: False,
               max_delay: float = 5.0) -> T:
    """Run ``action`` until Redis answers: back off exponentially, log once per outage."""
    delay = 0.05
    logged = False
    while True:
        try:
            result = action()
            if logged:
                log.warning("redis is back (%s)", what)
            return result
        except TRANSIENT as error:
            if stop():
                raise
            if not logged:
                log.warning("redis unavailable during %s (%s); retrying", what, type(error).__name__)
                logged = True
            time.sleep(delay)
            delay = min(delay * 2, max_delay)
