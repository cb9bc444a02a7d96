#!/usr/bin/env python3
"""Benchmark: xferd against the raw Mooncake ceiling and the in-process reference design,
on the same bytes, in one run (also `xferd bench`).

    scripts/bench.py                        # 200 requests of 2000/1024 tokens and as many
                                            # tokens of 8192/2048, concurrency 1/8/32, 1 and
                                            # 2 workers, raw, raw-sync and in-process beside
    scripts/bench.py --requests 50 --workload 2000/1024 --concurrency 1 8

Prints each row as it is measured, then a table, the issue's targets with the measured
ratios and the CPU per round of every process; writes bench.json and bench.png (when
matplotlib is installed).
"""
from __future__ import annotations

import sys

from _venv import ensure_venv


def main() -> int:
    ensure_venv()
    from xferd.cli import main as xferd

    xferd(["bench", *sys.argv[1:]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
