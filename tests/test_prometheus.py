"""deploy/ run for real: Debian's Prometheus scrapes a running `xferd serve` with
deploy/prometheus.yml (only the target and the interval changed), and every query of the
Grafana dashboard, with its `$node` variable as Grafana fills it, evaluates on what was
scraped during real transfers to the numbers those transfers make."""
from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
import yaml

from conftest import clients, free_port, start_node, start_room, wait_for
from xferd.protocol.status import Status
from xferd_lab.synthetic import room_data

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROMETHEUS = shutil.which("prometheus")
SCRAPE_S = 0.5


def api(base: str, path: str, **params) -> dict:
    url = f"{base}/api/v1/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    with urllib.request.urlopen(url, timeout=5) as response:
        reply = json.load(response)
    assert reply["status"] == "success", reply
    return reply["data"]


def query(base: str, expr: str) -> dict[tuple, float]:
    """An instant query's result: sorted labels (not the name) -> value."""
    data = api(base, "query", query=expr)
    assert data["resultType"] == "vector", (expr, data)
    return {tuple(sorted((k, v) for k, v in r["metric"].items() if k != "__name__")): float(r["value"][1])
            for r in data["result"]}


@pytest.fixture
def prometheus(tmp_path):
    """Start Prometheus on deploy/prometheus.yml aimed at ``target``; yields a starter."""
    started = []

    def start(target: str) -> str:
        config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
        config["global"]["scrape_interval"] = f"{int(SCRAPE_S * 1000)}ms"
        (job,) = config["scrape_configs"]
        job["scrape_interval"] = f"{int(SCRAPE_S * 1000)}ms"
        job["static_configs"][0]["targets"] = [target]
        path = tmp_path / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        port = free_port()
        log = open(tmp_path / "prometheus.log", "w")
        process = subprocess.Popen(
            [PROMETHEUS, f"--config.file={path}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
        started.append((process, log))
        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"{base}/-/ready", timeout=1) as response:
                    return response.status == 200
            except OSError:
                return process.poll() is not None  # died: the assert below says so
        assert wait_for(ready, 30) and process.poll() is None, (tmp_path / "prometheus.log").read_text()
        return base

    yield start
    for process, log in started:
        process.terminate()
        process.wait(10)
        log.close()


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expression) of every target, ``$node`` as Grafana's "All" sends it."""
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/xferd.json").read_text())
    return [(panel["title"], target["expr"].replace("$node", ".*"))
            for panel in dashboard["panels"] for target in panel["targets"]]


@pytest.mark.skipif(PROMETHEUS is None, reason="no prometheus on PATH (scripts/test installs Debian's)")
def test_prometheus_scrapes_serve_and_every_dashboard_query_answers(redis_url, tmp_path_factory, prometheus):
    checked = subprocess.run([shutil.which("promtool") or "promtool", "check", "config",
                              str(ROOT / "deploy" / "prometheus.yml")], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    node = start_node(redis_url, tmp_path_factory, hidden_size=256)
    try:
        base = prometheus(node.settings.metrics)
        scrape = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
        node_label = scrape["scrape_configs"][0]["static_configs"][0]["labels"]["node"]

        def up() -> bool:
            targets = api(base, "targets")["activeTargets"]
            return bool(targets) and targets[0]["health"] == "up"
        assert wait_for(up, 20), api(base, "targets")
        # the dashboard's variable: label_values(xferd_redis_up, node)
        assert api(base, "label/node/values", **{"match[]": "xferd_redis_up"}) == [node_label]

        with clients(node) as (sender, rx):
            layout = node.settings.buffer_layout
            per_token = sum(layout.token_bytes(i) for i, b in enumerate(layout.buffers) if b.per_token)
            aux = sum(b.item_len for b in layout.buffers if not b.per_token)
            # rooms over several scrapes, so every counter and bucket series rises inside the windows
            for i in range(6):
                room, _ = start_room(sender, rx, 2000, list(range(8)), 1024)
                assert rx.wait(room, 10) == Status.Transferring
                rx.resume(room, list(range(8, 16)), 1024, 1024)
                assert rx.wait(room, 10) == Status.Success
                bad = 7_100_000 + i  # bad input: 2 blocks offered for 1024 tokens
                sender.send(bad, 300, room_data(bad, 300, layout))
                rx.init(bad, [20, 21], 1024)
                assert rx.wait(bad, 10) == Status.Failed
                time.sleep(SCRAPE_S)
        written = 6 * (2000 * per_token + aux)
        total = f'sum(xferd_bytes_written_total{{node="{node_label}"}})'
        assert wait_for(lambda: query(base, total).get((), 0) == written, 20), query(base, total)
        time.sleep(2 * SCRAPE_S)  # and a scrape or two after the last room

        answers = {}
        for title, expr in dashboard_queries():
            answers[expr] = result = query(base, expr)
            assert result, f"{title}: {expr} has no series"

        def one(expr_start: str, labels: tuple = ()) -> float:
            (expr,) = [e for e in answers if e.startswith(expr_start)]
            return answers[expr][labels]

        assert one("sum(rate(xferd_bytes_written_total") > 0
        assert one("sum by (outcome) (rate(xferd_rooms_ended_total", (("outcome", "success"),)) > 0
        assert one("sum by (outcome) (rate(xferd_rooms_ended_total", (("outcome", "failed"),)) > 0
        failures = one("sum by (failure_class) (increase(xferd_rooms_ended_total", (("failure_class", "bad_input"),))
        assert 3 <= failures <= 12, failures  # 6 in the window; increase() extrapolates
        for quantile in ("histogram_quantile(0.5, sum by (le) (rate(xferd_round_seconds",
                         "histogram_quantile(0.99, sum by (le) (rate(xferd_round_seconds",
                         "histogram_quantile(0.5, sum by (le) (rate(xferd_room_seconds"):
            assert 0 < one(quantile) < 10, quantile
        assert one("sum by (state) (xferd_pool_blocks", (("state", "free"),)) == node.settings.pool_blocks
        assert one("sum by (state) (xferd_pool_blocks", (("state", "held"),)) == 0
        assert one("sum by (kind) (rate(xferd_ingress_messages_total", (("kind", "resume"),)) > 0
        assert one("min(xferd_redis_up") == 1
        live = node.settings.workers * node.settings.rounds_per_worker
        assert one("xferd_workers_live", (("instance", node.settings.metrics), ("job", "xferd"),
                                          ("node", node_label))) == live
    finally:
        node.stop()
