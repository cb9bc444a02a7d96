"""The demo workload under faults (SPEC §6): workers SIGKILLed, Redis crash-restarted from
its AOF or down for seconds. Real processes, real Redis, real Mooncake; every byte is
compared by the simulated language side. ``scripts/chaos.py`` is the long version."""
from __future__ import annotations

import io
import json

import pytest

from xferd.chaos import Chaos
from xferd.demo import run_demo

pytestmark = pytest.mark.integration


def chaos_run(tmp_path, requests: int, chaos: Chaos) -> dict:
    out = io.StringIO()
    report_path = tmp_path / "report.json"
    code = run_demo(requests=requests, seed=3, chaos=chaos, json_path=str(report_path), out=out)
    report = json.loads(report_path.read_text())
    assert code == 0 and report["ok"], out.getvalue()
    assert report["success"] == requests and report["wrong_bytes"] == 0 and report["leaked_blocks"] == 0
    assert report["bytes_verified"] > 0
    return report


def test_short_chaos_run_kills_workers_and_crashes_redis(tmp_path):
    report = chaos_run(tmp_path, 100, Chaos(kill_every=(0.3, 0.3), redis_crashes=((0.5, 0.0),)))
    assert report["process_kills"] >= 10, report
    assert len(report["redis_outages_s"]) == 1, "Redis was SIGKILLed and restarted from its AOF"
    assert report["reclaimed"] >= 1, "killed workers' rounds were taken over"
    assert report["dead_letters"] == 0


def test_a_three_second_redis_outage_mid_run(tmp_path):
    report = chaos_run(tmp_path, 30, Chaos(kill_every=None, redis_crashes=((0.3, 3.0),)))
    assert report["redis_outages_s"] and report["redis_outages_s"][0] >= 3.0
    # every pending entry looks idle after an outage; live workers renew before any is taken
    assert report["rounds_written_twice"] == 0, report
