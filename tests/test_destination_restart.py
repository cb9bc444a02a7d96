"""A language process that dies mid-write and comes back under the same session id
(``host:rpc_port``, as a server restarted on a fixed port): its rooms after the restart go
through on the first try, every byte compared. Real `xferd serve`, Redis, Mooncake; the
language side is its own process, with no Redis. The short variant of `scripts/chaos.py
--restart-peer` (a restart waits for the kernel to free the old process's port: a minute)."""
from __future__ import annotations

import os
import random
import signal
import socket
import time

import pytest

from conftest import start_node, wait_for
from xferd_lab.embedded import port_free
from xferd_lab.peer import Peer, mooncake_ports
from xferd.client.sender import Sender
from xferd.protocol.status import Status
from xferd_lab.synthetic import room_data

pytestmark = pytest.mark.integration
BIG = 8192  # tokens: 64 blocks, 64 MiB of embeddings (hidden 4096, bf16): a write that takes a while
PORT_FREE_S = 90  # the kernel holds the port of a process that answered a handshake for 60 s
# (Mooncake binds without SO_REUSEADDR)


def run_room(sender: Sender, destination: Peer, tokens: int, blocks: list[int]) -> tuple[Status, bool]:
    room = random.getrandbits(62)
    destination.init(room, tokens, blocks)
    sender.send(room, tokens, room_data(room, tokens, sender.layout))
    status, landed = destination.status()
    return status, landed and destination.holds(room, tokens, blocks)


def test_a_destination_killed_mid_write_and_restarted_under_its_session_id(redis_url, tmp_path_factory):
    node = start_node(redis_url, tmp_path_factory, workers=1, hidden_size=4096, pool_blocks=96, lease=1.0,
                      round_timeout=5.0, drain_timeout=1.0)
    low = mooncake_ports(3)
    first = second = None
    try:
        sender = Sender(node.settings, node.store)
        first = Peer(node.settings, ports=(low, low + 1))  # data port low + 1
        assert run_room(sender, first, 128, [64]) == (Status.Success, True)

        room = random.getrandbits(62)
        first.init(room, BIG, list(range(64)))
        assert wait_for(lambda: node.store.room(room).get("dst_count") == "1")
        # stopped first, so its kill lands mid-write however fast loopback copies 64 MiB
        os.kill(first.process.pid, signal.SIGSTOP)
        sender.send(room, BIG, room_data(room, BIG, sender.layout))
        assert wait_for(lambda: "holder" in node.store.room(room)), "the write began"
        time.sleep(0.2)  # into the write, which waits on the stopped peer
        first.process.kill()  # mid-write
        first.process.join()
        assert wait_for(lambda: node.store.room(room).get("status") == str(int(Status.Failed)), 30)
        assert "Mooncake write" in node.store.room(room)["failure"], node.store.room(room)["failure"]

        assert wait_for(lambda: port_free(low), PORT_FREE_S), "the dead process's port never came free"
        with socket.socket() as held:  # its data port stays taken: the new process gets another
            held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            held.bind(("127.0.0.1", low + 1))
            held.listen()
            second = Peer(node.settings, ports=(low, low + 2))
        assert second.session_id == first.session_id == f"127.0.0.1:{low}"
        for tokens, blocks in ((2000, list(range(16))), (300, [40, 41, 42]), (BIG, list(range(64)))):
            started = time.monotonic()
            assert run_room(sender, second, tokens, blocks) == (Status.Success, True), "first try, every byte"
            assert time.monotonic() - started < 30
        assert "refreshed Mooncake's record of peer 127.0.0.1:%d (it registered again)" % low in node.log_text()
        assert wait_for(lambda: node.store.free_blocks() == 96, 10), "every block back"
    finally:
        for destination in (first, second):
            if destination is not None and destination.process.is_alive():
                destination.stop()
        node.stop()
