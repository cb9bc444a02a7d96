"""`xferd bench --topologies`: the same xferd workload on one Redis, a Redis Cluster and a
Sentinel set-up, with min_replicas 0 and 1, in one run: what each topology and each
replica wait cost per round (latency, GB/s, Redis round trips a worker makes per round)."""
from __future__ import annotations

import json
import os
import sys
import tempfile

from xferd_lab.bench import XferdNode
from xferd_lab.bench_workload import MAX_BLOCKS, renamed, shaped
from xferd.state.connections import DEFAULT_REDIS_URL
from xferd_lab.embedded import free_port, local_or_embedded
from xferd_lab.local_redis import LocalCluster, LocalSentinel
from xferd.transfer.pool import SourcePool
from xferd.settings import Settings

WORKLOAD = "2000/1024"
CASES = (("single Redis", "single", 0), ("Redis Cluster 3+3", "cluster", 0), ("Redis Cluster 3+3", "cluster", 1),
         ("Sentinel 1+1", "sentinel", 1))


def run_topology_bench(requests: int = 48, concurrencies=(1, 8), workers: int = 2, seed: int = 1,
                       hidden_size: int = 4096, json_path: str = "bench-topologies.json", out=sys.stdout) -> list[dict]:
    def say(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    single_url, embedded = local_or_embedded(DEFAULT_REDIS_URL)
    setups = {"single": None, "cluster": LocalCluster().start(), "sentinel": LocalSentinel().start()}
    urls = {"single": single_url, "cluster": setups["cluster"].url, "sentinel": setups["sentinel"].url}
    slots = max(concurrencies)
    tag = f"benchtopo{os.getpid()}"
    base = Settings(prefix="xferd-bench", node=tag, hidden_size=hidden_size, pool_name=f"xferd-{tag}",
                    pool_blocks=slots * MAX_BLOCKS + MAX_BLOCKS, metrics="")
    plan = shaped(WORKLOAD, requests, 1_000_000 * seed)
    source = SourcePool(base.buffer_layout, base.pool_blocks, base.shm_name, create=True)
    log_path = os.path.join(tempfile.mkdtemp(prefix="xferd-bench-"), "serve.log")
    say(f"xferd bench --topologies: {requests} requests of {WORKLOAD} tokens, {workers} workers, "
        f"concurrency {', '.join(map(str, concurrencies))}; serve log {log_path}")
    rows = []
    try:
        for run, (label, kind, min_replicas) in enumerate(CASES):
            settings = base.replace(redis_url=urls[kind], min_replicas=min_replicas,
                                    ingress=f"tcp://127.0.0.1:{free_port()}")
            node = XferdNode(settings, workers, settings.rounds_per_worker, slots, log_path)
            try:
                for number, concurrency in enumerate(concurrencies):
                    first = 1000 + 2 * (run * 10 + number)
                    node.run(WORKLOAD, renamed(plan[:max(4, concurrency)], first), concurrency)  # warm-up
                    result = node.run(WORKLOAD, renamed(plan, first + 1), concurrency)
                    row = {"redis": label, "min_replicas": min_replicas, **result.row()}
                    rows.append(row)
                    say(f"  {label:18s} min_replicas {min_replicas}  concurrency {concurrency:2d}: "
                        f"{row['gb_per_s']} GB/s, p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, "
                        f"{row['redis_round_trips_per_round']} round trips/round")
            finally:
                node.close()
    finally:
        source.unlink()
        for setup in setups.values():
            if setup is not None:
                setup.stop()
        if embedded is not None:
            embedded.stop()
    with open(json_path, "w") as handle:
        json.dump({"requests": requests, "workers": workers, "rows": rows}, handle, indent=2)
    say(f"JSON: {json_path}")
    return rows
