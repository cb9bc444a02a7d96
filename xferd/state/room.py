"""The room, declared once: its statuses, the transitions between them, the deadline of
each phase, and the fields of every record a node keeps in Redis.

The Lua scripts get these as constants when they load (``scripts.constants``): a
status number, a transition, a deadline's limit or reason, a stream's bound or a histogram
bucket is written here and nowhere else. ``xferd inspect`` and the docs read the same
declaration.
"""
from __future__ import annotations

from dataclasses import dataclass

from xferd.protocol.status import Status

LIVE = frozenset(s for s in Status if not s.terminal)


@dataclass(frozen=True)
class Transition:
    """An event that moves a room from any status of ``before`` to ``after``."""

    event: str
    before: frozenset[Status]
    after: Status
    scripts: tuple[str, ...]  # the Lua scripts that perform it


# A room is created Bootstrapping by the first message that names it (an init, a publish or
# a failure). Its status only moves forward; Failed overrides every live status; terminal
# statuses never change.
TRANSITIONS = (
    Transition("every required destination session sent init", frozenset({Status.Bootstrapping}),
               Status.WaitingForInput, ("dst_init",)),
    Transition("a round committed with tokens left to send (the language side resumes)",
               frozenset({Status.WaitingForInput, Status.Transferring}), Status.Transferring, ("commit_round",)),
    Transition("the last round committed", frozenset({Status.WaitingForInput, Status.Transferring}),
               Status.Success, ("commit_round",)),
    Transition("abort, timeout, bad input, write error, dead letter, encoder gone", LIVE, Status.Failed,
               ("fail_room", "dst_init", "dst_resume", "publish_source", "hand_back", "pool_expire")),
)


def allowed_moves() -> dict[Status, frozenset[Status]]:
    """Every status -> the statuses a transition may move it to."""
    moves: dict[Status, set[Status]] = {s: set() for s in Status}
    for transition in TRANSITIONS:
        for before in transition.before:
            moves[before].add(transition.after)
    return {s: frozenset(after) for s, after in moves.items()}


@dataclass(frozen=True)
class Deadline:
    """The one deadline a live room has in a phase: ``start`` (a room field, Redis ms) plus
    the node's ``policy`` limit. Past it the janitor fails the room with ``reason``, whose
    ``{names}`` are room fields, or ``limit`` (the policy limit, in seconds)."""

    phase: str
    when: str
    start: str
    policy: str  # a settings.POLICY name
    reason: str


# In order: the first phase whose condition holds gives the room its deadline (see
# lua/includes/deadline.lua, which tests the conditions in this order).
DEADLINES = (
    Deadline("round", "a round is queued and not yet committed", "queued_at", "round_timeout",
             "round {queued_round} was queued but not completed within {limit}"),
    Deadline("transferring", "Transferring: the language side owes a resume", "committed_at", "transfer_timeout",
             "transferring timeout: no resume within {limit} of round {round}"),
    Deadline("bootstrap", "fewer destination sessions sent init than required", "created_at", "bootstrap_timeout",
             "bootstrap timeout: {dst_count} of {required_dst_info_num} destination sessions sent init within "
             "{limit}"),
    Deadline("waiting", "every destination is ready, the source is not published", "ready_at", "waiting_timeout",
             "waiting timeout: no source published within {limit} of every destination being ready"),
)

# The kinds of failure a room ends with (counted by xferd_rooms_ended_total{class}).
FAILURE_CLASSES = ("bad_input", "timeout", "aborted", "write_error", "not_replicated", "dead_letter", "internal")


def failure_class(name: str) -> str:
    """``name``, if it is a declared failure class (a caller's, before a script counts it)."""
    if name not in FAILURE_CLASSES:
        raise ValueError(f"failure class {name!r} is not one of {', '.join(FAILURE_CLASSES)}")
    return name

# Histogram bucket bounds in seconds (the scripts count one field per bucket hit).
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

# ---- record fields: name -> what it holds (HGETALL on a record shows these)
ROOM_FIELDS = {
    "room": "the room id",
    "status": "the status number (Failed 0 ... Success 4)",
    "status_name": "the status, by name",
    "required_dst_info_num": "how many destination sessions (TP ranks) must each get a copy",
    "dst_count": "how many destination sessions sent init",
    "total_tokens": "tokens the encoder published",
    "src_indices": "the published source blocks",
    "sent_tokens": "tokens every destination has (the least of dst<k>.sent_tokens)",
    "round": "the last committed round",
    "queued_round": "the last queued round (round + 1 while one is queued)",
    "entry": "the stream entry that carries the queued round",
    "takes": "how often the queued round was taken (more than 1: redone after a stopped writer)",
    "handbacks": "how often the queued round was handed back by the fencer",
    "rewrites": "rounds taken more than once",
    "epoch": "the fencing epoch: bumped by every take",
    "holder": "the worker writing the round now (absent: no write in flight)",
    "holder_entry": "the entry the holder took",
    "lease_until": "when the holder's lease runs out (Redis ms)",
    "done_epoch": "the epoch whose holder let go last (a retried commit finds its work done)",
    "deadline": "when the room fails unless it moves on (Redis ms)",
    "deadline_reason": "the reason it fails with then",
    "failure": "why the room failed",
    "failure_class": "the kind of failure (see FAILURE_CLASSES)",
    "created_at": "first message naming the room (Redis ms)",
    "updated_at": "last change",
    "source_at": "source published",
    "ready_at": "every required destination sent init",
    "queued_at": "the last round queued",
    "taken_at": "the last round taken by a worker",
    "committed_at": "the last round committed",
    "failed_at": "failed",
    "drained_at": "terminal and no write in flight: blocks back, the record expires after the retention",
}
# dst<k>.<field>: one destination session of the room, k = 0 .. dst_count - 1
DESTINATION_FIELDS = {
    "session": "the session id (its Mooncake segment, host:port)",
    "endpoint": "where its statuses are pushed (ip:port)",
    "dst_indices": "its destination blocks for the next round",
    "allocated_tokens": "tokens those blocks hold",
    "sent_tokens": "tokens it has",
    "ready_round": "the round it is ready for",
    "one_round": "1: the 6-frame init, everything in one round",
    "last_resume": "its last resume (sent|allocated|blocks), to spot a duplicate",
    "init_at": "its init (Redis ms)",
    "resumed_at": "its last resume",
}
SESSION_FIELDS = {
    "session": "the session id",
    "endpoint": "where statuses are pushed (ip:port)",
    "ptrs": "its destination buffers' addresses, one per buffer type",
    "lens": "their lengths in bytes ('' when not sent)",
    "owner": "the CurveZMQ key that registered it ('' without CURVE)",
    "registered_at": "its last registration (ms)",
    "failed": "why it is marked failed (a write to it failed); cleared by registering again",
}
REQUEST_FIELDS = {
    "blocks": "the blocks allocated for the request",
    "count": "how many",
    "attempt": "the allocation attempt that got them",
    "refused": "the last attempt refused for lack of blocks",
    "allocated_at": "when (Redis ms)",
    "room": "the room the blocks became the allocation of",
}


def destination_field(k: int, name: str) -> str:
    assert name in DESTINATION_FIELDS, name
    return f"dst{k}.{name}"


def declared_room_field(field: str) -> bool:
    """Whether ``field`` of a room hash is declared (``dst<k>.<name>`` included)."""
    if field in ROOM_FIELDS:
        return True
    head, _, name = field.partition(".")
    return head.startswith("dst") and head[3:].isdigit() and name in DESTINATION_FIELDS


def markdown() -> str:
    """The declaration as the tables of docs/state.md (``python -m xferd.state.room``)."""
    lines = ["| status | value | terminal |", "|---|---|---|"]
    lines += [f"| {s.name} | {int(s)} | {'yes' if s.terminal else ''} |" for s in Status]
    lines += ["", "| event | from | to | scripts |", "|---|---|---|---|"]
    for t in TRANSITIONS:
        before = ", ".join(s.name for s in sorted(t.before))
        lines.append(f"| {t.event} | {before} | {t.after.name} | {', '.join(f'`{s}`' for s in t.scripts)} |")
    lines += ["", "| phase (first that holds) | when | deadline | reason |", "|---|---|---|---|"]
    for d in DEADLINES:
        lines.append(f"| {d.phase} | {d.when} | `{d.start}` + `{d.policy}` | {d.reason} |")
    for title, fields in (("room hash", ROOM_FIELDS), ("room hash, per destination (`dst<k>.<field>`, k from 0)", DESTINATION_FIELDS),
                          ("session hash", SESSION_FIELDS), ("request hash", REQUEST_FIELDS)):
        lines += ["", f"| field of the {title} | holds |", "|---|---|"]
        lines += [f"| `{name}` | {what} |" for name, what in fields.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
