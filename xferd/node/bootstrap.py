"""The reference's HTTP bootstrap protocol, served by the node (`xferd serve --bootstrap`).

A reference language side finds an embedding node at ``http://<encoder host>:<bootstrap
port>`` (docs/protocol.md). The node answers for itself, so a language node needs no change and no
separate bootstrap server, and its heartbeat tells whether xferd can serve:

  GET /route?engine_rank=-1&target_dp_group=-1  {"embedding_tp_size": 1, "embedding_dp_size": 1}
  GET /route?engine_rank=0&target_dp_group=G    {"rank_ip": ..., "rank_port": ...}: the ingress
  GET /health                                   200 "OK" while the node serves, else 503 and why

A node is one embedding rank (TP and DP size 1): a language side with N TP ranks then sends
each rank's registration and init to the ingress with required_dst_info_num N, and every
rank gets its own copy, which is xferd's multi-destination room. Any DP group maps to the
node. A PUT (the reference embedding side registering its ranks) is refused: this node's
route is its own.
"""
from __future__ import annotations

import json
import logging
from typing import Callable
from urllib.parse import parse_qs, urlsplit

from xferd.ops.httpd import Handler, Service
from xferd.settings import Settings, split_host_port

log = logging.getLogger("xferd.bootstrap")
TP_SIZE = DP_SIZE = 1


class _Handler(Handler):
    server: "BootstrapServer"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        url = urlsplit(self.path)
        if url.path == "/health":
            serving, why = self.server.health()
            self.reply(200 if serving else 503, why)
        elif url.path == "/route":
            self._route(parse_qs(url.query))
        else:
            self.reply(404, f"no {url.path}: this node serves /route and /health")

    def do_PUT(self) -> None:  # noqa: N802
        self.reply(405, "xferd serves this node's route itself; register nothing here")

    do_POST = do_DELETE = do_PUT

    def _route(self, query: dict[str, list[str]]) -> None:
        try:
            rank, group = int(query["engine_rank"][0]), int(query["target_dp_group"][0])
        except (KeyError, ValueError):
            self.reply(400, "Missing inputs for bootstrap server: engine_rank and target_dp_group")
            return
        if rank == -1 and group == -1:
            self._json({"embedding_tp_size": TP_SIZE, "embedding_dp_size": DP_SIZE})
        elif 0 <= rank < TP_SIZE and group >= 0:
            host, port = self.server.ingress
            self._json({"rank_ip": host, "rank_port": port})
        else:
            self.reply(404, f"Bootstrap info not Found: engine_rank {rank} (this node has tp size "
                            f"{TP_SIZE}), target_dp_group {group}")

    def _json(self, body: dict) -> None:
        self.reply(200, json.dumps(body), "application/json")


class BootstrapServer(Service):
    def __init__(self, settings: Settings, health: Callable[[], tuple[bool, str]]):
        host, port = split_host_port(settings.bootstrap, "bootstrap")
        self.ingress = settings.advertised_ingress()
        self.health = health
        super().__init__(host or "0.0.0.0", port, _Handler, f"bootstrap {settings.bootstrap}")

    def start(self) -> "BootstrapServer":
        super().start()
        log.info("bootstrap on %s: route to ingress %s:%s, /health", self.url, *self.ingress)
        return self
