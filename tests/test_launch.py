"""Pieces of launching a VMM that tests of whole machines do not pin down."""

from __future__ import annotations

import errno
import socket
from pathlib import Path

import pytest

from firec.vm._launch import socket_accepts
from firec.vm.jailer import remove_cgroups


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


def test_remove_cgroups_waits_while_a_cgroup_is_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A VMM killed as pid 1 of its PID namespace holds its cgroup until it is reaped."""
    parent = tmp_path / "firecracker"
    busy, held = parent / "vm-1", parent / "vm-2"
    busy.mkdir(parents=True)
    held.mkdir()
    refusals = {busy: 3, held: 10**6}  # vm-1 empties after three tries, vm-2 never does
    rmdir = Path.rmdir

    def fake_rmdir(path: Path) -> None:
        if refusals.get(path, 0) > 0:
            refusals[path] -= 1
            raise OSError(errno.EBUSY, "Device or resource busy", str(path))
        rmdir(path)

    monkeypatch.setattr(Path, "rmdir", fake_rmdir)
    left = remove_cgroups([busy, held, parent / "gone"], busy_wait=0.2)
    assert left == [f"{held}: Device or resource busy"]
    assert not busy.exists() and held.is_dir() and refusals[busy] == 0
