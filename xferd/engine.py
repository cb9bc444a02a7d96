"""The Mooncake Transfer Engine, wrapped: one per process, writes raise on failure."""
from __future__ import annotations

import contextlib
import importlib.metadata
import os
import tempfile
import time

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

    def register(self, ptr: int, length: int) -> None:
        rc = self._engine.register_memory(ptr, length)
        if rc != 0:
            raise RuntimeError(f"Mooncake register_memory({length} bytes) returned {rc}")

    def write(self, session_id: str, src: list[int], dst: list[int], lengths: list[int]) -> None:
        if not src:
            return
        started = time.monotonic()
        rc = self._engine.batch_transfer_sync_write(session_id, src, dst, lengths)
        if rc != 0 and time.monotonic() - started < FAST_FAILURE_S:
            # a connection the peer closed (after refusing an earlier write, or restarting)
            # fails at once, and Mooncake connects anew on the next call: try once more. The
            # same bytes to the same place, under the same hold: writing them twice is harmless
            rc = self._engine.batch_transfer_sync_write(session_id, src, dst, lengths)
        if rc != 0:
            # rc is -1 for every cause; the time tells a dead peer (fast) from Mooncake's limit
            # on one synchronous batch: MC_TRANSFER_TIMEOUT (30 s by default) + 1 s per GiB
            raise WriteError(f"Mooncake write of {len(src)} entries ({sum(lengths)} bytes) "
                             f"to {session_id} failed (rc={rc}) after {time.monotonic() - started:.1f} s")


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
