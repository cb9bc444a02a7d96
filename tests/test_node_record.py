"""The node record (claim.py): one serve per node, on one host, under one key schema."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import make_settings
from xferd.state.node_record import NodeRefused, check_schema, claim, release
from xferd.node.stopping import Identity
from xferd.state.keys import SCHEMA


def test_a_record_of_another_schema_is_refused(store):
    check_schema(store)  # this schema's record (the fixture's pool) or none: fine
    store.client.hset(store.keys.record, "schema", SCHEMA + 1)
    with pytest.raises(NodeRefused, match=f"key schema {SCHEMA + 1}, this xferd uses schema {SCHEMA}"):
        check_schema(store)
    store.client.delete(store.keys.record)
    store.client.hset(store.keys.legacy_record, "num_blocks", 8)  # schema 1 kept it here
    with pytest.raises(NodeRefused, match="schema 1"):
        check_schema(store)


def test_one_serve_per_node_and_host(store):
    me = Identity.current()
    claim(store, me)
    claim(store, me)  # again: it is ours
    assert store.record()["serve"] == me.name("serve")
    alive = Identity(me.host, me.boot, 1, Identity.of(1).start)  # pid 1 runs, on this host
    store.client.hset(store.keys.record, "serve", alive.name("serve"))
    with pytest.raises(NodeRefused, match="already served on this host by pid 1"):
        claim(store, me)
    gone = Identity(me.host, me.boot, me.pid, me.start + 1)  # same pid, another process: gone
    store.client.hset(store.keys.record, "serve", gone.name("serve"))
    claim(store, me)
    assert store.record()["serve"] == me.name("serve")


def test_a_node_served_from_another_host_needs_a_take_over(store):
    me = Identity.current()
    elsewhere = Identity("other-host", me.boot, 4242, 1)
    store.client.hset(store.keys.record, mapping={"serve": elsewhere.name("serve"), "serve_seen": 1})
    with pytest.raises(NodeRefused, match="served from host other-host .* could not stop that host's workers"):
        claim(store, me)
    claim(store, me, take_over=True)
    assert store.record()["serve"] == me.name("serve")
    release(store, me)
    assert "serve" not in store.record(), "a clean stop frees the node for any host"


@pytest.mark.integration
def test_serve_refuses_an_old_schema_with_one_line(redis_url):
    from xferd.state.connections import connect
    from xferd.state.store import Store

    settings = make_settings(redis_url=redis_url)
    store = Store(connect(redis_url), settings)
    store.client.hset(store.keys.legacy_record, "num_blocks", 8)
    try:
        done = subprocess.run([sys.executable, "-m", "xferd", "serve"], env=settings.to_env(),
                              capture_output=True, text=True, timeout=60)
    finally:
        store.client.delete(store.keys.legacy_record)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert lines[0].startswith("xferd: node 'n1'") and "schema 1" in lines[0]
