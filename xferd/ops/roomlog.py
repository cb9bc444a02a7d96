"""One log line per ended room (room, outcome, failure class, rounds, bytes, duration,
reason), written by the janitor from the node's ``ended`` stream: every way a room ends
(a commit, a bad message, a timeout, an abort by the language side or by an encoder in
another process) is recorded there by the Lua step that ends it, so every end is logged
once, by one process, whoever ended it. The stream id logged last is kept in the node
record (``ended_logged``): a restarted janitor goes on from there."""
from __future__ import annotations

import logging

from xferd.protocol.layout import Layout
from xferd.state.store import Store

log = logging.getLogger("xferd.rooms")
BATCH = 200


class RoomEndLog:
    def __init__(self, store: Store, layout: Layout):
        self.store, self.layout = store, layout
        self.cursor: str | None = None

    def _start(self) -> str:
        """Where the last janitor stopped; the stream's start on a node never logged."""
        return self.store.ended_logged()

    def bytes_of(self, fields: dict[str, str]) -> int:
        """Bytes landed in all destinations: what was sent of every per-token buffer, and
        the first-block items once something was sent."""
        sent = int(fields.get("sent_tokens") or 0)
        return self.layout.bytes_for(sent, first_round=sent > 0) * int(fields.get("destinations") or 0)

    def pass_once(self) -> list[dict[str, str]]:
        """Log the ends recorded since the last pass; returns them (their stream fields)."""
        if self.cursor is None:
            self.cursor = self._start()
        entries = self.store.ended_since(self.cursor, BATCH)
        ends = []
        for entry_id, fields in entries:
            ends.append(fields)
            outcome = fields.get("status", "?")
            detail = {"room": fields.get("room"), "outcome": outcome, "failure_class": fields.get("class", ""),
                      "rounds": int(fields.get("rounds") or 0), "bytes": self.bytes_of(fields),
                      "duration_ms": int(fields.get("duration_ms") or 0), "reason": fields.get("reason", "")}
            text = (f"room {detail['room']} ended: {outcome}"
                    + (f" ({detail['failure_class']})" if detail["failure_class"] else "")
                    + f", {detail['rounds']} rounds, {detail['bytes']} bytes, {detail['duration_ms']} ms"
                    + (f": {detail['reason']}" if detail["reason"] else ""))
            (log.warning if outcome == "Failed" else log.info)(text, extra=detail)
            self.cursor = entry_id
        if entries:
            self.store.save_ended_logged(self.cursor)
        return ends
