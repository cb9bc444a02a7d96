#!/usr/bin/env python3
"""Chaos run: the demo workload (2 ranks, resumes, every byte compared) under faults.

    scripts/chaos.py                      # 500 requests, a worker SIGKILLed every 0.2-0.5 s,
                                          # Redis SIGKILLed + restarted from AOF half-way
    scripts/chaos.py --pause              # workers SIGSTOPped for 1-5 s every 0.5-1.5 s, then
                                          # SIGCONTed (lease 1 s): stopped, not dead
    scripts/chaos.py --mixed              # pauses + SIGKILLs + one Redis crash-restart
    scripts/chaos.py --cluster            # on a local Redis Cluster (3 primaries + 3 replicas,
                                          # min_replicas 1): the node's primary SIGKILLed
                                          # half-way, its replica promoted; worker SIGKILLs too
    scripts/chaos.py --sentinel           # the same with one primary, one replica, 3 sentinels
    scripts/chaos.py --drain              # rolling restarts: serve SIGTERMed (a drain) and started
                                          # again at 20/40/60/80% of requests, worker SIGKILLs
                                          # throughout; the language side never sends a message
                                          # twice (as the reference), so a lost one fails the run
    scripts/chaos.py --oom 5              # Redis out of memory (refusing writes) for 5 s at 30%
                                          # and 70% of requests: nothing dropped, every room told
    scripts/chaos.py --slow-redis 3       # every Redis hop of the node and encoder 3 ms slower each
                                          # way (a proxy), workers SIGKILLed throughout
    scripts/chaos.py --restart-peer 20 40 # beside the workload a language process on a fixed port,
                                          # SIGKILLed every 20-40 s and started again under its
                                          # session id (each restart waits ~60 s for its port)
    scripts/chaos.py --deaf-peer          # beside the workload a language peer whose status
                                          # endpoint is gone; worker SIGKILLs throughout
    scripts/chaos.py --requests 100 --redis-down 3 --json chaos.json

Prints requests, Success, Failed with reasons, bytes verified, writers fenced, rounds handed
back and redone, leaked blocks, latency. Exits non-zero unless every request succeeded with
every byte right and no source block leaked.
"""
from __future__ import annotations

import argparse
import os
import sys

from _venv import ROOT, ensure_venv


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--workers", type=int, help="worker processes (default 2; 3 with pauses)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--pause", action="store_true", help="pause workers (SIGSTOP/SIGCONT) instead of "
                      "killing them, and no Redis crash")
    mode.add_argument("--mixed", action="store_true", help="pauses, SIGKILLs and a Redis crash-restart")
    mode.add_argument("--cluster", action="store_true", help="on a local Redis Cluster (3+3, min_replicas 1): "
                      "SIGKILL the primary holding the node mid-run, with worker SIGKILLs")
    mode.add_argument("--sentinel", action="store_true", help="the same on a Sentinel-managed primary with "
                      "one replica and three sentinels")
    mode.add_argument("--drain", action="store_true", help="drain serve (SIGTERM) and start it again at each "
                      "--drain-at fraction of requests, with worker SIGKILLs; no Redis crash; no resends")
    mode.add_argument("--oom", type=float, metavar="SECONDS",
                      help="Redis out of memory (maxmemory below what it holds, noeviction: every write "
                           "that adds data refused) for SECONDS at each --oom-at fraction; no other fault")
    parser.add_argument("--drain-at", type=float, nargs="*", default=[0.2, 0.4, 0.6, 0.8],
                        help="with --drain: fractions of requests done at which serve is drained and restarted")
    mode.add_argument("--slow-redis", type=float, metavar="MS",
                      help="the node and the encoder reach Redis through a proxy adding MS milliseconds to "
                           "every chunk each way; worker SIGKILLs, no Redis crash")
    mode.add_argument("--restart-peer", type=float, nargs=2, metavar=("MIN", "MAX"),
                      help="beside the workload, a language process on a fixed port SIGKILLed every MIN-MAX s "
                           "(a write may be in flight) and started again under the same session id")
    mode.add_argument("--deaf-peer", action="store_true",
                      help="beside the workload, a language peer whose status endpoint is gone; worker SIGKILLs")
    parser.add_argument("--oom-at", type=float, nargs="*", default=[0.3, 0.7],
                        help="with --oom: fractions of requests done at which Redis fills up")
    parser.add_argument("--no-resend", action="store_true",
                        help="the language side never sends init/resume again (the reference's behaviour; "
                             "always so with --drain)")
    parser.add_argument("--failover-at", type=float, nargs="*", default=[0.5],
                        help="fractions of requests done at which the primary is killed")
    parser.add_argument("--replica-lag", type=float, default=0.0,
                        help="with --cluster/--sentinel: SIGSTOP the primary's replica this long before "
                             "killing the primary, so it dies with writes no replica has")
    parser.add_argument("--min-replicas", type=int, default=1,
                        help="with --cluster/--sentinel (0: no replica wait, to see what it prevents)")
    parser.add_argument("--kill-every", type=float, nargs=2, default=(0.2, 0.5), metavar=("MIN", "MAX"))
    parser.add_argument("--kill-any", action="store_true",
                        help="kill any child of serve (ingress, janitor, workers), not workers only")
    parser.add_argument("--pause-every", type=float, nargs=2, default=(0.5, 1.5), metavar=("MIN", "MAX"))
    parser.add_argument("--pause-for", type=float, nargs=2, default=(1.0, 5.0), metavar=("MIN", "MAX"))
    parser.add_argument("--redis-crash-at", type=float, nargs="*", default=[0.5],
                        help="fractions of requests done at which Redis is SIGKILLed and restarted")
    parser.add_argument("--redis-down", type=float, default=0.0, help="seconds Redis stays down each time")
    parser.add_argument("--lease", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--json", default=os.path.join(ROOT, "chaos.json"))
    args = parser.parse_args()
    ensure_venv()
    from xferd_lab.chaos import Chaos
    from xferd_lab.demo import run_demo

    pauses = args.pause or args.mixed
    # modes without the default Redis crash
    alone = args.pause or args.drain or args.oom or args.slow_redis or args.restart_peer or args.deaf_peer
    quiet = args.pause or args.oom or args.restart_peer  # modes without worker SIGKILLs
    chaos = Chaos(kill_every=None if quiet else tuple(args.kill_every), kill_any=args.kill_any,
                  pause_every=tuple(args.pause_every) if pauses else None, pause_for=tuple(args.pause_for),
                  lease=args.lease,
                  redis_crashes=() if alone else tuple((at, args.redis_down) for at in args.redis_crash_at),
                  redis_oom=tuple((at, args.oom) for at in args.oom_at) if args.oom else (),
                  redis_delay=(args.slow_redis or 0.0) / 1000,
                  restart_peer_every=tuple(args.restart_peer) if args.restart_peer else None,
                  deaf_peer=args.deaf_peer,
                  failover="cluster" if args.cluster else "sentinel" if args.sentinel else "",
                  failover_at=tuple(args.failover_at), min_replicas=args.min_replicas,
                  replica_lag=args.replica_lag, drains_at=tuple(args.drain_at) if args.drain else (),
                  resend=not (args.no_resend or args.drain))
    workers = args.workers or (3 if pauses else 2)
    code = run_demo(requests=args.requests, workers=workers, seed=args.seed, chaos=chaos, json_path=args.json)
    print(f"report written to {args.json}")
    return code


if __name__ == "__main__":
    sys.exit(main())
