"""The reference's HTTP bootstrap as the node serves it, and the health it reports."""
from __future__ import annotations

import json
import urllib.request

import pytest

from reference_client import http_get
from xferd.node.bootstrap import BootstrapServer
from xferd_lab.embedded import free_port
from xferd.ops.health import Health
from xferd.settings import ConfigError, Settings


@pytest.fixture
def serving():
    state = {"health": (True, "OK")}
    settings = Settings(bootstrap=f"127.0.0.1:{free_port()}", ingress="tcp://0.0.0.0:17999", hostname="10.1.2.3")
    server = BootstrapServer(settings, lambda: state["health"]).start()
    yield f"http://{settings.bootstrap}", state
    server.stop()


def test_route_answers_as_the_reference_bootstrap_server(serving):
    base, _ = serving
    code, body = http_get(f"{base}/route?engine_rank=-1&target_dp_group=-1")
    assert (code, json.loads(body)) == (200, {"embedding_tp_size": 1, "embedding_dp_size": 1})
    code, body = http_get(f"{base}/route?engine_rank=0&target_dp_group=0")
    assert (code, json.loads(body)) == (200, {"rank_ip": "10.1.2.3", "rank_port": 17999}), \
        "an ingress bound to every interface is advertised at the node's hostname"
    assert http_get(f"{base}/route?engine_rank=x&target_dp_group=0")[0] == 400


def test_health_reports_why_the_node_cannot_serve(serving):
    base, state = serving
    assert http_get(f"{base}/health") == (200, "OK")
    state["health"] = (False, "none of 2 workers is ready")
    assert http_get(f"{base}/health") == (503, "none of 2 workers is ready")


def test_a_put_registers_nothing(serving):
    base, _ = serving
    request = urllib.request.Request(f"{base}/route", data=b"{}", method="PUT")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=3)
    assert refused.value.code == 405


def test_a_port_in_use_is_one_clear_error(serving):
    base, _ = serving
    with pytest.raises(ConfigError, match="cannot listen"):
        BootstrapServer(Settings(bootstrap=base.removeprefix("http://")), lambda: (True, "OK"))


def test_health_needs_the_ingress_a_ready_worker_and_redis(redis_url):
    ready = {"ingress": True, "janitor": True, "worker0": False, "worker1": True}
    health = Health(redis_url, lambda: ready, cache_s=0)
    assert health.check() == (True, "OK")
    ready["worker1"] = False
    ready["ingress"] = False
    serving, why = health.check()
    assert not serving and why == "the ingress is not running; none of 2 workers is ready"
    dead = Health(f"redis://:secret@127.0.0.1:{free_port()}/0", lambda: {"ingress": True, "worker0": True})
    serving, why = dead.check()
    assert not serving and "does not answer" in why and "secret" not in why
    health.close()
    dead.close()
