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
    metrics = command[command.index("--metrics") + 1]
    assert f"http://{metrics}/healthz" in " ".join(xferd_service["healthcheck"]["test"]), \
        "the health check asks the node's /healthz"
    assert (ROOT / "Dockerfile").exists()


def test_prometheus_scrapes_the_node_and_grafana_gets_the_dashboard():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    command = compose["services"]["xferd"]["command"]
    metrics = command[command.index("--metrics") + 1]
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    targets = [t for job in scrape["scrape_configs"] for group in job["static_configs"] for t in group["targets"]]
    assert metrics in targets
    mounts = compose["services"]["prometheus"]["volumes"] + compose["services"]["grafana"]["volumes"]
    for mount in mounts:
        source = mount.split(":")[0]
        if source.startswith("./"):
            assert (ROOT / source).exists(), mount
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/xferd.yml").read_text())
    assert any(m.endswith(provider["providers"][0]["options"]["path"] + ":ro") for m in mounts)


def test_every_dashboard_query_names_metrics_the_node_exports(redis_url):
    """Each PromQL expression of the Grafana dashboard uses only metric names /metrics has."""
    import re

    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from conftest import _cleanup, make_settings
    from test_prometheus import dashboard_queries
    from xferd.state.connections import connect
    from xferd.ops.metrics import NodeCollector
    from xferd.state.store import Store

    settings = make_settings(redis_url=redis_url)
    store = Store(connect(redis_url), settings)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(store))
    store.count("ingress_rejected:malformed")  # labelled families show once they have a sample
    store.count("ingress_messages:init")
    try:
        exported = {s.name for family in text_string_to_metric_families(generate_latest(registry).decode())
                    for s in family.samples}
    finally:
        _cleanup(store.client, settings)
    used = {name for _, expr in dashboard_queries() for name in re.findall(r"\b(xferd_[a-z_]+)", expr)}
    assert used and used <= exported, sorted(used - exported)
    assert {"xferd_bytes_written_total", "xferd_rooms_ended_total", "xferd_round_seconds_bucket"} <= used
