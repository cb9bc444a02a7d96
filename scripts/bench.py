#!/usr/bin/env python3
"""Benchmark: xferd against the raw Mooncake ceiling and the in-process reference design,
on the same bytes, in one run (also `xferd bench`).

    scripts/bench.py                        # 48 requests, concurrency 1/8/32, 1 and 2 workers
    scripts/bench.py --requests 16 --concurrency 1 8

Prints a table and the issue's targets with the measured ratios; writes bench.json and
bench.png (when matplotlib is installed).
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
