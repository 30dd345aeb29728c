"""firec.network on real kernel objects: taps, namespaces, veths, routes, nft, traffic.

Needs root (CAP_NET_ADMIN), ``/dev/net/tun`` and ``nft``. Every test works
inside namespaces it creates (``fct<random>``): one plays the host (``H``,
with an uplink ``up0``), one the outside world (``P``, 172.31.9.2 and .3),
one per guest (the frames of the VM's tap are relayed to it, see
network_support.py). No traffic leaves those namespaces, and the real
host's links, namespaces and nft tables are not touched.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

import pytest

import firec.network as fn
from firec.errors import ConfigError, NetworkError
from firec.network import setup as net_setup
from firec.network import tap as tap_module
from firec.network._netlink import netlink
from firec.network._sysctl import write_sysctl
from firec.network.leases import LeaseStore
from firec.network.nat import NatTable
from firec.network.netns import (
    create_netns,
    delete_netns,
    netns_exists,
    netns_path,
    netns_preexec,
    run_in_netns,
)
from firec.network.setup import host_link_name, netns_name, record_path
from firec.network.tap import create_tap, delete_link, link_exists
from tests.network_support import (
    GuestPump,
    TCPServer,
    apply_ip_arg,
    default_route,
    enable_forwarding,
    link_pair,
    links_in,
    namespaces,
    ping,
    tcp_hello,
    unique,
)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CAP_NET_ADMIN) for links and netns"),
    pytest.mark.skipif(not os.path.exists("/dev/net/tun"), reason="needs /dev/net/tun"),
    pytest.mark.needs_tool("nft"),
]

UPLINK = IPv4Interface("172.31.9.1/24")
OUTSIDE = IPv4Interface("172.31.9.2/24")
OUTSIDE_2 = IPv4Interface("172.31.9.3/24")
SUBNET = "10.77.0.0/24"


@dataclass
class World:
    host: str
    outside: str
    state_dir: Path
    vms: list[str] = field(default_factory=list)
    guests: list[tuple[str, GuestPump]] = field(default_factory=list)

    def vm_id(self) -> str:
        vm = f"fct-{secrets.token_hex(4)}"
        self.vms.append(vm)
        return vm

    def setup(self, nics: list[fn.Interface], **kwargs: Any) -> fn.VMNetwork:
        vm = kwargs.pop("vm_id", None) or self.vm_id()
        kwargs.setdefault("state_dir", self.state_dir)
        kwargs.setdefault("host_netns", self.host)
        return fn.setup_network(vm, nics, **kwargs)

    def guest(self, net: fn.VMNetwork, index: int = 0) -> str:
        """A guest namespace wired to the VM's tap and configured from ``ip=``."""
        name = unique("fctg")
        create_netns(name)
        attached = net.interfaces[index]
        tap_ns = net.netns if net.netns is not None else net.host_netns
        pump = GuestPump(tap_ns or "", attached.interface.host_dev_name, name)
        self.guests.append((name, pump))
        assert attached.guest is not None
        apply_ip_arg(name, attached.guest.kernel_ip_arg(), attached.interface.guest_mac)
        return name

    def snapshot(self, *vm_ids: str) -> dict[str, Any]:
        """What set-up changes: links, namespaces, nft, leases, records."""
        leases = {
            p.name: json.loads(p.read_text())["leases"]
            for p in (self.state_dir / "leases").glob("*.json")
        }
        leases = {name: held for name, held in leases.items() if held}
        records = sorted(p.name for p in (self.state_dir / "networks").glob("*"))
        table = NatTable(netns=self.host, lock_dir=self.state_dir).state()
        return {
            "host links": links_in(self.host),
            "vm netns": {vm: netns_exists(netns_name(vm)) for vm in vm_ids},
            "nft": None if table is None else _strip_handles(table),
            "leases": leases,
            "records": records,
        }


def _strip_handles(state: dict[str, Any]) -> list[Any]:
    items = []
    for item in state["nftables"]:
        for kind, body in item.items():
            if kind == "metainfo":
                continue
            items.append({kind: {k: v for k, v in body.items() if k != "handle"}})
    return items


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    host, outside = unique("fcth"), unique("fctp")
    with namespaces(host, outside):
        link_pair(host, "up0", UPLINK, outside, "eth0", OUTSIDE)
        run_in_netns(outside, _add_address, "eth0", OUTSIDE_2)
        default_route(host, "up0", OUTSIDE.ip)
        enable_forwarding(host, "up0")
        w = World(host, outside, tmp_path / "state")
        try:
            yield w
        finally:
            for name, pump in w.guests:
                pump.close()
                delete_netns(name)
            problems = []
            for vm in w.vms:
                try:
                    fn.teardown_network(vm, state_dir=w.state_dir)
                except Exception as exc:  # report, but clean the rest first
                    problems.append(f"{vm}: {exc}")
                if netns_exists(netns_name(vm)):
                    delete_netns(netns_name(vm))
                    problems.append(f"{vm}: namespace left behind")
            assert not problems, problems


def _add_address(dev: str, address: IPv4Interface) -> None:
    with netlink() as nl:
        nl.add_address(dev, address)


def _routed(**kwargs: Any) -> fn.Interface:
    kwargs.setdefault("subnet", SUBNET)
    tap = kwargs.pop("tap", "tap0")
    return fn.Interface("eth0", tap, network=fn.RoutedNetwork(**kwargs))


def _assert_nothing_left(world: World, net: fn.VMNetwork) -> None:
    assert links_in(world.host) == {"lo", "up0"}
    assert not netns_exists(netns_name(net.vm_id))
    assert NatTable(netns=world.host, lock_dir=world.state_dir).state() is None
    for lease_file in (world.state_dir / "leases").glob("*.json"):
        assert json.loads(lease_file.read_text())["leases"] == {}
    assert not record_path(world.state_dir, net.vm_id).exists()


# -- namespaces and taps ------------------------------------------------------------------------


def test_netns_create_run_delete() -> None:
    name = unique()
    before = os.stat("/proc/thread-self/ns/net").st_ino
    path = create_netns(name)
    try:
        assert path == netns_path(name) and netns_exists(name)
        with pytest.raises(NetworkError, match="already exists"):
            create_netns(name)
        inside = run_in_netns(name, lambda: os.stat("/proc/thread-self/ns/net").st_ino)
        assert inside == os.stat(path).st_ino != before
        assert os.stat("/proc/thread-self/ns/net").st_ino == before  # the caller stayed
        assert links_in(name) == {"lo"}
        with pytest.raises(ZeroDivisionError):
            run_in_netns(name, lambda: 1 // 0)
    finally:
        assert delete_netns(name) is True
    assert delete_netns(name) is False
    assert not netns_exists(name)
    with pytest.raises(NetworkError, match="does not exist"):
        run_in_netns(name, print)


def test_preexec_starts_a_process_inside_the_namespace() -> None:
    name = unique()
    create_netns(name)
    try:
        create_tap("tapx", netns=name)
        code = "import socket; print(sorted(n for _, n in socket.if_nameindex()))"
        done = subprocess.run(
            [sys.executable, "-c", code],
            preexec_fn=netns_preexec(name),
            capture_output=True,
            text=True,
            check=True,
        )
        assert done.stdout.strip() == "['lo', 'tapx']"
    finally:
        delete_netns(name)


def test_tap_in_a_namespace_with_owner_address_and_route() -> None:
    name = unique()
    create_netns(name)
    try:
        create_tap(
            "tap0",
            netns=name,
            uid=4321,
            gid=1234,
            mtu=1400,
            address=IPv4Interface("10.8.0.1/32"),
            routes=[IPv4Network("10.8.0.2/32")],
        )
        assert not link_exists("tap0") or "tap0" in links_in(None)  # not created here

        def inspect() -> tuple[dict[str, int], int, list[Any], Any]:
            with netlink() as nl:
                info, mtu, addrs = nl.tun_info("tap0"), nl.mtu("tap0"), nl.addresses()
            from pyroute2 import IPRoute

            with IPRoute() as ipr:
                route = ipr.route("get", dst="10.8.0.2")[0]
                oif = route.get("RTA_OIF")
                dev = ipr.link("get", index=oif)[0].get("ifname")
            return info, mtu, addrs, dev

        info, mtu, addrs, dev = run_in_netns(name, inspect)
        assert info["owner"] == 4321 and info["group"] == 1234
        assert info["type"] == 2 and info["pi"] == 0 and info["vnet_hdr"] == 1
        assert info["persist"] == 1
        assert mtu == 1400
        assert ("tap0", IPv4Interface("10.8.0.1/32")) in addrs
        assert dev == "tap0"
        with pytest.raises(NetworkError, match="already exists"):
            create_tap("tap0", netns=name)
        assert "tap0" in links_in(name)  # the existing one is untouched
        assert delete_link("tap0", netns=name) is True
        assert delete_link("tap0", netns=name) is False
    finally:
        delete_netns(name)
    assert delete_link("tap0", netns=name) is False  # namespace gone: nothing to do


def test_tap_attached_to_a_bridge() -> None:
    name = unique()
    create_netns(name)
    try:

        def bridge() -> None:
            from pyroute2 import IPRoute

            with IPRoute() as ipr:
                ipr.link("add", ifname="br0", kind="bridge")

        run_in_netns(name, bridge)
        create_tap("tap0", netns=name, bridge="br0")

        def master() -> Any:
            from pyroute2 import IPRoute

            with IPRoute() as ipr:
                msg = ipr.link("get", index=ipr.link_lookup(ifname="tap0")[0])[0]
                return msg.get("IFLA_MASTER"), ipr.link_lookup(ifname="br0")[0]

        got, want = run_in_netns(name, master)
        assert got == want
        with pytest.raises(NetworkError, match="bridge 'nobr' does not exist"):
            create_tap("tap1", netns=name, bridge="nobr")
        with pytest.raises(ConfigError, match="either"):
            create_tap("tap1", netns=name, bridge="br0", address=IPv4Interface("10.0.0.1/32"))
        assert links_in(name) == {"lo", "br0", "tap0"}
    finally:
        delete_netns(name)


def test_failing_tap_creation_leaves_nothing() -> None:
    name = unique()
    create_netns(name)
    try:
        with pytest.raises(NetworkError, match="MTU"):
            create_tap("tap0", netns=name, mtu=65535)  # above a tap's maximum
        assert links_in(name) == {"lo"}
    finally:
        delete_netns(name)


# -- a routed VM --------------------------------------------------------------------------------


def test_routed_vm_traffic_through_nat_and_port_forward(world: World) -> None:
    nic = _routed(nameservers=("172.31.9.2",), port_forwards=(fn.PortForward(8080, 80),))
    net = world.setup([nic], uid=4321, gid=4321, hostname="guest1")

    attached = net.interfaces[0]
    assert attached.interface.guest_mac == fn.derive_mac(net.vm_id, "eth0")
    assert attached.interface.to_model().to_api() == {
        "iface_id": "eth0",
        "host_dev_name": "tap0",
        "guest_mac": attached.interface.guest_mac,
    }
    assert net.kernel_ip_arg() == "ip=10.77.0.2::10.77.0.1:255.255.255.0:guest1:eth0:off:172.31.9.2"
    assert net.netns_path == Path("/var/run/netns") / netns_name(net.vm_id)
    doc = net.mmds()["network"]["interfaces"]["eth0"]  # type: ignore[index]
    assert doc["ipv4"]["cidr"] == "10.77.0.2/24" and doc["iface-id"] == "eth0"
    # the tap is in the VM's namespace, owned by the VMM's uid; the host sees only the veth
    assert "tap0" in links_in(net.netns) and "tap0" not in links_in(world.host)
    info = run_in_netns(net.netns, _tun_info, "tap0")
    assert info["owner"] == 4321 and info["group"] == 4321
    assert links_in(world.host) == {"lo", "up0", host_link_name(net.vm_id)}

    guest = world.guest(net)
    assert ping(guest, "10.77.0.1")  # the gateway on the tap
    assert ping(guest, str(OUTSIDE.ip))  # through the namespace, the host and the NAT
    server = TCPServer(world.outside, str(OUTSIDE.ip), 5000)
    try:
        # the outside sees the host's uplink address: masquerade
        assert tcp_hello(guest, str(OUTSIDE.ip), 5000) == f"hello {UPLINK.ip}"
    finally:
        server.close()
    in_guest = TCPServer(guest, "0.0.0.0", 80)
    try:
        # the host's port 8080 reaches the guest's port 80, source kept
        assert tcp_hello(world.outside, str(UPLINK.ip), 8080) == f"hello {OUTSIDE.ip}"
        assert tcp_hello(world.outside, str(UPLINK.ip), 8081, timeout=1) is None
    finally:
        in_guest.close()

    net.teardown()
    _assert_nothing_left(world, net)
    assert fn.teardown_network(net.vm_id, state_dir=world.state_dir) is False


def _route_via(dst: IPv4Address, gateway: IPv4Address | None) -> None:
    with netlink() as nl:
        nl.add_route(IPv4Network(f"{dst}/32"), "eth0", via=gateway)


def _tun_info(name: str) -> dict[str, int]:
    with netlink() as nl:
        return nl.tun_info(name)


def test_isolation_and_egress_allow_list(world: World) -> None:
    limited = world.setup([_routed(egress_allow=(f"{OUTSIDE.ip}/32",))])
    free = world.setup([_routed()])
    g_limited, g_free = world.guest(limited), world.guest(free)
    a_limited = limited.interfaces[0].guest
    a_free = free.interfaces[0].guest
    assert a_limited is not None and a_free is not None
    assert a_limited.address.ip != a_free.address.ip

    servers = [TCPServer(world.outside, str(ip.ip), 5000) for ip in (OUTSIDE, OUTSIDE_2)]
    try:
        assert tcp_hello(g_limited, str(OUTSIDE.ip), 5000) is not None
        assert tcp_hello(g_limited, str(OUTSIDE_2.ip), 5000, timeout=1) is None  # not allowed
        assert tcp_hello(g_free, str(OUTSIDE_2.ip), 5000) is not None
    finally:
        for server in servers:
            server.close()
    # VMs cannot reach each other, not even through the gateway
    run_in_netns(g_free, _route_via, a_limited.address.ip, a_free.gateway)
    run_in_netns(g_limited, _route_via, a_free.address.ip, a_limited.gateway)
    assert ping(g_free, str(a_free.gateway))
    assert not ping(g_free, str(a_limited.address.ip), timeout=1, count=1)

    limited.teardown()
    table = NatTable(netns=world.host, lock_dir=world.state_dir).state()
    assert table is not None  # the other VM still needs it
    assert f"vm_{net_setup.vm_key(limited.vm_id)}" not in json.dumps(table)
    assert ping(g_free, str(OUTSIDE.ip))
    free.teardown()
    assert NatTable(netns=world.host, lock_dir=world.state_dir).state() is None
    assert links_in(world.host) == {"lo", "up0"}


def test_routed_tap_on_the_host_without_a_namespace(world: World) -> None:
    net = world.setup([_routed(tap="fcttap0")], netns=False)
    assert net.netns is None and net.netns_path is None and net.preexec_fn() is None
    assert "fcttap0" in links_in(world.host)
    guest = world.guest(net)
    assert ping(guest, str(OUTSIDE.ip))
    server = TCPServer(world.outside, str(OUTSIDE.ip), 5000)
    try:
        assert tcp_hello(guest, str(OUTSIDE.ip), 5000) == f"hello {UPLINK.ip}"
    finally:
        server.close()
    net.teardown()
    _assert_nothing_left(world, net)


def test_bridged_and_plain_taps(world: World) -> None:
    def bridge() -> None:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            ipr.link("add", ifname="fctbr0", kind="bridge")

    run_in_netns(world.host, bridge)
    static = fn.GuestIPConfig(address=IPv4Interface("192.168.50.2/24"))
    net = world.setup(
        [
            fn.Interface("net0", "fcttap1", network=fn.BridgedNetwork("fctbr0", guest=static)),
            fn.Interface("net1", "fcttap2"),
        ],
        netns=False,
    )
    assert {"fcttap1", "fcttap2"} <= links_in(world.host)
    first, second = net.interfaces
    assert first.guest is not None and first.guest.mac == first.interface.guest_mac
    assert second.guest is None and second.device == "eth1"
    assert net.kernel_ip_arg() == "ip=192.168.50.2:::255.255.255.0::eth0:off"
    net.teardown()
    assert links_in(world.host) == {"lo", "up0", "fctbr0"}


def test_clones_keep_their_guest_address_side_by_side(world: World) -> None:
    # two clones of one snapshot: same guest address and MAC, each with its own lease
    mac = fn.derive_mac("the-original", "eth0")
    clones = [
        world.setup(
            [
                fn.Interface(
                    "eth0",
                    "tap0",
                    guest_mac=mac,
                    network=fn.RoutedNetwork(
                        SUBNET,
                        guest_address="10.77.0.2",
                        port_forwards=(fn.PortForward(8080 + n, 80),),
                    ),
                )
            ]
        )
        for n in range(2)
    ]
    guests = []
    for clone in clones:
        attached = clone.interfaces[0]
        assert attached.guest is not None
        assert attached.guest.kernel_ip_arg() == "ip=10.77.0.2::10.77.0.1:255.255.255.0::eth0:off"
        assert attached.interface.guest_mac == mac
        guests.append(world.guest(clone))
    leases = sorted(str(lease.address) for lease in LeaseStore(world.state_dir, SUBNET).leases())
    assert leases == ["10.77.0.2", "10.77.0.3"]  # both clones' own addresses, outside
    server = TCPServer(world.outside, str(OUTSIDE.ip), 5000)
    services = [TCPServer(g, "0.0.0.0", 80, tag=f"clone{n}") for n, g in enumerate(guests)]
    try:
        for n, guest in enumerate(guests):
            assert ping(guest, str(OUTSIDE.ip))
            assert tcp_hello(guest, str(OUTSIDE.ip), 5000) == f"hello {UPLINK.ip}"
            reply = tcp_hello(world.outside, str(UPLINK.ip), 8080 + n)
            assert reply == f"hello {OUTSIDE.ip} clone{n}"
    finally:
        server.close()
        for service in services:
            service.close()
    for clone in clones:
        clone.teardown()
    assert links_in(world.host) == {"lo", "up0"}
    assert NatTable(netns=world.host, lock_dir=world.state_dir).state() is None
    with pytest.raises(ConfigError, match="needs the VM's namespace"):
        plan = fn.RoutedNetwork(SUBNET, guest_address="10.77.0.9")
        world.setup([fn.Interface("eth0", "fcttap9", network=plan)], netns=False)


def test_reclaim_frees_leases_of_vms_without_a_record(world: World) -> None:
    net = world.setup([_routed()])
    # a crashed process leased an address and never recorded a network for it
    LeaseStore(world.state_dir, SUBNET).allocate("fct-crashed/eth0")
    LeaseStore(world.state_dir, "10.60.0.0/24").allocate("fct-crashed2/eth0")
    freed = fn.reclaim_leases(world.state_dir)
    assert sorted(lease.owner for lease in freed) == ["fct-crashed/eth0", "fct-crashed2/eth0"]
    assert [lease.owner for lease in LeaseStore(world.state_dir, SUBNET).leases()] == [
        f"{net.vm_id}/eth0"
    ]
    assert fn.reclaim_leases(world.state_dir, lambda lease: False)[0].owner == f"{net.vm_id}/eth0"
    net.teardown()  # releasing an already reclaimed lease is fine


def test_teardown_works_from_another_process(world: World) -> None:
    net = world.setup([_routed(port_forwards=(fn.PortForward(2222, 22),))])
    code = (
        "import sys, firec.network as fn; "
        "print(fn.teardown_network(sys.argv[1], state_dir=sys.argv[2]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, net.vm_id, str(world.state_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "True"
    _assert_nothing_left(world, net)


# -- refusals before any change -----------------------------------------------------------------


def test_refusals_change_nothing(world: World) -> None:
    holder = world.setup([_routed(address="10.77.0.50", port_forwards=(fn.PortForward(8080, 80),))])
    small = world.setup([fn.Interface("eth0", "tap0", network=fn.RoutedNetwork("10.78.0.0/30"))])
    candidate = world.vm_id()
    before = world.snapshot(holder.vm_id, small.vm_id, candidate)

    cases: list[tuple[list[fn.Interface], dict[str, Any], type[Exception], str]] = [
        ([_routed(address="10.77.0.50")], {}, NetworkError, "already leased"),
        (
            [fn.Interface("eth0", "tap0", network=fn.RoutedNetwork("10.78.0.0/30"))],
            {},
            NetworkError,
            "exhausted",
        ),
        ([_routed(subnet="172.31.0.0/16")], {}, NetworkError, "overlaps 172.31.9.1/24 on 'up0'"),
        ([_routed(port_forwards=(fn.PortForward(8080, 81),))], {}, NetworkError, "port 8080"),
        ([_routed(tap="up0")], {"netns": False}, NetworkError, "'up0' already exists"),
        (
            [fn.Interface("eth0", "tap0", network=fn.BridgedNetwork("nobridge"))],
            {"netns": False},
            NetworkError,
            "bridge 'nobridge' does not exist",
        ),
        (
            [fn.Interface("eth0", "tap0", network=fn.BridgedNetwork("br0"))],
            {},
            ConfigError,
            "netns=False",
        ),
        ([_routed(), _routed()], {}, ConfigError, "used by several interfaces"),
        (
            [
                _routed(),
                fn.Interface("eth1", "tap1", network=fn.RoutedNetwork(SUBNET, masquerade=False)),
            ],
            {},
            ConfigError,
            "agree on masquerade",
        ),
        ([_routed()], {"host_netns": "fct-no-such-ns"}, NetworkError, "does not exist"),
        ([_routed()], {"hostname": "no_underscores"}, ConfigError, "host name"),
    ]
    for nics, kwargs, error, words in cases:
        with pytest.raises(error, match=words):
            world.setup(nics, vm_id=candidate, **kwargs)
        assert world.snapshot(holder.vm_id, small.vm_id, candidate) == before, words

    # invalid values never get as far as set-up
    with pytest.raises(ConfigError, match=r"did you mean 10\.77\.0\.0/24"):
        fn.RoutedNetwork("10.77.0.1/24")
    with pytest.raises(ConfigError, match="at most 15"):
        fn.Interface("eth0", "tap-name-too-long")
    with pytest.raises(ConfigError, match="VM id"):
        world.setup([_routed()], vm_id="bad_id!")
    # the VM's own namespace, or its record, already existing
    create_netns(netns_name(candidate))
    try:
        with pytest.raises(NetworkError, match="already exists"):
            world.setup([_routed()], vm_id=candidate)
    finally:
        delete_netns(netns_name(candidate))
    with pytest.raises(NetworkError, match="already set up"):
        world.setup([_routed()], vm_id=holder.vm_id)
    assert world.snapshot(holder.vm_id, small.vm_id, candidate) == before


def test_nat_without_uplink_forwarding_is_refused(world: World) -> None:
    run_in_netns(world.host, write_sysctl, "net/ipv4/conf/up0/forwarding", "0")
    vm = world.vm_id()
    before = world.snapshot(vm)
    with pytest.raises(NetworkError, match=r"sysctl -w net\.ipv4\.conf\.up0\.forwarding=1"):
        world.setup([_routed()], vm_id=vm)
    assert world.snapshot(vm) == before
    # without NAT there is nothing to forward for
    net = world.setup([_routed(masquerade=False)], vm_id=world.vm_id())
    net.teardown()


# -- rollback -----------------------------------------------------------------------------------


def test_kernel_refusal_mid_setup_rolls_back(world: World) -> None:
    vm = world.vm_id()
    before = world.snapshot(vm)
    # passes validation (an MTU), fails in the kernel (above a tap's maximum) after the
    # lease, the namespace and the veth pair exist
    with pytest.raises(NetworkError, match="MTU"):
        world.setup([_routed(mtu=65535)], vm_id=vm)
    assert world.snapshot(vm) == before
    assert LeaseStore(world.state_dir, SUBNET).leases() == []


class Injected(Exception):
    pass


@pytest.mark.parametrize("where", ["tap", "sysctl", "nft-after-add", "interrupt"])
def test_injected_failure_mid_setup_rolls_back(
    world: World, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    other = world.setup([_routed(port_forwards=(fn.PortForward(9000, 90),))])
    vm = world.vm_id()
    before = world.snapshot(other.vm_id, vm)

    if where == "tap":

        def fail_tap(*args: Any, **kwargs: Any) -> None:
            raise Injected("tap")

        monkeypatch.setattr(tap_module, "create_tap", fail_tap)
    elif where == "sysctl":
        calls = []

        def fail_sysctl(key: str, value: str) -> None:
            calls.append(key)
            if len(calls) == 2:  # the namespace's forwarding, after the host side is done
                raise Injected("sysctl")
            write_sysctl(key, value)

        monkeypatch.setattr(net_setup, "write_sysctl", fail_sysctl)
    elif where == "nft-after-add":
        real_add = NatTable.add

        def add_then_fail(self: NatTable, rules: Any) -> None:
            real_add(self, rules)
            raise Injected("after nft")

        monkeypatch.setattr(NatTable, "add", add_then_fail)
    else:
        real_create = tap_module.create_tap

        def interrupt(*args: Any, **kwargs: Any) -> None:
            real_create(*args, **kwargs)
            raise KeyboardInterrupt

        monkeypatch.setattr(tap_module, "create_tap", interrupt)

    expected: type[BaseException] = KeyboardInterrupt if where == "interrupt" else Injected
    with pytest.raises(expected):
        world.setup([_routed(port_forwards=(fn.PortForward(8080, 80),))], vm_id=vm)
    monkeypatch.undo()
    assert world.snapshot(other.vm_id, vm) == before
    # the survivor still works
    guest = world.guest(other)
    assert ping(guest, str(OUTSIDE.ip))
