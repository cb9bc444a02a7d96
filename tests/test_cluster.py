"""The core end-to-end cases, unchanged, on a local Redis Cluster (3 primaries, 3 replicas)
with every take and status confirmed by a replica (min_replicas 1); two embedding nodes
whose keys sit on different primaries; `xferd inspect` naming the primary."""
from __future__ import annotations

import random

import pytest
import redis
import torch

import conftest
from conftest import clients, start_node, start_room, wait_for
from test_crash import (  # noqa: F401 - collected here again, on the cluster
    faulty_node,
    impatient_node,
    test_each_timeout_fails_the_room_and_releases_blocks,
    test_worker_killed_mid_round_loses_nothing,
)
from test_e2e import (  # noqa: F401
    receivers,
    sender,
    test_abort_from_the_language_side_releases_source_blocks,
    test_every_rank_gets_identical_bytes_and_rounds_wait_for_all,
    test_no_source_block_is_leaked,
    test_resume_2000_tokens_block_128_allocated_1024,
    test_three_resume_rounds_of_50000_tokens,
)
from xferd.ops.roomview import render
from xferd.state.keys import Keys
from xferd.protocol.status import Status
from xferd_lab.synthetic import room_data
from xferd.state.topology import where

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def redis_url(redis_cluster):
    """Every node of this module serves from the cluster."""
    return redis_cluster.url


@pytest.fixture(scope="module", autouse=True)
def confirmed_by_a_replica():
    """Nodes started here wait for one replica before a take or a status is acted on."""
    plain = conftest.make_settings
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(conftest, "make_settings", lambda **kw: plain(**{"min_replicas": 1, **kw}))
        yield


def _nodes_on_two_primaries(cluster, prefix: str) -> tuple[str, str]:
    """Two node names whose hash tags fall on different primaries."""
    seen: dict[int, str] = {}
    for i in range(100):
        port = cluster.primary_port(Keys(prefix, f"node{i}").record)
        seen.setdefault(port, f"node{i}")
        if len(seen) == 2:
            return tuple(seen.values())
    raise AssertionError("no two node names on different primaries")


def _waits(cluster, node) -> int:
    """WAIT commands the node's primary has run."""
    stats = redis.Redis(port=cluster.primary_port(node.store.keys.record)).info("commandstats")
    return int(stats.get("cmdstat_wait", {}).get("calls", 0))


def test_two_nodes_on_different_primaries_two_ranks_each(redis_cluster, tmp_path_factory):
    names = _nodes_on_two_primaries(redis_cluster, "xtwo")
    nodes = [start_node(redis_cluster.url, tmp_path_factory, node=name, prefix="xtwo") for name in names]
    try:
        held_by = {where(n.store.client, n.store.keys.record) for n in nodes}
        assert len(held_by) == 2, f"both nodes on one primary: {held_by}"
        for node in nodes:
            with clients(node) as (encoder, rx0), clients(node) as (_, rx1):
                room = random.getrandbits(62)
                data = room_data(room, 2000, node.settings.buffer_layout)
                encoder.send(room, 2000, data)
                ranks = ((rx0, range(8), range(8, 16)), (rx1, range(20, 28), range(28, 36)))
                for rx, first, _ in ranks:
                    rx.init(room, list(first), 1024, 2)
                for rx, first, second in ranks:
                    assert rx.wait(room, 20) == Status.Transferring
                    assert torch.equal(rx.pool.read_tokens(0, list(first), 1024), data[0][:1024])
                    rx.resume(room, list(second), 1024, 976)
                for rx, _, second in ranks:
                    assert rx.wait(room, 20) == Status.Success
                    assert torch.equal(rx.pool.read_tokens(0, list(second), 976), data[0][1024:])
                assert wait_for(lambda: node.store.free_blocks() == node.settings.pool_blocks)
                assert _waits(redis_cluster, node) >= 6, "every transition waited for a replica on its primary"
    finally:
        for node in nodes:
            node.stop()


def test_inspect_names_the_primary(node):
    with clients(node) as (encoder, rx):
        room, _ = start_room(encoder, rx, 2000, list(range(8)), 1024)
        assert rx.wait(room, 20) == Status.Transferring
    text = render(node.store, room, node.settings.redis_url)
    assert "cluster primary of slot" in text and where(node.store.client, node.store.keys.record) in text
