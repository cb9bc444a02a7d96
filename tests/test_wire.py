"""The wire format against the byte-exact vectors of the reference language side."""
from __future__ import annotations

import base64
import json
import pathlib

import struct

import pytest

from xferd.protocol import wire
from xferd.protocol.status import Status

# shared/ lies beside the checkout, in sessions and in CI alike
VECTORS = pathlib.Path(__file__).resolve().parents[2] / "shared" / "wire_vectors.json"


def vectors():
    data = json.loads(VECTORS.read_text())
    return {m["name"]: [base64.b64decode(f) for f in m["frames"]] for m in data["messages"]}


@pytest.fixture(scope="module")
def vec():
    if not VECTORS.exists():
        pytest.skip("shared/wire_vectors.json not present")
    return vectors()


def test_register_vector(vec):
    message = wire.decode_request(vec["register"])
    assert isinstance(message, wire.Register)
    assert (message.ip, message.status_port, message.session_id) == ("10.0.0.2", 17100, "10.0.0.2:15432")
    assert len(message.ptrs) == 4 and message.lens is None
    assert wire.encode_register(message.ip, message.status_port, message.session_id, message.ptrs) == vec["register"]


def test_init_vectors(vec):
    seven = wire.decode_request(vec["init"])
    six = wire.decode_request(vec["init-6-frames"])
    assert isinstance(seven, wire.Init) and isinstance(six, wire.Init)
    assert seven.room == 424242 and seven.dst_indices == (3, 4, 5, 9, 10, 11, 12, 13)
    assert (seven.required_dst_info_num, seven.allocated_tokens) == (1, 1024)
    assert six.allocated_tokens is None, "the 6-frame init means: everything, in one round"
    assert (six.room, six.dst_indices) == (seven.room, seven.dst_indices)
    for message, name in ((seven, "init"), (six, "init-6-frames")):
        assert wire.encode_init(message.room, message.ip, message.status_port, message.session_id,
                                message.dst_indices, message.required_dst_info_num,
                                message.allocated_tokens) == vec[name]


def test_resume_vector(vec):
    message = wire.decode_request(vec["resume"])
    assert isinstance(message, wire.Resume)
    assert (message.sent_tokens, message.allocated_tokens) == (1024, 976)
    assert message.dst_indices == (0, 1, 2, 6, 7, 8, 14, 15)
    assert wire.encode_resume(message.room, message.ip, message.status_port, message.session_id,
                              message.dst_indices, message.required_dst_info_num, message.sent_tokens,
                              message.allocated_tokens) == vec["resume"]


def test_status_vectors(vec):
    """Two frames by default (the reference multimodal side unpacks exactly two); the
    three-frame form is an option, and xferd's own Receiver reads both."""
    assert wire.encode_status(424242, Status.Transferring) == vec["status"]
    assert wire.encode_status(424242, Status.Transferring, 0) == vec["status-3-frames"]
    room, status = vec["status"]  # the reference's strict unpack
    assert (int(room), int(status)) == (424242, 3)
    for name in ("status", "status-3-frames"):
        assert wire.decode_status(vec[name]) == (424242, Status.Transferring)


def test_status_forms_without_the_vectors():
    assert len(wire.encode_status(7, Status.Success)) == 2
    assert wire.encode_status(7, Status.Failed, 1)[2] == b"1"
    with pytest.raises(wire.WireError, match="expected 2"):
        wire.decode_status([b"7"])


def test_abort_cannot_be_confused_with_reference_messages(vec):
    frames = wire.encode_abort(424242, "10.0.0.2:15432")
    assert wire.decode_request(frames) == wire.Abort(424242, "10.0.0.2:15432")
    for name in ("register", "init", "init-6-frames", "resume"):
        assert not isinstance(wire.decode_request(vec[name]), wire.Abort)


def test_register_with_lengths_round_trips():
    frames = wire.encode_register("h", 1, "h:2", [10, 20], [100, 200])
    assert wire.decode_request(frames).lens == (100, 200)


@pytest.mark.parametrize("frames,needle,room", [
    ([], "empty", None),
    ([b"1", b"h", b"1"], "frames", None),
    ([b"x1", b"h", b"1", b"h:1", b"", b"1"], "room", None),
    ([b"-5", b"h", b"1", b"h:1", b"", b"1"], "room", None),
    ([b"7", b"h", b"99999", b"h:1", b"1", b"1"], "status_port", 7),
    ([b"7", b"h", b"1", b"nocolon", b"1", b"1"], "session_id", 7),
    ([b"7", b"h", b"1", b"h:1", b"1,a", b"1"], "block indices", 7),
    ([b"7", b"h", b"1", b"h:1", b"1,,2", b"1"], "block indices", 7),
    ([b"7", b"h", b"1", b"h:1", b"1", b"0"], "required_dst_info_num", 7),
    ([b"7", b"h", b"1", b"h:1", b"1", b"1", b"99999999999"], "allocated_tokens", 7),
    ([b"7", b"h", b"1", b"h:1", b"1", b"1", b" 5"], "allocated_tokens", 7),
    ([b"7", b"h", b"1", b"h:1", b"1", b"1", b"0", b"-1"], "allocated_tokens", 7),
    ([b"7", b"h", b"1", b"h:1", b"\xff", b"1"], "ASCII", 7),
    ([b"None", b"h", b"1", b"h:1", b"\x01\x02\x03"], "multiple of 8", None),
    ([b"ABORT", b"7"], "abort", None),
    ([b"7"] * 9, "no message has more than", None),
    ([b"7", b"h", b"1", b"h:1", b"1" * (wire.MAX_MESSAGE_BYTES + 1), b"1"], "exceeds the limit", 7),
    ([b"None", b"h", b"1", b"h:1", struct.pack("2Q", 4096, 0)], "null", None),
    ([b"None", b"h", b"1", b"h:1", struct.pack("Q", 2**64 - 8), struct.pack("Q", 16)], "overflows", None),
    ([b"None", b"h", b"1", b"h:1", struct.pack("65Q", *([4096] * 65))], "exceed the limit", None),
    ([b"7", b"h", b"1", b"h:1", ",".join(["1"] * (wire.MAX_INDICES + 1)).encode(), b"1"], "exceed the limit", 7),
])
def test_bad_messages_raise_with_reason_and_room(frames, needle, room):
    with pytest.raises(wire.WireError) as caught:
        wire.decode_request(frames)
    assert needle in str(caught.value)
    assert caught.value.room == room
