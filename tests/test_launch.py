"""Pieces of launching a VMM that tests of whole machines do not pin down."""

from __future__ import annotations

import socket
from pathlib import Path

from firec.vm._launch import socket_accepts


def test_socket_accepts_tells_missing_bound_and_listening_apart(tmp_path: Path) -> None:
    path = tmp_path / "api.socket"
    assert socket_accepts(path) is None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        assert socket_accepts(path) is False  # bound: the file exists, nobody listens yet
        server.listen(1)
        assert socket_accepts(path) is True
        peer, _ = server.accept()  # the probe connected, then hung up at once
        with peer:
            assert peer.recv(1) == b""
    path.unlink()
    path.write_text("not a socket")
    assert socket_accepts(path) is False
