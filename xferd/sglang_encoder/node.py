"""The encoder process's handle on its xferd node, shared by the scheduler's buffers,
allocator, manager and senders: one per process (each TP rank is a process).

It holds the node's Sender (Redis, the shared-memory source pool, the status pushes), keeps
the leases of the allocations the scheduler still writes into, and answers room statuses
from one pipelined read per refresh for every room this process watches, so the
scheduler's per-request ``poll()`` loop costs Redis one round trip a millisecond at most.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time

import redis

from ..connections import connect
from ..sender import NodeNotFound, Sender
from ..settings import ConfigError, Settings
from ..status import Status
from ..store import Store

log = logging.getLogger("xferd.sglang_encoder")
STATUS_REFRESH_S = 0.001  # a poll loop sees a room's new status this late at most
REDIS_PATIENCE_S = 5.0  # at start: Redis unreachable this long is a configuration error
LEASE_MARGIN = 0.25  # the encoder stops writing into blocks this share of a lease before it runs out


def fatal(message: str) -> None:
    """A configuration that cannot work: one line, non-zero exit (from a scheduler child
    too: SGLang's launcher sees the child exit)."""
    sys.stderr.write(f"xferd sglang-encoder: {message}\n")
    sys.stderr.flush()
    os._exit(2)


def describe_redis(settings: Settings) -> str:
    return (settings.redis_url or "redis://127.0.0.1:6379").split("@")[-1]


def open_sender(settings: Settings) -> Sender:
    """The node's Sender, or a fatal one-line error saying what is missing."""
    try:
        return Sender(settings, Store(connect(settings.redis_url), settings, direct=True),
                      redis_patience=REDIS_PATIENCE_S)
    except NodeNotFound as error:
        fatal(str(error))
    except Exception as error:  # noqa: BLE001 - any Redis/OS failure at start is the operator's to fix
        fatal(f"the node's Redis at {describe_redis(settings)} does not answer "
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
        self.settings, self.sender, self.store = settings, sender, sender.store
        self.record = sender.store.record()
        self.engine_rank, self.tp_size = 0, 1  # the manager says (one manager per scheduler)
        self.lease_ms = int(settings.lease * 1000)
        self._requests: dict[tuple[int, ...], str] = {}  # blocks -> request id, while allocated
        self._rooms: dict[str, int] = {}  # request id -> room, once bound
        self._held: set[str] = set()  # allocation holders this process renews: rooms and req:<rid>
        self._lost: set[str] = set()
        self._renewed_at = time.monotonic()
        self._statuses: dict[int, tuple[Status | None, str | None]] = {}
        self._watched: set[int] = set()
        self._refreshed_at = 0.0
        self._guard = threading.Lock()
        threading.Thread(target=self._keep_leases, name="xferd-leases", daemon=True).start()

    # ---- which rank writes: every TP rank computes the same embeddings; one copy is written
    @property
    def writes(self) -> bool:
        return self.engine_rank == 0

    # ---- a request's allocation: taken by the allocator, bound to its room by the sender
    def allocated(self, request: str, blocks: list[int]) -> None:
        with self._guard:
            self._requests[tuple(blocks)] = request
        self.hold(f"req:{request}")

    def bind(self, blocks: list[int], room: int) -> None:
        """The allocation of ``blocks`` is ``room``'s now (its lease renewed until published)."""
        with self._guard:
            request = self._requests.get(tuple(blocks))
        if request is None:
            raise ValueError(f"room {room}: blocks {blocks[:8]} were not allocated by this process's allocator")
        self.store.bind_request(request, room, self.lease_ms)
        with self._guard:
            self._rooms[request] = room
        self.hold(str(room))
        self.let_go(f"req:{request}")

    def free_request(self, request: str) -> None:
        """The scheduler is done with the request's blocks: what never became a room's goes
        back now, an ended room's too; a live room's go back when xferd ends it (never while
        a write may read them)."""
        with self._guard:
            room = self._rooms.pop(request, None)
            for blocks in [b for b, r in self._requests.items() if r == request]:
                del self._requests[blocks]
        self.let_go(f"req:{request}")
        self.store.release_request(request)
        if room is not None:
            self.let_go(str(room))
            try:
                self.store.release_blocks(room)
            except redis.ResponseError:
                pass  # live, or a write in flight: the room's end or its lease's expiry returns them

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
        fresh = time.monotonic() - self._renewed_at < self.settings.lease * (1 - LEASE_MARGIN)
        with self._guard:
            return fresh and holder in self._held and holder not in self._lost

    def _keep_leases(self) -> None:
        while True:
            time.sleep(self.settings.lease / 5)
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

    # ---- room statuses
    def watch(self, room: int) -> None:
        with self._guard:
            self._watched.add(room)

    def forget(self, room: int) -> None:
        with self._guard:
            self._watched.discard(room)
            self._statuses.pop(room, None)

    def status(self, room: int) -> tuple[Status | None, str | None]:
        """(status, failure) of a watched room as Redis has it; None: no record yet."""
        if time.monotonic() - self._refreshed_at >= STATUS_REFRESH_S:
            self._refresh()
        with self._guard:
            return self._statuses.get(room, (None, None))

    def _refresh(self) -> None:
        with self._guard:
            rooms = sorted(self._watched)
        if not rooms:
            return
        pipe = self.store.client.pipeline(transaction=False)
        for room in rooms:
            pipe.hmget(self.store.keys.room(room), "status", "failure")
        try:
            replies = pipe.execute()
        except Exception as error:  # noqa: BLE001 - keep the last known statuses; the next poll asks again
            log.warning("could not read %d room statuses: %s", len(rooms), error)
            return
        statuses = {}
        for room, (status, failure) in zip(rooms, replies):
            statuses[room] = (None if status is None else Status(int(status)),
                              None if failure is None else failure.decode() if isinstance(failure, bytes) else failure)
        with self._guard:
            for room, value in statuses.items():
                if room in self._watched:
                    self._statuses[room] = value
            self._refreshed_at = time.monotonic()
