"""Language-side API: a destination pool, its Mooncake engine and the wire protocol.

    receiver = Receiver(settings.ingress_endpoint, layout, num_blocks, store=store)
    receiver.register()
    receiver.init(room, dst_blocks, allocated_tokens, required_dst_info_num)
    receiver.wait(room)          # Transferring (partial) / Success / Failed
    receiver.resume(room, more_blocks, sent_tokens, allocated_tokens)

Statuses arrive over ZMQ; when none arrives for ``fallback_after`` seconds the Receiver
reads the room from Redis (if given a Store), so a lost notification never hangs a request.
Failed is the drain acknowledgment: once it arrives no write into the room's blocks is in
flight and they may be reused (the fallback waits for the same).
A message lost on the way in (the ingress killed with it queued) is sent again after
``resend_after`` quiet seconds: init and resume are idempotent, and a register is
repeated only when Redis has no record of the session.
"""
from __future__ import annotations

import threading
import time
from typing import Sequence

import zmq

from xferd.node.auth import secure_client
from xferd.state.connections import TRANSIENT
from xferd.transfer.engine import Engine
from xferd.protocol.layout import Layout
from xferd.transfer.pool import DestPool
from xferd.protocol.status import Status, merge
from xferd.state.store import Store
from xferd.protocol.wire import WireError, decode_status, encode_abort, encode_init, encode_register, encode_resume

ROUND_OVER = (Status.Transferring, Status.Success, Status.Failed)


class IngressUnreachable(ConnectionError):
    """A message could not be handed to the ingress within ``send_timeout``."""


class Receiver:
    def __init__(self, ingress: str, layout: Layout, num_blocks: int, host: str = "127.0.0.1",
                 store: Store | None = None, send_lens: bool = True, fallback_after: float = 1.0,
                 resend_after: float = 5.0, context: zmq.Context | None = None,
                 curve: tuple[str, str] | None = None, guard_bytes: int = 0, send_timeout: float = 5.0):
        """``curve``: (this peer's secret key file, the ingress's public key file) when the
        ingress requires CurveZMQ. ``guard_bytes``: guard regions around each destination
        buffer (see ``DestPool``). ``send_timeout``: how long a message may wait for a
        connection to the ingress before IngressUnreachable is raised."""
        self.layout = layout
        self.host = host
        self.store = store
        self.send_lens = send_lens
        self.fallback_after = fallback_after
        self.resend_after = resend_after
        self.ingress, self.send_timeout = ingress, send_timeout
        self.pool = DestPool(layout, num_blocks, guard_bytes)
        self.engine = Engine(host)
        for pointer, length in self.pool.regions:
            self.engine.register(pointer, length)
        self.session_id = self.engine.session_id
        self.context = context or zmq.Context.instance()
        self._pull = self.context.socket(zmq.PULL)
        self._pull.setsockopt(zmq.LINGER, 0)
        self.status_port = self._pull.bind_to_random_port(f"tcp://{host}")
        self._push = self.context.socket(zmq.PUSH)
        self._push.setsockopt(zmq.LINGER, 2000)
        # libzmq queues a message while the connection is being made, but blocks the send
        # when there is none (between a refused handshake, e.g. a key the ingress does not
        # allow, and the next reconnect): never forever
        self._push.setsockopt(zmq.SNDTIMEO, int(send_timeout * 1000))
        if curve is not None:
            secure_client(self._push, *curve)
        self._push.connect(ingress)
        self._push_lock = threading.Lock()
        self._cond = threading.Condition()
        self._status: dict[int, Status] = {}
        self._rounds: dict[int, int] = {}  # the round each room waits for
        self._owed: dict[int, int] = {}  # partial rounds Redis told of whose push may still come
        self._required: dict[int, int] = {}
        self._since: dict[int, float] = {}  # when the current round began waiting
        self._last: dict[int, tuple[float, list[bytes]]] = {}  # room -> (sent at, message)
        self.resent = 0
        self.history: dict[int, list[Status]] = {}  # every status received, in order
        self.notifications = 0
        self.fallbacks = 0
        self._closing = False
        self._thread = threading.Thread(target=self._listen, name="xferd-receiver", daemon=True)
        self._thread.start()

    # ---- status
    def _listen(self) -> None:
        poller = zmq.Poller()
        poller.register(self._pull, zmq.POLLIN)
        while not self._closing:
            if not poller.poll(100):
                continue
            try:
                room, status = decode_status(self._pull.recv_multipart())
            except WireError:
                continue
            with self._cond:
                self.notifications += 1
                if room not in self._status:  # statuses of rooms we do not track are dropped
                    continue
                self.history.setdefault(room, []).append(status)
                if status == Status.Transferring and self._owed.get(room):
                    # A status names no round. Redis told of an earlier round before its push
                    # came, so this push is either that round's, late, or the current one's:
                    # ask Redis at the next poll rather than take it for the current round.
                    self._owed[room] -= 1
                    self._since[room] = float("-inf")
                else:
                    self._status[room] = merge(self._status[room], status)
                self._cond.notify_all()

    def poll(self, room: int) -> Status:
        """The room's status for its current round; reads Redis when ZMQ has been silent
        for ``fallback_after`` seconds."""
        with self._cond:
            status = self._status.get(room, Status.Bootstrapping)
            quiet_since = self._since.get(room)
        if (status in ROUND_OVER or self.store is None or quiet_since is None
                or time.monotonic() - quiet_since < self.fallback_after):
            return status
        self._fallback(room)
        with self._cond:
            self._since[room] = time.monotonic()
            return self._status.get(room, Status.Bootstrapping)

    def wait(self, room: int, timeout: float = 60.0) -> Status:
        """Wait until the current round ends: Transferring (partial), Success or Failed."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.poll(room)
            left = deadline - time.monotonic()
            if status in ROUND_OVER or left <= 0:
                return status
            with self._cond:
                if self._status.get(room) not in ROUND_OVER:
                    self._cond.wait(min(left, self.fallback_after / 4))

    def _fallback(self, room: int) -> None:
        try:
            record = self.store.room_fields(room, "status", "round", "holder")
            self._maybe_resend(room, record[0])
        except TRANSIENT:
            return  # Redis is down: keep waiting on ZMQ, try again at the next poll
        if record[0] is None:
            return
        status, committed = Status(int(record[0])), int(record[1] or 0)
        if status == Status.Failed and record[2] is not None:
            return  # a write into this room's blocks is still in flight: Failed is not due yet
        with self._cond:
            expected = self._rounds.get(room, 1)
            if status.terminal or (status == Status.Transferring and committed >= expected):
                self.fallbacks += 1
                self._status[room] = merge(self._status.get(room), status)
                if status == Status.Transferring:
                    self._owed[room] = self._owed.get(room, 0) + 1

    def _maybe_resend(self, room: int, recorded_status) -> None:
        with self._cond:
            sent_at, frames = self._last.get(room, (None, None))
            if frames is None or time.monotonic() - sent_at < self.resend_after:
                return
            self._last[room] = (time.monotonic(), frames)
        if recorded_status is not None and Status(int(recorded_status)).terminal:
            return
        if self.store.session_owner(self.session_id) is None:  # Redis has no record of it
            self.register()
        self.resent += 1
        self._send(frames)

    def failure(self, room: int) -> str | None:
        if self.store is None:
            return None
        try:
            return self.store.failure(room)
        except TRANSIENT:
            return None

    # ---- messages
    def _send(self, frames: list[bytes]) -> None:
        with self._push_lock:
            try:
                self._push.send_multipart(frames)
            except zmq.Again:
                raise IngressUnreachable(
                    f"the ingress at {self.ingress} took no message for {self.send_timeout:g}s: it is "
                    "down, unreachable, or refused this peer (CurveZMQ keys)") from None

    def register(self) -> None:
        ptrs = [t.data_ptr() for t in self.pool.buffers]
        self._send(encode_register(self.host, self.status_port, self.session_id, ptrs,
                                   self.pool.lens if self.send_lens else None))

    def init(self, room: int, dst_indices: Sequence[int], allocated_tokens: int | None = None,
             required_dst_info_num: int = 1) -> None:
        if allocated_tokens is None:
            allocated_tokens = len(dst_indices) * self.layout.block_size
        with self._cond:
            self._status[room] = Status.WaitingForInput
            self._rounds[room] = 1
            self._owed[room] = 0
            self._since[room] = time.monotonic()
            self._required[room] = required_dst_info_num
        self._send_for(room, encode_init(room, self.host, self.status_port, self.session_id,
                                         dst_indices, required_dst_info_num, allocated_tokens))

    def resume(self, room: int, dst_indices: Sequence[int], sent_tokens: int, allocated_tokens: int) -> None:
        with self._cond:
            # the Receiver's view of the *current round* starts again
            self._status[room] = Status.WaitingForInput
            self._rounds[room] = self._rounds.get(room, 1) + 1
            self._since[room] = time.monotonic()
            required = self._required.get(room, 1)
        self._send_for(room, encode_resume(room, self.host, self.status_port, self.session_id,
                                           dst_indices, required, sent_tokens, allocated_tokens))

    def _send_for(self, room: int, frames: list[bytes]) -> None:
        with self._cond:
            self._last[room] = (time.monotonic(), frames)
        self._send(frames)

    def abort(self, room: int) -> None:
        self._send(encode_abort(room, self.session_id))

    def forget(self, room: int) -> None:
        with self._cond:
            self._status.pop(room, None)
            self._rounds.pop(room, None)
            self._owed.pop(room, None)
            self._required.pop(room, None)
            self._since.pop(room, None)
            self._last.pop(room, None)
            self.history.pop(room, None)

    def close(self) -> None:
        self._closing = True
        self._thread.join(timeout=1)
        self._pull.close(0)
        self._push.close(2000)
