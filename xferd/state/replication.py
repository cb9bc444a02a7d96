"""Nothing acted on is rolled back by a failover (docs/guarantees.md).

Redis replicates asynchronously: a primary that dies can take its last writes with it, and
the replica promoted in its place never saw them. Everything xferd's transitions produce is
acted on by someone: a take by the worker that writes under it, an allocation by the
encoder that writes into its blocks, a status by the language side, a queued round by the
language side that waits for it. So with ``min_replicas`` set, every transition script runs
followed by ``WAIT min_replicas`` on the same connection to the node's primary, and its
reply is used only once that many replicas hold its effects.

One connection matters: WAIT covers the writes of its own connection. A pipeline that
redis-py sends again on a new connection (the old primary died) sends the script again,
to whichever primary answers now; every transition script is idempotent for that (a
retried take gets the same epoch, a retried commit or allocation the same answer), so the
WAIT that returns covers the state the reply describes. Not confirmed within
``replica_timeout``: NotReplicated, and the caller acts on nothing.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

import redis
from redis.client import Pipeline

from xferd.state.connections import TRANSIENT

log = logging.getLogger("xferd.replication")
_UNSET = object()


class NotReplicated(RuntimeError):
    """A transition reached fewer replicas than asked within the bound; ``reply`` is what
    the primary answered (its effects are there, unconfirmed: not to be acted on)."""

    def __init__(self, what: str, acked: int, need: int, timeout_s: float, reply=None):
        super().__init__(f"{what} reached {acked} of {need} replica(s) within {timeout_s:g}s")
        self.reply = reply


def run_replicated(primary: Callable[[], redis.Redis], stage: Callable[[Pipeline], None], need: int,
                   timeout_s: float, what: str, load: Callable[[redis.Redis], None] = lambda c: None,
                   lost_primary: Callable[[], None] = lambda: None,
                   count_wait: Callable[[Pipeline], None] = lambda pipe: None):
    """The reply of the command ``stage`` adds to a pipeline (the list of replies, if it
    adds several), once ``need`` replicas hold its effects: the commands and WAIT run on one
    connection of ``primary()``, sent again (they are idempotent) until WAIT says enough or
    ``timeout_s`` passes. The reply returned is the first of the connection that WAIT
    confirms on: a resend on that connection finds its own work done and only extends
    WAIT's reach, but one on another (redis-py reconnects inside a call, to a promoted
    replica that may never have seen the first send) applies it afresh, and only that
    answer describes what survives there (an allocation's blocks). ``load`` runs on a NOSCRIPT (a promoted
    replica has no scripts), ``lost_primary`` after a connection or redirect error (find the
    primary again); ``count_wait`` adds a counting command to every send after the first,
    so the count is as durable as the transition (a count written apart from it would die
    with the primary that could not replicate it)."""
    deadline = time.monotonic() + timeout_s
    first, answered_on, acked, sends = _UNSET, None, 0, 0
    while True:
        connection = primary()
        pipe = connection.pipeline(transaction=False)
        stage(pipe)
        commands = len(pipe)
        if sends:
            count_wait(pipe)
        sends += 1
        # a replica acknowledges in well under a millisecond: the first WAIT is short, so a
        # transition held back for a replica shows in the count; later ones wait a second
        slice_s = 0.1 if sends == 1 else 1.0
        left_ms = max(1, int(min(deadline - time.monotonic(), slice_s) * 1000))
        pipe.execute_command("CLIENT INFO")  # which connection answered: id, ours, the server's
        pipe.execute_command("WAIT", need, left_ms)
        try:
            results = pipe.execute()
        except redis.exceptions.NoScriptError:
            load(connection)
            continue
        except TRANSIENT as error:  # a failover under way: closed connections, MOVED, READONLY...
            lost_primary()
            if time.monotonic() >= deadline:
                raise
            log.debug("%s: %s; sending it again", what, error)
            time.sleep(0.05)
            continue
        replies, client, acked = results[:commands], results[-2], results[-1]
        connection_id = (client.get("id"), client.get("addr"), client.get("laddr"))
        if first is _UNSET or connection_id != answered_on:
            first, answered_on = (replies[0] if len(replies) == 1 else replies), connection_id
        if acked >= need:
            return first
        if time.monotonic() >= deadline:
            raise NotReplicated(what, acked, need, timeout_s, first)
