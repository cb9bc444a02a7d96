"""A language side in a process of its own, driven over a pipe: it registers, then per
command inits a room, waits for the room's status by push only (no Redis), and reports
whether every byte of the room landed. With ``ports`` its Mooncake session id is fixed
(``127.0.0.1:<low>``), as a language server on a fixed port: killed and started again, it
comes back under the same session id. Tests and the chaos runs use it."""
from __future__ import annotations

import multiprocessing
import os
import signal

import torch

from xferd.settings import Settings
from xferd.protocol.status import Status
from xferd_lab.embedded import port_free

SPAWN = multiprocessing.get_context("spawn")
START_TRIES = 30  # Mooncake picks its rpc port at random in the range: a start may miss ``low``


def holds(receiver, room: int, total: int, blocks: list[int]) -> bool:
    """Whether ``blocks`` of ``receiver``'s pool hold every per-token byte of the room's
    deterministic data (``synthetic.room_data``)."""
    from xferd_lab.synthetic import room_data
    layout = receiver.layout
    expected = room_data(room, total, layout)
    return all(torch.equal(receiver.pool.read_tokens(i, blocks, total), b.token_range(expected[i], 0, total))
               for i, b in enumerate(layout.buffers) if b.per_token)


def peer_main(settings: Settings, num_blocks: int, conn, ports: tuple[int, int] | None = None) -> None:
    if ports is not None:  # Mooncake takes its rpc and data ports from this range
        os.environ["MC_MIN_RPC_PORT"], os.environ["MC_MAX_RPC_PORT"] = map(str, ports)
    from xferd.client.receiver import Receiver

    rx = Receiver(settings.ingress, settings.buffer_layout, num_blocks)  # no store: every status by push
    if ports is not None and rx.engine.mooncake.get_rpc_port() != ports[0]:
        conn.send(("again", None))
        return
    rx.register()
    conn.send(("ready", rx.session_id))

    while True:
        command, room, total, blocks = conn.recv()
        if command == "init":
            for buffer in rx.pool.buffers:
                buffer[blocks] = 0
            rx.init(room, blocks, total)
            status = rx.wait(room, 120)
            conn.send((int(status), holds(rx, room, total, blocks)))
        elif command == "check":
            conn.send(holds(rx, room, total, blocks))
        else:
            rx.close()
            return


class Peer:
    """The language process (``peer_main``) and its end of the pipe."""

    def __init__(self, settings: Settings, num_blocks: int = 66, ports: tuple[int, int] | None = None):
        for _ in range(START_TRIES):
            self.conn, child = SPAWN.Pipe()
            self.process = SPAWN.Process(target=peer_main, args=(settings, num_blocks, child, ports), daemon=True)
            self.process.start()
            if not self.conn.poll(60):
                self.process.kill()
                raise RuntimeError("the language process did not come up")
            state, self.session_id = self.conn.recv()
            if state == "ready":
                return
            self.process.join()
        raise RuntimeError(f"no language process got Mooncake port {ports[0]}")

    def init(self, room: int, total: int, blocks: list[int]) -> None:
        self.conn.send(("init", room, total, blocks))

    def status(self, timeout: float = 60) -> tuple[Status, bool]:
        """(the status, whether the whole round had landed when it arrived)."""
        if not self.conn.poll(timeout):
            raise TimeoutError("no status reached the language process")
        status, landed = self.conn.recv()
        return Status(status), landed

    def holds(self, room: int, total: int, blocks: list[int]) -> bool:
        self.conn.send(("check", room, total, blocks))
        if not self.conn.poll(30):
            raise TimeoutError("the language process did not answer")
        return self.conn.recv()

    def pause(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def kill(self) -> None:
        self.resume()
        self.process.kill()
        self.process.join()

    stop = kill


def mooncake_ports(count: int) -> int:
    """The first of ``count`` free ports in a row where Mooncake takes its ports from
    (MC_MIN/MAX_RPC_PORT outside the ephemeral range 32768-60999, which it ignores)."""
    import random
    for _ in range(200):
        low = random.randrange(20_000, 32_000 - count)
        if all(port_free(port) for port in range(low, low + count)):
            return low
    raise RuntimeError("no free block of Mooncake ports")
