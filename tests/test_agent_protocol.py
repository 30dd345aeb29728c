"""The agent's protocol: the codec without I/O, and bad input on the wire to a live agent.

Every bad frame gets an error reply naming what is wrong, and the agent
keeps serving: the same connection where the framing is intact, other
connections always.
"""

from __future__ import annotations

import json
import socket
import struct
from pathlib import Path
from typing import Any

import pytest

from firec.agent import Client, protocol
from firec.agent.protocol import FrameDecoder, Kind
from firec.errors import AgentError
from tests.agent_support import RunningAgent

# ---- the codec ----


def test_frames_round_trip_through_the_decoder_in_any_pieces() -> None:
    stream = (
        protocol.encode_control({"op": "exec", "argv": ["x"]})
        + protocol.encode(Kind.DATA, b"a" * 70_000)
        + protocol.encode(Kind.STDERR)
    )
    decoder = FrameDecoder()
    frames = []
    for start in range(0, len(stream), 333):
        decoder.feed(stream[start : start + 333])
        frames.extend(decoder)
    assert [(f.kind, len(f.payload)) for f in frames] == [
        (Kind.CONTROL, 29),
        (Kind.DATA, 70_000),
        (Kind.STDERR, 0),
    ]
    assert protocol.decode_control(frames[0].payload) == {"op": "exec", "argv": ["x"]}
    assert decoder.pending == 0


def test_the_codec_refuses_what_breaks_the_protocol() -> None:
    with pytest.raises(AgentError, match="a frame of 1048577 bytes"):
        protocol.parse_header(struct.pack(">IB", protocol.MAX_FRAME + 1, 1))
    with pytest.raises(AgentError, match="unknown kind 9"):
        protocol.parse_header(struct.pack(">IB", 0, 9))
    with pytest.raises(ValueError, match="at most 1048576"):
        protocol.encode(Kind.DATA, b"x" * (protocol.MAX_FRAME + 1))
    with pytest.raises(AgentError, match="not JSON"):
        protocol.decode_control(b"{nope")
    with pytest.raises(AgentError, match="not a JSON object"):
        protocol.decode_control(b"[1]")
    with pytest.raises(AgentError) as caught:
        protocol.check_reply({"ok": False, "error": "permission", "message": "no"}, op="read")
    error = caught.value
    assert (error.code, error.message, error.op) == ("permission", "no", "read")
    assert protocol.check_reply({"ok": True, "size": 3}, op="write") == {"ok": True, "size": 3}


def test_hello_carries_the_version_and_token() -> None:
    assert json.loads(protocol.hello()[5:]) == {"op": "hello", "protocol": 1}
    assert protocol.DEFAULT_PORT == 0xF1EC


# ---- on the wire ----


class Raw:
    """A bare connection to the agent: frames by hand."""

    def __init__(self, path: Path, hello: bool = True) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(10)
        self.sock.connect(str(path))
        self.decoder = FrameDecoder()
        if hello:
            self.send(protocol.hello())
            assert self.reply()["ok"] is True

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def control(self, message: dict[str, Any]) -> None:
        self.send(protocol.encode_control(message))

    def frame(self) -> protocol.Frame | None:
        while True:
            for frame in self.decoder:
                return frame
            data = self.sock.recv(65536)
            if not data:
                return None
            self.decoder.feed(data)

    def reply(self) -> dict[str, Any]:
        frame = self.frame()
        assert frame is not None, "the agent closed the connection"
        assert frame.kind == Kind.CONTROL, frame
        return protocol.decode_control(frame.payload)

    def closed(self) -> bool:
        return self.frame() is None

    def close(self) -> None:
        self.sock.close()


def _still_serves(agent: RunningAgent) -> None:
    with agent.client() as client:
        assert client.exec(["echo", "alive"]).stdout == b"alive\n"


@pytest.mark.parametrize(
    ("frame", "code", "words"),
    [
        (struct.pack(">IB", 5, 1) + b"{nope", "bad_json", "not JSON"),
        (protocol.encode(Kind.CONTROL, b"[1, 2]"), "bad_request", "must be a JSON object"),
        (protocol.encode_control({"no": "op"}), "bad_request", 'no "op"'),
        (protocol.encode_control({"op": "fly"}), "unknown_op", "unknown operation 'fly'"),
        (protocol.encode(Kind(3), b"out"), "protocol", "unknown frame kind 3"),
        (struct.pack(">IB", 2, 77) + b"zz", "protocol", "unknown frame kind 77"),
        (protocol.encode(Kind.DATA, b"stray"), "protocol", "outside any operation"),
        (protocol.encode_control({"op": "exec"}), "bad_request", '"argv"'),
        (protocol.encode_control({"op": "exec", "argv": [1]}), "bad_request", "argv[0]"),
        (protocol.encode_control({"op": "read", "path": ""}), "bad_request", "non-empty"),
        (protocol.encode_control({"op": "chmod", "path": "/tmp"}), "bad_request", 'needs "mode"'),
        (
            protocol.encode_control({"op": "exec", "argv": ["true"], "timeout": -1}),
            "bad_request",
            "positive number",
        ),
        (b"\x00\x00\x00\x08\x01" + b'{"op":1}', "bad_request", 'no "op"'),
        (struct.pack(">IB", 6, 1) + b'"\\ud80', "bad_json", "bad \\u escape"),
        (struct.pack(">IB", 40, 1) + b"[" * 40, "bad_json", "nested too deeply"),
    ],
)
def test_bad_input_gets_an_error_and_the_connection_goes_on(
    agent: RunningAgent, frame: bytes, code: str, words: str
) -> None:
    raw = Raw(agent.socket)
    raw.send(frame)
    reply = raw.reply()
    assert reply["ok"] is False and reply["error"] == code, reply
    assert words in reply["message"], reply
    raw.control({"op": "health"})  # the same connection still serves
    assert raw.reply()["ok"] is True
    raw.close()
    _still_serves(agent)


def test_an_oversize_length_is_refused_and_that_connection_closed(agent: RunningAgent) -> None:
    raw = Raw(agent.socket)
    raw.send(struct.pack(">IB", 0xFFFFFFF0, 1))  # a "huge" frame it must not try to read
    reply = raw.reply()
    assert reply["error"] == "frame_too_large"
    assert "4294967280 bytes is larger than the largest this agent takes" in reply["message"]
    assert raw.closed()
    raw.close()
    _still_serves(agent)


def test_the_first_frame_must_be_hello(agent: RunningAgent) -> None:
    raw = Raw(agent.socket, hello=False)
    raw.control({"op": "exec", "argv": ["true"]})
    assert "first frame must be" in raw.reply()["message"]
    assert raw.closed()
    raw.close()
    raw = Raw(agent.socket, hello=False)
    raw.control({"op": "hello", "protocol": 99})
    reply = raw.reply()
    assert reply["error"] == "unsupported_protocol"
    assert "speaks protocol 1, not 99" in reply["message"]
    raw.close()
    _still_serves(agent)


def test_a_connection_cut_mid_frame_or_mid_stream_harms_nothing(agent: RunningAgent) -> None:
    raw = Raw(agent.socket)
    raw.send(struct.pack(">IB", 1000, 1) + b'{"op":')  # then gone
    raw.close()
    raw = Raw(agent.socket)
    raw.control({"op": "write", "path": "/tmp/firec-cut-write.txt"})
    raw.send(protocol.encode(Kind.DATA, b"partial"))
    raw.close()
    raw = Raw(agent.socket)
    raw.control({"op": "exec", "argv": ["cat"], "stdin": True})
    assert raw.reply()["ok"] is True
    raw.close()  # the agent kills cat
    _still_serves(agent)
    assert not Path("/tmp/firec-cut-write.txt").exists()


def test_a_control_frame_in_a_write_stream_ends_that_connection(agent: RunningAgent) -> None:
    raw = Raw(agent.socket)
    raw.control({"op": "write", "path": "/tmp/firec-mixed-write.txt"})
    raw.send(protocol.encode(Kind.DATA, b"some"))
    raw.control({"op": "health"})
    reply = raw.reply()
    assert reply["error"] == "protocol" and "in the middle of a write" in reply["message"]
    assert raw.closed()
    raw.close()
    assert not Path("/tmp/firec-mixed-write.txt").exists()
    _still_serves(agent)


def test_many_bad_connections_at_once_leave_it_serving(agent: RunningAgent) -> None:
    raws = [Raw(agent.socket) for _ in range(50)]
    for raw in raws:
        raw.send(struct.pack(">IB", 3, 1) + b"{{{")
    for raw in raws:
        assert raw.reply()["error"] == "bad_json"
        raw.close()
    with Client.unix(agent.socket) as client:
        info = client.version()
    assert info.protocol == 1 and "exec" in info.capabilities and not info.pid1
