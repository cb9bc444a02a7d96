"""The encoder process's handle on its xferd node, shared by the scheduler's buffers,
allocator, manager and senders: one per process (each TP rank is a process).

It holds the node's Sender (Redis, the shared-memory source pool, the status pushes), keeps
the leases of the allocations the scheduler still writes into, and answers room statuses
from memory, kept current by one thread blocked on the node's status stream, so the
scheduler's per-request ``poll()`` loop costs Redis nothing.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time

import redis

from xferd.state.connections import DEFAULT_REDIS_URL, connect, describe, redact
from xferd.client.sender import NodeNotFound, Sender
from xferd.settings import ConfigError, Settings
from xferd.protocol.status import Status
from xferd.state.store import Store
from xferd.sglang_encoder.background import Background, Future

log = logging.getLogger("xferd.sglang_encoder")
STATUS_BLOCK_MS = 1000  # one blocking read of the status stream waits this long at most
STATUS_BATCH = 1000  # status changes taken from the stream in one read at most
STATUS_RESYNC_S = 1.0  # every watched room's status is read again this often (a stream trimmed past us)
STATUS_RETRY_S = 0.1  # Redis away: the status stream is read again this often
REDIS_PATIENCE_S = 5.0  # at start: Redis unreachable this long is a configuration error
TROUBLE_LOG_S = 10.0  # Redis trouble the scheduler rides out is logged this often at most
LEASE_MARGIN = 0.25  # the encoder stops writing into blocks this share of a lease before it runs out


def fatal(message: str) -> None:
    """A configuration that cannot work: one line, non-zero exit (from a scheduler child
    too: SGLang's launcher sees the child exit)."""
    sys.stderr.write(f"xferd sglang-encoder: {message}\n")
    sys.stderr.flush()
    os._exit(2)


def open_sender(settings: Settings) -> Sender:
    """The node's Sender, or a fatal one-line error saying what is missing."""
    try:
        return Sender(settings, Store(connect(settings.redis_url, probe_patience_s=REDIS_PATIENCE_S), settings,
                                      direct=True),
                      redis_patience=REDIS_PATIENCE_S)
    except NodeNotFound as error:
        fatal(str(error))
    except Exception as error:  # noqa: BLE001 - any Redis/OS failure at start is the operator's to fix
        fatal(f"the node's Redis at {redact(settings.redis_url or DEFAULT_REDIS_URL)} does not answer "
              f"({type(error).__name__}: {error}); is it running, and XFERD_REDIS_URL right?")
    raise AssertionError("unreachable")


class EncoderNode:
    _instance: "EncoderNode | None" = None
    _lock = threading.Lock()

    @classmethod
    def get(cls) -> "EncoderNode":
        with cls._lock:
            if cls._instance is None or cls._instance.pid != os.getpid():
                try:
                    settings = Settings.from_env()
                except ConfigError as error:
                    fatal(str(error))
                cls._instance = cls(settings, open_sender(settings))
            return cls._instance

    def __init__(self, settings: Settings, sender: Sender):
        self.pid = os.getpid()
        # one try per call: each caller here has its own answer to Redis trouble (the
        # scheduler's allocator says "no room now", the loops try again)
        self.settings, self.sender, self.store = settings, sender, sender.store.once()
        self.record = sender.store.record()
        self.engine_rank, self.tp_size = 0, 1  # the manager says (one manager per scheduler)
        self.lease_ms = int(self.record.get("lease_ms") or settings.lease * 1000)  # the node's lease
        self._requests: dict[tuple[int, ...], str] = {}  # blocks -> request id, while allocated
        self._rooms: dict[str, int] = {}  # request id -> room, once bound
        self._held: set[str] = set()  # allocation holders this process renews: rooms and req:<rid>
        self._lost: set[str] = set()
        self._renewed_at = time.monotonic()
        self._statuses: dict[int, tuple[Status | None, str | None]] = {}
        self._watched: set[int] = set()
        self._guard = threading.Lock()
        self._trouble_logged_at = -TROUBLE_LOG_S
        self.background = Background("xferd-calls")
        self._closed = threading.Event()
        threading.Thread(target=self._keep_leases, name="xferd-leases", daemon=True).start()
        threading.Thread(target=self._follow_statuses, name="xferd-statuses", daemon=True).start()

    # ---- which rank writes: every TP rank computes the same embeddings; one copy is written
    @property
    def writes(self) -> bool:
        return self.engine_rank == 0

    # ---- a request's allocation: taken by the allocator, bound to its room by the sender
    def allocated(self, request: str, blocks: list[int]) -> None:
        with self._guard:
            self._requests[tuple(blocks)] = request
        self.hold(f"req:{request}")

    def bind(self, blocks: list[int], room: int) -> Future:
        """The allocation of ``blocks`` becomes ``room``'s (its lease renewed until published),
        in the background: the future is done once it is, or holds why not."""
        with self._guard:
            request = self._requests.get(tuple(blocks))
        if request is None:
            raise ValueError(f"room {room}: blocks {blocks[:8]} were not allocated by this process's allocator")

        def bind() -> None:
            self.sender.store.bind_request(request, room, self.lease_ms)  # the sender's patience
            with self._guard:
                self._rooms[request] = room
            self.hold(str(room))
            self.let_go(f"req:{request}")
        return self.background.submit(bind, f"binding room {room}'s source blocks")

    def free_request(self, request: str) -> None:
        """The scheduler is done with the request's blocks: what never became a room's goes
        back (in the background), an ended room's too; a live room's go back when xferd ends
        it (never while a write may read them)."""
        with self._guard:
            for blocks in [b for b, r in self._requests.items() if r == request]:
                del self._requests[blocks]

        def free() -> None:
            with self._guard:
                room = self._rooms.pop(request, None)
            self.let_go(f"req:{request}")
            self.store.release_request(request)
            if room is not None:
                self.let_go(str(room))
                try:
                    self.store.release_blocks(room)
                except redis.ResponseError:
                    pass  # live, or a write in flight: the room's end or its lease's expiry returns them
        self.background.submit(free, f"giving back request {request}'s source blocks")

    def redis_trouble(self, what: str, error: BaseException) -> None:
        """A call the scheduler cannot wait out failed on Redis: say so, at most every
        ``TROUBLE_LOG_S``."""
        if time.monotonic() - self._trouble_logged_at >= TROUBLE_LOG_S:
            self._trouble_logged_at = time.monotonic()
            log.warning("could not %s: Redis %s; trying again", what, describe(error))

    # ---- leases of unpublished allocations
    def hold(self, holder: str) -> None:
        with self._guard:
            self._held.add(holder)
            self._lost.discard(holder)

    def let_go(self, holder: str) -> None:
        with self._guard:
            self._held.discard(holder)
            self._lost.discard(holder)

    def may_write(self, holder: str) -> bool:
        """Whether the blocks of ``holder`` are still this process's to write into: its lease
        is held and was renewed recently enough that it cannot have run out meanwhile."""
        fresh = time.monotonic() - self._renewed_at < self.lease_ms / 1000 * (1 - LEASE_MARGIN)
        with self._guard:
            return fresh and holder in self._held and holder not in self._lost

    def close(self) -> None:
        """Stop renewing leases and following statuses (the process's node lives as long as
        the process; tests make several)."""
        self._closed.set()

    def _keep_leases(self) -> None:
        while not self._closed.wait(self.lease_ms / 5000):
            with self._guard:
                holders = sorted(self._held)
            started = time.monotonic()
            try:
                gone = self.store.keep_allocations(holders, self.lease_ms)
            except Exception as error:  # noqa: BLE001 - Redis away: writes stop once the lease may be gone
                log.warning("could not renew %d source block leases: %s", len(holders), error)
                continue
            with self._guard:
                lost = [g for g in gone if g in self._held]  # not let go meanwhile (published, freed)
                self._lost.update(lost)
                self._renewed_at = started
            if lost:
                log.error("leases of %s ran out: the encoder writes no more into their blocks", ", ".join(lost[:10]))

    # ---- room statuses: one read when a room is first watched, then the node's status
    # stream (a blocking read: a change is seen one round trip after it happened, and an
    # idle encoder costs Redis nothing), and a full read now and then in case the stream was
    # trimmed past this process or its connection dropped.
    def watch(self, room: int) -> None:
        """Keep ``room``'s status (it is unknown, None, until the first read)."""
        with self._guard:
            self._watched.add(room)

        def first_read() -> None:
            self._learn(room, *self.store.room_statuses([room])[0])
        self.background.submit(first_read, f"reading room {room}'s status")  # the next full read catches up

    def forget(self, room: int) -> None:
        with self._guard:
            self._watched.discard(room)
            self._statuses.pop(room, None)

    def status(self, room: int) -> tuple[Status | None, str | None]:
        """(status, failure) of a watched room as Redis has it; None: no record yet."""
        with self._guard:
            return self._statuses.get(room, (None, None))

    def _learn(self, room: int, status, failure=None) -> None:
        """A status of ``room`` seen in Redis, in any order with the others: statuses only
        move forward, except that Failed overrides everything."""
        if status is None:
            return
        new = Status(int(status))
        reason = failure.decode() if isinstance(failure, bytes) else failure
        with self._guard:
            if room not in self._watched:
                return
            old, known = self._statuses.get(room, (None, None))
            if old == Status.Failed:
                if new == Status.Failed and reason and not known:
                    self._statuses[room] = (new, reason)  # the stream says Failed, the record why
            elif old is None or new == Status.Failed or new > old:
                self._statuses[room] = (new, reason)

    def _follow_statuses(self) -> None:
        cursor, synced_at, trouble = None, time.monotonic(), False
        while not self._closed.is_set():
            try:
                if cursor is None:  # start at the stream's end: what came before is read per room
                    cursor = self.store.statuses_end()
                if trouble or time.monotonic() - synced_at >= STATUS_RESYNC_S:
                    self._read_all()
                    synced_at, trouble = time.monotonic(), False
                changes = self.store.read_statuses(cursor, STATUS_BATCH, STATUS_BLOCK_MS)
            except Exception as error:  # noqa: BLE001 - Redis away: keep the last statuses, read all when back
                if not trouble:
                    log.warning("lost the node's status stream (%s: %s); reading again", type(error).__name__, error)
                trouble = True
                self._closed.wait(STATUS_RETRY_S)
                continue
            for cursor, room, status in changes:
                self._learn(room, status)

    def _read_all(self) -> None:
        """Every watched room's status, in one pipelined read."""
        with self._guard:
            rooms = sorted(self._watched)
        if not rooms:
            return
        for room, (status, failure) in zip(rooms, self.store.room_statuses(rooms)):
            self._learn(room, status, failure)
