"""An embedded Redis for `xferd demo` when none is configured.

A private ``redis-server`` child on a free loopback port when the binary is installed,
else an in-process fakeredis TCP server; ``kind`` says which. Crash tests and
``scripts/chaos.py`` use the server with ``aof=True`` and ``crash_restart()``.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import threading
import time

import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_free(port: int) -> bool:
    """Whether a server could listen on ``port`` now (without SO_REUSEADDR: a port a closed
    server left in TIME_WAIT is not free yet)."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def answers(url: str, within: float) -> bool:
    """Whether the Redis at ``url`` answers PING within ``within`` seconds (it may be starting
    or loading its AOF)."""
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    deadline = time.monotonic() + within
    try:
        while True:
            try:
                client.ping()
                return True
            except (redis.ConnectionError, redis.BusyLoadingError):
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.05)
    finally:
        client.close()


def local_or_embedded(url: str) -> tuple[str, "EmbeddedRedis | None"]:
    """``url`` if a Redis answers there, else a started private one (stop it when done)."""
    if answers(url, within=0):
        return url, None
    embedded = EmbeddedRedis().start()
    return embedded.url, embedded


class EmbeddedRedis:
    def __init__(self, prefer_server: bool = True, aof: bool = False):
        self.prefer_server = prefer_server
        self.aof = aof  # append-only file, fsynced before every reply: a crash loses nothing
        self.port = 0
        self.url = ""
        self.kind = ""
        self._process: subprocess.Popen | None = None
        self._server = None
        self._dir: tempfile.TemporaryDirectory | None = None

    def _spawn(self, binary: str) -> None:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.aof else ["--appendonly", "no"]
        self._process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *persistence,
             "--dir", self._dir.name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self) -> "EmbeddedRedis":
        port = self.port = free_port()
        binary = shutil.which("redis-server") if self.prefer_server else None
        if binary:
            self._dir = tempfile.TemporaryDirectory(prefix="xferd-redis-")
            self._spawn(binary)
            self.kind = (f"private redis-server child (pid {self._process.pid}, port {port}"
                         f"{', AOF fsync always' if self.aof else ''})")
        else:
            if self.aof:
                raise RuntimeError("an AOF Redis needs redis-server installed")
            from fakeredis import TcpFakeServer

            self._server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
            self._server.daemon_threads = True
            threading.Thread(target=self._server.serve_forever, daemon=True).start()
            self.kind = f"in-process fakeredis TCP server (port {port}; redis-server not installed)"
        self.url = f"redis://127.0.0.1:{port}/0"
        self._wait_ready()
        return self

    def crash_restart(self, down_for: float = 0.0) -> None:
        """SIGKILL the server (no shutdown, no final fsync), stay down ``down_for`` seconds,
        start it again on the same port and data directory (with AOF: every acknowledged
        write comes back)."""
        if self._process is None:
            raise RuntimeError("crash_restart needs the redis-server kind")
        self._process.kill()
        self._process.wait()
        time.sleep(down_for)
        self._spawn(shutil.which("redis-server"))
        self._wait_ready()

    def _wait_ready(self) -> None:
        if not answers(self.url, within=10.0):
            self.stop()
            raise RuntimeError(f"embedded Redis did not start: {self.kind}")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
            self._process = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> "EmbeddedRedis":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
