"""Faults of one language peer beside the demo's workload: a peer whose process is SIGKILLed
and started again under the same session id, and a peer whose status socket is gone. Each
runs rooms of its own (this thread publishes them through a Sender), checks every byte that
lands, and lists what went wrong in ``problems`` (the run fails on any). The workload's own
rooms must not notice either."""
from __future__ import annotations

import random
import threading
import time

from xferd.client.receiver import Receiver
from xferd.client.sender import Sender
from xferd.settings import Settings
from xferd.protocol.status import Status
from xferd.state.store import Store
from xferd_lab.embedded import free_port, port_free
from xferd_lab.peer import Peer, holds, mooncake_ports
from xferd_lab.synthetic import room_data

PORT_FREE_S = 90  # the kernel holds the port of a process that answered a handshake for 60 s
SIZES = (128, 1000, 2048)  # tokens of a peer's rooms: one to sixteen blocks, one round each


class PeerFault(threading.Thread):
    """What both peers share: a Sender for their rooms, a seeded room maker, the counts and
    the problems."""

    def __init__(self, name: str, settings: Settings, store: Store, seed: int):
        super().__init__(name=name, daemon=True)
        self.settings, self.store = settings, store
        self.rng = random.Random(seed)
        self.done = threading.Event()
        self.rooms = self.succeeded = 0
        self.problems: list[str] = []

    def next_room(self) -> tuple[int, int, list[int]]:
        """(room, tokens, destination blocks 0..n-1) of the peer's next room."""
        tokens = self.rng.choice(SIZES)
        return self.rng.getrandbits(62), tokens, list(range(self.settings.buffer_layout.blocks_for(tokens)))


class RestartingPeer(PeerFault):
    """A language process on a fixed Mooncake port runs rooms one after another; every
    ``every`` seconds it is SIGKILLed while a room's write may be in flight, and started
    again under the same session id once the kernel lets go of its port. A room in flight at
    a kill must end (Failed, with the reason) rather than hang; every other room must end
    Success with every byte, the first after each restart included."""

    def __init__(self, settings: Settings, store: Store, every: tuple[float, float], seed: int):
        super().__init__("restarting-peer", settings, store, seed + 7)
        self.every = every
        self.after_restart = 0
        self.peer_kills: list[dict] = []  # per kill: how the room in flight ended, seconds to the new start

    def run(self) -> None:
        sender = Sender(self.settings, self.store)
        low = mooncake_ports(5)
        peer = Peer(self.settings, ports=(low, low + 4))
        kill_at, restarted = time.monotonic() + self.rng.uniform(*self.every), False
        try:
            while not self.done.is_set():
                room, tokens, blocks = self.next_room()
                peer.init(room, tokens, blocks)
                sender.send(room, tokens, room_data(room, tokens, sender.layout), timeout=60)
                self.rooms += 1
                if time.monotonic() >= kill_at and self._init_recorded(room):
                    time.sleep(self.rng.uniform(0, 0.01))  # before, during or after its write
                    peer.kill()
                    started = time.monotonic()
                    kill = {"room_ended": self._ended(room), "back_s": None}
                    self.peer_kills.append(kill)
                    if not self._port_freed(low):
                        return
                    peer = Peer(self.settings, ports=(low, low + 4))
                    kill["back_s"] = round(time.monotonic() - started, 1)
                    kill_at, restarted = time.monotonic() + self.rng.uniform(*self.every), True
                    continue
                status, landed = peer.status(60)
                if status == Status.Success and landed:
                    self.succeeded += 1
                    self.after_restart += restarted
                else:
                    self.problems.append(f"room {room} of the restarting peer: {status.name}, every byte "
                                         f"landed: {landed} ({self.store.failure(room)})")
                restarted = False
        except (RuntimeError, TimeoutError) as error:
            self.problems.append(f"restarting peer: {error}")
        finally:
            peer.kill()

    def _init_recorded(self, room: int) -> bool:
        """Whether the node has the peer's init (a room whose destination never came waits
        out its bootstrap timeout instead: not the fault here)."""
        deadline = time.monotonic() + 10
        while self.store.room(room).get("dst_count") != "1":
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)
        return True

    def _ended(self, room: int) -> str:
        """How the room in flight at a kill ended in Redis (it must end, within the round timeout)."""
        deadline = time.monotonic() + self.settings.round_timeout + 10
        while time.monotonic() < deadline:
            status = self.store.status(room)
            if status in (Status.Success, Status.Failed):
                return status.name
            time.sleep(0.05)
        self.problems.append(f"room {room}, in flight when its peer was killed, never ended")
        return "hung"

    def _port_freed(self, port: int) -> bool:
        """Wait for the kernel to let go of the killed process's port (False: the run ended
        first, or it never did, which is a problem)."""
        deadline = time.monotonic() + PORT_FREE_S
        while not port_free(port):
            if time.monotonic() >= deadline:
                self.problems.append(f"port {port} still taken {PORT_FREE_S}s after the kill")
                return False
            if self.done.wait(0.5):
                return False
        return True

    def summary(self) -> str:
        backs = ", ".join("not before the run ended" if k["back_s"] is None else f"{k['back_s']:g}s"
                          for k in self.peer_kills) or "none"
        return (f"{len(self.peer_kills)} SIGKILLs of a language process, each started again under the same "
                f"session id (back after {backs}); {self.rooms} rooms: {self.succeeded} Success with every "
                f"byte ({self.after_restart} first after a restart), the one in flight at each kill "
                f"{', '.join(k['room_ended'] for k in self.peer_kills) or '-'}")


class DeafPeer(PeerFault):
    """A language peer whose status endpoint is gone (nothing listens where it said it
    would): the node's pushes to it go nowhere and must cost no one else anything. It learns
    its rooms' outcomes from Redis; each must end Success with every byte."""

    def __init__(self, settings: Settings, store: Store, seed: int):
        super().__init__("deaf-peer", settings, store, seed + 13)

    def run(self) -> None:
        sender = Sender(self.settings, self.store)
        receiver = Receiver(self.settings.ingress, self.settings.buffer_layout, 16)
        receiver.status_port = free_port()  # where nothing listens: every push to it is lost
        try:
            receiver.register()
            while not self.done.is_set():
                room, tokens, blocks = self.next_room()
                receiver.init(room, blocks, len(blocks) * receiver.layout.block_size)
                sender.send(room, tokens, room_data(room, tokens, receiver.layout), timeout=60)
                deadline = time.monotonic() + 60
                while (status := self.store.status(room)) not in (Status.Success, Status.Failed):
                    if time.monotonic() > deadline or self.done.wait(0.01):
                        break
                landed = holds(receiver, room, tokens, blocks)
                if self.done.is_set() and status not in (Status.Success, Status.Failed):
                    break  # the run ended first
                self.rooms += 1
                if status == Status.Success and landed:
                    self.succeeded += 1
                else:
                    self.problems.append(f"room {room} of the deaf peer: {status}, every byte landed: {landed}")
        finally:
            receiver.close()

    def summary(self) -> str:
        return (f"a language peer whose status endpoint is gone: {self.rooms} rooms, {self.succeeded} Success "
                f"with every byte (read from Redis; the node's pushes to it went nowhere)")
