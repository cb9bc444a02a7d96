"""Operator actions on a node: `xferd drain` (stop its serve gracefully, watching the rounds
in flight finish) and `xferd cleanup` (remove the Redis state and the shared-memory pool of
a node that is down). Each says what it did in a few lines; a refusal is one line."""
from __future__ import annotations

import os
import signal
import time
from typing import Callable

from xferd.node.stopping import Identity
from xferd.ops.nodeview import read
from xferd.transfer.pool import SourcePool, remove_unless_mapped
from xferd.settings import ConfigError, Settings
from xferd.state.store import Store

HEARTBEAT_FRESH_S = 5.0


class Refused(ConfigError):
    """The action is not safe now; the message says why, in one line."""


def _serve_of(store: Store) -> Identity | None:
    name = store.record().get("serve")
    return Identity.parse(name) if name else None


def drain(store: Store, settings: Settings, say: Callable[[str], None] = print) -> float:
    """SIGTERM the node's serve (on this host) and wait until it has stopped; returns the
    seconds it took. Refused when no serve holds the node here."""
    node = settings.node
    serve = _serve_of(store)
    if serve is None:
        raise Refused(f"node {node!r} (prefix {settings.prefix!r}) has no serve holding it: nothing to drain")
    running = serve.running()
    if running is None:
        raise Refused(f"the serve of node {node!r} runs on host {serve.host}: run `xferd drain` there")
    if not running:
        raise Refused(f"the serve of node {node!r} (pid {serve.pid}) is gone; `xferd cleanup` removes its state")
    started = time.monotonic()
    os.kill(serve.pid, signal.SIGTERM)
    say(f"draining node {node!r}: SIGTERM to serve pid {serve.pid}; rounds in flight get up to "
        f"{settings.stop_timeout:g}s")
    deadline = started + settings.stop_timeout + 15
    next_report = 0.0
    while serve.running():
        now = time.monotonic()
        if now >= deadline:
            raise Refused(f"serve pid {serve.pid} of node {node!r} still runs {now - started:.0f}s after SIGTERM")
        if now >= next_report:
            view = read(store, with_rooms=False)
            say(f"  {now - started:4.1f}s: {view.pending} rounds being written, {view.queue_depth} queued")
            next_report = now + 1.0
        time.sleep(0.1)
    took = time.monotonic() - started
    say(f"node {node!r} drained: serve stopped after {took:.1f}s")
    return took


def cleanup(store: Store, settings: Settings, say: Callable[[str], None] = print) -> int:
    """Remove every key of a node that is down, and its pool file if nothing maps it;
    returns the keys removed. Refused while a serve or a worker of the node is alive."""
    node = settings.node
    serve = _serve_of(store)
    if serve is not None and serve.running() is not False:
        where = f"pid {serve.pid}" if serve.running() else f"host {serve.host}"
        raise Refused(f"node {node!r} is served by {where}; stop it first (`xferd drain`)")
    shm = store.record().get("shm") or SourcePool.path_of(settings.shm_name)
    view = read(store, with_rooms=False)
    live = [w.name for w in view.workers if w.heartbeat_age_s < HEARTBEAT_FRESH_S and w.running is not False]
    if live:
        raise Refused(f"node {node!r} has {len(live)} worker(s) with a fresh heartbeat ({live[0]}, ...); "
                      "stop them first")
    keys = list(store.node_keys())
    store.delete_keys(keys)
    say(f"node {node!r} (prefix {settings.prefix!r}): removed {len(keys)} Redis keys")
    if os.path.exists(shm):
        say(f"source pool {remove_unless_mapped(shm)}")
    return len(keys)
