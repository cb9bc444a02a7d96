"""Riding out Redis trouble: one retry policy for every process, applied inside ``Store``.

A process says once how patient it is (``Patience``: until it stops, or for so many
seconds); every ``Store`` method that talks to Redis (``door``) then retries transient
errors and refused writes with capped exponential backoff and jitter, logs one line when
an outage starts and one when it ends, and counts what it waited out (``trouble``).
"""
from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

import tenacity

from xferd.state.connections import PERMANENT, TRANSIENT, describe, refusal

T = TypeVar("T")
log = logging.getLogger("xferd")
# the longest wait between tries: a node serves again within about this long of Redis
# answering (or taking writes) again; a few processes asking once a second cost Redis nothing
MAX_BACKOFF_S = 1.0
_recovered_at = 0.0  # monotonic time this process last saw Redis come back after an outage
_failing_since: float | None = None  # monotonic time this process's calls began failing, while they do


def last_recovery() -> float:
    """When (time.monotonic) this process last saw Redis answer again after an outage."""
    return _recovered_at


def failing_for() -> float:
    """Seconds this process's Redis calls have been failing (unreachable or refusing
    writes) without one getting through; 0.0 while they get through."""
    return 0.0 if _failing_since is None else time.monotonic() - _failing_since




def _transient(error: BaseException) -> bool:
    return isinstance(error, TRANSIENT) and not isinstance(error, PERMANENT)


def _count_error(error: BaseException) -> None:
    global _failing_since
    if _failing_since is None:
        _failing_since = time.monotonic()
    _trouble["redis_errors"] += 1
    code = refusal(error)
    if code:
        _trouble[f"redis_refused:{code}"] = _trouble.get(f"redis_refused:{code}", 0) + 1


def wait_for_redis(probe: Callable[[], object], what: str, stop: Callable[[], bool]) -> bool:
    """Block until ``probe`` succeeds (True: ``Store.ping``, the node's primary answers;
    ``Store.check_writes``, it takes writes again), or the process is stopping (False)."""
    try:
        with_retry(probe, what, stop=stop)
        return True
    except TRANSIENT:
        return False


# this process's Redis trouble since it was last added to the node's stats (``trouble``)
_trouble: dict[str, float] = {"redis_errors": 0, "redis_outage_seconds": 0.0}  # and redis_refused:<code>


@contextlib.contextmanager
def trouble():
    """This process's Redis errors retried and seconds spent waiting for Redis since last
    time, for the caller to add to the node's counters inside the block; kept for next time
    if the block fails on Redis."""
    taken = dict(_trouble)
    _trouble.clear()
    _trouble.update(redis_errors=0, redis_outage_seconds=0.0)
    try:
        yield taken
    except TRANSIENT:
        for name, amount in taken.items():
            _trouble[name] = _trouble.get(name, 0) + amount
        raise


def with_retry(action: Callable[[], T], what: str, stop: Callable[[], bool] = lambda: False,
               max_delay: float = MAX_BACKOFF_S, give_up_after: float | None = None, also: tuple = ()) -> T:
    """Run ``action`` until Redis answers: exponential backoff with jitter, one log line
    when an outage starts and one when it ends. Gives up (re-raising) when ``stop()`` says
    the process is stopping, or after ``give_up_after`` seconds if given. ``also``: more
    errors to wait out the same way (an idempotent action's NotReplicated)."""
    def retryable(error: BaseException) -> bool:
        return _transient(error) or isinstance(error, also)

    global _failing_since, _recovered_at
    try:  # the hot path: Redis answers; tenacity's machinery costs ~20 µs a call
        result = action()
        if _failing_since is not None:
            _failing_since = None
        return result
    except (*TRANSIENT, *also) as error:
        _count_error(error)
        if not retryable(error) or stop():
            raise
    outage = {"logged": False}
    started = time.monotonic()

    def stop_now(state: tenacity.RetryCallState) -> bool:
        if stop():
            return True
        return give_up_after is not None and (state.seconds_since_start or 0) >= give_up_after

    def before_sleep(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception()
        _count_error(error)  # each of tenacity's attempts is a call of its own
        if not outage["logged"]:
            log.warning("redis %s; retrying", describe(error, what))
            outage["logged"] = True

    def sleep(seconds: float) -> None:  # in slices: a stop (SIGTERM) mid-outage is seen at once
        deadline = time.monotonic() + seconds
        while not stop() and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.1))

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(retryable),
        wait=tenacity.wait_exponential(multiplier=0.05, max=max_delay) + tenacity.wait_random(0, 0.05),
        stop=stop_now, before_sleep=before_sleep, sleep=sleep, reraise=True)
    try:
        result = retrying(action)
    finally:
        _trouble["redis_outage_seconds"] += time.monotonic() - started
    _failing_since = None
    if outage["logged"]:
        _recovered_at = time.monotonic()
        log.warning("redis is back (%s)", what)
    return result


def _never() -> bool:
    return False


@dataclass(frozen=True)
class Patience:
    """How long a process waits for Redis: until ``stop()`` says it is stopping, or
    ``give_up_after`` seconds (None: no limit). ``also``: more errors to wait out the same
    way (NotReplicated, for a process whose every call is idempotent)."""

    stop: Callable[[], bool] = _never
    give_up_after: float | None = None
    also: tuple = ()


_inside = threading.local()  # a door already retrying on this thread: the calls it makes do not retry again


def door(what: str):
    """A ``Store`` method that talks to Redis: run under the Store's ``patience`` (no
    retries when it has none)."""
    def wrap(method):
        @functools.wraps(method)
        def call(self, *args, **kwargs):
            patience = self.patience
            if patience is None or getattr(_inside, "active", False):
                return method(self, *args, **kwargs)
            _inside.active = True
            try:
                return with_retry(lambda: method(self, *args, **kwargs), what, stop=patience.stop,
                                  give_up_after=patience.give_up_after, also=patience.also)
            finally:
                _inside.active = False
        return call
    return wrap
