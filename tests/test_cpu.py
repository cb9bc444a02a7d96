"""CPU accounting from /proc, which the bench reports per round and per process."""
from __future__ import annotations

import subprocess
import sys
import time

from xferd_lab.cpu import CpuMeter, children, cpu_seconds, title


def test_a_busy_child_is_found_named_and_measured():
    script = ("from setproctitle import setproctitle; setproctitle('xferd spinner'); import time\n"
              "end = time.time() + 30\nwhile time.time() < end: pass")
    child = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 10
        while title(child.pid) != "xferd spinner" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert title(child.pid) == "xferd spinner"
        assert child.pid in children(__import__("os").getpid())
        meter = CpuMeter({"spinner": [child.pid], "nobody": []})
        meter.start()
        time.sleep(0.6)
        used = meter.stop()
        assert set(used) == {"spinner"}, "empty groups are left out"
        assert 0.2 < used["spinner"] < 1.0, used
    finally:
        child.kill()
        child.wait()
    assert cpu_seconds(child.pid) == 0.0 and title(child.pid) == "", "a gone process reads as nothing"
