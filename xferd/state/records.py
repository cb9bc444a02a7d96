"""What the Store's transitions return, as plain values: an Outcome, an Allocation, a
Round read from the stream, a Take; and the conversions of Redis replies into them."""
from __future__ import annotations

from dataclasses import dataclass

from xferd.protocol.status import Status


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _hash(reply) -> dict[str, str]:
    """A hash as str -> str, from HGETALL's dict or a script's flat list."""
    if isinstance(reply, dict):
        return {_text(k): _text(v) for k, v in reply.items()}
    items = [_text(v) for v in reply]
    return dict(zip(items[0::2], items[1::2]))


@dataclass(frozen=True)
class Outcome:
    """What a state transition did: the room's status, a note (the failure, for Failed), and
    whom to push the status to now (``notify``: a round's end, or Failed once no write of
    the room is in flight)."""

    status: int
    note: str
    endpoints: tuple[str, ...] = ()
    notify: bool = False

    @classmethod
    def parse(cls, reply) -> "Outcome":
        """``{status, note, notify, endpoints...}`` (the scripts' ``reply``)."""
        notify = len(reply) > 2 and int(reply[2]) == 1
        return cls(int(reply[0]), _text(reply[1]), tuple(_text(e) for e in reply[3:] if e), notify)

    @property
    def failed(self) -> bool:
        return self.status == Status.Failed


@dataclass(frozen=True)
class Allocation:
    """Source blocks taken for a room, leased until ``expires_at`` (Redis ms) unless published."""

    blocks: list[int]
    expires_at: int


@dataclass(frozen=True)
class Round:
    """A work entry read from the node's stream."""

    entry_id: str
    room: int
    round: int
    sessions: tuple[str, ...]


@dataclass(frozen=True)
class Take:
    """A round taken by begin_round: its fencing epoch and what planning reads."""

    epoch: str
    room: dict[str, str]
    sessions: list[dict[str, str]]
    redo: bool  # an earlier taker never completed it
