"""The node's small HTTP servers (``bootstrap.py``, ``monitor.py``): a threaded server in a
daemon thread that refuses to start with one clear line, and a handler with one reply."""
from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from xferd.settings import ConfigError

log = logging.getLogger("xferd.http")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: pollers ask on one connection

    def reply(self, code: int, body: bytes | str, content_type: str = "text/plain; charset=utf-8") -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server's signature
        log.debug("%s %s", self.address_string(), format % args)


class Service(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, handler: type[Handler], what: str):
        """``what``: the setting and its value, named in the error when the port cannot be
        had (in use, not an address of this host)."""
        try:
            super().__init__((host, port), handler)
        except OSError as error:
            raise ConfigError(f"{what}: cannot listen ({error.strerror or error})") from None
        self._thread = threading.Thread(target=self.serve_forever, name=f"xferd-{handler.__name__}", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start(self):
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
