"""A bad configuration stops `xferd serve` at once: exit status 1 and one line on stderr that
names the problem, before the node is claimed; nothing left running or in Redis."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid

import pytest

from xferd_lab.embedded import free_port


def serve(redis_url: str, *args: str, **env: str) -> tuple[int, list[str], str]:
    prefix = f"ff{uuid.uuid4().hex[:8]}"
    base = {k: v for k, v in os.environ.items() if not k.startswith("XFERD_")}
    base.update({"XFERD_REDIS_URL": redis_url, "XFERD_PREFIX": prefix, "XFERD_NODE": "n1",
                 "XFERD_INGRESS": f"tcp://127.0.0.1:{free_port()}", "XFERD_METRICS": f"127.0.0.1:{free_port()}",
                 "XFERD_STARTUP_TIMEOUT": "2", **env})
    result = subprocess.run([sys.executable, "-m", "xferd", "serve", *args], env=base, capture_output=True,
                            text=True, timeout=60)
    return result.returncode, [line for line in result.stderr.splitlines() if line.strip()], prefix


@pytest.fixture
def taken_port():
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock.getsockname()[1]


CASES = {
    "workers not a number": ({"XFERD_WORKERS": "two"}, "XFERD_WORKERS='two' is not a valid int"),
    "an http:// Redis URL": ({"XFERD_REDIS_URL": "http://127.0.0.1:6379"}, "unsupported Redis URL 'http://"),
    "an empty pool": ({"XFERD_POOL_BLOCKS": "0"}, "pool_blocks must be at least 1, got 0"),
    "a pool larger than /dev/shm": ({"XFERD_POOL_BLOCKS": "900000000"}, "MiB free (lower pool_blocks"),
    "a lease not above the janitor's interval": ({"XFERD_LEASE": "0.1"}, "lease (0.1s) must be above janitor_interval"),
    "a round timeout within a lease": ({"XFERD_ROUND_TIMEOUT": "2", "XFERD_LEASE": "3"},
                                       "round_timeout (2s) must be above lease (3s)"),
    "an unknown log format": ({"XFERD_LOG_FORMAT": "xml"}, "log_format must be one of text, json"),
    "an ingress address of no interface": ({"XFERD_INGRESS": "tcp://10.255.255.1:17500"}, "cannot bind"),
    "a metrics address that is not HOST:PORT": ({"XFERD_METRICS": "localhost"}, "metrics 'localhost' is not HOST:PORT"),
    "a Redis that does not answer": ({"XFERD_REDIS_URL": "redis://:secret@127.0.0.1:1/0"},
                                     "Redis at redis://***@127.0.0.1:1/0 did not answer within 2s"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_bad_setting_exits_with_one_line(redis_url, case):
    env, expected = CASES[case]
    code, lines, prefix = serve(redis_url, **env)
    assert code == 1 and len(lines) == 1 and lines[0].startswith("xferd: ") and expected in lines[0], lines
    assert "secret" not in lines[0]
    import redis
    assert not list(redis.Redis.from_url(redis_url).scan_iter(f"{prefix}:*")), "the node was not claimed"


@pytest.mark.parametrize("flag", ["ingress", "metrics"])
def test_an_address_in_use_exits_with_one_line(redis_url, taken_port, flag):
    address = f"tcp://127.0.0.1:{taken_port}" if flag == "ingress" else f"127.0.0.1:{taken_port}"
    code, lines, prefix = serve(redis_url, f"--{flag}", address)
    assert code == 1 and len(lines) == 1 and f"{flag} {address}: cannot" in lines[0], lines
    assert "in use" in lines[0]
