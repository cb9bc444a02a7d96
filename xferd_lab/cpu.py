"""CPU time of processes, read from /proc (Linux): on a shared machine the CPU a round
costs is far steadier than its wall time, so the bench reports both."""
from __future__ import annotations

import os

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads); 0.0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14, 15 of stat)


def children(pid: int) -> list[int]:
    """The live child processes of ``pid``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as handle:
                if int(handle.read().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def title(pid: int) -> str:
    """The process's command line as `ps` shows it (its set title where it set one)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


class CpuMeter:
    """CPU seconds used by named groups of processes between ``start`` and ``stop``.
    ``groups``: name -> pids; a pid that ends meanwhile counts what it had used at start
    as its last reading (so its share is lost, not negative)."""

    def __init__(self, groups: dict[str, list[int]]):
        self.groups = {name: list(pids) for name, pids in groups.items() if pids}
        self._start: dict[int, float] = {}

    def start(self) -> None:
        self._start = {pid: cpu_seconds(pid) for pids in self.groups.values() for pid in pids}

    def stop(self) -> dict[str, float]:
        """CPU seconds per group since ``start``."""
        used = {}
        for name, pids in self.groups.items():
            used[name] = sum(max(0.0, cpu_seconds(pid) - self._start.get(pid, 0.0)) for pid in pids)
        return used
