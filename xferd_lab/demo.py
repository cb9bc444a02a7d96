"""`xferd demo`: the whole system on one machine, every landed byte checked.

Embedded Redis (unless --redis), `xferd serve` with N workers as a child process, a
simulated encoder process publishing deterministic embeddings, and a simulated language
side (two ranks) whose destination pool is too small for most requests, so they go
through resume rounds. Ends with a summary; exits non-zero on any wrong byte or failure.
"""
from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile
import time

from xferd_lab.chaos import Chaos, PrimaryKiller, RedisCrasher, RedisFiller, RollingRestarter, WorkerKiller, WorkerPauser
from xferd.state.connections import connect, redact
from xferd.state.retry import with_retry
from xferd_lab.embedded import EmbeddedRedis, free_port
from xferd_lab.peerfaults import DeafPeer, RestartingPeer
from xferd_lab.redis_proxy import RedisProxy
from xferd_lab.langsim import LanguageSim
from xferd.node.processes import start_serve, stop_process
from xferd.client.sender import Sender
from xferd.settings import Settings
from xferd.protocol.status import Status
from xferd.state.store import Store
from xferd_lab.synthetic import Request, room_data, workload


def encoder_main(settings: Settings, requests: list[Request]) -> None:
    """The simulated encoder: write each room's embeddings into source blocks, publish."""
    sender = Sender(settings)
    for request in requests:
        data = room_data(request.room, request.total_tokens, settings.buffer_layout)
        sender.send(request.room, request.total_tokens, data, timeout=300)



class ServeProcess:
    """The demo's `xferd serve` child; a rolling restart drains it and starts the next."""

    def __init__(self, settings: Settings, store: Store, log):
        self.settings, self.store, self.log = settings, store, log
        self.process = start_serve(settings, store, log)

    @property
    def pid(self) -> int:
        return self.process.pid

    def restart(self) -> dict:
        """SIGTERM (a drain), wait for the exit, start a new serve: exit code, seconds to
        drain, seconds from SIGTERM until the new serve is ready."""
        started = time.monotonic()
        self.process.terminate()
        try:
            code = self.process.wait(self.settings.stop_timeout + 30)
        except subprocess.TimeoutExpired:
            code = "hung"
            stop_process(self.process)
        drained = time.monotonic() - started
        self.process = start_serve(self.settings, self.store, self.log)
        return {"exit_code": code, "drained_s": round(drained, 2), "down_s": round(time.monotonic() - started, 2)}

    def stop(self) -> None:
        stop_process(self.process)


class Progress:
    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.stream = total, stream
        self.tty = stream.isatty()
        self.last = 0.0
        self.printed = -1  # rooms done at the last line (non-tty: one line per 10%)
        self.started = time.monotonic()

    def __call__(self, sim: LanguageSim) -> None:
        done = len(sim.results)
        now = time.monotonic()
        if self.tty and now - self.last < 0.1 and done < self.total:
            return
        if not self.tty and (done == self.printed or (done % max(1, self.total // 10) and done < self.total)):
            return
        self.last, self.printed = now, done
        width = 30
        filled = width * done // self.total
        failed = sum(r.status != Status.Success for r in sim.results)
        line = (f"[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} rooms, "
                f"{sim.bytes_landed / 1e9:.2f} GB checked, {failed} failed, {now - self.started:.1f}s")
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        if self.tty and done == self.total:
            self.stream.write("\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()


def _latency_ms(results) -> tuple[float, float]:
    """p50 and p99 of init → Success, over the rooms that succeeded."""
    latencies = [r.latency * 1000 for r in results if r.status == Status.Success]
    return _percentile(latencies, 0.5), _percentile(latencies, 0.99)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def run_demo(redis_url: str | None = None, requests: int = 100, workers: int = 2, seed: int = 7,
             hidden_size: int = 1024, chaos: Chaos | None = None, json_path: str | None = None,
             out=sys.stdout) -> int:
    """Run the demo (under ``chaos`` if given); prints the summary (and writes it as JSON to
    ``json_path``), returns the exit code: 0 when every request succeeded with every byte
    right and no source block leaked."""
    crashes = chaos.redis_crashes if chaos and not chaos.failover else ()
    replicated = _replicated_redis(chaos.failover, chaos.min_replicas) if chaos and chaos.failover else None
    if (crashes or replicated or (chaos and chaos.redis_oom)) and redis_url:
        raise ValueError("Redis crashes, failovers and full memory need Redis started here, not --redis")
    embedded = None if redis_url or replicated else EmbeddedRedis(aof=bool(crashes)).start()
    if chaos and chaos.redis_oom and embedded is not None and embedded.kind.startswith("in-process"):
        embedded.stop()
        raise ValueError("filling Redis up needs redis-server installed (fakeredis has no maxmemory)")
    url = redis_url or (replicated or embedded).url
    redis_kind = embedded.kind if embedded else replicated.kind if replicated else f"configured: {redact(url)}"
    proxy = RedisProxy(url, chaos.redis_delay) if chaos and chaos.redis_delay else None
    if proxy is not None:
        redis_kind += f", through a proxy adding {chaos.redis_delay * 1000:g} ms each way"
    tag = f"demo{os.getpid()}"
    settings = Settings(redis_url=proxy.url if proxy else url, prefix="xferd-demo", node=tag, workers=workers,
                        ingress=f"tcp://127.0.0.1:{free_port()}", metrics=f"127.0.0.1:{free_port()}",
                        hidden_size=hidden_size,
                        pool_blocks=512, pool_name=f"xferd-{tag}", round_timeout=120,
                        lease=chaos.lease if chaos else 5.0, consumer_ttl=10.0 if chaos else 60.0,
                        min_replicas=chaos.min_replicas if replicated else 0)
    store = Store(connect(url), settings)
    log_dir = tempfile.mkdtemp(prefix="xferd-demo-")
    serve_log = open(os.path.join(log_dir, "serve.log"), "w")
    progress = Progress(requests)
    progress.note(f"xferd demo: redis = {redis_kind}")
    progress.note(f"starting `xferd serve` ({workers} workers), logs in {serve_log.name}")
    serve = encoder = sim = None
    faults: list = []
    try:
        serve = ServeProcess(settings, store, serve_log)
        plan = workload(requests, seed)
        sim = LanguageSim(settings.ingress, settings.buffer_layout, ranks=2, pool_blocks=64,
                          max_round_blocks=16, store=store, concurrency=8,
                          resend_after=5.0 if chaos is None or chaos.resend else float("inf"))
        encoder = multiprocessing.get_context("spawn").Process(target=encoder_main, args=(settings, plan),
                                                               name="encoder")
        encoder.start()
        if chaos is not None:
            progress.note(f"chaos: {chaos.describe()}")
            if chaos.kill_every:
                faults.append(WorkerKiller(store, *chaos.kill_every, seed,
                                           (lambda: serve.pid) if chaos.kill_any else None))
            if chaos.pause_every:
                faults.append(WorkerPauser(store, chaos.pause_every, chaos.pause_for, seed))
            if crashes:
                faults.append(RedisCrasher(embedded, crashes, lambda: len(sim.results) / requests))
            if chaos.redis_oom:
                faults.append(RedisFiller(url, chaos.redis_oom, lambda: len(sim.results) / requests,
                                          lambda: len(sim.results)))
            if replicated:
                faults.append(PrimaryKiller(replicated, settings.keys.record, chaos.failover_at,
                                            lambda: len(sim.results) / requests, lambda: len(sim.results),
                                            chaos.replica_lag))
            if chaos.restart_peer_every:
                faults.append(RestartingPeer(settings, store, chaos.restart_peer_every, seed))
            if chaos.deaf_peer:
                faults.append(DeafPeer(settings, store, seed))
            if chaos.drains_at:
                faults.append(RollingRestarter(serve.restart, chaos.drains_at, lambda: len(sim.results) / requests))
            for fault in faults:
                fault.start()
        started = time.monotonic()
        results = sim.run(plan, progress)
        elapsed = time.monotonic() - started
        for fault in faults:
            fault.done.set()
        for fault in faults:  # one mid-way (a restart, a failover) finishes, so the summary has it
            fault.join(settings.stop_timeout + 90)
        encoder.join(30)
        # A leak is a block that never comes back; the last releases may take a janitor pass.
        settle = time.monotonic() + 10
        while (free := with_retry(store.free_blocks, "count free blocks")) != settings.pool_blocks \
                and time.monotonic() < settle:
            time.sleep(settings.janitor_interval)
        summary = _summary(settings, plan, results, sim, elapsed, redis_kind, free)
        out.write(summary + "\n")
        if free != settings.pool_blocks:
            out.write(_holders(store) + "\n")
        if chaos is not None:
            out.write(_chaos_summary(faults, store.stats(), store.consumers()) + "\n")
        # a Success the language side acted on that Redis no longer has: rolled back
        rolled_back = sum(with_retry(lambda: store.status(r.room), "read status") != Status.Success
                          for r in results if r.status == Status.Success)
        if replicated:
            out.write(f"  rolled back     {rolled_back} statuses the language side acted on that Redis no longer "
                      f"holds\n")
        restarts = [r for f in faults for r in getattr(f, "restarts", [])]
        problems = [p for f in faults for p in getattr(f, "problems", [])]
        for problem in problems[:10]:
            out.write(f"  problem         {problem}\n")
        ok = (sim.wrong_bytes == 0 and all(r.status == Status.Success for r in results)
              and free == settings.pool_blocks and rolled_back == 0
              and all(r["exit_code"] == 0 for r in restarts) and not problems)
        if json_path:
            _write_json(json_path, ok, results, sim, elapsed, free, settings, faults, store.stats(),
                        len(store.consumers()), rolled_back)
        out.write(f"RESULT: {'PASS' if ok else 'FAIL'}\n")
        return 0 if ok else 1
    finally:
        for fault in faults:
            fault.done.set()
        if encoder is not None and encoder.is_alive():
            encoder.terminate()
        if sim is not None:
            sim.close()
        if serve is not None:
            serve.stop()
        if proxy is not None:
            proxy.close()
        serve_log.close()
        for key in store.node_keys():
            store.client.delete(key)
        try:
            os.unlink(f"/dev/shm/{settings.shm_name}")
        except FileNotFoundError:
            pass
        if embedded is not None:
            embedded.stop()
        if replicated is not None:
            replicated.stop()


def _replicated_redis(kind: str, min_replicas: int):
    """A started local Redis Cluster or Sentinel set-up, its ``kind`` said for the summary."""
    from xferd_lab.local_redis import LocalCluster, LocalSentinel

    if kind not in ("cluster", "sentinel"):
        raise ValueError(f"failover is 'cluster' or 'sentinel', not {kind!r}")
    setup = (LocalCluster() if kind == "cluster" else LocalSentinel()).start()
    setup.kind = f"{setup.describe()}, min_replicas {min_replicas}"
    return setup


def _summary(settings, plan, results, sim, elapsed, redis_kind, free) -> str:
    ok = [r for r in results if r.status == Status.Success]
    failed = [r for r in results if r.status != Status.Success]
    rounds = sum(r.rounds for r in results)
    resumes = sum(max(0, r.rounds - 1) for r in results)
    multi = sum(r.rounds > 1 for r in results)
    p50, p99 = _latency_ms(results)
    tokens = [r.total_tokens for r in plan]
    lines = [
        "",
        "xferd demo — summary",
        f"  redis           {redis_kind}",
        f"  node            {settings.workers} workers x {settings.rounds_per_worker} "
        f"round{'s' if settings.rounds_per_worker != 1 else ''} at once, lease {settings.lease:g}s, "
        f"{settings.buffer_layout.describe()}",
        f"  requests        {len(plan)} ({sum(r.ranks == 2 for r in plan)} with 2 destination ranks), "
        f"{min(tokens)}–{max(tokens)} tokens",
        f"  outcome         {len(ok)} Success, {len(failed)} Failed",
        f"  rounds          {rounds} ({resumes} resumes; {multi} requests resumed, "
        f"up to {max((r.rounds for r in results), default=0)} rounds each)",
        f"  bytes landed    {sim.bytes_landed / 1e9:.3f} GB, every byte compared: {sim.wrong_bytes} wrong",
        f"  throughput      {sim.bytes_landed / 1e9 / elapsed:.2f} GB/s over {elapsed:.1f}s",
        f"  latency         p50 {p50:.0f} ms, p99 {p99:.0f} ms "
        f"(init → Success, incl. resumes)",
        f"  status delivery {sum(r.notifications for r in sim.receivers)} ZMQ notifications, "
        f"{sum(r.fallbacks for r in sim.receivers)} Redis fallbacks, "
        f"{sum(r.resent for r in sim.receivers)} messages sent again",
        f"  source blocks   {free} of {settings.pool_blocks} free after the run"
        f"{' (no leak)' if free == settings.pool_blocks else ' (LEAK)'}",
    ]
    if failed:
        lines.append("  failures:")
        lines += [f"    room {r.room}: {r.reason}" for r in failed[:20]]
    else:
        lines.append("  failures        none")
    return "\n".join(lines)


def _holders(store: Store, limit: int = 5) -> str:
    """Which rooms still hold source blocks, and why (a leak report)."""
    lines = ["  blocks held by:"]
    for key in list(store.node_keys(store.keys.pool_owned("*")))[:limit]:
        room = int(key.decode().rsplit(":", 1)[1])
        record = store.room(room)
        fields = {k: record.get(k) for k in ("status_name", "round", "queued_round", "entry", "holder", "epoch",
                                            "lease_until", "failure")}
        lines.append(f"    room {room}: {store.held_blocks(room)} blocks, {fields}, now {store.now_ms()}")
    return "\n".join(lines)


def _chaos_summary(faults, stats: dict[str, int], consumers: dict[str, int]) -> str:
    lines = []
    for fault in faults:
        if isinstance(fault, WorkerKiller):
            whom = "children of serve" if fault.serve_pid else "workers"
            lines.append(f"  chaos           {fault.kills} {whom} SIGKILLed during the run")
        elif isinstance(fault, WorkerPauser):
            lines.append(f"  pauses          {fault.pauses} workers SIGSTOPped ({fault.paused_s:.0f}s in all), "
                         f"then SIGCONTed")
        elif isinstance(fault, RedisCrasher):
            outages = ", ".join(f"{s:.1f}s" for s in fault.outages) or "none reached"
            lines.append(f"  redis crashes   {len(fault.outages)} SIGKILL + restart from AOF (down {outages})")
        elif isinstance(fault, RedisFiller):
            each = ", ".join(f"{w['full_s']:.1f}s, a request done {w['next_done_s']:.1f}s after"
                             for w in fault.full) or "none reached"
            refused = sum(v for k, v in stats.items() if k.startswith("redis_refused:"))
            lines.append(f"  redis full      {len(fault.full)} windows of refused writes ({each}); "
                         f"{refused} calls refused and retried")
        elif isinstance(fault, (RestartingPeer, DeafPeer)):
            lines.append(f"  {'restarted peer' if isinstance(fault, RestartingPeer) else 'deaf peer':15s} "
                         f"{fault.summary()}")
        elif isinstance(fault, RollingRestarter):
            each = ", ".join(f"exit {r['exit_code']} after {r['drained_s']:.1f}s, serving again at {r['down_s']:.1f}s"
                             for r in fault.restarts) or "none reached"
            lines.append(f"  drains          {len(fault.restarts)} serves SIGTERMed and started again ({each})")
        elif isinstance(fault, PrimaryKiller):
            each = ", ".join(f"promoted in {f['promoted_s']:.1f}s, node stalled {f['stalled_s']:.1f}s"
                             for f in fault.failovers) or "none reached"
            lines.append(f"  failovers       {len(fault.failovers)} primaries SIGKILLed ({each}); "
                         f"transitions sent again {stats.get('replica_waits', 0)} times waiting for a "
                         f"replica, {stats.get('not_replicated', 0)} never confirmed")
    lines.append(f"  fencing         {stats.get('writers_fenced', 0)} stale writers stopped (SIGKILL) before "
                 f"their rounds moved on, {stats.get('handed_back', 0)} rounds handed back")
    lines.append(f"  recovery        {stats.get('redone_rounds', 0)} rounds written again (same bytes, after "
                 f"their writer was stopped), {stats.get('stale_commits', 0)} stale commits refused, "
                 f"{stats.get('dead_letters', 0)} dead letters, {stats.get('statuses_repushed', 0)} Success pushed "
                 f"again (their worker died within two leases of committing them, most after pushing)")
    lines.append(f"  consumers       {len(consumers)} names left in the group (stopped workers' are "
                 f"removed once nothing is pending on them)")
    return "\n".join(lines)


def _write_json(path, ok, results, sim, elapsed, free, settings, faults, stats, consumers: int,
                rolled_back: int) -> None:
    import json

    failed = [r for r in results if r.status != Status.Success]
    p50, p99 = _latency_ms(results)
    report = {
        "ok": ok, "requests": len(results), "success": len(results) - len(failed),
        "failed": [{"room": r.room, "reason": r.reason} for r in failed],
        "bytes_verified": sim.bytes_landed, "wrong_bytes": sim.wrong_bytes,
        "elapsed_s": round(elapsed, 2), "leaked_blocks": settings.pool_blocks - free,
        "latency_ms": {"p50": round(p50, 1), "p99": round(p99, 1)},
        "process_kills": sum(getattr(f, "kills", 0) for f in faults),
        "pauses": sum(getattr(f, "pauses", 0) for f in faults),
        "writers_fenced": stats.get("writers_fenced", 0), "handed_back": stats.get("handed_back", 0),
        "redis_outages_s": [round(s, 2) for f in faults for s in getattr(f, "outages", [])],
        "rounds_written_twice": stats.get("redone_rounds", 0),
        "stale_commits": stats.get("stale_commits", 0), "dead_letters": stats.get("dead_letters", 0),
        "messages_sent_again": sum(r.resent for r in sim.receivers), "consumers_left": consumers,
        "failovers": [f for fault in faults for f in getattr(fault, "failovers", [])],
        "drains": [r for fault in faults for r in getattr(fault, "restarts", [])],
        "redis_full": [w for fault in faults for w in getattr(fault, "full", [])],
        "redis_refused": sum(v for k, v in stats.items() if k.startswith("redis_refused:")),
        "peers": [{"kind": type(f).__name__, "rooms": f.rooms, "succeeded": f.succeeded,
                   "kills": getattr(f, "peer_kills", []), "problems": f.problems}
                  for f in faults if hasattr(f, "problems")],
        "statuses_rolled_back": rolled_back, "replica_waits": stats.get("replica_waits", 0),
        "not_replicated": stats.get("not_replicated", 0), "statuses_repushed": stats.get("statuses_repushed", 0),
    }
    with open(path, "w") as handle:
        json.dump(report, handle, indent=2)
