"""`xferd top` as an operator runs it, in a terminal (a pty): it follows a live room, shows a
Redis outage while it lasts instead of exiting, picks the node up again once Redis is back,
and leaves on Ctrl-C with exit 0. (`status` and `rooms` are tested in test_statuspage.)"""
from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import threading

from conftest import clients, start_node, wait_for
from xferd.protocol.status import Status
from xferd_lab.embedded import EmbeddedRedis


class Terminal:
    """A child process on a pty; ``screen`` is all it wrote so far."""

    def __init__(self, argv: list[str], env: dict):
        master, slave = pty.openpty()
        self.process = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
        os.close(slave)
        self.master, self.chunks = master, []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            self.chunks.append(data.decode(errors="replace"))

    @property
    def screen(self) -> str:
        return "".join(self.chunks)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.master)


def test_top_follows_the_node_through_a_redis_outage_and_leaves_on_ctrl_c(tmp_path_factory):
    with EmbeddedRedis(aof=True) as redis_server:
        node = start_node(redis_server.url, tmp_path_factory, workers=1)
        env = node.settings.to_env(dict(os.environ, COLUMNS="250", LINES="80", TERM="xterm"))
        top = Terminal([sys.executable, "-m", "xferd", "top", "--interval", "0.2"], env)
        try:
            assert wait_for(lambda: f"node '{node.settings.node}', prefix '{node.settings.prefix}'" in top.screen,
                            20), top.screen[-3000:]
            with clients(node) as (_, rx):
                live = 8_200_001
                rx.init(live, [0, 1], 256)  # no source yet: WaitingForInput, a live room
                assert wait_for(lambda: node.store.status(live) == Status.WaitingForInput)
                assert wait_for(lambda: str(live) in top.screen, 10), top.screen[-3000:]
                down = threading.Thread(target=redis_server.crash_restart, kwargs={"down_for": 3.0})
                down.start()
                assert wait_for(lambda: "does not answer" in top.screen, 10), top.screen[-3000:]
                assert top.process.poll() is None, "an outage is watched, not an exit"
                down.join()
                outage_shown_at = top.screen.rindex("does not answer")
                assert wait_for(lambda: str(live) in top.screen[outage_shown_at:], 15), top.screen[-3000:]
            top.process.send_signal(signal.SIGINT)
            assert top.process.wait(10) == 0
            assert "Traceback" not in top.screen
        finally:
            top.close()
            node.stop()


def test_top_with_redis_down_at_the_start_says_so_in_one_line_and_exits_1():
    env = dict(os.environ, XFERD_REDIS_URL="redis://127.0.0.1:1/0", XFERD_NODE="nowhere")
    done = subprocess.run([sys.executable, "-m", "xferd", "top"], env=env, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("xferd: Redis at redis://127.0.0.1:1/0 does not answer"), line
