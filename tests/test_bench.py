"""`xferd bench` machinery on a tiny workload (the numbers are for scripts/bench.py): every
mode runs, the JSON has the issue's fields, the workers' counters add up."""
from __future__ import annotations

import io
import json

import pytest

from xferd.bench import Request, run_bench, workload
from xferd.bench_report import results_table, save_chart, summary

pytestmark = pytest.mark.integration


def test_workload_is_deterministic_and_partial_rounds_are_block_aligned():
    plan = workload(200, seed=3)
    assert plan == workload(200, seed=3)
    assert all(256 <= r.total_tokens <= 8192 for r in plan)
    resumed = [r for r in plan if len(r.rounds) > 1]
    assert 0.15 < len(resumed) / len(plan) < 0.45
    assert all(r.first_tokens % 128 == 0 and sum(t for _, t in r.rounds) == r.total_tokens for r in resumed)
    assert Request(1, 300, 300).rounds == [(0, 300)]


def test_a_tiny_bench_run(redis_url, tmp_path):
    out = io.StringIO()
    report = run_bench(redis_url=redis_url, requests=4, concurrencies=(1, 2), workers=(1,), small_requests=5,
                       hidden_size=1024, json_path=str(tmp_path / "b.json"), chart_path=str(tmp_path / "b.png"),
                       out=out)
    assert json.loads((tmp_path / "b.json").read_text()) == json.loads(json.dumps(report))
    modes = {(r["mode"], r["concurrency"]) for r in report["results"]}
    assert modes == {(m, c) for m in ("raw", "in-process", "xferd") for c in (1, 2)}
    for row in report["results"]:
        assert row["gb_per_s"] > 0 and row["p99_ms"] >= row["p50_ms"] > 0
        if row["mode"] == "xferd":
            assert row["entries_per_round"] == row["contiguous_runs_x_buffers_per_round"]
            # 3 per round exactly (tests/test_worker.py); a lease renewal inside a long write adds one
            assert 2.0 <= row["redis_round_trips_per_round"] <= 3.5, row
        if row["mode"] == "in-process":
            assert row["entries_per_round"] > 4, "one entry per block per buffer type"
    assert (tmp_path / "b.png").stat().st_size > 1000
    assert "Mooncake entries per round = contiguous runs x buffer types: yes" in out.getvalue()


def test_a_failed_run_is_reported_and_left_out_of_the_ratios(tmp_path):
    def row(mode, workers, concurrency, gb_per_s):
        return {"mode": mode, "workers": workers, "concurrency": concurrency, "requests": 48, "p50_ms": 5.0,
                "p99_ms": 9.0, "gb_per_s": gb_per_s, "req_per_s": 10.0, "entries_per_round": 4.0,
                "contiguous_runs_x_buffers_per_round": 4.0, "redis_round_trips_per_round": 3.0}
    failed = {"mode": "raw", "workers": 1, "concurrency": 32, "requests": 48,
              "error": "Mooncake write of 3 entries failed (rc=-1)"}
    rows = [row("raw", 1, 1, 2.0), row("raw", 1, 8, 0.5), failed, row("in-process", 1, 8, 1.0),
            row("xferd", 2, 8, 1.5)]
    small = {"p50_ms": 1.0, "p99_ms": 2.0, "raw_p50_ms": 1.0, "xferd_p50_ms": 2.0, "xferd_round_trips_per_round": 3.0}
    lines = summary(rows, small)
    assert any("raw ceiling (2.0 GB/s at concurrency 1): 0.75x" in line for line in lines), lines
    assert any("in-process design at concurrency 8: 1.50x" in line for line in lines), lines
    assert lines[-1] == "FAILED: raw (1 worker(s)) at concurrency 32: Mooncake write of 3 entries failed (rc=-1)"
    table = results_table(rows)
    assert table.splitlines()[0].endswith("| error |") and "rc=-1" in table
    assert save_chart(rows, str(tmp_path / "c.png")) and (tmp_path / "c.png").stat().st_size > 1000
