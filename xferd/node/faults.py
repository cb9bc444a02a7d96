"""Deterministic fault injection for crash tests.

``XFERD_FAULT=<point>`` makes the first worker of the node that reaches ``point`` SIGKILL
itself there (a Redis SET NX marker makes it exactly one death per point, across worker
restarts). Points, in a round's order: ``after_begin`` (lease taken, nothing written),
``after_write`` (bytes landed, not committed), ``after_commit`` (committed and acknowledged
in one step, status not yet pushed).

``XFERD_FAULT=stall_write`` instead makes the first worker that wrote a destination's
share stall there for ``XFERD_FAULT_STALL`` seconds (default 3), alive: a write slower
than the lease, which the lease keep-alive must cover.
"""
from __future__ import annotations

import os
import signal
import time

POINTS = ("after_begin", "after_write", "after_commit", "stall_write")


def reached(store, point: str) -> bool:
    """Whether a worker of this node has reached (and acted on) fault ``point``."""
    return store.has_marker(point)


FAULT = os.environ.get("XFERD_FAULT")  # read once: the hot path passes here three times a round


def _first(point: str, store) -> bool:
    """True for the one worker (of the node, ever) that reaches ``point`` first."""
    return FAULT == point and store.set_marker_once(point)


def maybe_die(point: str, store) -> None:
    if _first(point, store):
        os.kill(os.getpid(), signal.SIGKILL)


def maybe_stall(store) -> None:
    if _first("stall_write", store):
        time.sleep(float(os.environ.get("XFERD_FAULT_STALL", "3")))
