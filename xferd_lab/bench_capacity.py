"""`xferd bench --capacity`: how many rounds one Redis core carries, for many nodes.

A load generator drives the Redis side of small-round requests — no Mooncake, no ZMQ —
for N simulated nodes at once, from several processes. Each request is the small-round
workload's: init (one block), allocate and publish two blocks, then two rounds (read, take,
commit), with a resume between them. The Redis server's CPU is measured from /proc over the
run, which gives the capacity line: one Redis core carries 1 / (Redis CPU per round)
rounds a second.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
import uuid

from xferd_lab.cpu import CpuMeter

TOKENS, PER_ROUND = 256, 128  # two rounds of one block each


def _drive(url: str, prefix: str, nodes: list[str], seconds: float, done) -> None:
    """One load process: requests round-robin over its nodes until ``seconds`` pass; puts
    the rounds it completed on ``done``."""
    from xferd.protocol.wire import Init, Register, Resume
    from xferd.settings import Settings
    from xferd.state.connections import connect
    from xferd.state.store import Store

    client = connect(url)
    stores = [Store(client, Settings(redis_url=url, prefix=prefix, node=node, pool_blocks=64)) for node in nodes]
    session = "127.0.0.1:9000"
    for store in stores:
        store.register_session(Register("127.0.0.1", 7000, session, (1, 2, 3, 4), (1 << 30,) * 4))
    consumer, rounds, room = f"load-{os.getpid()}", 0, 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for store in stores:
            room += 1
            store.dst_init(Init(room, "127.0.0.1", 7000, session, (0,), 1, PER_ROUND))
            store.publish_source(room, TOKENS, store.alloc_blocks(room, TOKENS // PER_ROUND).blocks)
            for sent in (PER_ROUND, TOKENS):
                (work,) = store.read_rounds(consumer, 1, 100)
                take, why = store.begin_round(work, consumer, 30_000)
                assert take is not None, why
                verdict, outcome = store.commit_round(work, consumer, take.epoch, [sent])
                assert verdict == "ok", outcome
                rounds += 1
                if sent < TOKENS:
                    store.dst_resume(Resume(room, "127.0.0.1", 7000, session, (0,), 1, sent, PER_ROUND))
    done.put(rounds)


def _server_counts(client) -> dict[str, float]:
    """Redis's own counters: microseconds in scripts, requests that are scripts or reads, CPU
    seconds in user and kernel mode (server-wide: run it alone)."""
    from xferd_lab.bench import command_stats

    stats, cpu = command_stats(client), client.info("cpu")
    return {"scripts_usec": sum(stats.get(f"redis_usec:{n}", 0.0) for n in ("evalsha", "eval")),
            "requests": sum(stats.get(f"redis_calls:{n}", 0.0) for n in ("evalsha", "eval", "xreadgroup")),
            "cpu_sys": float(cpu["used_cpu_sys"]), "cpu_user": float(cpu["used_cpu_user"])}


def run_capacity(redis_url: str | None = None, nodes: int = 8, processes: int = 2, seconds: float = 20.0,
                 json_path: str = "bench-capacity.json", out=sys.stdout) -> dict:
    from xferd.state.connections import DEFAULT_REDIS_URL, connect
    from xferd.state.store import Store
    from xferd.settings import Settings
    from xferd_lab.bench import redis_pids
    from xferd_lab.embedded import local_or_embedded

    url, embedded = (redis_url, None) if redis_url else local_or_embedded(DEFAULT_REDIS_URL)
    prefix = f"xferd-capacity-{uuid.uuid4().hex[:6]}"
    names = [f"n{i}" for i in range(nodes)]
    client = connect(url)
    try:
        for name in names:  # each node's record (its policy) and pool, as `serve` makes them
            store = Store(client, Settings(redis_url=url, prefix=prefix, node=name, pool_blocks=64))
            store.ensure_groups()
            store.init_pool(64, {"shm": "capacity"})
        pids = redis_pids(client)
        meter = CpuMeter({"redis": pids})
        before = _server_counts(client)
        out.write(f"xferd bench --capacity: {nodes} simulated nodes, {processes} load processes, {seconds:g} s, "
                  f"Redis {url.split('@')[-1]}{'' if pids else ' (its CPU cannot be read here)'}\n")
        done = multiprocessing.get_context("spawn").Queue()
        workers = [multiprocessing.get_context("spawn").Process(
            target=_drive, args=(url, prefix, names[i::processes], seconds, done)) for i in range(processes)]
        meter.start()
        started = time.monotonic()
        for worker in workers:
            worker.start()
        rounds = sum(done.get(timeout=seconds + 60) for _ in workers)
        elapsed = time.monotonic() - started
        for worker in workers:
            worker.join()
        redis_cpu = meter.stop().get("redis", 0.0)
        spent = {k: v - before.get(k, 0.0) for k, v in _server_counts(client).items()}
    finally:
        for key in client.scan_iter(f"{prefix}:*", count=1000):
            client.delete(key)
        if embedded is not None:
            embedded.stop()
    report = {"nodes": nodes, "processes": processes, "seconds": round(elapsed, 1), "rounds": rounds,
              "rounds_per_s": round(rounds / elapsed, 1),
              "redis_cpu_ms_per_round": round(redis_cpu * 1000 / max(rounds, 1), 3) if pids else None,
              "redis_busy": round(redis_cpu / elapsed, 2) if pids else None,
              # where Redis's time goes, from its own counters: the scripts, the requests that
              # reach it (scripts and reads; each is a socket read and a reply written), and
              # its CPU in the kernel (mostly those sockets) and in Redis itself
              "redis_scripts_ms_per_round": round(spent["scripts_usec"] / 1000 / max(rounds, 1), 3),
              "redis_requests_per_round": round(spent["requests"] / max(rounds, 1), 2),
              "redis_kernel_ms_per_round": round(spent["cpu_sys"] * 1000 / max(rounds, 1), 3),
              "redis_user_ms_per_round": round(spent["cpu_user"] * 1000 / max(rounds, 1), 3)}
    if pids and rounds:
        per_core = 1000 / report["redis_cpu_ms_per_round"]
        report["rounds_per_s_per_redis_core"] = round(per_core)
        node_rate = report["rounds_per_s"] / nodes
        line = (f"one Redis core carries about {per_core:,.0f} rounds/s "
                f"(Redis CPU {report['redis_cpu_ms_per_round']:.3f} ms a round, busy {report['redis_busy']:.0%} "
                f"at {report['rounds_per_s']:,.0f} rounds/s here), i.e. {per_core / max(node_rate, 1):.0f} nodes "
                f"at this run's {node_rate:,.0f} rounds/s each")
    else:
        line = f"{report['rounds_per_s']:,.0f} rounds/s (Redis's CPU not measured)"
    report["capacity"] = line
    out.write(line + "\n")
    out.write(f"  Redis per round: {report['redis_requests_per_round']:g} requests (scripts and reads), "
              f"{report['redis_scripts_ms_per_round']:.3f} ms in scripts; CPU {report['redis_user_ms_per_round']:.3f} ms "
              f"in Redis, {report['redis_kernel_ms_per_round']:.3f} ms in the kernel (its sockets)\n")
    with open(json_path, "w") as handle:
        json.dump(report, handle, indent=2)
    out.write(f"JSON: {json_path}\n")
    return report
