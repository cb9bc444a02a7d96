"""The `xferd` command: serve a node, look at one (status, rooms, top, inspect), and the
demo and bench tooling. Every command reads XFERD_* settings as `serve` does."""
from __future__ import annotations

import argparse
import sys

from xferd import __version__
from xferd.settings import Settings
from xferd.protocol.status import Status
from xferd.state.topology import URL_FORMS


def _version() -> str:
    """xferd's version and those of the parts that decide its behaviour."""
    import importlib.metadata
    import platform

    def of(*names: str) -> str:
        for name in names:
            try:
                return importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                continue
        return "not installed"
    return (f"xferd {__version__} (mooncake {of('mooncake-transfer-engine', 'mooncake-transfer-engine-non-cuda')}, "
            f"redis-py {of('redis')}, pyzmq {of('pyzmq')}, python {platform.python_version()})")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis", dest="redis_url", help=f"Redis URL: {URL_FORMS}; env XFERD_REDIS_URL")
    parser.add_argument("--prefix", help="key prefix (default xferd)")
    parser.add_argument("--node", help="embedding node name, part of every key (default node0)")


def _settings(args: argparse.Namespace, **extra) -> Settings:
    fields = {k: getattr(args, k, None) for k in ("redis_url", "prefix", "node", "workers", "rounds_per_worker",
                                                   "take_over",
                                                   "ingress", "block_size", "hidden_size", "pool_blocks",
                                                   "strict_bounds", "curve_secret_file", "curve_clients_dir",
                                                   "layout", "bootstrap", "dst_pool_blocks", "status_frames", "hostname",
                                                   "min_replicas", "replica_timeout", "metrics",
                                                   "log_format", "log_level")}
    return Settings.from_env(**fields, **extra)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xferd", description=__doc__)
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run a node: ingress, workers, janitor")
    _common(serve)
    serve.add_argument("--workers", type=int, help="worker processes (default 2)")
    serve.add_argument("--rounds-per-worker", type=int, dest="rounds_per_worker",
                       help="rounds each worker process writes at once, one thread each (default 1)")
    serve.add_argument("--ingress", help="ZMQ bind address (default tcp://127.0.0.1:17500)")
    serve.add_argument("--log-format", dest="log_format", choices=["text", "json"],
                       help="text (default) or json: one object a line, for a log pipeline")
    serve.add_argument("--log-level", dest="log_level", type=str.upper,
                       choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], help="default INFO")
    serve.add_argument("--metrics", help="HOST:PORT of /metrics (Prometheus), /healthz and /readyz "
                       "(default 127.0.0.1:17580; '' turns it off)")
    serve.add_argument("--layout", help="buffer layout: reference (default), deepstack:K (K deepstack "
                       "layers), or name=SIZE/UNIT,... (see docs/configuration.md)")
    serve.add_argument("--block-size", type=int, dest="block_size", help="tokens per block (default 128)")
    serve.add_argument("--hidden-size", type=int, dest="hidden_size", help="embedding width (default 4096)")
    serve.add_argument("--pool-blocks", type=int, dest="pool_blocks", help="source pool blocks (default 1024)")
    serve.add_argument("--hostname", help="the address Mooncake peers and the language side reach this "
                       "node at (default 127.0.0.1)")
    serve.add_argument("--bootstrap", help="HOST:PORT: answer the reference language side's HTTP "
                       "bootstrap (/route, /health) there; off by default")
    serve.add_argument("--dst-pool-blocks", type=int, dest="dst_pool_blocks",
                       help="destination pool size in blocks, bounding clients that register no "
                            "buffer lengths (the reference's)")
    serve.add_argument("--status-frames", type=int, choices=(2, 3), dest="status_frames",
                       help="2: [room, status] (default, the reference multimodal form); "
                            "3: adds sender_rank")

    serve.add_argument("--min-replicas", type=int, dest="min_replicas",
                       help="replicas (Cluster or Sentinel) that must have a take or a status before "
                            "it is acted on (WAIT), so a failover never rolls one back (default 0)")
    serve.add_argument("--replica-timeout", type=float, dest="replica_timeout",
                       help="seconds a status may wait for --min-replicas before its room fails "
                            "(default 10)")
    serve.add_argument("--strict-bounds", action="store_const", const=True, dest="strict_bounds",
                       help="refuse registrations that cannot be bounds-checked (no buffer "
                            "lengths, and no --dst-pool-blocks)")
    serve.add_argument("--take-over", action="store_const", const=True, dest="take_over",
                       help="serve a node whose record says another host serves it: only when that "
                            "host is gone for good (its workers cannot be fenced from here)")
    serve.add_argument("--curve-secret-file", dest="curve_secret_file",
                       help="CurveZMQ: the ingress's key pair (from `xferd keygen`)")
    serve.add_argument("--curve-clients-dir", dest="curve_clients_dir",
                       help="CurveZMQ: directory of the public keys of allowed language peers")

    bench = sub.add_parser("bench", help="xferd vs raw Mooncake vs the in-process design, same bytes")
    bench.add_argument("--redis", dest="redis_url", help="Redis for xferd (default: local, else a private one)")
    bench.add_argument("--requests", type=int, default=200,
                       help="requests of the first workload; the others move as many tokens")
    bench.add_argument("--workload", dest="workloads", nargs="+", default=["2000/1024", "8192/2048", "256/128"],
                       metavar="TOTAL/PER_ROUND", help="request tokens / tokens the destination takes a round")
    bench.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32],
                       help="requests in flight, one cell each (default 1 8 32)")
    bench.add_argument("--workers", nargs="+", default=["1x1", "2x1", "2x2"], metavar="N[xR]",
                       help="xferd worker sets to measure: N processes, each writing R rounds at once "
                            "(R not given: the default, 1)")
    bench.add_argument("--topologies", action="store_true",
                       help="xferd alone on one Redis, a local Redis Cluster and Sentinel, with "
                            "min_replicas 0 and 1 (writes bench-topologies.json)")
    bench.add_argument("--sglang-encoder", action="store_true", dest="sglang_encoder",
                       help="SGLang's encoder side (a stand-in) on xferd vs the in-process design, "
                            "concurrency 1 and 8 (writes bench-sglang.json)")
    bench.add_argument("--capacity", action="store_true",
                       help="the rounds/s one Redis core carries: a load generator drives the Redis side of "
                            "small-round requests for many simulated nodes (writes bench-capacity.json)")
    bench.add_argument("--nodes", type=int, default=8, help="--capacity: simulated nodes (default 8)")
    bench.add_argument("--seconds", type=float, default=20.0, help="--capacity: how long (default 20)")
    bench.add_argument("--json", default="bench.json", help="where the results go (default bench.json)")
    bench.add_argument("--chart", default="bench.png", help="the chart, with matplotlib (default bench.png)")

    keygen = sub.add_parser("keygen", help="write a CurveZMQ key pair: DIR/NAME.key and DIR/NAME.key_secret")
    keygen.add_argument("directory", help="where the key files go")
    keygen.add_argument("name", help="the file name of the pair (NAME.key, NAME.key_secret)")

    inspect = sub.add_parser("inspect", help="show a room's records, decoded")
    _common(inspect)
    inspect.add_argument("room", type=int, help="the room id")

    status = sub.add_parser("status", help="the node at a glance: workers, queue, pool, rooms, recent failures")
    _common(status)
    rooms = sub.add_parser("rooms", help="list a node's rooms, oldest first")
    _common(rooms)
    rooms.add_argument("--status", choices=[s.name for s in Status],
                       help="only rooms of this status (default: the live ones)")
    rooms.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    drain = sub.add_parser("drain", help="stop the node's serve gracefully (SIGTERM): rounds in flight finish, "
                           "unstarted ones go back to the queue; run on the node's host")
    _common(drain)
    cleanup = sub.add_parser("cleanup", help="remove the Redis keys and the /dev/shm pool of a node that is down "
                             "(refused while it runs)")
    _common(cleanup)
    top = sub.add_parser("top", help="the status view, refreshed until Ctrl-C")
    _common(top)
    top.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes (default 1)")

    encoder = sub.add_parser("sglang-encoder", help="run SGLang's encoder server (--disaggregation-mode "
                             "encode) on this host's node: xferd sglang-encoder -- python -m "
                             "sglang.launch_server ...")
    _common(encoder)
    encoder.add_argument("encoder_command", nargs=argparse.REMAINDER, metavar="-- COMMAND",
                         help="the SGLang command line, unchanged")

    demo = sub.add_parser("demo", help="run everything on this machine and verify every byte")
    demo.add_argument("--redis", dest="redis_url", help="use this Redis instead of an embedded one")
    demo.add_argument("--requests", type=int, default=100, help="requests to send (default 100)")
    demo.add_argument("--workers", type=int, default=2, help="worker processes of the demo's node (default 2)")
    demo.add_argument("--seed", type=int, default=7, help="seed of the requests' sizes and data (default 7)")
    demo.add_argument("--chaos", action="store_true",
                      help="SIGKILL a random worker every 0.2-0.5 s, SIGSTOP one for 1-5 s every "
                           "0.5-1.5 s (lease 1 s), and crash-restart the embedded Redis (AOF) "
                           "half-way; all must still succeed")
    return parser


def main(argv: list[str] | None = None) -> None:
    from xferd.state.connections import PERMANENT, TRANSIENT
    from xferd.settings import ConfigError

    args = build_parser().parse_args(argv)
    try:
        _run(args)
    except ModuleNotFoundError as error:  # the tooling's extras on a node installed to serve
        if error.name and error.name.split(".")[0] in ("torch", "numpy", "fakeredis", "matplotlib"):
            sys.exit(f"xferd {args.command}: needs {error.name}, which a serving install leaves out: "
                     "pip install 'xferd[demo]' (or [bench])")
        raise
    except PERMANENT as error:
        sys.exit(f"xferd: Redis refused the credentials: {error}")
    except ConfigError as error:
        sys.exit(f"xferd: {error}")
    except TRANSIENT as error:  # a looking command (status, rooms, inspect) with Redis away
        sys.exit(f"xferd: Redis at {_where(args)} does not answer ({type(error).__name__}: {error})")


def _where(args: argparse.Namespace) -> str:
    from xferd.state.connections import DEFAULT_REDIS_URL, redact
    try:
        url = _settings(args).redis_url
    except Exception:  # the settings themselves are bad: said elsewhere
        url = None
    return redact(url or DEFAULT_REDIS_URL)


def _looking_store(args: argparse.Namespace):
    """A Store for the looking commands: a Redis that does not answer within a few seconds
    is the answer (no retries), and where it looked, for the header."""
    from xferd.state.connections import DEFAULT_REDIS_URL, connect_once, redact
    from xferd.state.store import Store
    settings = _settings(args)
    url = settings.redis_url or DEFAULT_REDIS_URL
    client = connect_once(url, timeout_s=5, probe_patience_s=0)
    return Store(client, settings), redact(url)


def _run(args: argparse.Namespace) -> None:
    if args.command == "serve":
        from xferd.node.serve import serve as run_serve
        run_serve(_settings(args))
    elif args.command == "bench":
        from xferd_lab.bench_workload import parse_workers, parse_workload
        try:
            for name in args.workloads:
                parse_workload(name)
            worker_sets = [parse_workers(spec) for spec in args.workers]
        except ValueError as error:
            sys.exit(f"xferd bench: {error}")
        if args.sglang_encoder:
            from xferd_lab.bench_sglang import run_sglang_bench
            run_sglang_bench(redis_url=args.redis_url, requests=min(args.requests, 40), workloads=tuple(args.workloads),
                             concurrencies=(1, 8), json_path=args.json.replace("bench.json", "bench-sglang.json"))
            return
        if args.capacity:
            from xferd_lab.bench_capacity import run_capacity
            run_capacity(redis_url=args.redis_url, nodes=args.nodes, seconds=args.seconds,
                         json_path=args.json.replace("bench.json", "bench-capacity.json"))
            return
        if args.topologies:
            from xferd_lab.bench_redis import run_topology_bench
            run_topology_bench(requests=args.requests, concurrencies=tuple(args.concurrency),
                               workers=max(count for count, _ in worker_sets),
                               json_path=args.json.replace("bench.json", "bench-topologies.json"))
            return
        from xferd_lab.bench import run_bench
        run_bench(redis_url=args.redis_url, requests=args.requests, workloads=tuple(args.workloads),
                  concurrencies=tuple(args.concurrency), workers=tuple(args.workers), json_path=args.json,
                  chart_path=args.chart)
    elif args.command == "keygen":
        from xferd.node.auth import keygen
        public, secret = keygen(args.directory, args.name)
        print(f"public key {public}\nsecret key {secret} (keep it private)")
    elif args.command == "inspect":
        from xferd.ops.roomview import render
        store, _ = _looking_store(args)
        print(render(store, args.room, store.settings.redis_url))
    elif args.command in ("drain", "cleanup"):
        from xferd.ops import operate
        store, where = _looking_store(args)
        print(f"node {store.settings.node!r}, prefix {store.settings.prefix!r}, redis {where}")
        (operate.drain if args.command == "drain" else operate.cleanup)(store, store.settings)
    elif args.command in ("status", "rooms", "top"):
        from xferd.ops import console
        store, where = _looking_store(args)
        if args.command == "status":
            console.print_status(store, where)
        elif args.command == "rooms":
            console.print_rooms(store, where, args.status, args.limit)
        else:
            console.top(store, where, args.interval)
    elif args.command == "sglang-encoder":
        from xferd.sglang_encoder.launcher import launch
        launch(args.encoder_command, redis_url=args.redis_url, prefix=args.prefix, node=args.node)
    elif args.command == "demo":
        from xferd_lab.demo import run_demo
        from xferd_lab.chaos import Chaos
        chaos = Chaos(pause_every=(0.5, 1.5), redis_crashes=((0.5, 0.0),) if not args.redis_url else ()) \
            if args.chaos else None
        sys.exit(run_demo(redis_url=args.redis_url, requests=args.requests, workers=args.workers,
                          seed=args.seed, chaos=chaos))
