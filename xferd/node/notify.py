"""Status pushes to the language side (``[room, status]`` to tcp://ip:port; with
``status_frames`` 3, ``[room, status, sender_rank]``).

Never blocks: a peer that is gone only costs a dropped message; the status is in Redis,
where the Receiver falls back to reading it.
"""
from __future__ import annotations

import logging
from collections import OrderedDict

import zmq

from xferd.protocol.wire import encode_status

log = logging.getLogger("xferd.notify")


MAX_SOCKETS = 512  # language endpoints come and go: keep the most recently used


class Notifier:
    def __init__(self, sender_rank: int | None = None, context: zmq.Context | None = None):
        """``sender_rank``: None sends two-frame statuses, a number adds it as a third frame."""
        self.sender_rank = sender_rank
        self.context = context or zmq.Context.instance()
        self._sockets: OrderedDict[str, zmq.Socket] = OrderedDict()

    @classmethod
    def of(cls, status_frames: int, sender_rank: int, context: zmq.Context | None = None) -> "Notifier":
        """Statuses of ``status_frames`` frames (2, or 3 with ``sender_rank``)."""
        return cls(sender_rank if status_frames == 3 else None, context)

    @classmethod
    def for_settings(cls, settings, context: zmq.Context | None = None) -> "Notifier":
        return cls.of(settings.status_frames, settings.sender_rank, context)

    def _socket(self, endpoint: str) -> zmq.Socket:
        sock = self._sockets.get(endpoint)
        if sock is not None:
            self._sockets.move_to_end(endpoint)
        else:
            if len(self._sockets) >= MAX_SOCKETS:
                self._sockets.popitem(last=False)[1].close(linger=0)
            host, port = endpoint.rsplit(":", 1)
            sock = self.context.socket(zmq.PUSH)
            sock.setsockopt(zmq.LINGER, 1000)
            sock.setsockopt(zmq.SNDHWM, 10_000)
            sock.connect(f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}")
            self._sockets[endpoint] = sock
        return sock

    def send(self, endpoints, room: int, status: int) -> None:
        frames = encode_status(room, status, self.sender_rank)
        for endpoint in dict.fromkeys(endpoints):
            if not endpoint:
                continue
            try:
                self._socket(endpoint).send_multipart(frames, flags=zmq.NOBLOCK)
            except zmq.ZMQError as error:
                log.warning("status %s for room %s to %s dropped: %s", status, room, endpoint, error)

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close(linger=500)
        self._sockets.clear()
