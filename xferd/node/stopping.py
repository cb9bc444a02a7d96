"""Stopping a writer for certain (docs/guarantees.md): process identities, SIGKILL-and-wait, and the
wait for a killed writer's unsent socket bytes.

A worker's consumer name says which process it is: host, boot, pid and the process's start
time (``/proc/<pid>/stat`` field 22), so a pid reused by another process is never taken for
the worker, and a name from an earlier boot is known dead. All workers of a node run on one
host, so the node can *prove* a writer stopped: SIGKILL it and wait until it is gone or a
zombie (a zombie has closed every file and socket and runs no code).

A killed process's TCP send buffers still drain to their peers: the kernel keeps an
orphaned socket until its unsent bytes are acknowledged or it gives up. ``wait_drained``
waits (bounded) until no orphaned socket of this user holds unsent bytes, so a round is
handed on only after everything its old writer handed to the kernel has reached the
destination's kernel.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import time
from dataclasses import dataclass

_NAME = re.compile(r"^(?P<host>.+)-b(?P<boot>[0-9a-f]{8})-p(?P<pid>\d+)-s(?P<start>\d+)-(?P<role>\w+)$")


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            return handle.read().strip().replace("-", "")[:8]
    except OSError:
        return "0" * 8


def proc_stat(pid: int | str) -> list[str] | None:
    """Fields of /proc/<pid>/stat from the state on (field 3), or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_time(pid: int) -> int | None:
    stat = proc_stat(pid)
    return int(stat[19]) if stat else None  # field 22: start time in clock ticks since boot


HOST = socket.gethostname()
BOOT = _boot_id()


@dataclass(frozen=True)
class Identity:
    """One process on one host and boot, immune to pid reuse."""

    host: str
    boot: str
    pid: int
    start: int

    @classmethod
    def current(cls) -> "Identity":
        pid = os.getpid()
        return cls(HOST, BOOT, pid, start_time(pid) or 0)

    @classmethod
    def of(cls, pid: int) -> "Identity | None":
        start = start_time(pid)
        return None if start is None else cls(HOST, BOOT, pid, start)

    def name(self, role: str) -> str:
        return f"{self.host}-b{self.boot}-p{self.pid}-s{self.start}-{role}"

    @classmethod
    def parse(cls, name: str) -> "Identity | None":
        """The identity in a consumer name; None for a name of another form."""
        match = _NAME.match(name)
        if match is None:
            return None
        return cls(match["host"], match["boot"], int(match["pid"]), int(match["start"]))

    def running(self) -> bool | None:
        """True while the process runs (or is stopped: SIGSTOP is not death); False when it is
        gone, a zombie, or from an earlier boot; None when it lives on another host."""
        if self.host != HOST:
            return None
        if self.boot != BOOT:
            return False
        stat = proc_stat(self.pid)
        return stat is not None and stat[0] not in ("Z", "X") and int(stat[19]) == self.start


def stop(identity: Identity, timeout: float = 10.0) -> bool:
    """SIGKILL the process and wait until it no longer runs; True once it provably stopped.
    False if it is on another host (it cannot be fenced from here) or outlived ``timeout``
    (in uninterruptible sleep: it runs no user code, but it has not closed its sockets)."""
    state = identity.running()
    if state is None:
        return False
    if state and identity.pid != os.getpid():
        try:
            os.kill(identity.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while identity.running():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def _unsent_orphans(uid: int) -> int:
    """Orphaned TCP sockets (no owning process: inode 0) of ``uid`` with bytes their peer has
    not acknowledged yet (``tx_queue``)."""
    count = 0
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as handle:
                lines = handle.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # sl local remote st tx:rx tr:when retrnsmt uid timeout inode
            if len(fields) < 10 or fields[9] != "0" or int(fields[7]) != uid:
                continue
            if fields[3] in ("06", "07", "0A"):  # TIME_WAIT, CLOSE, LISTEN
                continue
            if int(fields[4].split(":")[0], 16):
                count += 1
    return count


def wait_drained(timeout: float) -> int:
    """Wait until no orphaned socket of this user holds unsent bytes, at most ``timeout`` s;
    returns how many still did at the end (0: drained)."""
    deadline = time.monotonic() + timeout
    uid = os.getuid()
    while True:
        left = _unsent_orphans(uid)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.005)
