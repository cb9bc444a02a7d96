"""`xferd demo` as a person runs it, on both embedded Redis kinds."""
from __future__ import annotations

import subprocess
import sys

import pytest

from xferd_lab.embedded import EmbeddedRedis

pytestmark = pytest.mark.integration


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xferd", "demo", *args], capture_output=True, text=True,
                          timeout=300)


def test_demo_on_its_own_redis_server_checks_every_byte():
    done = run("--requests", "16")
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "private redis-server child" in done.stderr
    assert "16 Success, 0 Failed" in done.stdout and ": 0 wrong" in done.stdout
    assert "(no leak)" in done.stdout and "RESULT: PASS" in done.stdout


def test_demo_on_the_fakeredis_fallback():
    with EmbeddedRedis(prefer_server=False) as embedded:
        assert "fakeredis" in embedded.kind
        done = run("--requests", "4", "--redis", embedded.url)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "4 Success, 0 Failed" in done.stdout and "RESULT: PASS" in done.stdout
