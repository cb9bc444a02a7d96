"""`xferd bench --sglang-encoder`: the reference embedding side's calls on xferd (SGLang's
encoder stand-in under `xferd sglang-encoder`, its scheduler calling the swapped
allocator, buffers and sender) against the in-process reference design, same language
side (the bench's Receiver, reference-shaped rounds), same workloads, in one run.

The stand-in's model is "cached" (one tensor per request size), so its compute costs
nothing; SGLang's own set_buf copy into the pool is counted on the xferd side (the
in-process mode starts from data already in its source blocks)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from .bench import XferdNode, redis_pids, serve_processes
from .bench_inprocess import InProcessNode
from .bench_workload import MAX_BLOCKS, Result, drive, parse_workload, receive, renamed, request_bytes, shaped
from .cpu import CpuMeter, children
from ..pool import SourcePool

STANDIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sglang_standin")


def start_encoder(settings, plan: list[dict], folder: str, log) -> subprocess.Popen:
    path = os.path.join(folder, f"plan-{time.monotonic_ns()}.json")
    with open(path, "w") as f:
        json.dump(plan, f)
    env = settings.to_env(dict(os.environ))
    env["PYTHONPATH"] = os.pathsep.join([STANDIN] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.update(SGLANG_EMBEDDING_CACHE_BUFFER_SIZE=str(settings.pool_blocks),
               SGLANG_EMBEDDING_CACHE_BLOCK_SIZE=str(settings.block_size))
    command = [sys.executable, "-m", "xferd", "sglang-encoder", "--", sys.executable, "-m", "sglang.launch_server",
               "--disaggregation-mode", "encode", "--hidden-size", str(settings.hidden_size), "--model", "cached",
               "--max-micro-batch", "8", "--requests", path, "--results", path + ".out", "--deadline-s", "600"]
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def run_on_xferd(node: XferdNode, folder: str, log, workload: str, requests, warm_up, concurrency: int) -> Result:
    layout = node.settings.buffer_layout
    plan = [{"rid": f"r{r.room}", "room": r.room, "tokens": r.total_tokens} for r in warm_up + requests]
    encoder = start_encoder(node.settings, plan, folder, log)
    try:
        def one(request, slot: int) -> float:
            return receive(node.receiver, request, slot * MAX_BLOCKS, layout.block_size)
        drive(warm_up, concurrency, one)  # the encoder is up, connections and pages warm
        encoder_pids = [encoder.pid] + children(encoder.pid)
        meter = CpuMeter({"encoder": encoder_pids, **serve_processes(node.process.pid),
                          "client": [os.getpid()], "redis": redis_pids(node.store.client)})
        meter.start()
        latencies, elapsed = drive(requests, concurrency, one)
        cpu = meter.stop()
        if encoder.wait(60) != 0:
            raise RuntimeError(f"the encoder exited {encoder.returncode}")
    finally:
        if encoder.poll() is None:
            encoder.kill()
    return Result("sglang-on-xferd", workload, concurrency, node.settings.workers, requests, elapsed,
                  sum(request_bytes(layout, r) for r in requests), latencies, cpu)


def run_sglang_bench(redis_url: str | None = None, requests: int = 40, workloads=("2000/1024", "8192/2048"),
                     concurrencies=(1, 8), workers: int = 2, json_path: str = "bench-sglang.json",
                     out=sys.stdout) -> dict:
    from ..connections import DEFAULT_REDIS_URL, connect
    from ..settings import Settings
    from .embedded import free_port, local_or_embedded

    url, embedded = (redis_url, None) if redis_url else local_or_embedded(DEFAULT_REDIS_URL)
    tag, slots = f"benchsg{os.getpid()}", max(concurrencies)
    settings = Settings(redis_url=url, prefix="xferd-bench", node=tag, hidden_size=4096, metrics="",
                        pool_blocks=slots * MAX_BLOCKS + MAX_BLOCKS, pool_name=f"xferd-{tag}",
                        ingress=f"tcp://127.0.0.1:{free_port()}")
    layout, folder = settings.buffer_layout, tempfile.mkdtemp(prefix="xferd-bench-sglang-")
    log = open(os.path.join(folder, "processes.log"), "a")
    say = lambda text: (out.write(text + "\n"), out.flush())  # noqa: E731
    say(f"xferd bench --sglang-encoder: {requests} requests a cell, {layout.describe()}, {workers} workers; "
        f"logs in {folder}")
    source = SourcePool(layout, settings.pool_blocks, f"xferd-{tag}-inprocess", create=True)
    rows, nodes = [], []
    try:
        inprocess = InProcessNode(layout, source, slots, redis_pids(connect(url)))
        nodes.append(inprocess)
        xferd = XferdNode(settings, workers, 1, slots, os.path.join(folder, "serve.log"))
        nodes.append(xferd)
        for number, workload in enumerate(workloads):
            total = parse_workload(workload)[0]
            plan = shaped(workload, max(1, round(requests * 2000 / total)), 1_000_000 * (number + 1))
            for concurrency in concurrencies:
                for index, mode in enumerate(("in-process", "sglang-on-xferd")):
                    run_id = 2 * (index + 100 * concurrency + 10_000 * number)
                    measured, warm = renamed(plan, run_id + 1), renamed(plan[:max(2, concurrency)], run_id)
                    if mode == "in-process":
                        inprocess.run(workload, warm, concurrency)
                        result = inprocess.run(workload, measured, concurrency)
                    else:
                        result = run_on_xferd(xferd, folder, log, workload, measured, warm, concurrency)
                    row = result.row()
                    row["cpu_ms_per_request"] = round(sum(result.cpu_s.values()) * 1000 / len(measured), 2)
                    row["encoder_side_cpu_ms_per_request"] = round(
                        sum(v for k, v in result.cpu_s.items() if k != "client" or mode == "in-process")
                        * 1000 / len(measured), 2)
                    rows.append(row)
                    say(f"  {workload:9s} {mode:16s} c{concurrency}: {row['gb_per_s']:.3f} GB/s, p50 "
                        f"{row['p50_ms']} ms, p99 {row['p99_ms']} ms, encoder-side CPU "
                        f"{row['encoder_side_cpu_ms_per_request']} ms/request")
    finally:
        for node in reversed(nodes):
            node.close()
        source.unlink()
        log.close()
        if embedded is not None:
            embedded.stop()
    ratios = []
    for workload in workloads:
        for concurrency in concurrencies:
            pick = {r["mode"]: r for r in rows if (r["workload"], r["concurrency"]) == (workload, concurrency)}
            if len(pick) == 2:
                a, b = pick["in-process"], pick["sglang-on-xferd"]
                ratios.append({"workload": workload, "concurrency": concurrency,
                               "throughput_x": round(b["gb_per_s"] / a["gb_per_s"], 2),
                               "p50_x": round(a["p50_ms"] / b["p50_ms"], 2),
                               "encoder_cpu_x": round(a["encoder_side_cpu_ms_per_request"]
                                                      / max(b["encoder_side_cpu_ms_per_request"], 1e-9), 2)})
                say(f"  {workload} c{concurrency}: xferd/in-process throughput {ratios[-1]['throughput_x']}x, "
                    f"p50 {ratios[-1]['p50_x']}x (higher: xferd faster), encoder-side CPU "
                    f"{ratios[-1]['encoder_cpu_x']}x (higher: xferd cheaper)")
    report = {"rows": rows, "ratios": ratios, "layout": layout.describe(), "workers": workers}
    with open(json_path, "w") as f:
        json.dump(report, f, indent=2)
    say(f"JSON: {json_path}")
    return report
