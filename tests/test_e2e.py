"""End to end on real parts: `xferd serve` (ingress + 2 worker processes) on the real Redis,
Receivers with their own Mooncake engines in this process, every landed byte compared."""
from __future__ import annotations

import random
import time

import pytest
import torch

from conftest import wait_for
from xferd.client.receiver import Receiver
from xferd.client.sender import Sender
from xferd.protocol.status import Status
from xferd_lab.synthetic import room_data
from xferd.protocol.wire import encode_init, encode_register

pytestmark = pytest.mark.integration
SENTINEL = 0xA5


@pytest.fixture(scope="module")
def sender(node):
    return Sender(node.settings, node.store)


@pytest.fixture(scope="module")
def receivers(node):
    made = [Receiver(node.settings.ingress, node.settings.buffer_layout, 512, store=node.store) for _ in range(4)]
    for receiver in made:
        receiver.register()
    time.sleep(0.3)
    yield made
    for receiver in made:
        receiver.close()


def new_room() -> int:
    return random.getrandbits(62)


def fill(receiver, blocks, value=SENTINEL):
    for buffer in receiver.pool.buffers:
        for block in blocks:
            buffer[block].fill_(value)


def assert_rows(receiver, layout, blocks, data, start, count):
    """The per-token rows [start, start+count) landed in ``blocks``; the rest of the last
    block is untouched."""
    for index, buffer in enumerate(layout.buffers):
        if not buffer.per_token:
            continue
        got = receiver.pool.read_tokens(index, blocks, count)
        assert torch.equal(got, buffer.token_range(data[index], start, count)), f"{buffer.name} differs"
        width = layout.token_bytes(index)
        last = blocks[layout.blocks_for(count) - 1]
        tail = count - (layout.blocks_for(count) - 1) * layout.block_size
        assert bool((receiver.pool.buffers[index][last, tail * width:] == SENTINEL).all())


def test_resume_2000_tokens_block_128_allocated_1024(node, sender, receivers):
    layout, rx, room = node.settings.buffer_layout, receivers[0], new_room()
    data = room_data(room, 2000, layout)
    sender.send(room, 2000, data)  # source first, destination second
    first, second = list(range(0, 8)), [20, 21, 22, 26, 27, 28, 40, 41]
    fill(rx, first + second)
    rx.init(room, first, 1024)
    assert rx.wait(room, 10) == Status.Transferring
    assert_rows(rx, layout, first, data, 0, 1024)
    assert torch.equal(rx.pool.buffers[3][first[0]], data[3]), "aux lands with the first block"
    rx.pool.buffers[3].zero_()
    rx.resume(room, second, 1024, 976)
    assert rx.wait(room, 10) == Status.Success
    assert_rows(rx, layout, second, data, 1024, 976)
    assert not rx.pool.buffers[3].any(), "aux must not be sent again on resume"
    assert rx.history[room] == [Status.Transferring, Status.Success]
    record = node.store.room(room)
    assert (record["status_name"], record["round"], record["sent_tokens"]) == ("Success", "2", "2000")


def test_three_resume_rounds_of_50000_tokens(node, sender, receivers):
    layout, rx, room = node.settings.buffer_layout, receivers[0], new_room()
    total = 50_000
    rx.init(room, list(range(64)), 8192)  # destination first, source second
    data = room_data(room, total, layout)
    sender.send(room, total, data)
    sent, rounds, offset = 0, 0, 0
    allocated = 8192
    while True:
        status = rx.wait(room, 20)
        count = min(total - sent, allocated)
        blocks = list(range(offset, offset + layout.blocks_for(allocated)))
        for index, buffer in enumerate(layout.buffers):
            if buffer.per_token:
                got = rx.pool.read_tokens(index, blocks, count)
                assert torch.equal(got, buffer.token_range(data[index], sent, count))
        sent += count
        rounds += 1
        if sent == total:
            assert status == Status.Success
            break
        assert status == Status.Transferring, "a partial round reports Transferring, never Success"
        allocated = min(16_384, total - sent)
        offset = 128 if offset == 0 else 0  # alternate halves of the pool, reusing blocks
        rx.resume(room, list(range(offset, offset + layout.blocks_for(allocated))), sent, allocated)
    assert rounds == 4 and node.store.room(room)["round"] == "4"
    history = rx.history[room]
    assert history == [Status.Transferring] * 3 + [Status.Success]


@pytest.mark.parametrize("ranks", [2, 4])
def test_every_rank_gets_identical_bytes_and_rounds_wait_for_all(node, sender, receivers, ranks):
    layout, room = node.settings.buffer_layout, new_room()
    used = receivers[:ranks]
    total = 3000
    data = room_data(room, total, layout)
    sender.send(room, total, data)
    first = [[r * 50 + i for i in range(8)] for r in range(ranks)]  # different blocks per rank
    second = [[r * 50 + 20 + i for i in range(16)] for r in range(ranks)]
    for r, rx in enumerate(used):
        fill(rx, first[r] + second[r])
    for r, rx in enumerate(used[:-1]):
        rx.init(room, first[r], 1024, ranks)
    time.sleep(0.5)
    assert node.store.room(room)["status_name"] == "Bootstrapping"
    assert all((rx.pool.buffers[0][first[r]] == SENTINEL).all() for r, rx in enumerate(used[:-1]))
    used[-1].init(room, first[-1], 1024, ranks)
    assert [rx.wait(room, 10) for rx in used] == [Status.Transferring] * ranks
    for r, rx in enumerate(used):
        assert_rows(rx, layout, first[r], data, 0, 1024)
    for r, rx in enumerate(used[:-1]):
        rx.resume(room, second[r], 1024, 1976)
    time.sleep(0.5)
    record = node.store.room(room)
    assert (record["round"], record["queued_round"]) == ("1", "1"), "round 2 waits for every rank"
    assert all((rx.pool.buffers[0][second[r]] == SENTINEL).all() for r, rx in enumerate(used))
    assert all(rx.poll(room) == Status.WaitingForInput for rx in used[:-1])
    used[-1].resume(room, second[-1], 1024, 1976)
    assert [rx.wait(room, 10) for rx in used] == [Status.Success] * ranks
    landed = [rx.pool.read_tokens(0, second[r], 1976) for r, rx in enumerate(used)]
    for r, rx in enumerate(used):
        assert_rows(rx, layout, second[r], data, 1024, 1976)
        assert torch.equal(landed[r], landed[0])
        assert rx.history[room] == [Status.Transferring, Status.Success]


def test_allocation_larger_than_needed_succeeds_in_one_round(node, sender, receivers):
    layout, rx, room = node.settings.buffer_layout, receivers[1], new_room()
    data = room_data(room, 300, layout)
    blocks = list(range(100, 108))
    fill(rx, blocks)
    rx.init(room, blocks, 1024)
    sender.send(room, 300, data)
    assert rx.wait(room, 10) == Status.Success
    assert_rows(rx, layout, blocks, data, 0, 300)
    assert (rx.pool.buffers[0][blocks[3:]] == SENTINEL).all(), "blocks past the data are untouched"
    assert rx.history[room] == [Status.Success]


def test_duplicate_init_and_resume_never_transfer_twice(node, sender, receivers):
    layout, rx, room = node.settings.buffer_layout, receivers[2], new_room()
    data = room_data(room, 2000, layout)
    first, second = list(range(0, 8)), list(range(8, 16))
    rx.init(room, first, 1024)
    rx._send(encode_init(room, rx.host, rx.status_port, rx.session_id, first, 1, 1024))  # duplicate
    sender.send(room, 2000, data)
    assert rx.wait(room, 10) == Status.Transferring
    assert_rows(rx, layout, first, data, 0, 1024)
    fill(rx, first)
    rx._send(encode_init(room, rx.host, rx.status_port, rx.session_id, first, 1, 1024))  # late duplicate
    rx.resume(room, second, 1024, 976)
    rx.resume(room, second, 1024, 976)  # duplicate resume
    rx._rounds[room] -= 1
    assert rx.wait(room, 10) == Status.Success
    fill(rx, second)
    rx.resume(room, second, 1024, 976)  # late duplicate after Success
    time.sleep(0.5)
    assert (rx.pool.buffers[0][first + second] == SENTINEL).all(), "nothing was written twice"
    record = node.store.room(room)
    assert (record["status_name"], record["round"]) == ("Success", "2")
    assert rx.history[room] == [Status.Transferring, Status.Success]


def test_bad_input_fails_only_its_room_and_nothing_is_written(node, sender, receivers):
    layout, rx, room = node.settings.buffer_layout, receivers[3], new_room()
    blocks = list(range(200, 216))
    fill(rx, blocks)
    rx._send([b"garbage"])  # no room named: logged and counted
    rx.init(room, blocks, 1024)  # 16 blocks for 1024 tokens: the language side's blocks are 64 tokens
    assert rx.wait(room, 10) == Status.Failed
    assert "block size mismatch" in node.store.room(room)["failure"]
    sender.send(room, 1024, room_data(room, 1024, layout))
    assert (rx.pool.buffers[0][blocks] == SENTINEL).all()
    good = new_room()
    data = room_data(good, 500, layout)
    sender.send(good, 500, data)
    rx.init(good, blocks[:4], 512)
    assert rx.wait(good, 10) == Status.Success
    assert_rows(rx, layout, blocks[:4], data, 0, 500)
    assert node.store.rejected_messages() >= 2


def test_mooncake_write_failure_fails_the_room_and_marks_the_session(node, sender, receivers):
    """A session whose registered pointers are not its engine's memory: the write is refused."""
    layout, rx, room = node.settings.buffer_layout, receivers[3], new_room()
    bogus = [1 << 44] * len(layout.buffers)
    rx._send(encode_register(rx.host, rx.status_port, rx.session_id, bogus))
    time.sleep(0.3)
    try:
        rx.init(room, [0], 128)
        sender.send(room, 100, room_data(room, 100, layout))
        assert rx.wait(room, 15) == Status.Failed
        assert "failed" in node.store.room(room)["failure"]
        later = new_room()
        rx.init(later, [0], 128)
        assert rx.wait(later, 10) == Status.Failed
        assert "marked failed" in node.store.room(later)["failure"]
    finally:
        rx.register()  # registering again clears the mark
        time.sleep(0.3)
    again = new_room()
    data = room_data(again, 100, layout)
    sender.send(again, 100, data)
    rx.init(again, [300], 128)
    assert rx.wait(again, 10) == Status.Success, node.store.failure(again)


def test_abort_from_the_language_side_releases_source_blocks(node, sender, receivers):
    layout, rx, room = node.settings.buffer_layout, receivers[1], new_room()
    # an earlier test's room may still be giving its blocks back (the status goes out first)
    free_before = node.settings.pool_blocks
    assert wait_for(lambda: node.store.free_blocks() == free_before, 5)
    rx.init(room, list(range(8)), 1024, required_dst_info_num=2)  # the second rank never comes
    blocks = sender.allocate(room, 2000)
    sender.write(blocks, room_data(room, 2000, layout))
    sender.publish(room, blocks, 2000)
    assert node.store.free_blocks() == free_before - 16
    rx.abort(room)
    assert rx.wait(room, 10) == Status.Failed
    assert "aborted by language session" in node.store.room(room)["failure"]
    assert wait_for(lambda: node.store.free_blocks() == free_before, 5)
    assert sender.poll(room) == Status.Failed


def test_a_lost_notification_never_hangs_a_request(node, sender, receivers):
    """The init names a status port nobody listens on: the Receiver learns from Redis."""
    layout, room = node.settings.buffer_layout, new_room()
    rx = Receiver(node.settings.ingress, layout, 16, store=node.store, fallback_after=0.5)
    try:
        rx.register()
        rx.status_port = 1  # statuses for this room go nowhere
        data = room_data(room, 200, layout)
        sender.send(room, 200, data)
        rx.init(room, [0, 1], 256)
        assert rx.wait(room, 10) == Status.Success
        assert rx.fallbacks == 1 and room not in rx.history
        assert torch.equal(rx.pool.read_tokens(0, [0, 1], 200), data[0])
    finally:
        rx.close()


def test_source_blocks_outside_the_pool_are_refused_before_publishing(node, sender):
    with pytest.raises(ValueError, match="outside the pool"):
        sender.publish(new_room(), [3, node.settings.pool_blocks], 200)


def test_an_encoder_abort_reaches_a_language_side_without_redis(node, sender):
    """Sender.abort pushes Failed like every other path: a client with no Redis (the
    reference's) learns of it, and the blocks never published go back at once."""
    rx = Receiver(node.settings.ingress, node.settings.buffer_layout, 16)  # no store: pushes only
    room = new_room()
    try:
        rx.register()
        time.sleep(0.3)
        rx.init(room, [0, 1], 256)
        assert wait_for(lambda: node.store.room(room).get("dst_count") == "1")
        sender.allocate(room, 200)
        outcome = sender.abort(room)
        assert outcome.failed and outcome.notify
        assert rx.wait(room, 10) == Status.Failed
        assert node.store.held_blocks(room) == 0
    finally:
        rx.close()


def test_encoder_abort_and_explicit_release(node, sender, receivers):
    room = new_room()
    blocks = sender.allocate(room, 500)
    sender.publish(room, blocks, 500)
    with pytest.raises(RuntimeError, match="abort it first"):
        sender.release(room)
    assert sender.abort(room).failed
    assert sender.failure(room) == "aborted by the encoder"
    assert node.store.held_blocks(room) == 0, "no write in flight: back in the abort itself"
    assert sender.release(room) == 0


class DroppingForwarder:
    """Stands between a Receiver and the ingress and loses the message numbered ``drop``:
    what an ingress SIGKILLed with a message in its queue does."""

    def __init__(self, ingress: str, drop: int):
        import threading

        import zmq

        context = zmq.Context.instance()
        self.pull = context.socket(zmq.PULL)
        self.port = self.pull.bind_to_random_port("tcp://127.0.0.1")
        self.push = context.socket(zmq.PUSH)
        self.push.connect(ingress)
        self.drop, self.seen, self.closing = drop, 0, False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.closing:
            if self.pull.poll(50):
                frames = self.pull.recv_multipart()
                self.seen += 1
                if self.seen != self.drop:
                    self.push.send_multipart(frames)

    def close(self):
        self.closing = True
        self.thread.join()
        self.pull.close(0)
        self.push.close(0)


def test_a_message_lost_on_the_way_in_is_sent_again(node, sender, receivers):
    layout, room = node.settings.buffer_layout, new_room()
    forwarder = DroppingForwarder(node.settings.ingress, drop=2)  # 1: register, 2: the init
    rx = Receiver(f"tcp://127.0.0.1:{forwarder.port}", layout, 16, store=node.store,
                  fallback_after=0.3, resend_after=1.0)
    try:
        rx.register()
        data = room_data(room, 200, layout)
        sender.send(room, 200, data)
        rx.init(room, [0, 1], 256)
        assert rx.wait(room, 10) == Status.Success
        assert forwarder.seen >= 3 and rx.resent >= 1, "the init was dropped once and sent again"
        assert torch.equal(rx.pool.read_tokens(0, [0, 1], 200), data[0])
        assert node.store.room(room)["round"] == "1"
    finally:
        rx.close()
        forwarder.close()


def test_the_first_write_after_an_idle_gap_succeeds(node, sender, receivers):
    """Mooncake's connection to a destination sits unused for seconds between rooms."""
    layout, rx = node.settings.buffer_layout, receivers[0]
    for gap in (0.0, 6.0):
        time.sleep(gap)
        room = new_room()
        data = room_data(room, 300, layout)
        sender.send(room, 300, data)
        rx.init(room, [40, 41, 42], 300)
        assert rx.wait(room, 10) == Status.Success, f"after {gap}s idle"
        assert torch.equal(rx.pool.read_tokens(0, [40, 41, 42], 300), data[0])


def test_no_source_block_is_leaked(node, sender, receivers):
    """Runs last in this module: every room above has ended, every block is back."""
    assert wait_for(lambda: node.store.free_blocks() == node.settings.pool_blocks, 5)
