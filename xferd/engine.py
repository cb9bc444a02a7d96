"""The Mooncake Transfer Engine, wrapped: one per process, writes raise on failure."""
from __future__ import annotations

import contextlib
import importlib.metadata
import os
import tempfile
import time
from dataclasses import dataclass

FAST_FAILURE_S = 1.0  # a write failing sooner met a closed connection or a dead peer, not a timeout
MIN_VERSION = (0, 3, 12)  # earlier TCP builds reported writes complete before they landed
DISTRIBUTIONS = ("mooncake-transfer-engine", "mooncake-transfer-engine-non-cuda")


class WriteError(RuntimeError):
    pass


def _version() -> tuple[int, ...] | None:
    for name in DISTRIBUTIONS:
        try:
            text = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        return tuple(int(p) for p in text.split("+")[0].split(".")[:3] if p.isdigit())
    return None


class Engine:
    def __init__(self, hostname: str = "127.0.0.1", protocol: str = "tcp",
                 metadata: str = "P2PHANDSHAKE", device: str = ""):
        os.environ.setdefault("MC_LOG_LEVEL", "ERROR")  # Mooncake logs INFO lines per engine
        version = _version()
        if version is not None and version < MIN_VERSION:
            raise RuntimeError(f"Mooncake {version} is too old: xferd needs >= {MIN_VERSION}")
        from mooncake.engine import TransferEngine

        self._engine = TransferEngine()
        with _captured_stderr() as captured:  # P2P start-up logs a harmless "descriptor not found"
            rc = self._engine.initialize(hostname, metadata, protocol, device)
        if rc != 0:
            raise RuntimeError(f"Mooncake initialize({hostname}, {metadata}, {protocol}) returned {rc}: "
                               f"{captured.read()[-2000:]}")
        self.session_id = f"{hostname}:{self._engine.get_rpc_port()}"
        self._rate = 1e9  # bytes/s the writes of this engine moved lately

    @property
    def mooncake(self):
        """Mooncake's own TransferEngine, for what this wrapper does not offer."""
        return self._engine

    def register(self, ptr: int, length: int) -> None:
        rc = self._engine.register_memory(ptr, length)
        if rc != 0:
            raise RuntimeError(f"Mooncake register_memory({length} bytes) returned {rc}")

    def write(self, session_id: str, src: list[int], dst: list[int], lengths: list[int]) -> None:
        """One batch of entries to one destination; WriteError if it fails."""
        error = self.write_all([Write(session_id, src, dst, lengths)])[0]
        if error is not None:
            raise error

    def write_all(self, writes: list["Write"]) -> list[WriteError | None]:
        """Submit every write at once (Mooncake moves them side by side: the destinations of
        a multi-rank room in parallel), then wait for all of them. Returns, per write, None
        or its WriteError; returns only once each one completed or failed.

        ``batch_transfer_sync_write`` spins on the batch status for the whole copy, burning
        a core the copy itself needs (on two cores, sync writes from 8 threads move a fifth
        of what they move this way). Here the writes are submitted asynchronously, the
        thread sleeps for most of the time they should take at the rate seen lately, and
        only then waits in ``get_batch_transfer_status``, which spins for the rest.
        (``transfer_check_status``, the non-blocking check, is no substitute: in this
        Mooncake it reports some batches complete before their last bytes have landed.)"""
        transfers = [_Transfer(w) for w in writes if w.src]
        for transfer in transfers:
            self._submit(transfer)
        size = sum(sum(w.lengths) for w in writes)
        started = time.monotonic()
        if transfers:
            time.sleep(min(FIRST_WAIT_MAX_S, EXPECTED_SHARE * size / self._rate))
        errors: dict[int, WriteError] = {}
        for transfer in transfers:
            while not self._finished(transfer):
                if not transfer.retried and time.monotonic() - transfer.started < FAST_FAILURE_S:
                    # a connection the peer closed (after refusing an earlier write, or
                    # restarting) fails at once, and Mooncake connects anew on the next
                    # submit: try once more. The same bytes to the same place, under the
                    # same hold: writing them twice is harmless
                    transfer.retried = True
                    self._submit(transfer)
                    continue
                errors[id(transfer.write)] = transfer.error()
                break
        if transfers and not errors:  # learn the rate from writes that succeeded
            self._rate = 0.8 * self._rate + 0.2 * size / max(time.monotonic() - started, 1e-6)
        return [errors.get(id(w)) for w in writes]

    def _submit(self, transfer: "_Transfer") -> None:
        w = transfer.write
        transfer.started = time.monotonic()
        transfer.batch = self._engine.batch_transfer_async_write(w.session_id, w.src, w.dst, w.lengths)

    def _finished(self, transfer: "_Transfer") -> bool:
        """Wait until the batch ends (Mooncake's limit: MC_TRANSFER_TIMEOUT, 30 s by default,
        plus a second per GB); True if every byte landed."""
        return bool(transfer.batch) and self._engine.get_batch_transfer_status([transfer.batch]) == 0


EXPECTED_SHARE = 0.85  # of a write's expected time slept before waiting on Mooncake
FIRST_WAIT_MAX_S = 0.05


@dataclass(frozen=True)
class Write:
    """One batch of Mooncake entries to one destination session."""

    session_id: str
    src: list[int]
    dst: list[int]
    lengths: list[int]


@dataclass(eq=False)
class _Transfer:
    write: Write
    batch: int = 0  # Mooncake's batch id; 0: the submit failed
    started: float = 0.0
    retried: bool = False

    def error(self) -> WriteError:
        w = self.write
        why = "failed" if self.batch else "could not be submitted"
        # the status is -1 for every cause; the time tells a dead peer (fast) from a stall
        return WriteError(f"Mooncake write of {len(w.src)} entries ({sum(w.lengths)} bytes) to {w.session_id} "
                          f"{why} after {time.monotonic() - self.started:.1f} s")


@contextlib.contextmanager
def _captured_stderr():
    """Hold the process's fd 2 (where Mooncake's C++ logs go) in a file while it runs."""
    with tempfile.TemporaryFile(mode="w+") as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield sink
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
