"""CNI with the real plugins (bridge, host-local, tuning from /usr/lib/cni).

The plugins run inside a namespace the test made (it plays the host: the
bridge appears there), host-local keeps its state in the test's temporary
directory, and the guest is a namespace wired to the VM's tap (see
network_support.py). Nothing touches the real host.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, ip_address
from pathlib import Path
from typing import Any

import pytest

import firec.network as fn
from firec.errors import NetworkError
from firec.network._netlink import netlink
from firec.network.cni import CNIConfList, cni_add, cni_del
from firec.network.netns import (
    create_netns,
    delete_netns,
    list_netns,
    netns_exists,
    netns_path,
    run_in_netns,
)
from firec.network.setup import netns_name, record_path
from tests.network_support import (
    GuestPump,
    TCPServer,
    apply_ip_arg,
    links_in,
    namespaces,
    ping,
    tcp_hello,
    unique,
)

CNI_DIR = Path("/usr/lib/cni")

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CAP_NET_ADMIN) for links and netns"),
    pytest.mark.needs_tool("cni-plugins"),
]

GATEWAY = IPv4Address("10.88.0.1")


@dataclass
class CNIWorld:
    host: str
    bridge: str
    network: str
    ipam_dir: Path
    state_dir: Path
    vms: list[str] = field(default_factory=list)

    def conflist(self, *extra: dict[str, Any]) -> dict[str, Any]:
        bridge = {
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": True,
            "ipMasq": False,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": "10.88.0.0/24"}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": str(self.ipam_dir),
            },
            "dns": {"nameservers": [str(GATEWAY)], "search": ["example.test"]},
        }
        return {"cniVersion": "1.0.0", "name": self.network, "plugins": [bridge, *extra]}

    def reserved(self) -> set[str]:
        """The addresses host-local holds (it keeps one file per address)."""
        directory = self.ipam_dir / self.network
        names = [p.name for p in directory.iterdir()] if directory.exists() else []
        return {name for name in names if _is_address(name)}


def _is_address(text: str) -> bool:
    try:
        ip_address(text)
    except ValueError:
        return False
    return True


@pytest.fixture
def cni_world(tmp_path: Path) -> Iterator[CNIWorld]:
    host = unique("fcth")
    suffix = host[4:]
    with namespaces(host):
        world = CNIWorld(
            host=host,
            bridge=f"fctbr{suffix}",
            network=f"fctnet{suffix}",
            ipam_dir=tmp_path / "ipam",
            state_dir=tmp_path / "state",
        )
        try:
            yield world
        finally:
            for vm in world.vms:
                fn.teardown_network(vm, state_dir=world.state_dir)
                if netns_exists(netns_name(vm)):
                    delete_netns(netns_name(vm))


def _vm(world: CNIWorld) -> str:
    vm = unique("fct-")
    world.vms.append(vm)
    return vm


def test_cni_add_del_with_real_plugins(cni_world: CNIWorld) -> None:
    """The runtime part alone: ADD into a namespace, DEL again."""
    conf = CNIConfList.from_dict(cni_world.conflist())
    target = unique()
    create_netns(target)
    try:
        result = cni_add(
            conf,
            container_id="fct-runtime",
            netns_path=netns_path(target),
            ifname="eth0",
            host_netns=cni_world.host,
        )
        (address, gateway, _), *_ = result.ips
        assert isinstance(address, IPv4Interface)
        assert address.ip in IPv4Network("10.88.0.0/24")
        assert gateway == GATEWAY
        assert result.nameservers == (GATEWAY,)
        assert any(
            name == "eth0" and sandbox == str(netns_path(target))
            for name, _, sandbox in result.interfaces
        )
        assert "eth0" in links_in(target)
        assert cni_world.bridge in links_in(cni_world.host)
        assert cni_world.reserved() == {str(address.ip)}

        cni_del(
            conf,
            container_id="fct-runtime",
            netns_path=netns_path(target),
            ifname="eth0",
            prev_result=result.raw,
            host_netns=cni_world.host,
        )
        assert links_in(target) == {"lo"}
        assert cni_world.reserved() == set()
        assert links_in(cni_world.host) == {"lo", cni_world.bridge}
    finally:
        delete_netns(target)


def test_cni_vm_network_carries_guest_traffic_and_tears_down(cni_world: CNIWorld) -> None:
    conf = cni_world.conflist({"type": "tuning", "mtu": 1400})
    vm = _vm(cni_world)
    net = fn.setup_network(
        vm,
        [fn.Interface("eth0", "tap0", network=fn.CNINetwork(conf))],
        state_dir=cni_world.state_dir,
        host_netns=cni_world.host,
        hostname="cniguest",
    )
    assert net.netns == netns_name(vm)
    attached = net.interfaces[0]
    guest = attached.guest
    assert guest is not None

    def inside() -> tuple[str, list[Any]]:
        with netlink() as nl:
            return nl.mac("eth0"), [a for a in nl.addresses() if a[0] == "eth0"]

    veth_mac, veth_addresses = run_in_netns(net.netns, inside)
    # the guest takes over the CNI interface: its MAC, address, MTU; the namespace steps aside
    assert attached.interface.guest_mac == veth_mac == guest.mac
    assert veth_addresses == []
    assert links_in(net.netns) == {"lo", "eth0", "tap0"}
    assert guest.address.ip in IPv4Network("10.88.0.0/24")
    assert guest.gateway == GATEWAY
    assert guest.mtu == 1400
    assert net.kernel_ip_arg() == (
        f"ip={guest.address.ip}::{GATEWAY}:255.255.255.0:cniguest:eth0:off:{GATEWAY}"
    )
    doc = net.mmds()["network"]["interfaces"]["eth0"]  # type: ignore[index]
    assert doc["search"] == "example.test" and doc["mtu"] == "1400"
    assert cni_world.reserved() == {str(guest.address.ip)}

    guest_ns = unique("fctg")
    create_netns(guest_ns)
    pump = GuestPump(net.netns, "tap0", guest_ns)
    try:
        apply_ip_arg(guest_ns, guest.kernel_ip_arg(), guest.mac)
        assert ping(guest_ns, str(GATEWAY))  # tap -> tc redirect -> veth -> bridge
        server = TCPServer(cni_world.host, str(GATEWAY), 5000)
        try:
            assert tcp_hello(guest_ns, str(GATEWAY), 5000) == f"hello {guest.address.ip}"
        finally:
            server.close()
    finally:
        pump.close()
        delete_netns(guest_ns)

    net.teardown()
    assert not netns_exists(net.netns)
    assert links_in(cni_world.host) == {"lo", cni_world.bridge}  # the veth went with DEL
    assert cni_world.reserved() == set()  # host-local released the address
    assert not record_path(cni_world.state_dir, vm).exists()
    assert fn.teardown_network(vm, state_dir=cni_world.state_dir) is False


def test_failing_plugin_rolls_back_everything(cni_world: CNIWorld) -> None:
    # tuning refuses a sysctl that does not exist: the list fails after bridge + host-local
    conf = cni_world.conflist({"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.no_such": "1"}})
    vm = _vm(cni_world)
    with pytest.raises(NetworkError, match="CNI plugin tuning ADD failed") as info:
        fn.setup_network(
            vm,
            [fn.Interface("eth0", "tap0", network=fn.CNINetwork(conf))],
            state_dir=cni_world.state_dir,
            host_netns=cni_world.host,
        )
    assert cni_world.network in str(info.value)
    assert not netns_exists(netns_name(vm))
    assert netns_name(vm) not in list_netns()
    assert cni_world.reserved() == set()
    assert links_in(cni_world.host) <= {"lo", cni_world.bridge}
    assert not record_path(cni_world.state_dir, vm).exists()


def test_missing_plugin_is_refused_before_anything(cni_world: CNIWorld, tmp_path: Path) -> None:
    conf = cni_world.conflist({"type": "fct-no-such-plugin"})
    vm = _vm(cni_world)
    with pytest.raises(NetworkError, match="'fct-no-such-plugin'"):
        fn.setup_network(
            vm,
            [fn.Interface("eth0", "tap0", network=fn.CNINetwork(conf))],
            state_dir=cni_world.state_dir,
            host_netns=cni_world.host,
        )
    assert not netns_exists(netns_name(vm))
    assert links_in(cni_world.host) == {"lo"}
    assert not (cni_world.state_dir / "networks").exists() or not any(
        (cni_world.state_dir / "networks").iterdir()
    )


def test_cni_del_runs_for_every_plugin_even_after_a_failure(
    cni_world: CNIWorld, tmp_path: Path
) -> None:
    # a plugin whose DEL fails must not stop the others' DEL
    fake_dir = tmp_path / "plugins"
    fake_dir.mkdir()
    log = tmp_path / "calls.log"
    for name, code in (("fct-fail", 1), ("fct-ok", 0)):
        script = fake_dir / name
        script.write_text(
            "#!/bin/sh\n"
            f'echo "{name} $CNI_COMMAND" >> {log}\n'
            + (
                'echo \'{"cniVersion":"1.0.0","code":11,"msg":"nope"}\'\n'
                if code
                else 'echo \'{"cniVersion":"1.0.0"}\'\n'
            )
            + f"exit {code}\n"
        )
        script.chmod(0o755)
    conf = CNIConfList.from_dict(
        {
            "cniVersion": "1.0.0",
            "name": "fake",
            "plugins": [{"type": "fct-ok"}, {"type": "fct-fail"}],
        }
    )
    with pytest.raises(NetworkError, match=r"fct-fail DEL failed .*nope \(code 11\)"):
        cni_del(
            conf,
            container_id="fct-x",
            netns_path="/var/run/netns/none",
            ifname="eth0",
            prev_result=None,
            cni_path=[fake_dir],
        )
    assert log.read_text().split("\n")[:2] == ["fct-fail DEL", "fct-ok DEL"]
    log.unlink()
    with pytest.raises(NetworkError, match="fct-fail ADD failed"):
        cni_add(
            conf,
            container_id="fct-x",
            netns_path="/var/run/netns/none",
            ifname="eth0",
            cni_path=[fake_dir],
        )
    # ADD in order, then DEL of the whole list in reverse
    assert log.read_text().split() == [
        "fct-ok", "ADD", "fct-fail", "ADD", "fct-fail", "DEL", "fct-ok", "DEL",
    ]  # fmt: skip
