"""One node at a glance, read from Redis: what `xferd status`, `xferd rooms`, `xferd top`
and the status page at ``/`` show. Reading only; every field is also in Redis for
``redis-cli`` (keys.py)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from xferd.node.stopping import Identity
from xferd.state.keys import GROUP
from xferd.state.records import _hash, _text
from xferd.protocol.status import Status
from xferd.state.store import Store

ROOM_SCAN_LIMIT = 100_000  # room records read for the counts; past it the counts say so
LIVE_ROOMS_SHOWN = 50
RECENT_ENDS = 20
LIVE_S = 5.0  # a lane whose heartbeat is younger is live


@dataclass
class Worker:
    name: str
    heartbeat_age_s: float
    running: bool | None  # None: on another host


@dataclass
class Room:
    room: str
    status: str
    sent_tokens: int
    total_tokens: int | None
    round: int
    age_s: float
    holder: str = ""


@dataclass
class Ended:
    room: str
    status: str
    failure_class: str
    reason: str
    rounds: int
    duration_ms: int
    ago_s: float


@dataclass
class NodeView:
    node: str
    prefix: str
    served_by: str
    serve_seen_age_s: float | None
    layout: str
    workers: list[Worker]
    queue_depth: int
    pending: int
    oldest_pending_s: float
    dead_letters: int
    pool_free: int
    pool_total: int
    rooms_by_status: dict[str, int]
    rooms_scanned_all: bool
    live_rooms: list[Room]
    recent_ends: list[Ended]
    stats: dict[str, str] = field(default_factory=dict)  # the node's stats hash as Redis has it

    @property
    def counters(self) -> dict[str, int]:
        return {key: int(value) for key, value in self.stats.items() if value.lstrip("-").isdigit()}

    @property
    def live_workers(self) -> int:
        """Lanes with a heartbeat in the last LIVE_S seconds."""
        return sum(1 for w in self.workers if w.heartbeat_age_s < LIVE_S)

    @property
    def recent_failures(self) -> list[Ended]:
        return [e for e in self.recent_ends if e.status == "Failed"]

    # the same rows for every view (terminal, page)
    def summary_rows(self) -> list[list[str]]:
        held = max(0, self.pool_total - self.pool_free)
        counts = ", ".join(f"{n} {s}" for s, n in sorted(self.rooms_by_status.items())) or "none"
        c = self.counters
        served = (f"{self.served_by} (seen {age(self.serve_seen_age_s)} ago)" if self.served_by
                  else "no serve holds the node")
        return [
            ["served by", served],
            ["layout", self.layout or "- (no node record: is `xferd serve` running?)"],
            ["queue", f"{self.queue_depth} waiting, {self.pending} being written, oldest "
                      f"{age(self.oldest_pending_s)}, {self.dead_letters} dead letters"],
            ["source pool", f"{self.pool_free} of {self.pool_total} blocks free, {held} held"],
            ["rooms", counts + ("" if self.rooms_scanned_all else f" (first {ROOM_SCAN_LIMIT} records)")],
            ["since start", f"{c.get('rounds', 0)} rounds, {c.get('bytes_written', 0) / 1e9:.3f} GB, "
                            f"{c.get('handed_back', 0)} handed back, {c.get('writers_fenced', 0)} writers fenced"],
        ]

    def worker_rows(self) -> list[list[str]]:
        return [[w.name, f"{age(w.heartbeat_age_s)} ago", {True: "running", False: "gone", None: "other host"}[w.running]]
                for w in self.workers]

    def room_rows(self) -> list[list[str]]:
        return [[r.room, r.status, f"{r.sent_tokens}/{'?' if r.total_tokens is None else r.total_tokens}",
                 str(r.round), age(r.age_s), r.holder or "-"] for r in self.live_rooms]

    def failure_rows(self) -> list[list[str]]:
        return [[e.room, e.failure_class, e.reason, str(e.rounds), f"{age(e.ago_s)} ago"]
                for e in self.recent_failures]


WORKER_COLUMNS = ["consumer", "heartbeat", "process"]
ROOM_COLUMNS = ["room", "status", "tokens", "round", "age", "writer"]
FAILURE_COLUMNS = ["room", "class", "reason", "rounds", "ended"]


def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    return f"{seconds / 60:.0f}m" if seconds < 3600 else f"{seconds / 3600:.1f}h"


def read(store: Store, status: str | None = None, room_limit: int = LIVE_ROOMS_SHOWN,
         with_rooms: bool = True) -> NodeView:
    """The node now, in one pipelined read; ``live_rooms`` lists the live rooms, oldest
    first, or with ``status`` (a status name) the rooms of that status (``xferd rooms``).
    ``with_rooms`` False skips the scan of every room record (metrics, drain, cleanup)."""
    k = store.keys
    now, record, workers, groups, pending, dead, free, ended, stats = store.node_snapshot(RECENT_ENDS)
    now_ms = int(now[0]) * 1000 + int(now[1]) // 1000
    record = _hash(record)
    group = {} if isinstance(groups, Exception) else next(
        (g for g in groups if _text(g.get("name")) == GROUP), {})
    pending = {} if isinstance(pending, Exception) else pending
    oldest = pending.get("min")
    rooms, scanned_all = _rooms(store, now_ms) if with_rooms else ([], True)
    shown = [r for r in rooms if (r.status == status if status else r.status not in ("Success", "Failed"))]
    shown.sort(key=lambda r: -r.age_s)
    return NodeView(
        node=k.node, prefix=k.prefix, served_by=record.get("serve", ""),
        serve_seen_age_s=(now_ms - int(record["serve_seen"])) / 1000 if "serve_seen" in record else None,
        layout=f"block_size {record.get('block_size', '?')}: {record.get('layout', '?')}" if record else "",
        workers=[Worker(name, (now_ms - int(seen)) / 1000, _running(name))
                 for name, seen in sorted(_hash(workers).items())],
        queue_depth=int(group.get("lag") or 0), pending=int(group.get("pending") or 0),
        oldest_pending_s=max(0, now_ms - int(_text(oldest).split("-")[0])) / 1000 if oldest else 0.0,
        dead_letters=int(dead) if not isinstance(dead, Exception) else 0,
        pool_free=int(free), pool_total=int(record.get("num_blocks", 0)),
        rooms_by_status=dict(Counter(r.status for r in rooms)), rooms_scanned_all=scanned_all,
        live_rooms=shown[:room_limit],
        recent_ends=[_ended(entry_id, fields, now_ms) for entry_id, fields in ended],
        stats=_hash(stats))


def _running(name: str) -> bool | None:
    identity = Identity.parse(name)
    return identity.running() if identity is not None else None


def _rooms(store: Store, now_ms: int) -> tuple[list[Room], bool]:
    """Every room record of the node (up to ROOM_SCAN_LIMIT): its status and progress."""
    fields = ("status", "sent_tokens", "total_tokens", "round", "created_at", "holder")
    rows, complete = store.room_rows(fields, ROOM_SCAN_LIMIT)
    rooms = []
    for room, (status, sent, total, round_, created, holder) in rows:
        rooms.append(Room(room, Status(int(status)).name, int(sent or 0), int(total) if total else None,
                          int(round_ or 0), (now_ms - int(created or now_ms)) / 1000, holder or ""))
    return rooms, complete


def _ended(entry_id, fields, now_ms: int) -> Ended:
    f = _hash(fields)
    return Ended(f.get("room", "?"), f.get("status", "?"), f.get("class", ""), f.get("reason", ""),
                 int(f.get("rounds") or 0), int(f.get("duration_ms") or 0),
                 (now_ms - int(_text(entry_id).split("-")[0])) / 1000)
