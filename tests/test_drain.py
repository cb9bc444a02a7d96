"""Graceful drain: SIGTERM to `serve` (or `xferd drain`) mid-run loses nothing: the round
being written finishes, no other is begun, and the node's restarted serve takes the rest
at once although the lease is long (a round read but not begun goes back to the queue at
once: test_worker; drains under worker kills: test_chaos); a clean
stop removes the pool file unless something holds it; `xferd cleanup` removes a stopped
node's state and refuses while it runs."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from conftest import Node, clients, start_node, wait_for
from test_e2e import assert_rows, fill
from xferd.transfer.pool import SourcePool
from xferd.protocol.status import Status
from xferd_lab.synthetic import room_data

LONG_LEASE = 30.0  # a round waiting for a lease would take this long


def test_sigterm_mid_run_loses_nothing_and_the_next_serve_goes_on_at_once(redis_url, tmp_path_factory):
    """One lane, its round stalled mid-write, 23 rounds queued behind it: SIGTERM lets the
    stalled round finish, begins none of the others and leaves nothing pending or held; the
    node's restarted serve writes all 23 at once, not after the (30 s) lease."""
    node = start_node(redis_url, tmp_path_factory, workers=1, rounds_per_worker=1, hidden_size=1024,
                      lease=LONG_LEASE, round_timeout=120.0, stop_timeout=20.0,
                      env={"XFERD_FAULT": "stall_write", "XFERD_FAULT_STALL": "2"})
    second = None
    try:
        with clients(node, dest_blocks=256) as (sender, rx):
            layout = sender.layout
            rooms = {}
            for i in range(24):
                room = 9_300_000 + i
                rooms[room] = room_data(room, 600, layout)
                sender.send(room, 600, rooms[room])
            blocks = {room: list(range(5 * i, 5 * i + 5)) for i, room in enumerate(rooms)}
            fill(rx, [b for room_blocks in blocks.values() for b in room_blocks])
            first, *queued = rooms
            rx.init(first, blocks[first], 640)  # its write stalls 2 s after landing, holding the round
            assert wait_for(lambda: node.store.room(first).get("holder"), 10)
            for room in queued:
                rx.init(room, blocks[room], 640)
            assert wait_for(lambda: all(node.store.room(room).get("queued_round") == "1" for room in queued))
            stopped_at = time.monotonic()
            node.process.send_signal(signal.SIGTERM)
            assert node.process.wait(30) == 0
            drained_s = time.monotonic() - stopped_at
            assert drained_s < 15, drained_s
            assert node.store.room(first)["status_name"] == "Success", "the round in flight finished"
            assert [node.store.room(room)["status_name"] for room in queued] == ["WaitingForInput"] * 23, \
                "no round begun after the SIGTERM"
            assert node.store.pending() == [], "nothing left pending on the stopped worker"
            assert node.store.holds() == [], "and nothing held"
            restarted_at = time.monotonic()
            second = Node(node.settings, node.log_path + ".2")  # the node's restarted serve
            for room in rooms:
                assert rx.wait(room, 15) == Status.Success, (room, rx.failure(room))
            # the new serve's start (about 2 s here) and 23 rounds, against a 30 s lease
            assert time.monotonic() - restarted_at < LONG_LEASE / 3, "at once, not after a lease"
            for room, data in rooms.items():
                assert_rows(rx, layout, blocks[room], data, 0, 600)
        with open(node.log_path) as log:
            text = log.read()
        assert "draining node" in text and "drained in" in text
    finally:
        (second or node).stop()


def test_a_clean_stop_removes_the_pool_file_unless_it_is_mapped(redis_url, tmp_path_factory):
    node = start_node(redis_url, tmp_path_factory, workers=1)
    path = SourcePool.path_of(node.settings.shm_name)
    assert os.path.exists(path)
    mapped = SourcePool(node.settings.buffer_layout, node.settings.pool_blocks, node.settings.shm_name)
    node.process.send_signal(signal.SIGTERM)
    assert node.process.wait(30) == 0
    assert os.path.exists(path), "an encoder (this process) maps it"
    with open(node.log_path) as log:
        assert f"source pool {path} kept: mapped by pids {os.getpid()}" in log.read()
    del mapped
    restarted = Node(node.settings, node.log_path + ".2")
    restarted.process.send_signal(signal.SIGTERM)
    assert restarted.process.wait(30) == 0
    assert not os.path.exists(path), "nothing holds it: removed"
    restarted.stop()


def xferd(*args: str, settings) -> subprocess.CompletedProcess:
    env = settings.to_env()
    return subprocess.run([sys.executable, "-m", "xferd", *args], env=env, capture_output=True, text=True, timeout=60)


def test_xferd_drain_then_cleanup(redis_url, tmp_path_factory):
    node = start_node(redis_url, tmp_path_factory, workers=1)
    try:
        refused = xferd("cleanup", settings=node.settings)
        assert refused.returncode == 1 and f"node '{node.settings.node}' is served by pid" in refused.stderr
        drained = xferd("drain", settings=node.settings)
        assert drained.returncode == 0, drained.stderr
        assert f"node '{node.settings.node}' drained: serve stopped after" in drained.stdout
        assert node.process.wait(5) == 0
        node.store.client.hset(node.store.keys.stats, "rounds", 1)  # some state to remove
        done = xferd("cleanup", settings=node.settings)
        assert done.returncode == 0, done.stderr
        assert "Redis keys" in done.stdout and not list(node.store.node_keys())
        again = xferd("drain", settings=node.settings)
        assert again.returncode == 1 and "no serve holding it" in again.stderr
    finally:
        node.stop()


def test_sigterm_while_redis_is_down_stops_at_once_without_a_traceback(tmp_path_factory):
    """A rolling restart during a Redis outage: every process of serve is waiting Redis out
    with backoff; the drain must not wait out a backoff (or be killed at `stop_timeout`)."""
    from xferd_lab.embedded import EmbeddedRedis

    with EmbeddedRedis(aof=True) as redis_server:
        node = start_node(redis_server.url, tmp_path_factory, workers=2, stop_timeout=20.0)
        try:
            import threading
            down = threading.Thread(target=redis_server.crash_restart, kwargs={"down_for": 12.0})
            down.start()
            time.sleep(3)  # every process has met the outage and backs off
            stopped_at = time.monotonic()
            node.process.send_signal(signal.SIGTERM)
            assert node.process.wait(20) == 0
            assert time.monotonic() - stopped_at < 7, "stopped while Redis was still down"
            down.join()
            with open(node.log_path) as log:
                text = log.read()
            assert "Traceback" not in text and "still running after" not in text, text[-3000:]
            assert "could not release the node record" in text
        finally:
            node.stop()
