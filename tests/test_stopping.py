"""Stopping a writer for certain (fencing.py): process identities immune to pid reuse,
SIGKILL-and-wait on paused processes, and the wait for a killed process's unsent bytes."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from xferd.node.stopping import Identity, stop, wait_drained


def sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_a_consumer_name_carries_the_process_identity():
    me = Identity.current()
    name = me.name("w3")
    assert Identity.parse(name) == me and name.endswith("-w3")
    assert me.running() is True
    assert Identity.parse("w1") is None, "a name of another form names no process"


def test_a_dead_process_a_reused_pid_an_old_boot_and_another_host():
    child = sleeper()
    identity = Identity.of(child.pid)
    child.kill()
    assert not wait_running(identity), "a zombie runs no code: stopped"
    child.wait()
    assert identity.running() is False, "gone"
    mine = Identity.current()
    assert Identity(mine.host, mine.boot, mine.pid, mine.start + 1).running() is False, "pid reused"
    assert Identity(mine.host, "0badb007", mine.pid, mine.start).running() is False, "an earlier boot"
    assert Identity("elsewhere", mine.boot, mine.pid, mine.start).running() is None, "cannot tell"


def wait_running(identity: Identity, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while identity.running() and time.monotonic() < deadline:
        time.sleep(0.01)
    return bool(identity.running())


def test_stop_kills_a_paused_process_and_waits_until_it_is_gone():
    child = sleeper()
    try:
        identity = Identity.of(child.pid)
        os.kill(child.pid, signal.SIGSTOP)
        assert identity.running(), "a paused process is not dead"
        assert stop(identity, timeout=5)
        assert identity.running() is False
        assert child.wait(5) == -signal.SIGKILL
        assert stop(identity), "stopping a stopped process is a no-op"
        assert not stop(Identity("elsewhere", identity.boot, 1, 1)), "another host cannot be fenced"
    finally:
        child.kill()


def test_a_killed_writers_unsent_bytes_are_waited_for():
    """A process that sent into a socket its peer does not read, killed: its orphaned socket
    holds the unsent bytes until the peer reads them, and wait_drained sees it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    writer = subprocess.Popen([sys.executable, "-c", (
        "import socket, sys, time\n"
        f"s = socket.create_connection(('127.0.0.1', {port}))\n"
        "s.setblocking(False)\n"
        "sent = 0\n"
        "while True:\n"
        "    try: sent += s.send(b'x' * 65536)\n"
        "    except BlockingIOError: break\n"
        "print(sent, flush=True)\n"
        "time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    peer, _ = server.accept()
    try:
        sent = int(writer.stdout.readline())
        assert sent > 0
        assert stop(Identity.of(writer.pid))
        writer.wait()
        assert wait_drained(0.2) >= 1, "the orphaned socket still holds bytes the peer has not taken"
        received = 0
        peer.settimeout(5)
        while received < sent:
            chunk = peer.recv(1 << 20)
            if not chunk:
                break
            received += len(chunk)
        assert received == sent, "the kernel delivered what the dead process had handed it"
        assert wait_drained(5.0) == 0
    finally:
        writer.kill()
        peer.close()
        server.close()
