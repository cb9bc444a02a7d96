"""Redis connections: one client per process, what its errors mean (transient, refused,
permanent), and secrets kept out of logs. Retrying is ``retry.py``'s."""
from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Callable

import redis
from redis import exceptions
from redis.cluster import RedisCluster
from redis._parsers.base import BaseParser
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from xferd.settings import ConfigError
from xferd.state.topology import make_client, redact  # noqa: F401 - redact: callers import it from here

try:  # a declared dependency (redis[hiredis]); redis-py's own packing is the fallback
    from hiredis import pack_command
except ImportError:  # pragma: no cover
    pack_command = None

log = logging.getLogger("xferd")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class RefusedWrite(exceptions.ResponseError):
    """Redis answered but will not take writes for now: a script running too long (BUSY), a
    failed snapshot with stop-writes-on-bgsave-error (MISCONF), too few replicas
    (NOREPLICAS)."""


for _code in ("BUSY", "MISCONF", "NOREPLICAS"):  # redis-py raises plain ResponseError for these
    BaseParser.EXCEPTION_CLASSES.setdefault(_code, RefusedWrite)
# Redis refusing writes: each passes once memory is freed, a replica is promoted, a script or
# a snapshot ends; until then a transition waits, like an outage, and is counted and logged
REFUSALS = (exceptions.OutOfMemoryError, exceptions.ReadOnlyError, exceptions.MasterDownError, RefusedWrite)
# what a failover looks like from a client: the server gone, a cluster without its primary
# yet (CLUSTERDOWN, MASTERDOWN, TRYAGAIN, redirects exhausted), a demoted master (READONLY);
# and the refusals above
TRANSIENT = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, ConnectionError, OSError,
             exceptions.ClusterError, exceptions.TryAgainError, exceptions.SlotNotCoveredError,
             exceptions.AskError, *REFUSALS)  # AskError: MOVED too, a slot migrating
# a refused password is a ConnectionError to redis-py, but no wait will fix it
PERMANENT = (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError)
def refusal(error: BaseException) -> str | None:
    """The code of a write Redis refused (OOM, READONLY, MASTERDOWN, BUSY, MISCONF,
    NOREPLICAS), or None for any other error."""
    if not isinstance(error, REFUSALS):
        return None
    code = getattr(error, "status_code", None)
    return code or {exceptions.OutOfMemoryError: "OOM", exceptions.ReadOnlyError: "READONLY",
                    exceptions.MasterDownError: "MASTERDOWN"}.get(type(error), "REFUSED")


def describe(error: BaseException, during: str = "") -> str:
    """What a failed Redis call says of Redis, for a log line: "refuses writes [during X]
    (OOM: ...)" or "unavailable [during X] (ConnectionError)"."""
    code, where = refusal(error), f" during {during}" if during else ""
    return f"refuses writes{where} ({code}: {error})" if code else f"unavailable{where} ({type(error).__name__})"


class _CountsRoundTrips:
    """Counts a client's round trips to Redis (a pipeline is one), for metrics."""

    round_trips = 0

    def execute_command(self, *args, **options):
        self.round_trips += 1
        return super().execute_command(*args, **options)

    def pipeline(self, *args, **kwargs):  # each client class keeps its own defaults
        pipe = super().pipeline(*args, **kwargs)
        execute = pipe.execute

        def counted(*args, **kwargs):
            self.round_trips += 1
            return execute(*args, **kwargs)

        pipe.execute = counted
        return pipe


class CountingRedis(_CountsRoundTrips, redis.Redis):
    pass


class CountingCluster(_CountsRoundTrips, RedisCluster):
    pass


class DirectCalls:
    """The hot path's commands sent on one connection per thread, held out of the client's
    pool: redis-py's per-call machinery (retry wrapper, pool checkout, callbacks) costs
    ~70 µs of CPU a call here, the send and read alone ~20 µs. ``client_of()`` gives the
    plain client of the node's primary (a cluster's can change after a failover: the
    connection follows its pool). Errors are redis-py's, and a connection error closes the
    connection (the next call opens one) and calls ``lost()`` (find the primary again):
    ``with_retry`` waits out outages as elsewhere."""

    def __init__(self, client_of: Callable[[], redis.Redis], count: Callable[[], None] = lambda: None,
                 lost: Callable[[], None] = lambda: None):
        self._client_of, self._count, self._lost = client_of, count, lost
        self._local = threading.local()

    def _connection(self):
        pool = self._client_of().connection_pool
        held = getattr(self._local, "held", None)
        if held is None or held[0] is not pool:
            if held is not None:
                held[0].release(held[1])
            held = (pool, pool.get_connection())
            self._local.held = held
            self._local.ahead = False
            # a thread that ends gives its connection back (the bench's driver threads come and go)
            weakref.finalize(threading.current_thread(), pool.release, held[1])
        return held[1]

    def _send(self, *commands: tuple):
        """Send ``commands`` in one write on this thread's connection (one whose reply to a
        command sent ahead was never read is dropped first); returns the connection."""
        connection = self._connection()
        if self.has_ahead():
            self._drop(connection)
        self._count()
        try:
            connection.send_packed_command(_packed(connection, commands))
        except TRANSIENT:
            self._lost()
            raise
        return connection

    def _read(self, connection):
        try:
            return connection.read_response()
        except TRANSIENT:
            self._lost()
            raise

    def _drop(self, connection) -> None:
        self._local.ahead = False
        connection.disconnect()

    def call(self, *args):
        return self._read(self._send(args))

    def script(self, script, keys: list, args: list, ahead: tuple = ()):
        """EVALSHA, loading the script on a NOSCRIPT (a restarted or promoted server).
        ``ahead``: a command sent in the same write, whose reply ``read_ahead`` reads later
        (a blocking read queued behind a commit costs no round trip of its own); dropped
        with the connection if the script's reply is not a plain answer."""
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        if ahead:
            connection = self._send(command, ahead)
            self._local.ahead = True
            try:
                return self._read(connection)
            except exceptions.NoScriptError:
                self._drop(connection)  # and run it again below, without the read
            except BaseException:
                self._drop(connection)
                raise
        try:
            return self.call(*command)
        except exceptions.NoScriptError:
            self.call("SCRIPT", "LOAD", script.script)
            return self.call(*command)

    def batch(self, *commands: tuple) -> list:
        """``commands`` in one write, every reply read now: a command's error reply comes back
        as its exception (redis-py's), the others' replies stand; a connection error raises."""
        connection = self._send(*commands)
        replies = []
        for _ in commands:
            try:
                replies.append(self._read(connection))
            except exceptions.ResponseError as error:
                replies.append(error)
        return replies

    def has_ahead(self) -> bool:
        """Whether this thread has a reply sent ahead (``script(ahead=...)``) still to read."""
        return getattr(self._local, "ahead", False)

    def read_ahead(self):
        """The reply of the command sent ahead; an error drops the connection (redis-py)."""
        self._local.ahead = False
        return self._read(self._connection())


def _packed(connection, commands: tuple[tuple, ...]):
    """``commands`` as the bytes to send: hiredis packs a command in 2 µs, redis-py's
    encoder in 18 (it checks and encodes each argument in Python)."""
    if pack_command is None:
        return connection.pack_commands(commands)
    return [b"".join(pack_command(command) for command in commands)]


def connect(url: str | None, probe_patience_s: float = 10.0) -> redis.Redis:
    """A client for any URL form of ``topology`` (one Redis, a cluster, a Sentinel master);
    short in-call retries for a dropped connection, ``with_retry`` for outages.
    ``probe_patience_s``: how long a one-host URL is asked whether it is a cluster node
    (0: its error is raised)."""
    return make_client(
        url or DEFAULT_REDIS_URL, CountingRedis, CountingCluster, probe_patience_s,
        socket_timeout=10,  # a frozen Redis surfaces as an error, not a hang
        socket_connect_timeout=5,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=3),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )


def connect_at_start(url: str | None, timeout_s: float) -> redis.Redis:
    """A client (``connect``) whose Redis answered a PING within ``timeout_s``; else
    RedisUnreachable naming the server and the last error, in one line."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client = connect(url, probe_patience_s=0)
            client.ping()
            return client
        except PERMANENT:
            raise
        except TRANSIENT as error:
            if time.monotonic() >= deadline:
                raise RedisUnreachable(f"Redis at {redact(url or DEFAULT_REDIS_URL)} did not answer within "
                                       f"{timeout_s:g}s ({type(error).__name__}: {error})") from None
            time.sleep(0.5)


class RedisUnreachable(ConfigError):
    """Redis did not answer at start (``connect_at_start``): one line, and `serve` exits."""


def connect_once(url: str | None, timeout_s: float, probe_patience_s: float = 10.0) -> redis.Redis:
    """A client that tries each call once: a Redis that does not answer within ``timeout_s``
    is the answer (health checks, the looking commands); any URL form."""
    return make_client(url or DEFAULT_REDIS_URL, redis.Redis, RedisCluster, probe_patience_s=probe_patience_s,
                       socket_timeout=timeout_s, socket_connect_timeout=min(timeout_s, 3.0),
                       retry=Retry(NoBackoff(), 0))
