"""The demo workload under faults (docs/guarantees.md): workers SIGKILLed, workers paused past
their lease and resumed, Redis crash-restarted from its AOF or down for seconds, serve
drained and started again. Real processes, real Redis, real Mooncake; every byte is
compared by the simulated language side. ``scripts/chaos.py`` is the long version."""
from __future__ import annotations

import io
import json

import pytest

from xferd_lab.chaos import Chaos
from xferd_lab.demo import run_demo

pytestmark = pytest.mark.integration


def chaos_run(tmp_path, requests: int, chaos: Chaos, workers: int = 2) -> dict:
    out = io.StringIO()
    report_path = tmp_path / "report.json"
    code = run_demo(requests=requests, workers=workers, seed=3, chaos=chaos, json_path=str(report_path), out=out)
    report = json.loads(report_path.read_text())
    assert code == 0 and report["ok"], out.getvalue()
    assert report["success"] == requests and report["wrong_bytes"] == 0 and report["leaked_blocks"] == 0
    assert report["bytes_verified"] > 0
    return report


def test_mixed_chaos_kills_and_pauses_workers_and_crashes_redis(tmp_path):
    report = chaos_run(tmp_path, 100, Chaos(kill_every=(0.3, 0.6), pause_every=(0.5, 1.0), pause_for=(1.0, 3.0),
                                            redis_crashes=((0.5, 0.0),)), workers=3)
    assert report["process_kills"] >= 5 and report["pauses"] >= 5, report
    assert len(report["redis_outages_s"]) == 1, "Redis was SIGKILLed and restarted from its AOF"
    assert report["handed_back"] >= 1, "stopped workers' rounds were handed on"
    assert report["dead_letters"] == 0


def test_paused_workers_are_fenced_before_their_rounds_move_on(tmp_path):
    report = chaos_run(tmp_path, 80, Chaos(kill_every=None, pause_every=(0.3, 0.8), pause_for=(1.5, 3.0)),
                       workers=3)
    assert report["pauses"] >= 5, report
    assert report["writers_fenced"] >= 1, "a paused holder was SIGKILLed before its round was redone"


def test_a_three_second_redis_outage_mid_run(tmp_path):
    report = chaos_run(tmp_path, 30, Chaos(kill_every=None, redis_crashes=((0.3, 3.0),)))
    assert report["redis_outages_s"] and report["redis_outages_s"][0] >= 3.0
    # every pending entry looks idle after an outage; live workers renew before any is fenced
    assert report["rounds_written_twice"] == 0 and report["writers_fenced"] == 0, report


def test_rolling_restarts_under_worker_kills_lose_no_message_and_no_byte(tmp_path):
    """serve drained (SIGTERM) and started again twice while workers are SIGKILLed; the
    language side never sends a message twice (as the reference), so an init or resume a
    drain dropped would fail its room."""
    report = chaos_run(tmp_path, 60, Chaos(kill_every=(0.3, 0.6), drains_at=(0.3, 0.6), resend=False))
    assert [d["exit_code"] for d in report["drains"]] == [0, 0], report["drains"]
    assert report["messages_sent_again"] == 0
    assert report["process_kills"] >= 3, report


def test_a_redis_out_of_memory_drops_nothing(tmp_path):
    """Redis full (maxmemory below what it holds, noeviction) for 3 s while rooms flow, with
    a language side that never sends a message twice (as the reference): every message
    waits and is retried, every room ends Success, and the node serves again at once."""
    report = chaos_run(tmp_path, 30, Chaos(kill_every=None, redis_oom=((0.3, 3.0),), resend=False))
    assert report["redis_refused"] > 0, "writes were refused, and retried"
    assert [w["full_s"] >= 3.0 for w in report["redis_full"]] == [True]
    assert report["redis_full"][0]["next_done_s"] < 5, "a request done soon after Redis took writes again"
    assert report["messages_sent_again"] == 0


def test_a_slow_redis_delays_but_breaks_nothing(tmp_path):
    """Every Redis hop of the node and the encoder 3 ms slower each way (a proxy), workers
    SIGKILLed throughout."""
    report = chaos_run(tmp_path, 24, Chaos(kill_every=(0.3, 0.6), redis_delay=0.003))
    assert report["process_kills"] >= 2


def test_a_peer_whose_status_endpoint_is_gone_costs_no_one_else(tmp_path):
    """Beside the workload, a language peer that said its statuses go where nothing
    listens: its rooms succeed (it reads Redis), and so does every room of the workload."""
    report = chaos_run(tmp_path, 24, Chaos(kill_every=None, deaf_peer=True))
    [peer] = report["peers"]
    assert peer["kind"] == "DeafPeer" and peer["succeeded"] >= 5 and not peer["problems"], peer
