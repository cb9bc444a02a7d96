"""The node's operator endpoint (`xferd serve --metrics HOST:PORT`, loopback by default):

  GET /          the status page (``statuspage.py``): workers, queue, pool, live rooms,
                 recent failures with their reasons; it reloads itself
  GET /metrics   Prometheus text format (``metrics.NodeCollector``: the node's, from Redis)
  GET /healthz   200 while serve and every child process run, else 503 and which do not
  GET /readyz    200 while the node can serve (ingress bound, every worker ready, Redis
                 answers, the source pool present), else 503 and why not
"""
from __future__ import annotations

import logging
from typing import Callable

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from xferd.ops import nodeview

from xferd.ops import statuspage
from xferd.state.connections import TRANSIENT
from xferd.ops.httpd import Handler, Service
from xferd.ops.metrics import NodeCollector
from xferd.settings import split_host_port
from xferd.state.store import Store

log = logging.getLogger("xferd.monitor")
Check = Callable[[], tuple[bool, str]]


class _Handler(Handler):
    server: "MonitorServer"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path.split("?", 1)[0]
        if path == "/":
            try:
                self.reply(200, statuspage.render(nodeview.read(self.server.store), self.server.where),
                           "text/html; charset=utf-8")
            except TRANSIENT as error:
                self.reply(503, f"Redis at {self.server.where} does not answer ({type(error).__name__}); "
                                "this page reloads itself")
        elif path == "/metrics":
            self.reply(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
        elif path in ("/healthz", "/readyz"):
            ok, why = (self.server.alive if path == "/healthz" else self.server.ready)()
            self.reply(200 if ok else 503, why)
        else:
            self.reply(404, f"no {path}: this node serves /, /metrics, /healthz and /readyz")


class MonitorServer(Service):
    def __init__(self, address: str, store: Store, alive: Check, ready: Check, where: str = ""):
        """``where``: the node's Redis as the page names it (redacted)."""
        host, port = split_host_port(address, "metrics")
        self.store, self.where = store, where
        self.alive, self.ready = alive, ready
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(NodeCollector(store))
        super().__init__(host or "127.0.0.1", port, _Handler, f"metrics {address}")

    def start(self) -> "MonitorServer":
        super().start()
        log.info("status page, metrics and health on %s (/, /metrics, /healthz, /readyz)", self.url)
        return self
