"""A TCP proxy in front of Redis, for faults that are not a dead server: every hop delayed
(a slow or distant Redis), or forwarding frozen with every connection left open (to whoever
uses it, Redis stops answering). Tests and `scripts/chaos.py --slow-redis` use it."""
from __future__ import annotations

import select
import socket
import threading
import time
from urllib.parse import urlsplit, urlunsplit


class RedisProxy:
    def __init__(self, url: str, delay_s: float = 0.0):
        """``url``: the Redis behind it; ``delay_s``: added before each chunk is passed on,
        either way (a round trip costs twice that more)."""
        parts = urlsplit(url)
        self.target = (parts.hostname, parts.port or 6379)
        self.delay_s = delay_s
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = _with_address(url, "127.0.0.1", self.server.getsockname()[1])
        self.frozen, self.closing = threading.Event(), threading.Event()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, name="redis-proxy", daemon=True).start()

    def _accept(self) -> None:
        while not self.closing.is_set():
            try:
                client, _ = self.server.accept()
                upstream = socket.create_connection(self.target)
            except OSError:
                if self.closing.is_set():
                    return
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        while not self.closing.is_set():
            if self.frozen.is_set():
                time.sleep(0.01)
                continue
            try:
                if select.select([src], [], [], 0.05)[0]:
                    data = src.recv(1 << 16)
                    if not data:
                        dst.close()
                        return
                    if self.delay_s:
                        time.sleep(self.delay_s)
                    dst.sendall(data)
            except (OSError, ValueError):  # closed here or by the other direction
                return

    def freeze(self) -> None:
        self.frozen.set()

    def close(self) -> None:
        self.closing.set()
        self.server.close()
        for sock in self.sockets:
            sock.close()


def _with_address(url: str, host: str, port: int) -> str:
    """``url`` pointing at ``host:port`` instead, credentials and database kept."""
    parts = urlsplit(url)
    credentials = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{credentials}{host}:{port}"))
