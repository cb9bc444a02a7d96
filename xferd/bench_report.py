"""`xferd bench` reporting: the table, the chart, the issue's targets with their ratios."""
from __future__ import annotations

import os


def results_table(rows: list[dict]) -> str:
    header = ["mode", "workers", "concurrency", "p50_ms", "p99_ms", "gb_per_s", "req_per_s",
              "entries_per_round", "redis_round_trips_per_round"]
    if any("error" in row for row in rows):
        header.append("error")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(h, "")) for h in header) + " |")
    return "\n".join(lines)


def measured(rows: list[dict]) -> list[dict]:
    """The rows of runs that completed (a failed run's row holds only its error)."""
    return [row for row in rows if "error" not in row]


def save_chart(rows: list[dict], path: str) -> bool:
    rows = measured(rows)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for label in sorted({(r["mode"], r["workers"]) for r in rows}):
        mine = sorted((r for r in rows if (r["mode"], r["workers"]) == label), key=lambda r: r["concurrency"])
        name = label[0] if label[0] != "xferd" else f"xferd ({label[1]} worker{'s' * (label[1] > 1)})"
        left.plot([r["concurrency"] for r in mine], [r["gb_per_s"] for r in mine], marker="o", label=name)
        right.plot([r["concurrency"] for r in mine], [r["p50_ms"] for r in mine], marker="o", label=name)
    left.set(xlabel="requests in flight", ylabel="GB/s", title="throughput", xscale="log")
    right.set(xlabel="requests in flight", ylabel="ms", title="p50 latency", xscale="log")
    left.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return True


def overhead(raw, xferd) -> dict:
    """xferd minus raw latency quantiles (ms), both ``bench.Result`` of the same requests."""
    return {"p50_ms": round(xferd.percentile(0.5) - raw.percentile(0.5), 2),
            "p99_ms": round(xferd.percentile(0.99) - raw.percentile(0.99), 2)}


def summary(rows: list[dict], small: dict) -> list[str]:
    """The targets of issue 5, each with the measured ratio, and the runs that failed."""
    failed = [row for row in rows if "error" in row]
    rows = measured(rows)

    def pick(mode, workers, concurrency):
        return next((r for r in rows if (r["mode"], r["workers"], r["concurrency"]) == (mode, workers, concurrency)),
                    None)

    lines = []
    raw8, inproc8, x8 = pick("raw", 1, 8), pick("in-process", 1, 8), pick("xferd", 2, 8)
    raws = [r for r in rows if r["mode"] == "raw"]
    if raws and x8:
        # parallel sync batches from many threads thrash on few cores: the ceiling is the best raw run
        best = max(raws, key=lambda r: r["gb_per_s"])
        lines.append(f"xferd (2 workers, concurrency 8) / raw ceiling ({best['gb_per_s']} GB/s at concurrency "
                     f"{best['concurrency']}): {x8['gb_per_s'] / best['gb_per_s']:.2f}x GB/s (target >= 0.9); "
                     f"raw itself at concurrency 8: {raw8['gb_per_s'] if raw8 else '-'} GB/s")
    if inproc8 and x8:
        ratio = x8["gb_per_s"] / inproc8["gb_per_s"]
        lines.append(f"xferd (2 workers) / in-process design at concurrency 8: {ratio:.2f}x GB/s (target >= 1.0)")
    lines.append(f"coordination overhead, 256-token requests, concurrency 1: p50 {small['p50_ms']} ms "
                 f"(target <= 1), p99 {small['p99_ms']} ms (target <= 5); raw p50 {small['raw_p50_ms']} ms, "
                 f"xferd p50 {small['xferd_p50_ms']} ms, {small['xferd_round_trips_per_round']} round trips/round")
    trips = [r["redis_round_trips_per_round"] for r in rows if r["mode"] == "xferd"]
    if trips:
        lines.append(f"worker Redis round trips per round: {max(trips)} at most (target <= 3)")
    matched = all(r["entries_per_round"] == r["contiguous_runs_x_buffers_per_round"] for r in rows if r["mode"] == "xferd")
    lines.append(f"Mooncake entries per round = contiguous runs x buffer types: {'yes' if matched else 'NO'}")
    for row in failed:
        lines.append(f"FAILED: {row['mode']} ({row['workers']} worker(s)) at concurrency {row['concurrency']}: "
                     f"{row['error']}")
    return lines


def as_json(rows, small, targets, config) -> dict:
    return {"config": config, "results": rows, "small_request_overhead_ms": small, "targets": targets,
            "machine": {"cpus": os.cpu_count()}}
