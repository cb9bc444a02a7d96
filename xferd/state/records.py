"""What the Store's transitions return, as plain values: the scripts' one reply envelope
(``Reply``, its ``Verdict``), an Outcome, an Allocation, a Round read from the stream, a
Take; and the conversions of Redis replies into them."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import redis

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


class Verdict(str, Enum):
    """What a script did, first in every reply (a test holds the scripts' own to this list)."""

    ok = "ok"  # done as asked
    ignored = "ignored"  # nothing to do: a duplicate, a late message, nothing due (the note says which)
    failed = "failed"  # the message was refused and the room failed for it (the note says why)
    redo = "redo"  # begin_round: taken, and an earlier taker never completed it
    stale = "stale"  # the caller does not hold what it names (round, entry): nothing written
    ended = "ended"  # the room ended while its round was held: settled now
    requeued = "requeued"  # hand_back: the round is queued again
    dead = "dead"  # hand_back: past the delivery limit, dead-lettered, the room failed
    none = "none"  # hand_back: the consumer held nothing here
    short = "short"  # an allocation: too few free blocks
    refused = "refused"  # a rule of the caller's was broken: nothing written (Store raises Refused)


class Refused(redis.ResponseError):
    """A script refused a call that breaks its rules; nothing was written."""


@dataclass(frozen=True)
class Reply:
    """``{verdict, status (-1: no record), note, notify, {endpoints}, {data}}``: ``notify``
    says the status is to be pushed to ``endpoints`` now (a round's end, or Failed once no
    write of the room is in flight)."""

    verdict: Verdict
    status: int
    note: str
    notify: bool
    endpoints: tuple[str, ...]
    data: list

    @classmethod
    def parse(cls, raw) -> "Reply":
        verdict = _VERDICTS[raw[0]]
        reply = cls(verdict, int(raw[1]), _text(raw[2]), int(raw[3]) == 1,
                    tuple(_text(e) for e in raw[4] if e), list(raw[5]))
        if verdict is Verdict.refused:
            raise Refused(reply.note)
        return reply

    @property
    def outcome(self) -> Outcome:
        return Outcome(self.status, self.note, self.endpoints, self.notify)


_VERDICTS = {**{v.value.encode(): v for v in Verdict}, **{v.value: v for v in Verdict}}  # bytes or str replies
