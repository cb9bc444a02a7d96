"""`xferd inspect ROOM`: a room's records, decoded for a person."""
from __future__ import annotations

import time

from xferd.state.connections import redact
from xferd.state.room import ROOM_FIELDS
from xferd.state.store import Store

_TIMES = tuple(name for name in ROOM_FIELDS if name.endswith("_at"))  # the room's timestamps, in order


def _when(ms: str, now_ms: int) -> str:
    stamp = int(ms)
    delta = (stamp - now_ms) / 1000
    clock = time.strftime("%H:%M:%S", time.localtime(stamp / 1000)) + f".{stamp % 1000:03d}"
    return f"{clock} ({'in ' if delta > 0 else ''}{abs(delta):.1f}s{'' if delta > 0 else ' ago'})"


def _span(text: str, limit: int = 16) -> str:
    items = text.split(",") if text else []
    shown = ",".join(items[:limit]) + (f",… ({len(items)} blocks)" if len(items) > limit else "")
    return shown or "-"


def render(store: Store, room: int, redis_url: str | None) -> str:
    record = store.room(room)
    now = store.now_ms()
    lines = [f"room {room}  (key {store.keys.room(room)}, redis {redact(redis_url or 'default')})",
             f"  node {store.keys.node!r} held by {store.where()}"]
    pool = store.record()
    if pool:
        lines.append(f"  node layout   block_size {pool.get('block_size')}: {pool.get('layout')}")
    if not record:
        lines.append("  no record: unknown room, or expired after its retention period")
        return "\n".join(lines)
    ttl = store.room_ttl_ms(room)
    lines.append(f"  status        {record.get('status_name')} ({record.get('status')})")
    if "failure" in record:
        lines.append(f"  failure       {record['failure']}")
    lines.append(f"  tokens        sent {record.get('sent_tokens', 0)} of {record.get('total_tokens', '?')}"
                 f"   round {record.get('round')} (queued {record.get('queued_round')})")
    lines.append(f"  source        {_span(record.get('src_indices', ''))}")
    lines.append(f"  destinations  {record.get('dst_count')} of {record.get('required_dst_info_num')} required")
    for k in range(int(record.get("dst_count", 0))):
        d = f"dst{k}."
        lines.append(f"    [{k}] {record.get(d + 'session')} -> status {record.get(d + 'endpoint')}: sent "
                     f"{record.get(d + 'sent_tokens')}, allocated {record.get(d + 'allocated_tokens')}, "
                     f"blocks {_span(record.get(d + 'dst_indices', ''))}"
                     f"{' (6-frame init: all in one round)' if record.get(d + 'one_round') else ''}")
    if "deadline" in record:
        lines.append(f"  deadline      {_when(record['deadline'], now)}: {record.get('deadline_reason')}")
    if "holder" in record:
        lines.append(f"  writing       round {record.get('queued_round')} by {record['holder']} (epoch "
                     f"{record.get('epoch')}), lease until {_when(record['lease_until'], now)}")
    elif record.get("epoch", "0") != "0":
        lines.append(f"  fencing       epoch {record['epoch']}, {record.get('takes', 0)} takes of the "
                     f"queued round, {record.get('rewrites', 0)} rounds redone")
    for field in _TIMES:
        if field in record:
            lines.append(f"  {field:<13} {_when(record[field], now)}")
    if ttl and ttl > 0:
        lines.append(f"  expires in    {ttl / 1000:.0f}s (retention)")
    lines.append(f"  source blocks held: {store.held_blocks(room)}")
    return "\n".join(lines)
