"""The language side's and the encoder's transitions of a room, as ``Store`` methods:
sessions, init and resume, publish and abort, and reads of a room's record and of the
node's status and ended streams."""
from __future__ import annotations

import time

from xferd.protocol.status import Status
from xferd.protocol.wire import Init, Register, Resume
from xferd.state.records import Outcome, _hash, _text
from xferd.state.retry import door
from xferd.state.room import failure_class as declared_class


class Rooms:
    """Mixed into ``Store`` (which gives ``client``, ``keys``, ``settings`` and ``_run``)."""

    # ---- language side
    @door("register session")
    def register_session(self, message: Register, owner: str = "") -> None:
        """Record a session, clearing any failure mark. ``owner``: the CurveZMQ key of the
        peer that registered it ('' without CURVE)."""
        key = self.keys.session(message.session_id)
        record = {
            "owner": owner,
            "session": message.session_id,
            "endpoint": f"{message.ip}:{message.status_port}",
            "ptrs": ",".join(map(str, message.ptrs)),
            "lens": ",".join(map(str, message.lens)) if message.lens else "",
            "registered_at": int(time.time() * 1000),
        }

        def stage(pipe) -> None:  # the new record before the mark goes: never neither
            pipe.hset(key, mapping=record)
            pipe.hdel(key, "failed")
            pipe.pexpire(key, self._session_retention_ms)

        if self.settings.min_replicas:
            self._replicated(stage, f"register {message.session_id}")
        else:
            pipe = self.client.pipeline(transaction=True)
            stage(pipe)
            pipe.execute()

    @property
    def _session_retention_ms(self) -> int:
        return int(self.settings.session_retention * 1000)

    @door("session owner")
    def session_owner(self, session_id: str) -> str | None:
        """The key of the peer that registered the session; None when it is not registered."""
        owner = self.client.hget(self.keys.session(session_id), "owner")
        return None if owner is None else _text(owner)

    @door("destinations")
    def destinations(self, room: int, field: str = "session") -> list[str]:
        """One field (``session``, ``endpoint``) of every destination that sent init for
        ``room`` (empty when none or no record)."""
        count = int(self.client.hget(self.keys.room(room), "dst_count") or 0)
        if not count:
            return []
        return [_text(s) for s in self.client.hmget(self.keys.room(room),
                                                   [f"dst{k}.{field}" for k in range(count)]) if s]

    @door("mark session failed")
    def mark_session_failed(self, session_id: str, reason: str) -> None:
        key = self.keys.session(session_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(key, "failed", reason)
        pipe.pexpire(key, self._session_retention_ms)  # bounded, even if it had expired
        pipe.execute()

    @door("dst init")
    def dst_init(self, message: Init) -> Outcome:
        """The 6-frame init (``allocated_tokens`` None) allocates its blocks' worth of tokens
        and asks for everything in one round (``dst<k>.one_round``)."""
        if message.allocated_tokens is None:
            allocated = len(message.dst_indices) * self.settings.block_size
            return self._dst_change("dst_init", message, allocated, 1)
        return self._dst_change("dst_init", message, message.allocated_tokens, 0)

    @door("dst resume")
    def dst_resume(self, message: Resume) -> Outcome:
        return self._dst_change("dst_resume", message, message.sent_tokens, message.allocated_tokens)

    def _dst_change(self, script: str, message: Init | Resume, *tokens: int) -> Outcome:
        return self._run(
            script, message.room, message.session_id, f"{message.ip}:{message.status_port}",
            ",".join(map(str, message.dst_indices)), message.required_dst_info_num, *tokens,
            sessions=(message.session_id,)).outcome

    # ---- encoder side
    @door("publish source")
    def publish_source(self, room: int, total_tokens: int, src_indices) -> Outcome:
        """The blocks must be the room's own allocation (``alloc_blocks``)."""
        return self._run("publish_source", room, total_tokens, ",".join(map(str, src_indices))).outcome

    @door("fail room")
    def fail_room(self, room: int, reason: str, mode: str = "", failure_class: str = "aborted") -> Outcome:
        """mode '' (abort, bad message), 'expired' (a due deadline), 'encoder' (the encoder's
        abort: an unpublished allocation goes back too); see fail_room.lua. ``failure_class``:
        the kind of failure for metrics (``FAILURE_CLASSES``). ``notify``: Failed is due now
        (no write of the room is in flight)."""
        return self._run("fail_room", room, reason, mode, declared_class(failure_class), "", "", "").outcome

    @door("room")
    def room(self, room: int) -> dict[str, str]:
        return _hash(self.client.hgetall(self.keys.room(room)))

    @door("status")
    def status(self, room: int) -> Status | None:
        """The room's recorded status; None when there is no record (unknown or expired)."""
        value = self.client.hget(self.keys.room(room), "status")
        return Status(int(value)) if value is not None else None

    @door("failure")
    def failure(self, room: int) -> str | None:
        reason = self.client.hget(self.keys.room(room), "failure")
        return _text(reason) if reason else None


    # ---- statuses, for an encoder watching its rooms (sglang_encoder.node) and the receiver
    @door("read room statuses")
    def room_statuses(self, rooms: list[int]) -> list[tuple[int | None, str | None]]:
        """(status, failure) of each room, None where there is no record, in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for room in rooms:
            pipe.hmget(self.keys.room(room), "status", "failure")
        return [(int(status) if status is not None else None, _text(failure) if failure else None)
                for status, failure in (pipe.execute() if rooms else [])]

    @door("read room fields")
    def room_fields(self, room: int, *fields: str) -> list[str | None]:
        return [_text(v) if v is not None else None for v in self.client.hmget(self.keys.room(room), fields)]

    @door("find the statuses stream's end")
    def statuses_end(self) -> str:
        """The id of the last status change recorded (``0-0``: none)."""
        last = self.client.xrevrange(self.keys.statuses, count=1)
        return _text(last[0][0]) if last else "0-0"

    @door("read status changes")
    def read_statuses(self, after: str, count: int, block_ms: int) -> list[tuple[str, int, int]]:
        """Status changes after entry ``after`` as (entry id, room, status), waiting up to
        ``block_ms`` for one."""
        reply = self.client.xread({self.keys.statuses: after}, count=count, block=block_ms)
        return [(_text(entry_id), int(fields[b"room"]), int(fields[b"status"]))
                for _, entries in reply or () for entry_id, fields in entries]

    # ---- the ended stream (ops/roomlog.py) and room records for a person (ops/roomview.py)
    @door("read ended rooms")
    def ended_since(self, after: str, count: int) -> list[tuple[str, dict[str, str]]]:
        """Rooms that ended after entry ``after``: (entry id, its fields), oldest first."""
        reply = self.client.xread({self.keys.ended: after}, count=count)
        return [(_text(entry_id), _hash(raw)) for _, entries in reply or () for entry_id, raw in entries]

    @door("read the ended cursor")
    def ended_logged(self) -> str:
        """The last ended entry the node's janitor logged (``0-0``: none yet)."""
        logged = self.client.hget(self.keys.record, "ended_logged")
        return _text(logged) if logged else "0-0"

    @door("save the ended cursor")
    def save_ended_logged(self, entry_id: str) -> None:
        self.client.hset(self.keys.record, "ended_logged", entry_id)

    @door("read a room's expiry")
    def room_ttl_ms(self, room: int) -> int:
        """Milliseconds until the room's record expires; negative: no expiry, or no record."""
        return int(self.client.pttl(self.keys.room(room)))
