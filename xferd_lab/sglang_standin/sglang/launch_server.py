"""Stand-in of ``python -m sglang.launch_server`` for the encode mode: starts the bootstrap
server SGLang's main process starts (get_kv_class(..., BOOTSTRAP_SERVER)), then one
scheduler process per TP rank (spawned, as SGLang does), and waits for them; one rank
dying ends the others. ``--requests`` is a JSON list of {rid, room, tokens, at_s, fake,
abort_at_s, compute_s}; each rank writes its outcomes to ``--results``.rank<r>."""
from __future__ import annotations

import argparse
import json
import multiprocessing
import socket
import sys
import time


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="sglang.launch_server (stand-in)")
    parser.add_argument("--disaggregation-mode", default="null")
    parser.add_argument("--disaggregation-transfer-backend", default="mooncake")
    parser.add_argument("--disaggregation-bootstrap-port", type=int, default=8998)
    parser.add_argument("--tp-size", type=int, default=1)
    parser.add_argument("--hidden-size", type=int, default=4096)
    parser.add_argument("--deepstack", type=int, default=0)
    parser.add_argument("--max-micro-batch", type=int, default=8)
    parser.add_argument("--requests", required=True)
    parser.add_argument("--results", required=True)
    parser.add_argument("--deadline-s", type=float, default=120.0)
    parser.add_argument("--model", choices=["per-room", "cached"], default="per-room",
                        help="per-room: each room's own data (tests); cached: one tensor per size (bench)")
    return parser.parse_args(argv)


def run_scheduler(server_args, tp_rank: int, dist_port: int) -> None:
    import torch.distributed as dist

    from sglang.srt.managers.scheduler import Scheduler
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{dist_port}", rank=tp_rank,
                            world_size=server_args.tp_size)
    with open(server_args.requests) as f:
        plan = json.load(f)
    scheduler = Scheduler(server_args, tp_rank, plan, f"{server_args.results}.rank{tp_rank}")
    scheduler.event_loop_normal_disagg_multimodal_embedding()
    scheduler.results.write(json.dumps(scheduler.summary()) + "\n")
    scheduler.results.close()
    dist.barrier()
    dist.destroy_process_group()


def main(argv=None) -> int:
    server_args = parse_args(argv)
    from sglang.srt.disaggregation.utils import DisaggregationMode, KVClassType, TransferBackend, get_kv_class
    if DisaggregationMode(server_args.disaggregation_mode) == DisaggregationMode.ENCODE:
        server_class = get_kv_class(TransferBackend(server_args.disaggregation_transfer_backend),
                                    KVClassType.BOOTSTRAP_SERVER, is_multimodal=True)
        server_class(host="127.0.0.1", port=server_args.disaggregation_bootstrap_port)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dist_port = s.getsockname()[1]
    context = multiprocessing.get_context("spawn")
    ranks = [context.Process(target=run_scheduler, args=(server_args, r, dist_port), name=f"scheduler-{r}")
             for r in range(server_args.tp_size)]
    for process in ranks:
        process.start()
    while any(p.is_alive() for p in ranks):
        if any(p.exitcode not in (None, 0) for p in ranks):
            for p in ranks:
                if p.is_alive():
                    p.kill()
        time.sleep(0.05)
    return max(p.exitcode for p in ranks)


if __name__ == "__main__":
    sys.exit(main())
