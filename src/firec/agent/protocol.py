"""The agent's wire protocol, without I/O: frames, control messages, replies.

The protocol is described in ``docs/agent-protocol.md``. In short: every
frame is a 5-byte header (the payload's length, a big-endian u32, then its
kind, a u8) and the payload, at most :data:`MAX_FRAME` bytes. A control
frame holds one JSON object; data, stdout and stderr frames hold raw bytes,
and an empty one ends its stream. The first frame on a connection is
``hello``; after it, one operation at a time.

Both clients (and anything else that speaks to the agent, such as an
emulator standing in for a guest) use this module for the bytes; how the
bytes move is theirs.

Example::

    >>> frame = encode_control({"op": "health"})
    >>> frame[:5]
    b'\\x00\\x00\\x00\\x10\\x01'
    >>> decoder = FrameDecoder()
    >>> decoder.feed(frame + encode(Kind.STDOUT, b"hi"))
    >>> [(f.kind.name, f.payload) for f in decoder]
    [('CONTROL', b'{"op": "health"}'), ('STDOUT', b'hi')]
"""

from __future__ import annotations

import enum
import json
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from firec.errors import AgentError

__all__ = [
    "DEFAULT_PORT",
    "HEADER",
    "MAX_FRAME",
    "PROTOCOL_VERSION",
    "Frame",
    "FrameDecoder",
    "Kind",
    "Payload",
    "check_reply",
    "decode_control",
    "encode",
    "encode_control",
    "hello",
    "parse_header",
]

#: The protocol version this firec speaks (``hello`` says it; the agent refuses another).
PROTOCOL_VERSION = 1
#: The vsock port the agent listens on unless told otherwise (0xF1EC).
DEFAULT_PORT = 61932
#: The largest payload of one frame, both ways.
MAX_FRAME = 1 << 20
#: A frame's header: payload length (big-endian u32), kind (u8).
HEADER = struct.Struct(">IB")
#: A received payload: bytes, or (for a large one read straight off a socket) a bytearray.
Payload = bytes | bytearray


class Kind(enum.IntEnum):
    """What a frame holds."""

    CONTROL = 1
    """One JSON object: a request, or a reply."""
    DATA = 2
    """Bytes of a stream: a process's stdin, a file, a tar stream. Empty: the end."""
    STDOUT = 3
    """A process's stdout (its terminal's output, with a PTY). Empty: the end."""
    STDERR = 4
    """A process's stderr. Empty: the end."""


@dataclass(frozen=True)
class Frame:
    """One frame: its kind and its payload."""

    kind: Kind
    payload: bytes


def encode(kind: Kind, payload: bytes = b"") -> bytes:
    """One frame's bytes.

    >>> encode(Kind.DATA)
    b'\\x00\\x00\\x00\\x00\\x02'
    """
    if len(payload) > MAX_FRAME:
        raise ValueError(f"a frame holds at most {MAX_FRAME} bytes, not {len(payload)}")
    return HEADER.pack(len(payload), kind) + payload


def encode_control(message: Mapping[str, Any]) -> bytes:
    """A control frame holding ``message`` as JSON (non-UTF-8 names travel as surrogates)."""
    return encode(Kind.CONTROL, json.dumps(message).encode())


def hello(token: str | None = None) -> bytes:
    """The first frame of a connection.

    >>> decode_control(hello("s3cret")[5:])
    {'op': 'hello', 'protocol': 1, 'token': 's3cret'}
    """
    message: dict[str, Any] = {"op": "hello", "protocol": PROTOCOL_VERSION}
    if token is not None:
        message["token"] = token
    return encode_control(message)


def parse_header(header: bytes) -> tuple[int, Kind]:
    """``(length, kind)`` of a frame header; a wrong one is an :class:`AgentError`.

    >>> parse_header(b"\\x00\\x00\\x00\\x05\\x03")
    (5, <Kind.STDOUT: 3>)
    """
    length, kind = HEADER.unpack(header)
    if length > MAX_FRAME:
        why = f"the agent sent a frame of {length} bytes (at most {MAX_FRAME})"
        raise AgentError("protocol", why)
    try:
        return length, Kind(kind)
    except ValueError:
        raise AgentError("protocol", f"the agent sent a frame of unknown kind {kind}") from None


def decode_control(payload: Payload) -> dict[str, Any]:
    """The JSON object of a control frame; anything else is an :class:`AgentError`."""
    try:
        message = json.loads(payload)
    except ValueError as exc:
        why = f"the agent sent a control frame that is not JSON: {exc}"
        raise AgentError("protocol", why) from None
    if not isinstance(message, dict):
        raise AgentError("protocol", "the agent sent a control frame that is not a JSON object")
    return message


def check_reply(reply: Mapping[str, Any], *, op: str, target: str = "") -> dict[str, Any]:
    """``reply`` itself when ``"ok"`` is true; else the agent's error, raised.

    >>> check_reply({"ok": False, "error": "not_found", "message": "no such file"},
    ...             op="read", target="/etc/nope")
    Traceback (most recent call last):
    ...
    firec.errors.AgentError: read /etc/nope: no such file
    """
    if reply.get("ok") is True:
        return dict(reply)
    code = str(reply.get("error") or "protocol")
    message = str(reply.get("message") or f"the agent answered without ok: {dict(reply)!r}")
    raise AgentError(code, message, op=op, target=target)


class FrameDecoder:
    """Frames out of a byte stream fed in pieces, as they arrive.

    :meth:`feed` bytes, then iterate: each complete frame comes out once. A
    header announcing more than :data:`MAX_FRAME` raises :class:`AgentError`.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        """Add bytes received."""
        self._buffer += data

    def __iter__(self) -> Iterator[Frame]:
        while len(self._buffer) >= HEADER.size:
            length, kind = parse_header(bytes(self._buffer[: HEADER.size]))
            end = HEADER.size + length
            if len(self._buffer) < end:
                return
            payload = bytes(self._buffer[HEADER.size : end])
            del self._buffer[:end]
            yield Frame(kind, payload)

    @property
    def pending(self) -> int:
        """Bytes received that are not a complete frame yet."""
        return len(self._buffer)
