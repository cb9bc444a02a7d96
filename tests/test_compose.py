"""compose.yaml is the reference deployment: no Docker engine here, so check its structure
and that what it runs exists in the CLI and the settings."""
from __future__ import annotations

import dataclasses
import pathlib

import yaml

from xferd.cli import build_parser
from xferd.settings import Settings

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_compose_runs_redis_with_aof_and_xferd_serve():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    redis_service, xferd_service = compose["services"]["redis"], compose["services"]["xferd"]
    command = redis_service["command"]
    assert command[0] == "redis-server" and command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "always", "a crash must not roll back a commit"
    assert xferd_service["command"][:2] == ["xferd", "serve"]
    build_parser().parse_args(xferd_service["command"][1:])  # every flag exists (exits otherwise)
    fields = {f.name.upper() for f in dataclasses.fields(Settings)}
    for name in xferd_service["environment"]:
        assert name.startswith("XFERD_") and name[len("XFERD_"):] in fields, name
    assert xferd_service["ipc"] == "host", "the encoder must see the shared-memory source pool"
    command = xferd_service["command"]
    port = command[command.index("--bootstrap") + 1].rsplit(":", 1)[1]
    assert f"127.0.0.1:{port}/health" in " ".join(xferd_service["healthcheck"]["test"]), \
        "the health check asks the bootstrap's /health"
    assert (ROOT / "Dockerfile").exists()
