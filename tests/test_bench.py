"""`xferd bench` machinery on a tiny workload (the numbers are for scripts/bench.py): every
mode runs, the JSON has the issue's fields, the CPU of every process is counted, the
workers' counters add up."""
from __future__ import annotations

import io
import json

import pytest

from xferd_lab.bench import run_bench
from xferd_lab.bench_report import results_table, save_chart, summary
from xferd_lab.bench_workload import Request, parse_workers, parse_workload, shaped

pytestmark = pytest.mark.integration


def test_workloads_are_shaped_like_the_reference_client():
    assert Request(1, 2000, 1024).rounds == [(0, 1024), (1024, 976)]
    assert Request(1, 8192, 2048).rounds == [(0, 2048), (2048, 2048), (4096, 2048), (6144, 2048)]
    assert Request(1, 300, 1024).rounds == [(0, 300)]
    plan = shaped("8192/2048", 3, room_base=10)
    assert [r.room for r in plan] == [10, 11, 12] and all(r.total_tokens == 8192 for r in plan)
    for bad in ("2000", "a/b", "0/128", "2000/0", "9000/1024"):
        with pytest.raises(ValueError, match="workload"):
            parse_workload(bad)


def test_worker_sets_are_processes_times_rounds():
    assert parse_workers("2") == (2, 1) and parse_workers("2x4") == (2, 4) and parse_workers("3", 2) == (3, 2)
    for bad in ("", "x2", "2x", "0x1", "1x0", "two"):
        with pytest.raises(ValueError, match="workers"):
            parse_workers(bad)


def test_a_tiny_bench_run(redis_url, tmp_path):
    out = io.StringIO()
    report = run_bench(redis_url=redis_url, requests=4, workloads=("2000/1024", "1024/256"), concurrencies=(1, 2),
                       workers=("1x2",), hidden_size=1024, json_path=str(tmp_path / "b.json"),
                       chart_path=str(tmp_path / "b.png"), out=out)
    assert json.loads((tmp_path / "b.json").read_text()) == json.loads(json.dumps(report))
    modes = {(r["workload"], r["mode"], r["concurrency"]) for r in report["results"]}
    assert modes == {(w, m, c) for w in ("2000/1024", "1024/256") for m in ("raw", "raw-sync", "in-process", "xferd")
                     for c in (1, 2)}
    assert report["config"]["workloads"] == {"2000/1024": 4, "1024/256": 8}, "the same tokens in every workload"
    for row in report["results"]:
        assert row["gb_per_s"] > 0 and row["p99_ms"] >= row["p50_ms"] > 0
        assert row["rounds"] == row["requests"] * (2 if row["workload"] == "2000/1024" else 4)
        by_process = row["cpu_ms_per_round_by_process"]  # a few rounds may cost less than a clock tick
        assert "client" in by_process and row["cpu_ms_per_round"] == pytest.approx(sum(by_process.values()), abs=0.01)
        if row["mode"] == "xferd":
            # every role is measured (a few rounds may cost the ingress less than a clock tick)
            assert {"workers", "ingress", "janitor", "serve"} <= set(by_process)
            assert row["entries_per_round"] == row["contiguous_runs_x_buffers_per_round"]
            # 3 per round exactly (tests/test_worker.py); a lease renewal inside a long write adds one
            assert 2.0 <= row["redis_round_trips_per_round"] <= 3.5, row
            # where a round's time goes: every timed step, and the scripts' time in Redis
            steps = row["steps_ms_per_round"]
            assert {f"worker {s}" for s in ("take", "plan", "write", "commit", "push")} <= set(steps), steps
            assert {"ingress check", "ingress record"} <= set(steps), steps
            assert steps["worker write"] > 0 and steps["worker commit"] > 0 and steps["ingress record"] > 0
            assert row["redis_usec_per_round"]["evalsha"] > 0 and row["rounds_per_s"] > 0
        if row["mode"] == "in-process":
            assert row["entries_per_round"] > 4, "one entry per block per buffer type"
    assert sum(r["cpu_ms_per_round_by_process"]["workers"] for r in report["results"] if r["mode"] == "xferd") > 0
    assert (tmp_path / "b.png").stat().st_size > 1000
    text = out.getvalue()
    assert "Mooncake entries per round = contiguous runs x buffer types: yes" in text
    assert "Where an xferd round's time goes" in text and "| worker take ms |" in text
    assert "2000/1024 concurrency 1, 1x2 workers: added p50 per round vs in-process" in text
    assert all(r["rounds_per_worker"] == 2 for r in report["results"] if r["mode"] == "xferd")


def test_a_failed_run_is_reported_and_left_out_of_the_ratios(tmp_path):
    def row(mode, workers, concurrency, gb_per_s, p50=5.0):
        return {"mode": mode, "workload": "2000/1024", "workers": workers, "concurrency": concurrency,
                "requests": 48, "rounds": 96, "p50_ms": p50, "p99_ms": 9.0, "gb_per_s": gb_per_s,
                "req_per_s": 10.0, "cpu_ms_per_round": 3.0, "entries_per_round": 4.0,
                "contiguous_runs_x_buffers_per_round": 4.0, "redis_round_trips_per_round": 3.0}
    failed = {"mode": "raw", "workload": "2000/1024", "workers": 1, "concurrency": 32, "requests": 48,
              "error": "Mooncake write of 3 entries failed (rc=-1)"}
    rows = [row("raw", 1, 1, 2.0), row("raw", 1, 8, 3.0), failed, row("in-process", 1, 8, 1.0),
            row("in-process", 1, 1, 1.0, p50=4.0), row("xferd", 1, 1, 1.5, p50=6.0), row("xferd", 2, 8, 1.5),
            row("xferd", 1, 8, 1.2)]
    lines = summary(rows)
    assert any("concurrency 8: xferd (2x1 workers) / in-process 1.50x GB/s (target >= 1.2); / raw 0.50x" in line
               for line in lines), lines
    assert any("concurrency 1: xferd (1x1 workers) / in-process 1.50x GB/s (target >= 1.0)" in line
               for line in lines), lines
    assert any("added p50 per round vs in-process +1.00 ms" in line for line in lines), lines
    assert lines[-1] == ("FAILED: 2000/1024 raw (1x1 workers) at concurrency 32: "
                         "Mooncake write of 3 entries failed (rc=-1)")
    table = results_table(rows)
    assert table.splitlines()[0].endswith("| error |") and "rc=-1" in table
    assert save_chart(rows, str(tmp_path / "c.png")) and (tmp_path / "c.png").stat().st_size > 1000


def test_a_tiny_sglang_encoder_bench_run(redis_url, tmp_path):
    from xferd_lab.bench_sglang import run_sglang_bench
    out = io.StringIO()
    path = str(tmp_path / "bench-sglang.json")
    report = run_sglang_bench(redis_url=redis_url, requests=3, workloads=("2000/1024",), concurrencies=(1,),
                              json_path=path, out=out)
    assert [r["mode"] for r in report["rows"]] == ["in-process", "sglang-on-xferd"], out.getvalue()
    xferd_row = report["rows"][1]
    assert xferd_row["requests"] == 3 and xferd_row["rounds"] == 6 and xferd_row["gb_per_s"] > 0
    assert xferd_row["cpu_ms_per_round_by_process"]["encoder"] > 0, "the encoder's processes are counted"
    assert report["ratios"][0]["workload"] == "2000/1024"
    assert json.load(open(path)) == report


def test_a_tiny_capacity_run(redis_url, tmp_path):
    """The load generator drives whole small-round requests for several nodes and says what
    one Redis core carries."""
    from xferd_lab.bench_capacity import run_capacity

    out = io.StringIO()
    report = run_capacity(redis_url=redis_url, nodes=3, processes=2, seconds=2.0,
                          json_path=str(tmp_path / "c.json"), out=out)
    assert report["rounds"] > 20 and report["rounds"] % 2 == 0, "whole two-round requests"
    assert report["redis_cpu_ms_per_round"] > 0 and report["rounds_per_s_per_redis_core"] > 0
    assert "one Redis core carries about" in out.getvalue()
    assert json.loads((tmp_path / "c.json").read_text()) == report
