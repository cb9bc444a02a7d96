"""ZMQ multipart wire format (docs/protocol.md): decode and validate every frame, encode replies.

Language → ingress:
  register  ["None", ip, status_port, session_id, packed_ptrs(, packed_lens)]
  init      [room, ip, status_port, session_id, "i0,i1,...", required_dst_info_num(, allocated)]
            (6 frames, the reference's older form: everything in one round into these blocks)
  resume    [room, ip, status_port, session_id, "i0,...", required_dst_info_num, sent, allocated]
  abort     ["ABORT", room, session_id]   (xferd; no reference frame 0 is "ABORT")
Ingress/worker → language:
  status    [room, status]   (the reference multimodal side unpacks exactly two frames;
            [room, status, sender_rank], the reference KV connector's form, is an option)

``packed_ptrs`` / ``packed_lens`` are native uint64s (struct "Q"), one per buffer type;
``packed_lens`` (the byte length of each destination buffer) is optional and lets the
node bounds-check destination indices.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from xferd.protocol.status import Status

MAX_ROOM = 2**64 - 1
MAX_TOKENS = 2**31 - 1
MAX_INDICES = 1 << 20
MAX_DST_INFO_NUM = 256
MAX_FRAMES = 8
MAX_MESSAGE_BYTES = 12 * 2**20  # MAX_INDICES indices of up to 10 digits and a comma, and the rest
MAX_BUFFERS = 64  # buffer types in one registration
ABORT_TAG = b"ABORT"
REGISTER_TAG = b"None"
_SESSION = re.compile(r"^[A-Za-z0-9.\-_\[\]:]{1,255}:[0-9]{1,5}$")
_HOST = re.compile(r"^[A-Za-z0-9.\-_:\[\]]{1,255}$")


class WireError(ValueError):
    """A message that cannot be accepted. ``room`` and ``reply_to`` are set when known;
    ``kind`` says why in one word, for the ingress's reject counts."""

    def __init__(self, reason: str, room: int | None = None, reply_to: tuple[str, int] | None = None,
                 kind: str = "malformed"):
        super().__init__(reason)
        self.reason = reason
        self.room = room
        self.reply_to = reply_to
        self.kind = kind


@dataclass(frozen=True)
class Register:
    ip: str
    status_port: int
    session_id: str
    ptrs: tuple[int, ...]
    lens: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Init:
    room: int
    ip: str
    status_port: int
    session_id: str
    dst_indices: tuple[int, ...]
    required_dst_info_num: int
    allocated_tokens: int | None  # None: the 6-frame form, everything in one round


@dataclass(frozen=True)
class Resume:
    room: int
    ip: str
    status_port: int
    session_id: str
    dst_indices: tuple[int, ...]
    required_dst_info_num: int
    sent_tokens: int
    allocated_tokens: int


@dataclass(frozen=True)
class Abort:
    room: int
    session_id: str


Message = Register | Init | Resume | Abort


def _ascii(frame: bytes, what: str) -> str:
    try:
        return frame.decode("ascii")
    except UnicodeDecodeError:
        raise WireError(f"{what} is not ASCII") from None


def _int(frame: bytes, what: str, low: int, high: int) -> int:
    text = _ascii(frame, what)
    if not text.isdigit() or len(text) > 20:  # digits only: no sign, space or underscore
        raise WireError(f"{what} {text[:40]!r} is not a non-negative integer")
    value = int(text)
    if not low <= value <= high:
        raise WireError(f"{what} {value} is outside [{low}, {high}]")
    return value


def _indices(frame: bytes) -> tuple[int, ...]:
    text = _ascii(frame, "block indices")
    if not text:
        return ()
    parts = text.split(",")
    if len(parts) > MAX_INDICES:
        raise WireError(f"{len(parts)} block indices exceed the limit of {MAX_INDICES}")
    if not all(part.isdigit() and len(part) <= 10 for part in parts):
        raise WireError(f"block indices {text[:60]!r} are not comma-separated non-negative integers")
    return tuple(int(part) for part in parts)


def _session(frame: bytes) -> str:
    text = _ascii(frame, "session_id")
    if not _SESSION.match(text):
        raise WireError(f"session_id {text[:60]!r} is not 'host:port'")
    return text


def _endpoint(frames: list[bytes]) -> tuple[str, int]:
    ip = _ascii(frames[1], "ip")
    if not _HOST.match(ip):
        raise WireError(f"ip {ip[:60]!r} is not a host name or address")
    return ip, _int(frames[2], "status_port", 1, 65535)


def _uint64s(frame: bytes, what: str) -> tuple[int, ...]:
    if not frame or len(frame) % 8:
        raise WireError(f"{what} is {len(frame)} bytes, not a non-empty multiple of 8")
    return struct.unpack(f"{len(frame) // 8}Q", frame)


def check_frame_count(count: int) -> None:
    """Refuse a message with more frames than any valid one (the ingress checks before copying)."""
    if count > MAX_FRAMES:
        raise WireError(f"message has {count} frames; no message has more than {MAX_FRAMES}")


def decode_request(frames: list[bytes]) -> Message:
    """Decode one language → ingress message; raise WireError with the reason."""
    if not frames:
        raise WireError("empty message")
    check_frame_count(len(frames))
    head = frames[0]
    size = sum(len(frame) for frame in frames)
    if size > MAX_MESSAGE_BYTES:
        room = int(head) if head.isdigit() and len(head) <= 20 and int(head) <= MAX_ROOM else None
        raise WireError(f"message of {size} bytes exceeds the limit of {MAX_MESSAGE_BYTES}", room=room)
    if head == ABORT_TAG:
        if len(frames) != 3:
            raise WireError(f"abort has {len(frames)} frames, expected 3")
        return Abort(_int(frames[1], "room", 0, MAX_ROOM), _session(frames[2]))
    if head == REGISTER_TAG:
        if len(frames) not in (5, 6):
            raise WireError(f"register has {len(frames)} frames, expected 5 or 6")
        ip, port = _endpoint(frames)
        ptrs = _uint64s(frames[4], "packed buffer pointers")
        lens = _uint64s(frames[5], "packed buffer lengths") if len(frames) == 6 else None
        if len(ptrs) > MAX_BUFFERS:
            raise WireError(f"{len(ptrs)} buffer pointers exceed the limit of {MAX_BUFFERS}")
        if lens is not None and len(lens) != len(ptrs):
            raise WireError(f"{len(lens)} buffer lengths for {len(ptrs)} buffer pointers")
        if any(ptr == 0 for ptr in ptrs):
            raise WireError("a buffer pointer is null")
        if lens is not None and any(ptr + length > 2**64 for ptr, length in zip(ptrs, lens)):
            raise WireError("a buffer's pointer plus length overflows 64 bits")
        return Register(ip, port, _session(frames[3]), ptrs, lens)
    if len(frames) not in (6, 7, 8):
        raise WireError(f"message has {len(frames)} frames; init has 6 or 7, resume 8")
    room = _int(head, "room", 0, MAX_ROOM)
    try:
        reply_to = _endpoint(frames)
    except WireError as error:
        raise WireError(error.reason, room=room) from None
    try:
        session = _session(frames[3])
        indices = _indices(frames[4])
        required = _int(frames[5], "required_dst_info_num", 1, MAX_DST_INFO_NUM)
        if len(frames) == 8:
            sent = _int(frames[6], "sent_tokens", 0, MAX_TOKENS)
            allocated = _int(frames[7], "allocated_tokens", 0, MAX_TOKENS)
            return Resume(room, *reply_to, session, indices, required, sent, allocated)
        allocated = _int(frames[6], "allocated_tokens", 0, MAX_TOKENS) if len(frames) == 7 else None
        return Init(room, *reply_to, session, indices, required, allocated)
    except WireError as error:
        raise WireError(error.reason, room=room, reply_to=reply_to) from None


def _join(indices) -> bytes:
    return ",".join(str(i) for i in indices).encode("ascii")


def encode_register(ip: str, status_port: int, session_id: str, ptrs, lens=None) -> list[bytes]:
    frames = [REGISTER_TAG, ip.encode(), str(status_port).encode(), session_id.encode(),
              struct.pack(f"{len(ptrs)}Q", *ptrs)]
    if lens is not None:
        frames.append(struct.pack(f"{len(lens)}Q", *lens))
    return frames


def encode_init(room, ip, status_port, session_id, dst_indices, required_dst_info_num,
                allocated_tokens: int | None) -> list[bytes]:
    """7 frames; 6 (the older form) when ``allocated_tokens`` is None."""
    frames = [str(room).encode(), ip.encode(), str(status_port).encode(), session_id.encode(),
              _join(dst_indices), str(required_dst_info_num).encode()]
    return frames if allocated_tokens is None else frames + [str(allocated_tokens).encode()]


def encode_resume(room, ip, status_port, session_id, dst_indices, required_dst_info_num,
                  sent_tokens, allocated_tokens) -> list[bytes]:
    return encode_init(room, ip, status_port, session_id, dst_indices, required_dst_info_num,
                       sent_tokens) + [str(allocated_tokens).encode()]


def encode_abort(room: int, session_id: str) -> list[bytes]:
    return [ABORT_TAG, str(room).encode(), session_id.encode()]


def encode_status(room: int, status: Status | int, sender_rank: int | None = None) -> list[bytes]:
    """``[room, status]``; ``[room, status, sender_rank]`` when a rank is given."""
    frames = [str(room).encode(), str(int(status)).encode()]
    return frames if sender_rank is None else frames + [str(sender_rank).encode()]


def decode_status(frames: list[bytes]) -> tuple[int, Status]:
    """A status in either form; the sender rank of the three-frame form is not needed."""
    if len(frames) not in (2, 3):
        raise WireError(f"status has {len(frames)} frames, expected 2 (or 3 with a sender rank)")
    return _int(frames[0], "room", 0, MAX_ROOM), Status(_int(frames[1], "status", 0, 4))
