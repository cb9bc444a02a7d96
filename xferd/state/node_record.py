"""The node record (``{node}:node``): what the node is, and which `xferd serve` owns it.

Fencing (docs/guarantees.md) proves a writer stopped by ending its process, which only works on the
writer's own host. So one node is served from one host at a time: `serve` claims the node
with its process identity, refuses to start while another live serve holds it (on this
host: its pid and start time are checked; on another host: it cannot be checked, nor its
workers stopped, so only an operator's ``--take-over`` moves the node), and refuses a
record written under another key schema.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import time

import redis

from xferd.node.stopping import Identity
from xferd.state.keys import SCHEMA
from xferd.transfer.pool import describe_pool
from xferd.state.records import _hash
from xferd.settings import ConfigError, Settings

if TYPE_CHECKING:
    from xferd.state.store import Store


def node_record(settings: Settings) -> dict[str, str]:
    """What the record says of the node: schema, the pool's shape and shared-memory file,
    its layout and the status form (the encoder side reads these instead of repeating them;
    the Store adds the node's policy when it writes the record)."""
    return {"schema": str(SCHEMA), "num_blocks": str(settings.pool_blocks),
            **describe_pool(settings.buffer_layout, settings.pool_blocks, settings.shm_name),
            "status_frames": str(settings.status_frames), "sender_rank": str(settings.sender_rank)}


class NodeRefused(ConfigError):
    """This serve must not run the node; the message is one line for the operator."""


def check_schema(store: Store) -> None:
    record = store.record()
    found = record.get("schema")
    if found is None and store.client.exists(store.keys.legacy_record):
        found = "1"
    if found is not None and found != str(SCHEMA):
        k = store.keys
        raise NodeRefused(
            f"node {k.node!r} (prefix {k.prefix!r}) holds Redis state of key schema {found}, this "
            f"xferd uses schema {SCHEMA}: let its rooms finish under the old version, then delete "
            f"the node's keys (redis-cli --scan --pattern '{k.prefix}:{{{k.node}*' | xargs "
            f"redis-cli del), or serve it under another --node or --prefix")


def claim(store: Store, me: Identity, take_over: bool = False) -> None:
    """Record ``me`` as the node's serve, or raise NodeRefused naming who holds it."""
    key, me_name = store.keys.record, me.name("serve")
    with store.client.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(key)
                record = _hash(pipe.hgetall(key))
                _refuse_unless_free(store, record, take_over)
                pipe.multi()
                pipe.hset(key, mapping={"schema": SCHEMA, "serve": me_name, "serve_seen": _now_ms()})
                pipe.execute()
                return
            except redis.WatchError:
                continue  # another serve wrote the record meanwhile: look again


def _refuse_unless_free(store: Store, record: dict[str, str], take_over: bool) -> None:
    holder = record.get("serve")
    other = Identity.parse(holder) if holder else None
    if other is None or other == Identity.current():
        return
    running = other.running()
    node = store.keys.node
    if running:
        raise NodeRefused(f"node {node!r} is already served on this host by pid {other.pid}; "
                          "stop that `xferd serve` first")
    if running is None and not take_over:
        seen = int(record.get("serve_seen", 0))
        ago = f"{(_now_ms() - seen) / 1000:.0f}s ago" if seen else "at an unknown time"
        raise NodeRefused(
            f"node {node!r} is served from host {other.host} (last seen {ago}): a serve here could "
            f"not stop that host's workers, so two could write the same rounds. Stop it there; if "
            f"that host is gone for good, start this one with --take-over")


def refresh(store: Store, me: Identity) -> None:
    """The serve is alive (read by a serve on another host that is refused)."""
    store.client.hset(store.keys.record, mapping={"serve": me.name("serve"), "serve_seen": _now_ms()})


def _now_ms() -> int:
    return int(time.time() * 1000)


def release(store: Store, me: Identity) -> None:
    """A clean stop: the node is free for a serve on any host (if this one still holds it)."""
    if store.record().get("serve") == me.name("serve"):
        store.client.hdel(store.keys.record, "serve", "serve_seen")
