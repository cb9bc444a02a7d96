"""Stops that are not deaths (SPEC §6a), end to end: a destination that stalls mid-write
while its room is ended, and a worker cut off from Redis while its write to the language
side goes on. Real `xferd serve`, Redis, Mooncake; the language side is its own process
(SIGSTOPped here) with no Redis, so every status it acts on came by push; every byte is
compared."""
from __future__ import annotations

import multiprocessing
import os
import random
import select
import signal
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest
import torch
import zmq

from conftest import start_node, wait_for
from xferd import worker
from xferd.fencing import Identity
from xferd.lease import SELF_FENCE_EXIT
from xferd.sender import Sender
from xferd.status import Status
from xferd.tools.synthetic import room_data
from xferd.wire import encode_abort

pytestmark = pytest.mark.integration
BIG = 8192  # tokens: 64 blocks, 64 MiB of embeddings (hidden 4096, bf16)
SPAWN = multiprocessing.get_context("spawn")


def destination_main(settings, num_blocks: int, conn) -> None:
    """A language side in its own process: registers, then per command inits a room, waits
    for its status over ZMQ only, and reports whether the whole round had landed the moment
    the status arrived; "check" reports whether the blocks hold exactly the room's data."""
    from xferd.receiver import Receiver

    layout = settings.buffer_layout
    rx = Receiver(settings.ingress, layout, num_blocks)  # no store: no Redis fallback
    rx.register()
    conn.send(("ready", rx.session_id))

    def holds(room, total, blocks) -> bool:
        expected = room_data(room, total, layout)
        return all(torch.equal(rx.pool.read_tokens(i, blocks, total), b.token_range(expected[i], 0, total))
                   for i, b in enumerate(layout.buffers) if b.per_token)

    while True:
        command, room, total, blocks = conn.recv()
        if command == "init":
            for buffer in rx.pool.buffers:
                buffer[blocks] = 0
            rx.init(room, blocks, total)
            status = rx.wait(room, 120)
            conn.send((int(status), holds(room, total, blocks)))
        elif command == "check":
            conn.send(holds(room, total, blocks))
        else:
            rx.close()
            return


class Destination:
    def __init__(self, settings, num_blocks: int = 66):
        self.conn, child = SPAWN.Pipe()
        self.process = SPAWN.Process(target=destination_main, args=(settings, num_blocks, child), daemon=True)
        self.process.start()
        assert self.conn.poll(60), "the language process did not come up"
        _, self.session_id = self.conn.recv()

    def init(self, room: int, total: int, blocks: list[int]) -> None:
        self.conn.send(("init", room, total, blocks))

    def status(self, timeout: float = 60) -> tuple[Status, bool]:
        """(the status, whether the whole round had landed when it arrived)."""
        assert self.conn.poll(timeout), "no status reached the language side"
        status, landed = self.conn.recv()
        return Status(status), landed

    def holds(self, room: int, total: int, blocks: list[int]) -> bool:
        self.conn.send(("check", room, total, blocks))
        assert self.conn.poll(30)
        return self.conn.recv()

    def pause(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        self.resume()
        self.process.kill()
        self.process.join()


def warm_up(sender: Sender, destination: Destination) -> None:
    """One small room, so that the worker's Mooncake engine knows the destination before it stalls."""
    room = random.getrandbits(62)
    destination.init(room, 128, [64])
    sender.send(room, 128, room_data(room, 128, sender.layout))
    assert destination.status() == (Status.Success, True)


def start_stalled_round(node, sender: Sender, destination: Destination) -> tuple[int, list[int]]:
    """A 64 MiB round whose destination is SIGSTOPped before the write starts: the write is
    in flight and cannot finish. Returns (room, source blocks)."""
    room, store = random.getrandbits(62), node.store
    destination.init(room, BIG, list(range(64)))
    assert wait_for(lambda: store.room(room).get("dst_count") == "1"), "init recorded"
    destination.pause()
    sender.send(room, BIG, room_data(room, BIG, sender.layout))
    assert wait_for(lambda: "holder" in store.room(room)), "a worker took the round"
    time.sleep(0.5)
    return room, [int(b) for b in store.room(room)["src_indices"].split(",")]


@pytest.fixture(scope="module")
def stall_node(redis_url, tmp_path_factory):
    node = start_node(redis_url, tmp_path_factory, workers=1, hidden_size=4096, pool_blocks=96, lease=1.0,
                      round_timeout=2.0, drain_timeout=1.0)
    yield node
    node.stop()


@pytest.mark.parametrize("ender", ["language abort", "encoder abort", "round timeout"])
def test_a_destination_stalled_mid_write_while_its_room_ends(stall_node, ender):
    node, store = stall_node, stall_node.store
    sender = Sender(node.settings, store)
    destination = Destination(node.settings)
    other = random.getrandbits(62)
    try:
        warm_up(sender, destination)
        room, busy = start_stalled_round(node, sender, destination)
        if ender == "language abort":  # the language side's own abort, from another of its threads
            push = zmq.Context.instance().socket(zmq.PUSH)
            push.connect(node.settings.ingress)
            push.send_multipart(encode_abort(room, destination.session_id))
            push.close(linger=2000)
        elif ender == "encoder abort":
            outcome = sender.abort(room)
            assert outcome.failed and not outcome.notify, "no Failed while the write is in flight"
        assert wait_for(lambda: store.status(room) == Status.Failed), "Redis says Failed at once"
        time.sleep(2.5)  # past two leases: the holder keeps renewing while its write runs
        record = store.room(room)
        assert "holder" in record and store.stats().get("writers_fenced", 0) == 0
        assert store.held_blocks(room) == 64, "a write still reads these blocks"
        # a room allocated meanwhile gets none of them, and writes its own data into its blocks
        meanwhile = sender.allocate(other, store.free_blocks() * 128)
        assert not set(meanwhile) & set(busy)
        sender.write(meanwhile, room_data(other, len(meanwhile) * 128, sender.layout))
        destination.resume()
        status, landed = destination.status()
        assert status == Status.Failed and landed, "Failed arrived only once every byte of the write had"
        assert destination.holds(room, BIG, list(range(64))), "nothing of another room reached it"
        assert wait_for(lambda: store.held_blocks(room) == 0), "the blocks went back after the write"
        assert "holder" not in store.room(room)
    finally:
        destination.stop()
        sender.abort(other)
    assert wait_for(lambda: store.free_blocks() == node.settings.pool_blocks)


class FreezableProxy:
    """A TCP proxy to Redis that can stop forwarding without closing anything: to whoever
    uses it, Redis stops answering."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        self.target = (parts.hostname, parts.port or 6379)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self.server.getsockname()[1]}/0"
        self.frozen, self.closing = threading.Event(), threading.Event()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closing.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        while not self.closing.is_set():
            if self.frozen.is_set():
                time.sleep(0.01)
                continue
            try:
                if select.select([src], [], [], 0.05)[0]:
                    data = src.recv(1 << 16)
                    if not data:
                        return
                    dst.sendall(data)
            except OSError:
                return

    def freeze(self) -> None:
        self.frozen.set()

    def close(self) -> None:
        self.closing.set()
        self.server.close()
        for sock in self.sockets:
            sock.close()


def test_a_worker_cut_off_from_redis_is_stopped_before_its_round_is_redone(redis_url, tmp_path_factory):
    proxy = FreezableProxy(redis_url)
    node = start_node(redis_url, tmp_path_factory, workers=0, rounds_per_worker=1, hidden_size=4096,
                      pool_blocks=96, lease=1.0, drain_timeout=1.0)
    store, sender = node.store, Sender(node.settings, node.store)
    cut_off = SPAWN.Process(target=worker.main, args=(node.settings.replace(redis_url=proxy.url), 1))
    healthy = SPAWN.Process(target=worker.main, args=(node.settings, 2))
    destination = None
    try:
        cut_off.start()
        assert wait_for(lambda: store.live_workers(), 60), "the worker behind the proxy is up"
        destination = Destination(node.settings)
        warm_up(sender, destination)
        room, _ = start_stalled_round(node, sender, destination)
        assert Identity.parse(store.room(room)["holder"]).pid == cut_off.pid
        healthy.start()
        assert wait_for(lambda: len(store.live_workers()) == 2, 60)
        proxy.freeze()  # its Redis stops answering; its write to the language side goes on
        cut_off.join(20)
        stopped_at = time.time()
        assert cut_off.exitcode in (SELF_FENCE_EXIT, -signal.SIGKILL), cut_off.exitcode
        destination.resume()
        status, landed = destination.status()
        assert status == Status.Success and landed, "every byte of the redone round is right"
        record = store.room(room)
        assert (record["epoch"], record["rewrites"], record["status_name"]) == ("2", "1", "Success")
        assert int(record["taken_at"]) / 1000 > stopped_at, "the round was taken again only after"
        assert store.stats()["handed_back"] >= 1
        assert wait_for(lambda: store.free_blocks() == node.settings.pool_blocks)
    finally:
        if destination is not None:
            destination.stop()
        for process in (cut_off, healthy):
            if process.is_alive():
                process.kill()
            process.join()
        proxy.close()
        node.stop()
