"""`xferd bench`: xferd against the two alternatives a user has, on the same bytes.

1. raw: one Mooncake batch per request round, from one process, no coordination — the
   ceiling (submitted asynchronously and polled, as xferd's workers write; ``raw-sync``:
   the same through ``batch_transfer_sync_write``, which spins while it waits);
2. in-process: the reference design — a thread takes the language side's messages onto an
   in-process queue, one transfer thread writes one entry per block per buffer type with the
   synchronous call and pushes the status (``bench_inprocess``);
3. xferd: Sender → Redis → worker → Mooncake → status at the Receiver, end to end.

Every mode writes the same rounds of workloads shaped like the reference client's (a
request of TOTAL tokens whose destination takes PER_ROUND tokens at a time, resuming for
the rest; ``bench_workload``) from the same shared-memory source pool into the same kind of
destination pool over loopback TCP; in-process and xferd are driven by the same Receiver. Reports p50/p99 latency, GB/s, the CPU time per round of every process
(from /proc: steadier than wall time on a shared machine) and, for xferd, the Redis round
trips and Mooncake entries per round counted by the workers.
"""
from __future__ import annotations

import os
import sys
import time

from xferd_lab.bench_inprocess import InProcessNode
from xferd_lab.bench_report import as_json, profile_table, results_table, save_chart, summary
from xferd_lab.bench_workload import (MAX_BLOCKS, WORKLOADS, Request, Result, drive, parse_workers, parse_workload,
                             receive, renamed, request_bytes, round_entries, shaped)
from xferd_lab.cpu import CpuMeter, children, title
from xferd.protocol.layout import Layout
from xferd.transfer.pool import DestPool, SourcePool
from xferd.node.processes import start_serve, stop_process

class Direct:
    """The raw modes: a writer engine on the source pool, a destination pool with its own
    engine, both in this process (loopback TCP between them)."""

    def __init__(self, layout: Layout, source: SourcePool, slots: int, redis_pids: list[int]):
        from xferd.transfer.engine import Engine

        self.layout, self.source = layout, source
        self.dest = DestPool(layout, slots * MAX_BLOCKS)
        self.dest_engine = Engine()
        for pointer, length in self.dest.regions:
            self.dest_engine.register(pointer, length)
        self.writer = Engine()
        self.writer.register(source.base_ptr, source.size)
        self.dst_ptrs = [t.data_ptr() for t in self.dest.buffers]
        self.meter = CpuMeter({"client": [os.getpid()], "redis": redis_pids})

    def write_round(self, slot: int, sent: int, tokens: int, sync: bool) -> int:
        src, dst, lengths = round_entries(self.layout, self.source.base_ptr, self.source.offsets, slot * MAX_BLOCKS,
                                          self.dst_ptrs, slot * MAX_BLOCKS, sent, tokens, per_block=False)
        if sync:  # what the reference design calls
            if self.writer.mooncake.batch_transfer_sync_write(self.dest_engine.session_id, src, dst, lengths):
                raise RuntimeError(f"Mooncake write of {len(src)} entries failed")
        else:
            self.writer.write(self.dest_engine.session_id, src, dst, lengths)
        return len(src)

    def _result(self, mode: str, workload: str, concurrency: int, requests: list[Request], one) -> Result:
        self.meter.start()
        latencies, elapsed = drive(requests, concurrency, one)
        return Result(mode, workload, concurrency, 1, requests, elapsed,
                      sum(request_bytes(self.layout, r) for r in requests), latencies, self.meter.stop())

    def run_raw(self, workload: str, requests: list[Request], concurrency: int, sync: bool = False) -> Result:
        def one(request: Request, slot: int) -> float:
            started = time.perf_counter()
            for sent, tokens in request.rounds:
                self.write_round(slot, sent, tokens, sync=sync)
            return (time.perf_counter() - started) * 1000

        return self._result("raw-sync" if sync else "raw", workload, concurrency, requests, one)

    def run_raw_sync(self, workload: str, requests: list[Request], concurrency: int) -> Result:
        return self.run_raw(workload, requests, concurrency, sync=True)


def redis_pids(client) -> list[int]:
    """The Redis server's pid when it runs on this machine (its CPU is part of a round's)."""
    try:
        pid = int(client.info("server")["process_id"])
    except Exception:  # not a real server (fakeredis) or not allowed: leave Redis out
        return []
    return [pid] if "redis" in title(pid) else []


def serve_processes(serve_pid: int) -> dict[str, list[int]]:
    """`xferd serve` and its children by role, from their process titles."""
    groups: dict[str, list[int]] = {"serve": [serve_pid]}
    for pid in children(serve_pid):
        words = title(pid).split()
        role = words[1] if len(words) > 1 and words[0] == "xferd" else "other"
        groups.setdefault("workers" if role.startswith("worker") else role, []).append(pid)
    return groups


def round_profile(delta: dict[str, float], rounds: int) -> dict[str, float]:
    """Milliseconds a round spends in each timed step: the ingress recording the message that
    made it ready (decode and check, the script), and the worker's steps (take, plan, write,
    commit, push)."""
    steps = {f"ingress {k.split(':', 1)[1]}": v for k, v in delta.items() if k.startswith("ingress_ms:")}
    steps.update({f"worker {k.split(':', 1)[1]}": v for k, v in delta.items() if k.startswith("worker_ms:")})
    return {name: round(ms / rounds, 3) for name, ms in steps.items()}


def command_stats(client) -> dict[str, float]:
    """Redis's command statistics, server-wide: ``redis_usec:<command>`` (time inside the
    server) and ``redis_calls:<command>``."""
    found = {}
    for name, stats in client.info("commandstats").items():
        command = name.removeprefix("cmdstat_")
        found[f"redis_usec:{command}"] = float(stats["usec"])
        found[f"redis_calls:{command}"] = float(stats["calls"])
    return found


def redis_profile(delta: dict[str, float], rounds: int) -> dict[str, float]:
    """Redis's own time a round by command, from its command statistics (the time inside the
    server, not the wait), those above 1 µs a round. ``evalsha`` is the scripts' time with the
    commands they run; those commands are counted again on their own lines, so the lines do
    not add up (the Redis process's CPU a round is ``cpu_ms_per_round_by_process``)."""
    usec = {k.split(":", 1)[1]: v / rounds for k, v in delta.items() if k.startswith("redis_usec:")}
    return {name: round(v, 1) for name, v in sorted(usec.items(), key=lambda kv: -kv[1]) if v >= 1}


class XferdNode:
    """`xferd serve` with N workers as a child, and a Sender and Receiver in this process."""

    def __init__(self, settings, workers: int, rounds: int, slots: int, log_path: str):
        from xferd.state.connections import connect
        from xferd.client.receiver import Receiver
        from xferd.client.sender import Sender
        from xferd.state.store import Store

        self.settings = settings.replace(workers=workers, rounds_per_worker=rounds)
        self.store = Store(connect(self.settings.redis_url), self.settings, direct=True)  # as Sender makes its own
        self.log = open(log_path, "a")
        self.process = start_serve(self.settings, self.store, self.log)
        self.sender = Sender(self.settings, self.store)
        self.receiver = Receiver(self.settings.ingress, self.settings.buffer_layout, slots * MAX_BLOCKS,
                                 store=self.store)
        self.receiver.register()
        time.sleep(0.3)
        self.meter = CpuMeter({"client": [os.getpid()], **serve_processes(self.process.pid),
                               "redis": redis_pids(self.store.client)})

    def counts(self) -> dict[str, float]:
        """The workers' and the ingress's counters and step timings, and Redis's command
        statistics (``redis_usec:<command>``)."""
        found = {k: v for k, v in self.store.measures().items() if k.startswith(("worker_", "ingress_"))}
        return {**found, **command_stats(self.store.client)}

    def run(self, workload: str, requests: list[Request], concurrency: int) -> Result:
        layout = self.settings.buffer_layout

        def one(request: Request, slot: int) -> float:
            blocks = self.sender.allocate(request.room, request.total_tokens, timeout=120)
            self.sender.publish(request.room, blocks, request.total_tokens)  # the encoder is ready
            return receive(self.receiver, request, slot * MAX_BLOCKS, layout.block_size)

        before = self.counts()
        self.meter.start()
        latencies, elapsed = drive(requests, concurrency, one)
        cpu = self.meter.stop()
        time.sleep(1.2)  # the workers and the ingress publish their counters each second
        after = self.counts()
        delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        rounds = max(1, delta.get("worker_rounds", 0))
        extra = {"redis_round_trips_per_round": round(delta.get("worker_round_trips", 0) / rounds, 2),
                 "entries_per_round": round(delta.get("worker_entries", 0) / rounds, 1),
                 "contiguous_runs_x_buffers_per_round": round(delta.get("worker_runs", 0) / rounds, 1),
                 "steps_ms_per_round": round_profile(delta, rounds),
                 "redis_usec_per_round": redis_profile(delta, rounds)}
        return Result("xferd", workload, concurrency, self.settings.workers, requests, elapsed,
                      sum(request_bytes(layout, r) for r in requests), latencies, cpu, extra,
                      self.settings.rounds_per_worker)

    def close(self) -> None:
        """Stop the node and delete its keys."""
        self.receiver.close()
        stop_process(self.process)
        self.log.close()
        self.store.delete_keys(list(self.store.node_keys()))


def run_bench(redis_url: str | None = None, requests: int = 200, workloads=tuple(WORKLOADS),
              concurrencies=(1, 8, 32), workers=("1x1", "2x1", "2x2"), hidden_size: int = 4096, json_path: str = "bench.json",
              chart_path: str = "bench.png", out=sys.stdout) -> dict:
    """``requests``: of the first workload; every other gets as many tokens in all."""
    import json
    import tempfile

    from xferd.state.connections import DEFAULT_REDIS_URL, connect
    from xferd_lab.embedded import free_port, local_or_embedded
    from xferd.settings import Settings

    # the configured Redis, else the local one, else a private redis-server child
    url, embedded = (redis_url, None) if redis_url else local_or_embedded(DEFAULT_REDIS_URL)
    tag = f"bench{os.getpid()}"
    slots = max(concurrencies)
    settings = Settings(redis_url=url, prefix="xferd-bench", node=tag, hidden_size=hidden_size, metrics="",
                        pool_blocks=slots * MAX_BLOCKS + MAX_BLOCKS, pool_name=f"xferd-{tag}",
                        ingress=f"tcp://127.0.0.1:{free_port()}")
    layout = settings.buffer_layout
    volume = requests * parse_workload(workloads[0])[0]
    plans = {name: shaped(name, max(1, round(volume / parse_workload(name)[0])), 1_000_000 * (n + 1))
             for n, name in enumerate(workloads)}
    config = {"workloads": {name: len(plan) for name, plan in plans.items()}, "concurrency": list(concurrencies),
              "workers": list(workers), "layout": layout.describe(), "redis": url.split("@")[-1]}
    log_path = os.path.join(tempfile.mkdtemp(prefix="xferd-bench-"), "serve.log")

    def say(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    say(f"xferd bench: {', '.join(f'{len(p)} requests of {w} tokens' for w, p in plans.items())} "
        f"(TOTAL/PER_ROUND), {layout.describe()}; serve log {log_path}")
    source = SourcePool(layout, settings.pool_blocks, settings.shm_name, create=True)
    rows: list[dict] = []

    def measure(label: str, workload: str, spec: tuple[int, int], concurrency: int, run, requests_,
                warm_up) -> None:
        """One row of the table. A run that fails is reported as a row with its error and the
        bench goes on: e.g. 32 threads sharing one engine on 2 cores can hit Mooncake's limit on
        one synchronous batch (MC_TRANSFER_TIMEOUT, 30 s by default)."""
        mode = label.split()[0]
        try:
            run(workload, warm_up, concurrency)  # connections, page faults
            result = run(workload, requests_, concurrency)
        except RuntimeError as error:  # Mooncake's WriteError, a room that failed or timed out
            rows.append({"mode": mode, "workload": workload, "concurrency": concurrency, "workers": spec[0],
                         "rounds_per_worker": spec[1], "requests": len(requests_), "error": str(error)[:300]})
            say(f"  {workload:9s} {label:10s} concurrency {concurrency:2d}: FAILED: {error}")
            return
        row = result.row()
        rows.append(row)
        trips = row.get("redis_round_trips_per_round")
        say(f"  {workload:9s} {label:10s} concurrency {concurrency:2d}: {row['gb_per_s']:.3f} GB/s, "
            f"p50 {row['p50_ms']} ms, CPU {row['cpu_ms_per_round']:.2f} ms/round"
            + (f", {trips} Redis round trips/round" if trips is not None else ""))
        if "steps_ms_per_round" in row:
            say("      per round: " + ", ".join(f"{k} {v:.3f} ms" for k, v in row["steps_ms_per_round"].items())
                + f"; scripts in Redis {row['redis_usec_per_round'].get('evalsha', 0):.0f} µs")

    # every mode is up before the first run, and the modes take turns on each (workload,
    # concurrency): a shared machine's load drifts over minutes, so rows side by side compare
    pids = redis_pids(connect(url))
    modes, nodes = [], []
    try:
        direct, inprocess = Direct(layout, source, slots, pids), InProcessNode(layout, source, slots, pids)
        nodes.append(inprocess)
        modes += [("raw", (1, 1), direct.run_raw), ("raw-sync", (1, 1), direct.run_raw_sync),
                  ("in-process", (1, 1), inprocess.run)]
        for count, rounds in (parse_workers(spec, settings.rounds_per_worker) for spec in workers):
            node = XferdNode(settings.replace(node=f"{tag}x{count}r{rounds}", ingress=f"tcp://127.0.0.1:{free_port()}"),
                             count, rounds, slots, log_path)
            nodes.append(node)
            modes.append((f"xferd {count}x{rounds}", (count, rounds), node.run))
        for number, (name, plan) in enumerate(plans.items()):
            for concurrency in concurrencies:
                for index, (label, spec, run) in enumerate(modes):
                    run_id = 2 * (index + 100 * concurrency + 10_000 * number)  # rooms are never reused
                    measure(label, name, spec, concurrency, run, renamed(plan, run_id + 1),
                            renamed(plan[:max(4, concurrency)], run_id))
    finally:
        for node in reversed(nodes):
            node.close()
        source.unlink()
        if embedded is not None:
            embedded.stop()
    targets = summary(rows)
    say("")
    say(results_table(rows))
    say("")
    profile = profile_table(rows)
    if profile:
        say("Where an xferd round's time goes (wall ms a round in each step; scripts: Redis's time in EVALSHA, "
            "from its command statistics; Redis CPU: the server's, from /proc):")
        say(profile)
        say("")
    for line in targets:
        say("  " + line)
    report = as_json(rows, targets, config)
    with open(json_path, "w") as handle:
        json.dump(report, handle, indent=2)
    say(f"JSON: {json_path}")
    if save_chart(rows, chart_path):
        say(f"chart: {chart_path}")
    else:
        say("chart: skipped (pip install matplotlib)")
    return report
