"""`xferd bench --sglang-encoder`: SGLang's encoder side (the stand-in scheduler, its
allocator, buffers and sender, SGLang's own ``set_buf``) run twice on the same workloads,
in one run, against the same language side (the bench's Receiver, reference-shaped rounds):

* in-process: as SGLang ships, its connector's own design (a Mooncake engine, message and
  transfer threads in each scheduler process, statuses in its memory);
* sglang-on-xferd: under `xferd sglang-encoder`, on an `xferd serve` node.

Both pay the same scheduler loop and the same scatter of every embedding into the source
pool, so the two differ only in how a round gets from the pool to the language side. The
stand-in's model is "cached" (one tensor per request size): its compute costs nothing.
The modes take turns within a cell (half the requests each, A B then B A), so the shared
machine's drift does not fall on one of them.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from xferd_lab.bench import XferdNode, redis_pids, serve_processes
from xferd_lab.bench_workload import MAX_BLOCKS, Result, drive, parse_workload, receive, renamed, request_bytes, shaped
from xferd_lab.cpu import CpuMeter, children
from xferd_lab.embedded import free_port

STANDIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sglang_standin")
MODES = ("in-process", "sglang-on-xferd")
PASSES = 2  # each mode runs a cell's requests in this many parts, the modes taking turns
START_TIMEOUT_S = 60


def start_encoder(settings, plan: list[dict], folder: str, log, on_xferd: bool, bootstrap_port: int
                  ) -> subprocess.Popen:
    path = os.path.join(folder, f"plan-{time.monotonic_ns()}.json")
    with open(path, "w") as f:
        json.dump(plan, f)
    env = settings.to_env(dict(os.environ))
    env["PYTHONPATH"] = os.pathsep.join([STANDIN] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.update(SGLANG_EMBEDDING_CACHE_BUFFER_SIZE=str(settings.pool_blocks),
               SGLANG_EMBEDDING_CACHE_BLOCK_SIZE=str(settings.block_size))
    command = [sys.executable, "-m", "sglang.launch_server", "--disaggregation-mode", "encode",
               "--disaggregation-bootstrap-port", str(bootstrap_port), "--hidden-size", str(settings.hidden_size),
               "--model", "cached", "--max-micro-batch", "8", "--requests", path, "--results", path + ".out",
               "--deadline-s", "600"]
    if on_xferd:
        command = [sys.executable, "-m", "xferd", "sglang-encoder", "--"] + command
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def rank_zero_ingress(bootstrap_port: int, encoder: subprocess.Popen) -> str:
    """Where SGLang's own encoder rank 0 takes the language side's messages (its bootstrap's
    route table, as a language side finds it)."""
    import urllib.request
    deadline = time.monotonic() + START_TIMEOUT_S
    url = f"http://127.0.0.1:{bootstrap_port}/route?engine_rank=0&target_dp_group=0"
    while time.monotonic() < deadline and encoder.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                route = json.loads(response.read())
            return f"tcp://{route['rank_ip']}:{route['rank_port']}"
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the in-process encoder did not register rank 0 (exit {encoder.poll()})")


def run_cell(mode: str, node: XferdNode, folder: str, log, workload: str, requests, warm_up,
             concurrency: int) -> Result:
    from xferd.client.receiver import Receiver

    settings, layout = node.settings, node.settings.buffer_layout
    on_xferd = mode == "sglang-on-xferd"
    plan = [{"rid": f"r{r.room}", "room": r.room, "tokens": r.total_tokens} for r in warm_up + requests]
    encoder = start_encoder(settings, plan, folder, log, on_xferd, free_port())
    receiver = None
    try:
        if on_xferd:
            receiver, others = node.receiver, {**serve_processes(node.process.pid), "redis": redis_pids(node.store.client)}
        else:
            port = int(encoder.args[encoder.args.index("--disaggregation-bootstrap-port") + 1])
            receiver, others = Receiver(rank_zero_ingress(port, encoder), layout, concurrency * MAX_BLOCKS), {}
            receiver.register()

        def one(request, slot: int) -> float:
            return receive(receiver, request, slot * MAX_BLOCKS, layout.block_size)
        drive(warm_up, concurrency, one)  # the encoder is up, connections and pages warm
        meter = CpuMeter({"encoder": [encoder.pid] + children(encoder.pid), **others, "client": [os.getpid()]})
        meter.start()
        latencies, elapsed = drive(requests, concurrency, one)
        cpu = meter.stop()
        if encoder.wait(60) != 0:
            raise RuntimeError(f"the {mode} encoder exited {encoder.returncode}")
    finally:
        if encoder.poll() is None:
            encoder.kill()
        if receiver is not None and not on_xferd:
            receiver.close()
    return Result(mode, workload, concurrency, settings.workers if on_xferd else 1, requests, elapsed,
                  sum(request_bytes(layout, r) for r in requests), latencies, cpu)


def merged(parts: list[Result]) -> Result:
    """One mode's passes of a cell as one result: every latency, the time and bytes and CPU
    of all of them."""
    cpu: dict[str, float] = {}
    for part in parts:
        for group, seconds in part.cpu_s.items():
            cpu[group] = cpu.get(group, 0.0) + seconds
    first = parts[0]
    return Result(first.mode, first.workload, first.concurrency, first.workers,
                  [r for p in parts for r in p.requests], sum(p.seconds for p in parts), sum(p.bytes for p in parts),
                  [ms for p in parts for ms in p.latencies_ms], cpu)


def ratio_of(a: dict, b: dict) -> dict:
    """xferd (b) against in-process (a); above 1: xferd better."""
    return {"workload": a["workload"], "concurrency": a["concurrency"],
            "throughput_x": round(b["gb_per_s"] / a["gb_per_s"], 2),
            "p50_x": round(a["p50_ms"] / b["p50_ms"], 2), "p99_x": round(a["p99_ms"] / b["p99_ms"], 2),
            "encoder_cpu_x": round(a["encoder_side_cpu_ms_per_request"]
                                   / max(b["encoder_side_cpu_ms_per_request"], 1e-9), 2)}


def run_sglang_bench(redis_url: str | None = None, requests: int = 40, workloads=("2000/1024", "8192/2048"),
                     concurrencies=(1, 8), workers: int = 2, json_path: str = "bench-sglang.json",
                     out=sys.stdout) -> dict:
    from xferd.state.connections import DEFAULT_REDIS_URL
    from xferd.settings import Settings
    from xferd_lab.embedded import local_or_embedded

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
    rows, node = [], None
    try:
        node = XferdNode(settings, workers, 1, slots, os.path.join(folder, "serve.log"))
        for number, workload in enumerate(workloads):
            total = parse_workload(workload)[0]
            plan = shaped(workload, max(PASSES, round(requests * 2000 / total)), 1_000_000 * (number + 1))
            for concurrency in concurrencies:
                results: dict[str, list[Result]] = {mode: [] for mode in MODES}
                for part in range(PASSES):  # A B, then B A: the machine's drift falls on both
                    for index, mode in enumerate(MODES if part % 2 == 0 else MODES[::-1]):
                        run_id = 2 * (MODES.index(mode) + 10 * part + 100 * concurrency + 10_000 * number)
                        measured = renamed(plan[part::PASSES], run_id + 1)
                        warm = renamed(plan[:max(2, concurrency)], run_id)
                        results[mode].append(run_cell(mode, node, folder, log, workload, measured, warm,
                                                      concurrency))
                for mode in MODES:
                    result = merged(results[mode])
                    row = result.row()
                    row["cpu_ms_per_request"] = round(sum(result.cpu_s.values()) * 1000 / len(result.requests), 2)
                    row["encoder_side_cpu_ms_per_request"] = round(
                        sum(v for k, v in result.cpu_s.items() if k != "client") * 1000 / len(result.requests), 2)
                    rows.append(row)
                    say(f"  {workload:9s} {mode:16s} c{concurrency}: {row['gb_per_s']:.3f} GB/s, p50 "
                        f"{row['p50_ms']} ms, p99 {row['p99_ms']} ms, encoder-side CPU "
                        f"{row['encoder_side_cpu_ms_per_request']} ms/request")
    finally:
        if node is not None:
            node.close()
        log.close()
        if embedded is not None:
            embedded.stop()
    ratios = []
    for workload in workloads:
        for concurrency in concurrencies:
            pick = {r["mode"]: r for r in rows if (r["workload"], r["concurrency"]) == (workload, concurrency)}
            if len(pick) == 2:
                ratios.append(ratio_of(pick["in-process"], pick["sglang-on-xferd"]))
                say(f"  {workload} c{concurrency}: xferd/in-process throughput {ratios[-1]['throughput_x']}x, "
                    f"p50 {ratios[-1]['p50_x']}x, p99 {ratios[-1]['p99_x']}x (higher: xferd faster), "
                    f"encoder-side CPU {ratios[-1]['encoder_cpu_x']}x (higher: xferd cheaper)")
    report = {"rows": rows, "ratios": ratios, "layout": layout.describe(), "workers": workers}
    with open(json_path, "w") as f:
        json.dump(report, f, indent=2)
    say(f"JSON: {json_path}")
    return report
