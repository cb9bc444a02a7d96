"""The Mooncake Transfer Engine, wrapped: one per process, writes raise on failure."""
from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.metadata
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass

log = logging.getLogger("xferd.engine")
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
            why = "" if rc == 0 else (captured.seek(0), captured.read()[-2000:])[1]  # before the with closes it
        if rc != 0:
            raise RuntimeError(f"Mooncake initialize({hostname}, {metadata}, {protocol}) returned {rc}: {why}")
        self.session_id = f"{hostname}:{self._engine.get_rpc_port()}"
        self._rate = 1e9  # bytes/s the writes of this engine moved lately
        self._registrations: dict[str, str] = {}  # peer session -> its registration this engine wrote to
        self._registrations_lock = threading.Lock()

    @property
    def mooncake(self):
        """Mooncake's own TransferEngine, for what this wrapper does not offer."""
        return self._engine

    def register(self, ptr: int, length: int) -> None:
        rc = self._engine.register_memory(ptr, length)
        if rc != 0:
            raise RuntimeError(f"Mooncake register_memory({length} bytes) returned {rc}")

    def refresh(self, session_id: str, why: str = "") -> bool:
        """Ask the peer again for what Mooncake caches of it (its data port, its buffers and
        their keys) and replace the cache: a peer restarted under the same session id is
        written to at once instead of at the addresses of the process that died. One
        metadata exchange (~0.3 ms on loopback). False where this Mooncake cannot."""
        sync = _sync_segment_function()
        if sync is None or not hasattr(self._engine, "get_engine_ptr"):
            _warn_no_refresh()
            return False
        name = session_id.encode()
        text = ctypes.create_string_buffer(name)
        rc = sync(self._engine.get_engine_ptr(), ctypes.byref(_StdString(ctypes.addressof(text), len(name), len(name))))
        if rc != 0:
            log.warning("could not refresh Mooncake's record of peer %s (rc=%s): it may be gone", session_id, rc)
        else:
            log.info("refreshed Mooncake's record of peer %s (%s)", session_id, why or "asked")
        return rc == 0

    def _meet(self, writes: list["Write"]) -> None:
        """A peer that registered again since this engine last wrote to it may be a new
        process under the same session id: refresh what Mooncake caches of it first."""
        stale = []
        with self._registrations_lock:
            for w in writes:
                if w.registration:
                    before = self._registrations.get(w.session_id)
                    self._registrations[w.session_id] = w.registration
                    if before is not None and before != w.registration:
                        stale.append(w.session_id)
        for session_id in dict.fromkeys(stale):
            self.refresh(session_id, "it registered again")

    def write(self, session_id: str, src: list[int], dst: list[int], lengths: list[int]) -> None:
        """One batch of entries to one destination; WriteError if it fails."""
        error = self.write_all([Write(session_id, src, dst, lengths)])[0]
        if error is not None:
            raise error

    def write_all(self, writes: list["Write"], on_slow=None) -> list[WriteError | None]:
        """Submit every write at once (Mooncake moves them side by side: the destinations of
        a multi-rank room in parallel), then wait for all of them. Returns, per write, None
        or its WriteError; returns only once every entry of every write completed or failed.

        ``batch_transfer_sync_write`` (and ``get_batch_transfer_status``) spin on the batch
        status for the whole copy, burning a core the copy itself needs: on two cores, sync
        writes from 8 threads move a fifth of what they move this way. Here each entry is
        submitted as a batch of its own, the thread sleeps for most of the time the writes
        should take at the rate seen lately, then polls, yielding the core between polls
        near the expected end and sleeping past it. One entry a batch because
        ``transfer_check_status`` reports on a batch's first entry only (Mooncake 0.3.13:
        a batch of a 64-byte entry and a 200 MB one reads complete once the 64 bytes are).
        ``on_slow``: called once, from this thread, if the writes run well past the time
        expected of them (a stalled or slow destination)."""
        self._meet(writes)
        entries = [_Entry(w, i) for w in writes for i in range(len(w.src))]
        for entry in entries:
            entry.submit(self._engine)
        size = sum(sum(w.lengths) for w in writes)
        started = time.monotonic()
        expected = size / self._rate
        # around the expected end the thread only yields between polls: a sleep here lasts
        # 60-100 us however short it is asked to be, longer than the rest of a small copy
        yield_until = started + min(YIELD_MAX_S, expected * 1.5)
        slow_at = started + max(SLOW_MIN_S, SLOW_FACTOR * expected) if on_slow else float("inf")
        if entries:
            time.sleep(min(FIRST_POLL_MAX_S, EXPECTED_SHARE * expected))
        errors: dict[int, WriteError] = {}
        refreshed: set[str] = set()
        pending, polls = entries, 0
        while pending:
            polls += 1
            still = []
            for entry in pending:
                state = self._engine.transfer_check_status(entry.batch) if entry.batch else -1
                if state == 1:
                    continue
                overdue = time.monotonic() > entry.deadline
                if state == -1 or overdue:
                    if state == -1 and not entry.retried and time.monotonic() - entry.started < FAST_FAILURE_S:
                        # a connection the peer closed (after refusing an earlier write, or
                        # restarting) fails at once, and Mooncake connects anew on the next
                        # submit; a restarted peer listens elsewhere, so what Mooncake knows
                        # of it is refreshed first (once a write): try once more. The same
                        # bytes to the same place, under the same hold: writing them twice
                        # is harmless
                        if entry.write.session_id not in refreshed:
                            refreshed.add(entry.write.session_id)
                            self.refresh(entry.write.session_id, "a write to it failed")
                        entry.retried = True
                        entry.submit(self._engine)
                        still.append(entry)
                    else:  # the write's other entries are still waited for
                        errors.setdefault(id(entry.write), entry.error(overdue))
                    continue
                still.append(entry)  # 0 pending; -2: a slice timed out and is tried again
            pending = still
            if pending:  # short writes are polled finely, long ones coarsely (<= 5% late)
                now = time.monotonic()
                if now > slow_at:
                    slow_at = float("inf")
                    on_slow()
                if now < yield_until:
                    os.sched_yield()
                else:
                    time.sleep(min(POLL_MAX_S, max(POLL_MIN_S, (now - started) / 20)))
        if entries and not errors:  # learn the rate from writes that succeeded
            if polls == 1:
                # done by the first poll: the sleep may have outlasted the copy by any amount,
                # so the time says nothing of the rate; expect a little less next time
                self._rate *= OVERSLEPT_GAIN
            else:  # it ended between the last two polls, which are close together
                self._rate = 0.8 * self._rate + 0.2 * size / max(time.monotonic() - started, 1e-6)
        return [errors.get(id(w)) for w in writes]


EXPECTED_SHARE = 0.85  # of the writes' expected time slept before the first poll
OVERSLEPT_GAIN = 1.1  # the rate expected next, after a write that was done by the first poll
YIELD_MAX_S = 0.002  # the longest a write is polled without sleeping
SLOW_FACTOR, SLOW_MIN_S = 4, 0.02  # writes running past both are slow (on_slow)
FIRST_POLL_MAX_S = 0.05
POLL_MIN_S, POLL_MAX_S = 0.0001, 0.002


def _timeout_s(length: int) -> float:
    """Mooncake's own limit on a synchronous batch: MC_TRANSFER_TIMEOUT (at least 5 s, 30 s
    by default) plus a second per GB."""
    try:
        base = max(5, int(os.environ.get("MC_TRANSFER_TIMEOUT", "30")))
    except ValueError:
        base = 30
    return base + length / 1e9


@dataclass(frozen=True)
class Write:
    """One batch of Mooncake entries to one destination session."""

    session_id: str
    src: list[int]
    dst: list[int]
    lengths: list[int]
    registration: str = ""  # the peer's registration, when known: a new one is refreshed first


@dataclass(eq=False)
class _Entry:
    """One entry of a write, submitted as a Mooncake batch of its own."""

    write: Write
    index: int
    batch: int = 0  # Mooncake's batch id; 0: the submit failed
    started: float = 0.0
    deadline: float = 0.0  # when it counts as stalled (Mooncake's limit)
    retried: bool = False

    @property
    def length(self) -> int:
        return self.write.lengths[self.index]

    def submit(self, engine) -> None:
        w, i = self.write, self.index
        self.started = time.monotonic()
        self.deadline = self.started + _timeout_s(self.length)
        self.batch = engine.batch_transfer_async_write(w.session_id, [w.src[i]], [w.dst[i]], [w.lengths[i]])

    def error(self, overdue: bool) -> WriteError:
        w = self.write
        why = "could not be submitted" if not self.batch else (
            f"did not complete within {self.deadline - self.started:.0f} s" if overdue else "failed")
        # the state is -1 for every cause; the time tells a dead peer (fast) from a stall
        return WriteError(f"Mooncake write of {len(w.src)} entries ({sum(w.lengths)} bytes) to {w.session_id}: "
                          f"entry {self.index} ({self.length} bytes) {why} after "
                          f"{time.monotonic() - self.started:.1f} s")


# TransferEngine::syncSegmentCache(const std::string&), public in Mooncake's C++ API (not in
# its Python binding): refreshes the cached descriptor of one peer segment in place
_SYNC_SEGMENT = "_ZN8mooncake14TransferEngine16syncSegmentCacheERKNSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEE"


class _StdString(ctypes.Structure):
    """libstdc++'s std::string (C++11 ABI, 64-bit): data pointer, length, capacity (or an
    inline buffer). The callee only reads it, so it may point at memory Python owns."""
    _fields_ = [("data", ctypes.c_void_p), ("size", ctypes.c_size_t), ("capacity", ctypes.c_size_t),
                ("_inline_tail", ctypes.c_size_t)]


@functools.cache
def _sync_segment_function():
    from mooncake import engine
    try:
        sync = getattr(ctypes.CDLL(engine.__file__), _SYNC_SEGMENT)
    except (OSError, AttributeError):
        return None
    sync.argtypes, sync.restype = [ctypes.c_void_p, ctypes.POINTER(_StdString)], ctypes.c_int
    return sync


@functools.cache
def _warn_no_refresh() -> None:
    log.warning("this Mooncake build cannot refresh what it caches of a peer: a destination restarted "
                "under the same session id cannot be written to until it registers under a new one")


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
