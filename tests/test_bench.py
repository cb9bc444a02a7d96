"""`xferd bench` machinery on a tiny workload (the numbers are for scripts/bench.py): every
mode runs, the JSON has the issue's fields, the workers' counters add up."""
from __future__ import annotations

import io
import json

import pytest

from xferd.bench import Request, run_bench, workload

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
