"""`xferd bench` reporting: the table, the chart, the issue's targets with their ratios."""
from __future__ import annotations

import os

SMALL_ROUNDS = "256/128"  # rounds of one block: the copy is cheap, coordination is most of a round


def results_table(rows: list[dict]) -> str:
    header = ["workload", "mode", "workers", "rounds_per_worker", "concurrency", "p50_ms", "p99_ms", "gb_per_s", "cpu_ms_per_round",
              "entries_per_round", "redis_round_trips_per_round"]
    if any("error" in row for row in rows):
        header.append("error")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(h, "")) for h in header) + " |")
    return "\n".join(lines)


def profile_table(rows: list[dict]) -> str:
    """Where an xferd round's time goes, per step (wall ms a round), Redis's time in the
    scripts (its command statistics) and its CPU (/proc), beside its rounds a second."""
    rows = [r for r in measured(rows) if "steps_ms_per_round" in r]
    if not rows:
        return ""
    steps = list(dict.fromkeys(step for r in rows for step in r["steps_ms_per_round"]))
    header = ["workload", "workers", "concurrency", *[f"{s} ms" for s in steps], "scripts in Redis ms",
              "Redis CPU ms", "CPU ms, all", "rounds/s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["workload"], workers(r), r["concurrency"], *[r["steps_ms_per_round"].get(s, "") for s in steps],
                 round(r["redis_usec_per_round"].get("evalsha", 0) / 1000, 3),
                 r["cpu_ms_per_round_by_process"].get("redis", ""), r["cpu_ms_per_round"], r.get("rounds_per_s", "")]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def workers(row: dict) -> str:
    """An xferd row's worker set: N processes x R rounds each at once."""
    return f"{row['workers']}x{row.get('rounds_per_worker', 1)}"


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
    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    figure, axes = plt.subplots(len(workloads), 3, figsize=(15, 4 * len(workloads)), squeeze=False)
    for (left, middle, right), workload in zip(axes, workloads):
        mine = [r for r in rows if r["workload"] == workload]
        for label in sorted({(r["mode"], workers(r)) for r in mine}):
            line = sorted((r for r in mine if (r["mode"], workers(r)) == label), key=lambda r: r["concurrency"])
            name = label[0] if label[0] != "xferd" else f"xferd {label[1]} workers"
            x = [r["concurrency"] for r in line]
            left.plot(x, [r["gb_per_s"] for r in line], marker="o", label=name)
            middle.plot(x, [r["p50_ms"] for r in line], marker="o", label=name)
            right.plot(x, [r["cpu_ms_per_round"] for r in line], marker="o", label=name)
        for axis, ylabel, title in ((left, "GB/s", "throughput"), (middle, "ms", "p50 latency"),
                                    (right, "CPU ms", "CPU per round, all processes")):
            axis.set(xlabel="requests in flight", ylabel=ylabel, title=f"{workload}: {title}", xscale="log")
        left.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return True


def _pick(rows, workload, mode, concurrency):
    found = [r for r in rows if (r["workload"], r["mode"], r["concurrency"]) == (workload, mode, concurrency)]
    return max(found, key=lambda r: r["gb_per_s"]) if found else None


def summary(rows: list[dict], target_workload: str = "2000/1024") -> list[str]:
    """The targets of issue 12, each with the measured ratio, and the runs that failed."""
    failed = [row for row in rows if "error" in row]
    rows = measured(rows)
    lines = []
    for workload in dict.fromkeys(r["workload"] for r in rows):
        if workload == SMALL_ROUNDS:
            continue  # its own targets: small_round_targets
        scope = "" if workload == target_workload else " (no target on this workload)"
        for concurrency in sorted({r["concurrency"] for r in rows if r["workload"] == workload}):
            inproc, raw = _pick(rows, workload, "in-process", concurrency), _pick(rows, workload, "raw", concurrency)
            best = _pick(rows, workload, "xferd", concurrency)
            if not (best and inproc):
                continue
            target = 1.0 if concurrency == 1 else 1.2
            line = (f"{workload} concurrency {concurrency}: xferd ({workers(best)} workers) / in-process "
                    f"{best['gb_per_s'] / inproc['gb_per_s']:.2f}x GB/s (target >= {target}){scope}")
            if raw:
                line += f"; / raw {best['gb_per_s'] / raw['gb_per_s']:.2f}x (aim >= 0.9)"
            lines.append(line)
        inproc = _pick(rows, workload, "in-process", 1)
        for x in sorted((r for r in rows if (r["workload"], r["mode"], r["concurrency"]) == (workload, "xferd", 1)),
                        key=lambda r: (r["workers"], r.get("rounds_per_worker", 1))):
            if inproc:
                per_request = x["rounds"] / x["requests"]
                added = (x["p50_ms"] - inproc["p50_ms"]) / per_request
                lines.append(f"{workload} concurrency 1, {workers(x)} workers: added p50 per round vs in-process "
                             f"{added:+.2f} ms (target <= 1){scope}")
        cpu = {f"{r['mode']}{' ' + workers(r) if r['mode'] == 'xferd' else ''}": r["cpu_ms_per_round"]
               for r in rows if r["workload"] == workload and r["concurrency"] == 8}
        if cpu:
            lines.append(f"{workload} CPU ms per round at concurrency 8, all processes: "
                         + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()))
    lines += small_round_targets(rows)
    trips = [r["redis_round_trips_per_round"] for r in rows if r["mode"] == "xferd"]
    if trips:
        lines.append(f"worker Redis round trips per round: {max(trips)} at most (target <= 3)")
    matched = all(r["entries_per_round"] == r["contiguous_runs_x_buffers_per_round"] for r in rows if r["mode"] == "xferd")
    lines.append(f"Mooncake entries per round = contiguous runs x buffer types: {'yes' if matched else 'NO'}")
    for row in failed:
        lines.append(f"FAILED: {row['workload']} {row['mode']} ({workers(row)} workers) at concurrency "
                     f"{row['concurrency']}: {row['error']}")
    return lines


def small_round_targets(rows: list[dict], workload: str = SMALL_ROUNDS) -> list[str]:
    """Rounds of one block, where coordination is most of a round: xferd against the
    in-process design, and the CPU and Redis time a round costs."""
    lines = []
    for concurrency, target in ((1, 1.0), (8, 1.2)):
        inproc, best = _pick(rows, workload, "in-process", concurrency), _pick(rows, workload, "xferd", concurrency)
        if not (inproc and best):
            continue
        lines.append(f"{workload} concurrency {concurrency}: xferd ({workers(best)}) / in-process "
                     f"{best['gb_per_s'] / inproc['gb_per_s']:.2f}x GB/s (target >= {target})")
        if concurrency == 1:
            added = (best["p50_ms"] - inproc["p50_ms"]) / (best["rounds"] / best["requests"])
            lines.append(f"{workload} concurrency 1: added p50 per round vs in-process {added:+.2f} ms (target <= 0.5)")
        if "redis" in best["cpu_ms_per_round_by_process"]:
            lines.append(f"{workload} concurrency {concurrency}: Redis CPU per round "
                         f"{best['cpu_ms_per_round_by_process']['redis']:.3f} ms (target <= 0.15); CPU per round, "
                         f"all processes, xferd {best['cpu_ms_per_round']:.2f} ms vs in-process "
                         f"{inproc['cpu_ms_per_round']:.2f} ms (target: no more)")
    return lines


def as_json(rows, targets, config) -> dict:
    return {"config": config, "results": rows, "targets": targets, "machine": {"cpus": os.cpu_count()}}
