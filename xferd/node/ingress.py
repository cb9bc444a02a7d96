"""Ingress process: the language side's ZMQ endpoint (docs/protocol.md).

Stateless: each message becomes one Redis state change (a Lua script, which also queues
the round when it becomes ready). A bad message fails the room it names, is logged with
the reason and counted; the ingress goes on serving every other room. A message that is
well-formed but not the sender's to send (an abort from a session that is not one of the
room's destinations; with CurveZMQ, any message for a session another peer registered) is
refused without touching the room, so that nobody can fail someone else's request.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import replace

import zmq

from xferd.node.auth import peer_of, secure_server
from xferd.state.connections import TRANSIENT, connect, describe, refusal
from xferd.state.retry import Patience, failing_for, trouble
from xferd.node.notify import Notifier
from xferd.protocol.planning import PlanError, check_allocation
from xferd.node.processes import run_service
from xferd.state.replication import NotReplicated
from xferd.settings import Settings
from xferd.protocol.status import Status
from xferd.state.store import Outcome, Store
from xferd.protocol.wire import (MAX_MESSAGE_BYTES, Abort, Init, Register, Resume, WireError, check_frame_count,
                   decode_request)

log = logging.getLogger("xferd.ingress")

# stopping: messages that already arrived are taken until the socket is quiet this long
QUIET_MS = 100
DRAIN_S = 2.0


class Ingress:
    def __init__(self, settings: Settings, context: zmq.Context | None = None):
        self.settings = settings
        self.layout = settings.buffer_layout
        # every message waits Redis out until the ingress stops; an init or resume only as
        # long as its room's phase timeout allows (``_patience``)
        self.store = Store(connect(settings.redis_url), settings, direct=True,
                           patience=Patience(stop=lambda: self.stopping))
        self.context = context or zmq.Context.instance()
        self.socket = self.context.socket(zmq.PULL)
        self.socket.setsockopt(zmq.LINGER, 0)
        # a peer sending a frame larger than any valid message is disconnected by libzmq
        self.socket.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        self.socket.setsockopt(zmq.RCVHWM, 10_000)
        self.authenticator = secure_server(self.socket, self.context, settings)
        self.socket.bind(settings.ingress)
        self.notifier = Notifier.for_settings(settings, self.context)
        self.stopping = False
        self.counts: Counter[str] = Counter()  # added to the node's stats when idle or each second
        self._counted_at = time.monotonic()

    def _patience(self, message: Init | Resume) -> float:
        """How long a message that opens a phase of its room may wait for Redis: what is left
        of that phase's timeout (bootstrap for an init, transferring for a resume) since
        Redis began failing; past it the room would fail by its deadline anyway."""
        timeout = self.settings.bootstrap_timeout if isinstance(message, Init) else self.settings.transfer_timeout
        return max(0.0, timeout - failing_for())

    def _unrecorded(self, message: Init | Resume, error: BaseException) -> None:
        """Redis did not take ``message`` within its room's timeout: nothing of it was
        recorded, so no write can target the blocks it names, and its sender is told Failed
        now rather than waiting for a status that cannot come. The room's record, if any,
        fails by its own deadline once Redis takes writes again."""
        log.error("room %s: %s not recorded: Redis %s, past the room's %s timeout; told its sender Failed",
                  message.room, type(message).__name__.lower(), describe(error),
                  "bootstrap" if isinstance(message, Init) else "transferring")
        self.counts[f"ingress_rejected:redis_{'refused' if refusal(error) else 'unreachable'}"] += 1
        self.notifier.send([f"{message.ip}:{message.status_port}"], message.room, Status.Failed)

    def receive(self, parts: list[zmq.Frame]) -> None:
        """One message as it came off the socket: one with too many frames is refused before
        anything is copied."""
        try:
            check_frame_count(len(parts))
        except WireError as error:
            self.reject(error)
            return
        # without CURVE there is no peer key to read (asking would raise, for nothing)
        peer = peer_of(parts[0]) if self.authenticator is not None else ""
        self.handle([part.bytes for part in parts], peer)

    def handle(self, frames: list[bytes], peer: str = "") -> None:
        """One message; ``peer`` is the sender's CurveZMQ public key ('' without CURVE)."""
        started = time.perf_counter()
        try:
            message = decode_request(frames)
            self.counts[f"ingress_messages:{type(message).__name__.lower()}"] += 1
            if isinstance(message, Register):
                self._register(message, peer)
                return
            if self.settings.curve:
                self._check_owner(message, peer)
            if isinstance(message, (Init, Resume)):
                try:
                    check_allocation(self.layout, message.allocated_tokens, len(message.dst_indices))
                except PlanError as error:
                    raise WireError(str(error), message.room, (message.ip, message.status_port),
                                    kind="allocation") from None
                store = self.store.with_patience(give_up_after=self._patience(message))
                change = store.dst_init if isinstance(message, Init) else store.dst_resume
                checked = time.perf_counter()
                self.counts["ingress_ms:check"] += (checked - started) * 1000  # decode and validate
                try:
                    outcome = change(message)
                except TRANSIENT as error:
                    if self.stopping:
                        raise
                    self._unrecorded(message, error)
                    return
                self.counts["ingress_ms:record"] += (time.perf_counter() - checked) * 1000  # the script
                self._report(message.room, outcome, f"{message.ip}:{message.status_port}")
                return
            if isinstance(message, Abort):
                self._check_abort(message)
                reason = f"aborted by language session {message.session_id}"
                outcome = self.store.fail_room(message.room, reason)
                self._report(message.room, outcome)
        except WireError as error:
            self.reject(error, peer)
        except NotReplicated as error:  # applied on the primary only: nothing reported of it
            log.warning("%s; nothing reported", error)

    def _register(self, message: Register, peer: str) -> None:
        if self.settings.curve:
            owner = self.store.session_owner(message.session_id)
            if owner and owner != peer:
                raise WireError(f"register for session {message.session_id}, which another peer registered",
                                kind="not_owner")
        lens = message.lens
        if lens is None and self.settings.dst_pool_blocks:
            # the reference client sends no lengths: bound it by the configured pool size
            lens = tuple(self.settings.dst_pool_blocks * b.item_len for b in self.layout.buffers)
        problem = None
        if len(message.ptrs) != len(self.layout.buffers):
            problem = (f"{len(message.ptrs)} buffer pointers, the node's layout has "
                       f"{len(self.layout.buffers)} ({self.layout.spec()})")
        elif self.settings.strict_bounds and lens is None:
            problem = ("no buffer lengths, and no dst_pool_blocks is configured; strict bounds refuse "
                       "destinations that cannot be bounds-checked")
        if problem:
            # a later init from this session fails with this reason, not as "unregistered"
            reason = f"registration refused: {problem}"
            self.store.mark_session_failed(message.session_id, reason)
            raise WireError(f"register from {message.session_id}: {problem}", kind="registration")
        self.store.register_session(replace(message, lens=lens), owner=peer)
        log.info("registered session %s%s", message.session_id, f" (peer {peer})" if peer else "")

    def _check_owner(self, message: Init | Resume | Abort, peer: str) -> None:
        owner = self.store.session_owner(message.session_id)
        if owner is not None and owner != peer:
            # not the room's fault: refuse the message, leave the room alone
            raise WireError(f"{type(message).__name__.lower()} for room {message.room} names session "
                            f"{message.session_id}, which another peer registered", kind="not_owner")

    def _check_abort(self, message: Abort) -> None:
        sessions = self.store.destinations(message.room)
        if sessions and message.session_id not in sessions:
            raise WireError(f"abort of room {message.room} from session {message.session_id}, "
                            "which is not one of its destinations", kind="not_destination")

    def _report(self, room: int, outcome: Outcome, sender: str | None = None) -> None:
        """Push the status the transition made due (Failed, once no write of the room is in
        flight; a late message for a room that succeeded gets nothing) to the room's
        destinations and the message's sender."""
        if outcome.failed:
            log.warning("room %s failed: %s%s", room, outcome.note,
                        "" if outcome.notify else " (Failed waits for the write in flight)")
        if outcome.notify:
            self.notifier.send(list(outcome.endpoints) + ([sender] if sender else []), room, outcome.status)

    def reject(self, error: WireError, peer: str = "") -> None:
        self.store.count(f"ingress_rejected:{error.kind}")
        if error.room is None:
            log.warning("rejected message: %s", error.reason)
            return
        if self.settings.curve and not self._may_fail(error.room, peer):
            log.warning("rejected message naming room %s, whose destinations belong to other peers "
                        "(room left alone): %s", error.room, error.reason)
            return
        log.warning("rejected message for room %s: %s", error.room, error.reason)
        outcome = self.store.fail_room(error.room, error.reason, failure_class="bad_input")
        self._report(error.room, outcome, f"{error.reply_to[0]}:{error.reply_to[1]}" if error.reply_to else None)

    def _may_fail(self, room: int, peer: str) -> bool:
        """With CURVE, a bad message fails a room only if its sender is one of the room's
        destinations, or the room has none yet."""
        sessions = self.store.destinations(room)
        return not sessions or any(self.store.session_owner(s) == peer for s in sessions)

    def run(self) -> None:
        log.info("ingress listening on %s", self.settings.ingress)
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        while not self.stopping:
            if not poller.poll(200):
                self._add_counts()
                continue
            self._handle(self.socket.recv_multipart(copy=False))
            if time.monotonic() - self._counted_at >= 1.0:
                self._add_counts()
        self._take_what_was_sent(poller)
        self._add_counts()
        self.close()

    def _handle(self, parts) -> None:
        try:
            self.receive(parts)
        except Exception:  # never let one message take the ingress down
            log.exception("message of %d frames could not be handled", len(parts))

    def _take_what_was_sent(self, poller: zmq.Poller) -> None:
        """Stopping: ZMQ drops what a closed PULL socket had queued, and the language side
        (PUSH, no acknowledgments) would never send it again, so take every message already
        here, until the socket is quiet for ``QUIET_MS`` (at most ``DRAIN_S``)."""
        deadline = time.monotonic() + DRAIN_S
        taken = 0
        while time.monotonic() < deadline and poller.poll(QUIET_MS):
            self._handle(self.socket.recv_multipart(copy=False))
            taken += 1
        if taken:
            log.info("ingress stopping: %d messages taken that had arrived", taken)

    def _add_counts(self) -> None:
        """This process's counts into the node's stats (kept for next time while Redis is down)."""
        self._counted_at = time.monotonic()
        try:
            with trouble() as redis_trouble:
                self.store.once().add_counts({**self.counts, **redis_trouble})
            self.counts.clear()
        except TRANSIENT:
            pass

    def close(self) -> None:
        self.socket.close(0)
        self.notifier.close()
        if self.authenticator is not None:
            self.authenticator.stop()


def main(settings: Settings, ready=None) -> None:
    run_service("ingress", settings, lambda: Ingress(settings), ready)
