"""The Mooncake wrapper (real engines over loopback TCP): writes to several destinations go
out together and each lands or fails on its own; a failure or a stall is a WriteError that
names the destination, never a hang."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from xferd.transfer import engine as module
from xferd.transfer.engine import Engine, Write, WriteError

pytestmark = pytest.mark.integration
MB = 1 << 20


@pytest.fixture(scope="module")
def engines():
    """A source engine and two destination engines, each with its own registered buffer."""
    source = torch.randint(0, 256, (16 * MB,), dtype=torch.uint8)
    targets = [torch.zeros(16 * MB, dtype=torch.uint8) for _ in range(2)]
    writer = Engine()
    writer.register(source.data_ptr(), source.numel())
    readers = []
    for target in targets:
        reader = Engine()
        reader.register(target.data_ptr(), target.numel())
        readers.append(reader)
    yield writer, source, readers, targets


def _scattered(source, target, session_id: str, pieces: int, size: int, shift: int) -> Write:
    """``pieces`` entries of ``size`` bytes, each to a different place than it comes from."""
    src = [source.data_ptr() + i * 2 * size for i in range(pieces)]
    dst = [target.data_ptr() + shift + i * 2 * size for i in range(pieces)]
    return Write(session_id, src, dst, [size] * pieces)


def test_every_entry_has_landed_when_a_write_returns(engines):
    """A tiny first entry and a large second one: the write returns only once both landed
    (Mooncake's non-blocking check reports a batch's first entry only)."""
    writer, source, readers, targets = engines
    for _ in range(5):
        targets[0].zero_()
        write = Write(readers[0].session_id, [source.data_ptr(), source.data_ptr() + MB],
                      [targets[0].data_ptr(), targets[0].data_ptr() + MB], [64, 14 * MB])
        assert writer.write_all([write]) == [None]
        assert torch.equal(targets[0][MB:15 * MB], source[MB:15 * MB])


def test_writes_to_two_destinations_land_side_by_side(engines):
    writer, source, readers, targets = engines
    for target in targets:
        target.zero_()
    writes = [_scattered(source, targets[0], readers[0].session_id, 4, MB, 0),
              _scattered(source, targets[1], readers[1].session_id, 3, 2 * MB, 4096)]
    assert writer.write_all(writes) == [None, None]
    for i in range(4):
        assert torch.equal(targets[0][i * 2 * MB:i * 2 * MB + MB], source[i * 2 * MB:i * 2 * MB + MB])
    for i in range(3):
        start = 4096 + i * 4 * MB
        assert torch.equal(targets[1][start:start + 2 * MB], source[i * 4 * MB:i * 4 * MB + 2 * MB])
    assert int(targets[0][MB:2 * MB].count_nonzero()) == 0, "nothing between the entries"


def test_one_failed_destination_does_not_hold_back_the_other(engines):
    writer, source, readers, targets = engines
    targets[0].zero_()
    good = _scattered(source, targets[0], readers[0].session_id, 2, MB, 0)
    unknown = Write("127.0.0.1:1", [source.data_ptr()], [targets[1].data_ptr()], [MB])
    outside = Write(readers[1].session_id, [source.data_ptr()], [targets[1].data_ptr() + 32 * MB], [MB])
    started = time.monotonic()
    results = writer.write_all([good, unknown, outside])
    assert time.monotonic() - started < module.FAST_FAILURE_S * 3, "failures are fast"
    assert results[0] is None and torch.equal(targets[0][:MB], source[:MB])
    assert isinstance(results[1], WriteError) and "to 127.0.0.1:1: entry 0" in str(results[1])
    assert "could not be submitted" in str(results[1])
    assert isinstance(results[2], WriteError) and f"to {readers[1].session_id}: entry 0" in str(results[2])
    assert "failed after" in str(results[2])
    with pytest.raises(WriteError, match="could not be submitted"):
        writer.write(unknown.session_id, unknown.src, unknown.dst, unknown.lengths)
    # the engine writes on after failures
    assert writer.write_all([good]) == [None]


def test_a_destination_that_stalls_is_an_error_at_mooncakes_limit_not_a_hang(engines, monkeypatch):
    """The destination process is frozen (SIGSTOP) mid-write: the write fails at the limit."""
    _, source, _, _ = engines
    monkeypatch.setenv("MC_TRANSFER_TIMEOUT", "5")  # Mooncake's least (and the wrapper's limit)
    writer = Engine()
    writer.register(source.data_ptr(), source.numel())
    script = ("import sys, time, torch\nfrom xferd.transfer.engine import Engine\n"
              "buffer = torch.zeros(64 << 20, dtype=torch.uint8)\nengine = Engine()\n"
              "engine.register(buffer.data_ptr(), buffer.numel())\n"
              "print(engine.session_id, buffer.data_ptr(), flush=True)\ntime.sleep(120)")
    reader = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        session_id, pointer = reader.stdout.readline().split()
        assert writer.write_all([Write(session_id, [source.data_ptr()], [int(pointer)], [MB])]) == [None]
        os.kill(reader.pid, signal.SIGSTOP)
        started = time.monotonic()
        big = Write(session_id, [source.data_ptr()] * 4, [int(pointer) + i * 16 * MB for i in range(4)], [16 * MB] * 4)
        error = writer.write_all([big])[0]
        assert isinstance(error, WriteError) and f"to {session_id}: entry" in str(error), error
        assert "did not complete within 5 s" in str(error) or "failed" in str(error), error
        assert 4.5 <= time.monotonic() - started < 20.0
    finally:
        reader.kill()
        reader.wait()


def test_an_empty_write_is_nothing_to_do(engines):
    writer, _, readers, _ = engines
    assert writer.write_all([Write(readers[0].session_id, [], [], [])]) == [None]



def test_a_write_running_well_past_its_expected_time_calls_on_slow_once(engines, monkeypatch):
    """The worker hands back an entry it read ahead when the write before it is slow; a write
    that keeps to its expected time never calls it."""
    writer, source, readers, targets = engines
    monkeypatch.setattr(module, "SLOW_MIN_S", 0.001)  # a 14 MB loopback copy takes several ms
    write = Write(readers[0].session_id, [source.data_ptr()], [targets[0].data_ptr()], [14 * MB])
    calls = []
    rate = writer._rate
    try:
        writer._rate = 1e13  # expects 14 MB in about a microsecond: past 1 ms is slow
        assert writer.write_all([write], on_slow=lambda: calls.append(1)) == [None]
        slow_took = len(calls)
        writer._rate = 1e6  # expects 14 s: a loopback copy keeps well within it
        calls.clear()
        assert writer.write_all([write], on_slow=lambda: calls.append(1)) == [None]
    finally:
        writer._rate = rate
    assert torch.equal(targets[0][:14 * MB], source[:14 * MB])
    assert slow_took == 1 and calls == []
