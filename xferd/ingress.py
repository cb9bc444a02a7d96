"""Ingress process: the language side's ZMQ endpoint (SPEC §3).

Stateless: each message becomes one Redis state change (a Lua script, which also queues
the round when it becomes ready). A bad message fails the room it names, is logged with
the reason and counted; the ingress goes on serving every other room.
"""
from __future__ import annotations

import logging

import zmq

from .connections import connect, with_retry
from .notify import Notifier
from .planning import PlanError, check_allocation
from .processes import run_service
from .settings import Settings
from .status import Status
from .store import Outcome, Store
from .wire import Abort, Init, Register, Resume, WireError, decode_request

log = logging.getLogger("xferd.ingress")


class Ingress:
    def __init__(self, settings: Settings, context: zmq.Context | None = None):
        self.settings = settings
        self.layout = settings.layout
        self.store = Store(connect(settings.redis_url), settings)
        self.context = context or zmq.Context.instance()
        self.socket = self.context.socket(zmq.PULL)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(settings.ingress)
        self.notifier = Notifier(settings.sender_rank, self.context)
        self.stopping = False
        self.counts = {"messages": 0, "rejected": 0}

    def _redis(self, action, what: str):
        return with_retry(action, what, stop=lambda: self.stopping)

    def handle(self, frames: list[bytes]) -> None:
        self.counts["messages"] += 1
        try:
            message = decode_request(frames)
            if isinstance(message, Register):
                if len(message.ptrs) != len(self.layout.buffers):
                    raise WireError(f"register from {message.session_id} has {len(message.ptrs)} "
                                    f"buffer pointers, the layout has {len(self.layout.buffers)}")
                self._redis(lambda: self.store.register_session(message), "register")
                log.info("registered session %s", message.session_id)
                return
            if isinstance(message, (Init, Resume)):
                try:
                    check_allocation(self.layout, message.allocated_tokens, len(message.dst_indices))
                except PlanError as error:
                    raise WireError(str(error), message.room, (message.ip, message.status_port)) from None
                change = self.store.dst_init if isinstance(message, Init) else self.store.dst_resume
                outcome = self._redis(lambda: change(message), type(message).__name__.lower())
                self._report(message.room, outcome, f"{message.ip}:{message.status_port}")
                return
            if isinstance(message, Abort):
                reason = f"aborted by language session {message.session_id}"
                outcome = self._redis(lambda: self.store.fail_room(message.room, reason), "abort")
                self._report(message.room, outcome)
        except WireError as error:
            self.reject(error)

    def _report(self, room: int, outcome: Outcome, sender: str | None = None) -> None:
        if outcome.failed:
            log.warning("room %s failed: %s", room, outcome.note)
            self.notifier.send(list(outcome.endpoints) + ([sender] if sender else []), room, Status.Failed)

    def reject(self, error: WireError) -> None:
        self.counts["rejected"] += 1
        self._redis(lambda: self.store.client.hincrby(self.store.keys.stats, "rejected_messages", 1),
                    "count rejection")
        if error.room is None:
            log.warning("rejected message: %s", error.reason)
            return
        log.warning("rejected message for room %s: %s", error.room, error.reason)
        outcome = self._redis(lambda: self.store.fail_room(error.room, error.reason), "fail room")
        sender = f"{error.reply_to[0]}:{error.reply_to[1]}" if error.reply_to else None
        if outcome.failed or sender:
            self.notifier.send(list(outcome.endpoints) + ([sender] if sender else []),
                               error.room, Status.Failed)

    def run(self) -> None:
        log.info("ingress listening on %s", self.settings.ingress)
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        while not self.stopping:
            if not poller.poll(200):
                continue
            frames = self.socket.recv_multipart()
            try:
                self.handle(frames)
            except Exception:  # never let one message take the ingress down
                log.exception("message of %d frames could not be handled", len(frames))
        self.close()

    def close(self) -> None:
        self.socket.close(0)
        self.notifier.close()


def main(settings: Settings, ready=None) -> None:
    run_service("ingress", lambda: Ingress(settings), ready)
