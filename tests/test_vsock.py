"""vsock from the host side: the CONNECT/OK handshake, listeners, and through a Machine.

The handshake and the listeners are checked against a scripted peer playing
Firecracker's side byte by byte, against firec's emulator (whose guest can
listen and connect, see ``firec.testing.emulator._vsock``) and against real
Firecracker (``FIRECRACKER_BIN``), whose tiny test guest has no vsock driver.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import firec
from firec.errors import ConnectError, MachineError, TimeoutError, TransportError, ValidationError
from firec.testing.emulator._vsock import CONNECT_TOKEN, LISTEN_TOKEN, greeting
from firec.vm import vsock
from firec.vm.config import Builder
from tests.support import emulator_wrapper, guest_builder, in_jail, jailer_wrapper

# -- a scripted Firecracker side ---------------------------------------------------------


Answer = Callable[[socket.socket, bytes], None]


class FakeRelay:
    """A Unix socket that reads one request line and plays back a scripted answer."""

    def __init__(self, path: Path, answer: Answer) -> None:
        self.path = path
        self.requests: list[bytes] = []
        self._answer = answer
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(4)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        conn, _ = self._server.accept()
        with conn:
            line = b""
            while not line.endswith(b"\n"):
                byte = conn.recv(1)
                if not byte:
                    break
                line += byte
            self.requests.append(line)
            self._answer(conn, line)

    def close(self) -> None:
        self._server.close()
        self._thread.join(timeout=5)


Relay = Callable[[Answer], FakeRelay]


@pytest.fixture
def relay(short_tmp: Path) -> Iterator[Relay]:
    """Makes the scripted Firecracker side at ``<short_tmp>/v.sock``."""
    made: list[FakeRelay] = []

    def make(answer: Answer) -> FakeRelay:
        made.append(FakeRelay(short_tmp / "v.sock", answer))
        return made[-1]

    yield make
    for fake in made:
        fake.close()


def _ok_then_guest_data(conn: socket.socket, line: bytes) -> None:
    # Firecracker's answer and the guest's first bytes may arrive in one segment
    conn.sendall(b"OK 1073741824\nguest-speaks-first")
    conn.recv(100)


def test_connect_does_the_handshake_and_leaves_guest_bytes_unread(relay: Relay) -> None:
    fake = relay(_ok_then_guest_data)
    with vsock.connect(fake.path, 5000, timeout=5) as conn:
        assert conn.gettimeout() is None
        assert conn.recv(100) == b"guest-speaks-first"
        conn.sendall(b"x")
    assert fake.requests == [b"CONNECT 5000\n"]


async def test_open_connection_does_the_handshake(relay: Relay) -> None:
    fake = relay(_ok_then_guest_data)
    reader, writer = await vsock.open_connection(fake.path, 52, timeout=5)
    try:
        assert await reader.read(100) == b"guest-speaks-first"
    finally:
        writer.close()
    assert fake.requests == [b"CONNECT 52\n"]


def _close_at_once(conn: socket.socket, line: bytes) -> None:
    pass  # Firecracker closes the host connection when the guest resets it


def test_connection_closed_by_firecracker_means_nothing_listens(relay: Relay) -> None:
    fake = relay(_close_at_once)
    with pytest.raises(ConnectError) as caught:
        vsock.connect(fake.path, 5000, timeout=5)
    assert "nothing listens on vsock port 5000 in the guest" in str(caught.value)
    assert caught.value.socket_path == str(fake.path)


async def test_async_connection_closed_by_firecracker_means_nothing_listens(
    relay: Relay,
) -> None:
    fake = relay(_close_at_once)
    with pytest.raises(ConnectError, match="nothing listens on vsock port 7 in the guest"):
        await vsock.open_connection(fake.path, 7, timeout=5)


def _silence(conn: socket.socket, line: bytes) -> None:
    conn.recv(100)  # wait for the client to give up


def test_no_answer_within_the_timeout(relay: Relay) -> None:
    fake = relay(_silence)
    with pytest.raises(TimeoutError) as caught:
        vsock.connect(fake.path, 9, timeout=0.2)
    assert "nothing listens on vsock port 9 in the guest" in str(caught.value)
    assert "within 0.2s" in str(caught.value)


async def test_async_no_answer_within_the_timeout(relay: Relay) -> None:
    fake = relay(_silence)
    with pytest.raises(TimeoutError, match="nothing listens on vsock port 9 in the guest"):
        await vsock.open_connection(fake.path, 9, timeout=0.2)


def _garbage(conn: socket.socket, line: bytes) -> None:
    conn.sendall(b"HELLO there\n")


def test_an_answer_other_than_ok_is_refused(relay: Relay) -> None:
    fake = relay(_garbage)
    with pytest.raises(ConnectError, match="unexpected answer to CONNECT 1"):
        vsock.connect(fake.path, 1, timeout=5)


def test_missing_socket_and_bad_ports(short_tmp: Path) -> None:
    with pytest.raises(ConnectError, match="does not exist"):
        vsock.connect(short_tmp / "nothing.sock", 5000, timeout=1)
    for port in (-1, 2**32, True, "5000"):
        with pytest.raises(ValidationError) as caught:
            vsock.connect(short_tmp / "nothing.sock", port, timeout=1)  # type: ignore[arg-type]
        assert caught.value.field == "port"


def test_stale_socket_is_refused_clearly(short_tmp: Path) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(short_tmp / "v.sock"))
    stale.close()  # the file stays; nobody listens
    with pytest.raises(ConnectError, match="connection refused"):
        vsock.connect(short_tmp / "v.sock", 5000, timeout=1)


# -- listeners ---------------------------------------------------------------------------


def test_listen_accepts_and_removes_its_socket_file(short_tmp: Path) -> None:
    uds = short_tmp / "v.sock"
    with vsock.listen(uds, 6000) as listener:
        assert listener.path == short_tmp / "v.sock_6000"
        assert listener.path.is_socket()
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(str(listener.path))
        conn = listener.accept_within(5)
        client.sendall(b"from the guest")
        assert conn.recv(100) == b"from the guest"
        conn.close()
        client.close()
        with pytest.raises(TimeoutError, match="no guest connected to vsock port 6000"):
            listener.accept_within(0.05)
    assert not (short_tmp / "v.sock_6000").exists()


def test_listen_replaces_a_stale_socket_but_not_a_live_one_or_a_file(short_tmp: Path) -> None:
    path = short_tmp / "v.sock_1"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    with vsock.listen(short_tmp / "v.sock", 1) as live:
        with pytest.raises(MachineError, match="another process already listens there"):
            vsock.listen(short_tmp / "v.sock", 1)
        assert live.path.is_socket()  # the refused attempt left the live one alone
    (short_tmp / "v.sock_2").write_text("not a socket")
    with pytest.raises(MachineError, match="not a socket"):
        vsock.listen(short_tmp / "v.sock", 2)
    assert (short_tmp / "v.sock_2").read_text() == "not a socket"


def test_close_leaves_a_socket_file_someone_else_made_since(short_tmp: Path) -> None:
    listener = vsock.listen(short_tmp / "v.sock", 3)
    listener.path.unlink()
    newer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    newer.bind(str(listener.path))
    listener.close()
    assert listener.path.is_socket()
    newer.close()


def test_listen_refuses_a_path_too_long_for_a_socket(short_tmp: Path) -> None:
    with pytest.raises(ValidationError) as caught:
        vsock.listen(short_tmp / ("x" * 110), 5)
    assert caught.value.field == "uds_path"


async def test_async_listener_and_server(short_tmp: Path) -> None:
    uds = short_tmp / "v.sock"
    async with await vsock.open_listener(uds, 6001) as listener:
        _, writer = await asyncio.open_unix_connection(str(listener.path))
        guest_reader, guest_writer = await listener.accept(timeout=5)
        writer.write(b"ping\n")
        assert await guest_reader.readline() == b"ping\n"
        for w in (writer, guest_writer):
            w.close()
        with pytest.raises(TimeoutError, match="no guest connected"):
            await listener.accept(timeout=0.05)
    assert not listener.path.exists()

    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readline())
        writer.close()

    async with await vsock.start_server(handle, uds, 6002) as server:
        _, writer = await asyncio.open_unix_connection(str(server.path))
        writer.write(b"hello server\n")
        await writer.drain()
        for _ in range(500):
            if seen:
                break
            await asyncio.sleep(0.01)
        writer.close()
    assert seen == [b"hello server\n"]
    assert not server.path.exists()


# -- through a Machine, on the emulator and on real Firecracker ---------------------------


def _builder(
    vmm_binary: Path, guest_kernel: Path, short_tmp: Path, args: str = "", vm_id: str | None = None
) -> Builder:
    return (
        guest_builder(vm_id, vmm_binary, guest_kernel, short_tmp, 32)
        .kernel_args(f"console=ttyS0 {args}".strip())
        .vsock(3, short_tmp / "v.sock")
    )


def test_tiny_guest_without_vsock_driver_gives_the_clear_error(
    backend: str, vmm_binary: Path, guest_kernel: Path, short_tmp: Path
) -> None:
    """The host side of vsock against real Firecracker's Unix socket.

    The guest side cannot run here: firec's tiny test guest has no virtio-vsock
    driver, so real Firecracker accepts the host connection and never answers
    ``CONNECT``. The emulator's guest without vsock tokens behaves the same.
    What is checked is the host side: the socket is where the Machine says, the
    handshake is sent, and the failure names the port.
    """
    config = _builder(vmm_binary, guest_kernel, short_tmp).build()
    with firec.Machine.create(config) as machine:
        machine.start()
        assert machine.vsock_path == short_tmp / "v.sock"
        assert machine.vsock_path.is_socket()
        with pytest.raises(TransportError) as caught:
            machine.vsock_connect(5000, timeout=0.3)
        assert "nothing listens on vsock port 5000 in the guest" in str(caught.value)
        listener = machine.vsock_listen(6000)
        assert listener.path.is_socket()
    assert not (short_tmp / "v.sock").exists(), "the vsock socket outlived the VM"
    assert not (short_tmp / "v.sock_6000").exists(), "the listener outlived the VM"


async def test_async_machine_vsock_error_names_the_port(
    backend: str, vmm_binary: Path, guest_kernel: Path, short_tmp: Path
) -> None:
    """Same as above with AsyncMachine; the tiny guest has no vsock driver."""
    config = _builder(vmm_binary, guest_kernel, short_tmp).build()
    async with await firec.AsyncMachine.create(config) as machine:
        await machine.start()
        with pytest.raises(TransportError, match="nothing listens on vsock port 5001"):
            await machine.vsock_connect(5001, timeout=0.3)


def test_machine_without_vsock_says_so(
    backend: str, vmm_binary: Path, guest_kernel: Path, short_tmp: Path
) -> None:
    config = _builder(vmm_binary, guest_kernel, short_tmp).build().replace(vsock=None)
    with firec.Machine.create(config) as machine:
        assert machine.vsock_path is None
        with pytest.raises(MachineError, match="has no vsock device"):
            machine.vsock_connect(5000)


def test_stale_vsock_socket_is_replaced_and_a_live_one_refused(
    backend: str, vmm_binary: Path, guest_kernel: Path, short_tmp: Path
) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(short_tmp / "v.sock"))
    stale.close()  # what a killed Firecracker leaves behind
    config = _builder(vmm_binary, guest_kernel, short_tmp).build()
    with firec.Machine.create(config) as machine:
        machine.start()  # Firecracker refuses to bind over a stale file: firec removed it
        with pytest.raises(MachineError, match="another process already listens there"):
            firec.Machine.create(config.replace(vm_id="second-vm"))
        assert not (short_tmp / "vms" / "second-vm").exists()


# -- the emulator's guest listens and connects ---------------------------------------------


@pytest.fixture
def emulator(short_tmp: Path) -> Path:
    """firec's emulator, whose guest can listen and connect (the tiny guest cannot)."""
    return emulator_wrapper(short_tmp)


def test_host_connects_to_the_guest_and_gets_an_echo(
    emulator: Path, guest_kernel: Path, short_tmp: Path
) -> None:
    config = _builder(emulator, guest_kernel, short_tmp, f"{LISTEN_TOKEN}5000").build()
    with firec.Machine.create(config) as machine:
        machine.start()
        with machine.vsock_connect(5000) as conn:
            conn.sendall(b"ping")
            assert conn.recv(100) == b"ping"
        with pytest.raises(ConnectError, match="nothing listens on vsock port 5001 in the guest"):
            machine.vsock_connect(5001)


async def test_async_host_connects_to_the_guest(
    emulator: Path, guest_kernel: Path, short_tmp: Path
) -> None:
    config = _builder(emulator, guest_kernel, short_tmp, f"{LISTEN_TOKEN}5000").build()
    async with await firec.AsyncMachine.create(config) as machine:
        await machine.start()
        pairs = await asyncio.gather(*(machine.vsock_connect(5000) for _ in range(3)))
        for i, (reader, writer) in enumerate(pairs):
            writer.write(f"line {i}\n".encode())
            assert await reader.readline() == f"line {i}\n".encode()
            writer.close()
        with pytest.raises(ConnectError, match="nothing listens on vsock port 5002"):
            await machine.vsock_connect(5002)


def test_guest_connects_to_the_host(emulator: Path, guest_kernel: Path, short_tmp: Path) -> None:
    config = _builder(emulator, guest_kernel, short_tmp, f"{CONNECT_TOKEN}6000").build()
    with firec.Machine.create(config) as machine:
        listener = machine.vsock_listen(6000)  # before boot: the guest connects at boot
        machine.start()
        with listener.accept_within(10) as conn:
            assert conn.recv(100) == greeting(6000)
            conn.sendall(b"welcome")
            assert conn.recv(100) == b"welcome"
        listener.close()
        assert not listener.path.exists()


async def test_async_guest_connects_to_the_host(
    emulator: Path, guest_kernel: Path, short_tmp: Path
) -> None:
    config = _builder(emulator, guest_kernel, short_tmp, f"{CONNECT_TOKEN}6001").build()
    async with await firec.AsyncMachine.create(config) as machine:
        listener = await machine.vsock_listen(6001)
        await machine.start()
        reader, writer = await listener.accept(timeout=10)
        assert await reader.readline() == greeting(6001)
        writer.write(b"welcome\n")
        assert await reader.readline() == b"welcome\n"
        writer.close()
    assert not listener.path.exists()


def test_connect_waits_while_paused_and_is_answered_after_resume(
    emulator: Path, guest_kernel: Path, short_tmp: Path
) -> None:
    config = _builder(emulator, guest_kernel, short_tmp, f"{LISTEN_TOKEN}5000").build()
    with firec.Machine.create(config) as machine:
        machine.start()
        machine.pause()
        with pytest.raises(TimeoutError):
            machine.vsock_connect(5000, timeout=0.2)
        machine.resume()
        machine.vsock_connect(5000, timeout=5).close()


# -- in a jail ---------------------------------------------------------------------------


def test_jailed_vsock_paths_are_translated(
    jailer_binary: Path, vmm_binary: Path, guest_kernel: Path, short_tmp: Path
) -> None:
    """In a jail the vsock socket lives inside the chroot; the Machine finds it there.

    The tiny guest has no vsock driver, so on real Firecracker the connect
    fails with the "nothing listens" error, which proves the socket was found.
    """
    builder = _builder(vmm_binary, guest_kernel, short_tmp, vm_id="vsock-jailed")
    config = in_jail(builder, jailer_binary, vmm_binary, short_tmp).build().build()
    jail = config.jail
    assert jail is not None
    with firec.Machine.create(config) as machine:
        machine.start()
        assert machine.vsock_path == jail.root / "v.sock"
        assert machine.vsock_path.is_socket()
        with pytest.raises(TransportError, match="nothing listens on vsock port 5000"):
            machine.vsock_connect(5000, timeout=0.3)
        listener = machine.vsock_listen(6000)
        assert listener.path == jail.root / "v.sock_6000"
        assert (listener.path.stat().st_uid, listener.path.stat().st_gid) == (1234, 1235)
    assert not jail.base.exists()


def test_jailed_guest_connects_to_a_listener_in_the_jail(
    emulator: Path, guest_kernel: Path, short_tmp: Path
) -> None:
    """The emulator, jailed by firec's jailer emulator as uid 1234, reaches the host listener."""
    builder = _builder(
        emulator, guest_kernel, short_tmp, f"{CONNECT_TOKEN}6002", vm_id="vsock-guest"
    )
    jailer = jailer_wrapper(short_tmp)
    config = in_jail(builder, jailer, emulator, short_tmp).build().build()
    with firec.Machine.create(config) as machine:
        listener = machine.vsock_listen(6002)
        machine.start()
        with listener.accept_within(10) as conn:
            assert conn.recv(100) == greeting(6002)


def test_docstring_examples() -> None:
    import doctest

    from firec.vm import _vsock_listen

    for module in (vsock, _vsock_listen):
        assert doctest.testmod(module).failed == 0, module.__name__
