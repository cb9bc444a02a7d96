"""Deterministic fault injection for crash tests.

``XFERD_FAULT=<point>`` makes the first worker of the node that reaches ``point`` SIGKILL
itself there (a Redis SET NX marker makes it exactly one death per point, across worker
restarts). Points, in a round's order: ``after_begin`` (lease taken, nothing written),
``after_write`` (bytes landed, not committed), ``after_commit`` (committed and acknowledged
in one step, status not yet pushed).
"""
from __future__ import annotations

import os
import signal

POINTS = ("after_begin", "after_write", "after_commit")


def maybe_die(point: str, store) -> None:
    if os.environ.get("XFERD_FAULT") != point:
        return
    if store.client.set(f"{store.keys.stats}:fault:{point}", os.getpid(), nx=True):
        os.kill(os.getpid(), signal.SIGKILL)
