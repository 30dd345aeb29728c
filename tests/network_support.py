"""Helpers for the network tests: private namespaces, a stand-in guest, ping and TCP.

No tests here. Everything runs inside namespaces the tests create (named
``fct<random>``), with 10.x / 172.x addresses that exist only in them; the
host's own namespace, tables and links are never touched.

The stand-in guest: Firecracker's virtio-net device reads and writes
Ethernet frames on the tap's file descriptor. :class:`GuestPump` does the
same: it opens the VM's tap (like Firecracker) and a tap ``eth0`` in a
"guest" namespace, and copies frames both ways, so the guest namespace
behaves like the VM's kernel, configured from the very ``ip=`` argument
firec produced.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import select
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from firec.network._netlink import netlink
from firec.network._sysctl import write_sysctl
from firec.network.netns import create_netns, delete_netns, list_netns, run_in_netns

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000


def unique(prefix: str = "fct") -> str:
    """A fresh test name: ``fct`` and 8 hex digits (short enough for a link name)."""
    return f"{prefix}{secrets.token_hex(4)}"


@contextmanager
def namespaces(*names: str) -> Iterator[None]:
    """Create the named namespaces, and delete them (and what is in them) afterwards."""
    made: list[str] = []
    try:
        for name in names:
            create_netns(name)
            made.append(name)
        yield
    finally:
        for name in made:
            delete_netns(name)
        leftover = set(made) & set(list_netns())
        assert not leftover, f"test namespaces left behind: {leftover}"


def link_pair(
    ns_a: str, name_a: str, addr_a: IPv4Interface, ns_b: str, name_b: str, addr_b: IPv4Interface
) -> None:
    """A veth pair between two namespaces, addressed and up."""

    def make() -> None:
        with netlink() as nl:
            nl.add_veth(name_a, name_b, peer_netns=ns_b)
            nl.add_address(name_a, addr_a)
            nl.set_up(name_a)

    def other() -> None:
        with netlink() as nl:
            nl.add_address(name_b, addr_b)
            nl.set_up(name_b)

    run_in_netns(ns_a, make)
    run_in_netns(ns_b, other)


def default_route(ns: str, dev: str, via: IPv4Address) -> None:
    """Give namespace ``ns`` a default route through ``via`` on ``dev``."""

    def add() -> None:
        with netlink() as nl:
            nl.add_route(IPv4Network("0.0.0.0/0"), dev, via=via)

    run_in_netns(ns, add)


def enable_forwarding(ns: str, dev: str) -> None:
    """``net.ipv4.conf.<dev>.forwarding=1`` in ``ns`` (a test namespace)."""
    run_in_netns(ns, write_sysctl, f"net/ipv4/conf/{dev}/forwarding", "1")


def links_in(ns: str | None) -> set[str]:
    """The link names in ``ns``."""

    def names() -> set[str]:
        with netlink() as nl:
            return set(nl.links())

    return run_in_netns(ns, names)


def _open_tap(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


def apply_ip_arg(ns: str, arg: str, mac: str | None) -> None:
    """Configure ``eth0`` of namespace ``ns`` from a kernel ``ip=`` argument, like the kernel."""
    assert arg.startswith("ip=")
    fields = arg[3:].split(":")
    client, _server, gateway, netmask, _host, device, autoconf = fields[:7]
    assert autoconf == "off"
    address = IPv4Interface(f"{client}/{netmask}")

    def configure() -> None:
        with netlink() as nl:
            if mac is not None:
                nl.set_mac(device, mac)
            nl.add_address(device, address)
            nl.set_up(device)
            nl.set_up("lo")
            if gateway:
                nl.add_route(IPv4Network("0.0.0.0/0"), device, via=IPv4Address(gateway))

    run_in_netns(ns, configure)


class GuestPump:
    """A stand-in guest: frames of the VM's tap <-> tap ``eth0`` of a guest namespace."""

    def __init__(self, vm_ns: str, vm_tap: str, guest_ns: str, guest_dev: str = "eth0") -> None:
        self.vm_fd = run_in_netns(vm_ns, _open_tap, vm_tap)
        self.guest_fd = run_in_netns(guest_ns, _open_tap, guest_dev)
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pair = {self.vm_fd: self.guest_fd, self.guest_fd: self.vm_fd}
        while True:
            ready, _, _ = select.select([self.vm_fd, self.guest_fd, self._stop_r], [], [])
            if self._stop_r in ready:
                return
            for fd in ready:
                try:
                    frame = os.read(fd, 65536)
                    os.write(pair[fd], frame)
                except OSError:
                    pass

    def close(self) -> None:
        """Stop relaying and close both taps (the guest's tap disappears)."""
        os.write(self._stop_w, b"x")
        self._thread.join(timeout=5)
        for fd in (self.vm_fd, self.guest_fd, self._stop_r, self._stop_w):
            os.close(fd)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def ping(ns: str, address: str, *, timeout: float = 3.0, count: int = 3) -> bool:
    """Whether ``address`` answers an ICMP echo sent from namespace ``ns``."""

    def send() -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
            sock.settimeout(timeout / count)
            ident = secrets.randbits(16)
            for seq in range(count):
                header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
                payload = b"firec-test"
                packet = (
                    struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, seq) + payload
                )
                sock.sendto(packet, (address, 0))
                try:
                    while True:
                        data, peer = sock.recvfrom(2048)
                        ihl = (data[0] & 0x0F) * 4
                        kind, _, _, rid, rseq = struct.unpack("!BBHHH", data[ihl : ihl + 8])
                        if kind == 0 and rid == ident and rseq == seq and peer[0] == address:
                            return True
                except TimeoutError:
                    continue
            return False

    return run_in_netns(ns, send)


class TCPServer:
    """A TCP server in a namespace: answers each connection with ``hello <peer ip>[ <tag>]``."""

    def __init__(self, ns: str, address: str, port: int, tag: str = "") -> None:
        self.tag = f" {tag}" if tag else ""

        def make() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, port))
            sock.listen(8)
            return sock

        self.sock = run_in_netns(ns, make)
        self.peers: list[str] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            with conn:
                self.peers.append(peer[0])
                conn.sendall(f"hello {peer[0]}{self.tag}".encode())

    def close(self) -> None:
        """Stop serving."""
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(timeout=5)


def tcp_hello(ns: str, address: str, port: int, *, timeout: float = 3.0) -> str | None:
    """Connect from ``ns`` and return the server's greeting (``None``: no connection)."""

    def connect() -> str | None:
        try:
            with socket.create_connection((address, port), timeout=timeout) as conn:
                return conn.recv(100).decode()
        except OSError:
            return None

    return run_in_netns(ns, connect)
