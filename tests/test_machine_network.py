"""A microVM whose interface has a network plan: firec sets up tap, namespace and lease, and
removes them with the VM. On the emulator and, with FIRECRACKER_BIN, on real Firecracker."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import firec
import firec.network as fn
from firec.api.versions import Version
from firec.errors import NetworkError, UnsupportedError
from firec.network.mac import derive_mac
from firec.network.netns import netns_exists
from tests.network_support import links_in, unique
from tests.support import assert_nothing_left, binary_version, guest_builder

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root (CAP_NET_ADMIN) for taps and namespaces"
)


def _firec_table() -> dict[str, object] | None:
    result = subprocess.run(["nft", "-j", "list", "table", "inet", "firec"], capture_output=True)
    return json.loads(result.stdout) if result.returncode == 0 else None


@pytest.mark.needs_tool("nft")
def test_routed_interface_is_set_up_and_torn_down(
    vmm_binary: Path, guest_kernel: Path, short_tmp: Path
) -> None:
    tap = unique("fctap")
    vm_id = unique("netvm")
    nic = fn.Interface(
        "eth0", tap, network=fn.RoutedNetwork(subnet="10.213.7.0/24", masquerade=False)
    )
    config = (
        guest_builder(vm_id, vmm_binary, guest_kernel, short_tmp)
        .kernel_args("console=ttyS0")
        .add_network_interface(nic)
        .state_dir(short_tmp / "state")
        .build()
    )
    with firec.Machine.create(config) as machine:
        machine.start()
        assert machine.state() is firec.MachineState.RUNNING
        netns = machine.config.net_ns
        assert netns is not None and netns_exists(netns)
        assert tap in links_in(netns)
        assert tap not in links_in(None)
        kernel_args = machine.config.kernel_args or ""
        assert "ip=10.213.7." in kernel_args and ":eth0:off" in kernel_args
        (iface,) = machine.client.get_vm_config().network_interfaces or []
        assert iface.host_dev_name == tap
        assert iface.guest_mac == derive_mac(vm_id, "eth0")
        leases = fn.LeaseStore(short_tmp / "state", "10.213.7.0/24").leases()
        assert [lease.owner for lease in leases] == [vm_id] or len(leases) == 1
        launch, pid = machine.launch, machine.pid
    assert_nothing_left(launch, pid)
    assert not netns_exists(netns)
    assert tap not in links_in(None)
    assert fn.LeaseStore(short_tmp / "state", "10.213.7.0/24").leases() == []
    table = _firec_table()
    assert table is None or vm_id not in json.dumps(table)


def test_network_refusal_changes_nothing(
    vmm_binary: Path, guest_kernel: Path, short_tmp: Path
) -> None:
    tap = unique("fctap")
    taken = fn.Interface("eth0", tap, network=fn.RoutedNetwork(subnet="10.213.8.0/30"))
    config = (
        guest_builder(unique("netvm"), vmm_binary, guest_kernel, short_tmp)
        .add_network_interface(taken)
        .add_network_interface(
            fn.Interface("eth1", unique("fctap"), network=fn.RoutedNetwork(subnet="10.213.8.0/30"))
        )
        .state_dir(short_tmp / "state")
        .build()
    )
    before = links_in(None)
    with pytest.raises((NetworkError, firec.errors.ConfigError)):
        firec.Machine.create(config)
    assert links_in(None) == before
    assert not config.vm_dir.exists()


@pytest.fixture
def host_bridge() -> Iterator[str]:
    from pyroute2 import IPRoute

    name = unique("fcbr")
    with IPRoute() as ipr:
        ipr.link("add", ifname=name, kind="bridge")
    try:
        yield name
    finally:
        with IPRoute() as ipr:
            index = ipr.link_lookup(ifname=name)
            if index:
                ipr.link("del", index=index[0])


def test_bridged_interface_puts_the_tap_on_the_host_bridge(
    vmm_binary: Path, guest_kernel: Path, short_tmp: Path, host_bridge: str
) -> None:
    from pyroute2 import IPRoute

    tap = unique("fctap")
    config = (
        guest_builder(unique("brvm"), vmm_binary, guest_kernel, short_tmp)
        .kernel_args("console=ttyS0")
        .add_network_interface(fn.Interface("eth0", tap, network=fn.BridgedNetwork(host_bridge)))
        .state_dir(short_tmp / "state")
        .build()
    )
    with firec.Machine.create(config) as machine:
        machine.start()
        assert machine.config.net_ns is None  # taps on a host bridge stay on the host
        with IPRoute() as ipr:
            (link,) = ipr.link("get", index=ipr.link_lookup(ifname=tap)[0])
            bridge_index = ipr.link_lookup(ifname=host_bridge)[0]
        assert link.get("IFLA_MASTER") == bridge_index
        assert machine.state() is firec.MachineState.RUNNING
    assert tap not in links_in(None)
    assert host_bridge in links_in(None)  # the bridge is the caller's: it stays


@pytest.mark.needs_tool("nft")
def test_restore_gets_a_fresh_tap_namespace_and_lease(
    vmm_binary: Path, guest_kernel: Path, short_tmp: Path
) -> None:
    """A routed VM, snapshotted and restored under another id: the copy gets its own tap,
    namespace and lease (a network override of the snapshot's tap); both go away cleanly."""
    subnet = "10.213.9.0/24"
    state = short_tmp / "state"
    first_tap, second_tap = unique("fctap"), unique("fctap")
    config = (
        guest_builder(unique("netvm"), vmm_binary, guest_kernel, short_tmp)
        .kernel_args("console=ttyS0")
        .add_network_interface(
            fn.Interface("eth0", first_tap, network=fn.RoutedNetwork(subnet, masquerade=False))
        )
        .state_dir(state)
        .build()
    )
    with firec.Machine.create(config) as original:
        original.start()
        snapshot = original.snapshot(short_tmp / "snap")
        first_ns = original.config.net_ns
    assert first_ns is not None and not netns_exists(first_ns)

    copy_config = (
        guest_builder(unique("netcopy"), vmm_binary, guest_kernel, short_tmp)
        .add_network_interface(
            fn.Interface("eth0", second_tap, network=fn.RoutedNetwork(subnet, masquerade=False))
        )
        .state_dir(state)
        .build(check_files=False)
    )
    if binary_version(vmm_binary) < Version(1, 12):
        before = links_in(None)
        with pytest.raises(UnsupportedError, match=r"1\.12"):  # refused before anything is made
            firec.Machine.restore(snapshot, copy_config)
        assert links_in(None) == before
        assert fn.LeaseStore(state, subnet).leases() == []
        return
    with firec.Machine.restore(snapshot, copy_config) as copy:
        assert copy.state() is firec.MachineState.RUNNING
        copy_ns = copy.config.net_ns
        assert copy_ns is not None and copy_ns != first_ns and netns_exists(copy_ns)
        assert second_tap in links_in(copy_ns)
        (iface,) = copy.client.get_vm_config().network_interfaces or []
        assert iface.host_dev_name == second_tap
        assert len(fn.LeaseStore(state, subnet).leases()) == 1
        launch, pid = copy.launch, copy.pid
    assert_nothing_left(launch, pid)
    assert not netns_exists(copy_ns)
    assert fn.LeaseStore(state, subnet).leases() == []


@pytest.mark.needs_tool("nft")
def test_clones_each_get_their_own_network(
    vmm_binary: Path, guest_kernel: Path, short_tmp: Path
) -> None:
    subnet = "10.213.10.0/24"
    state = short_tmp / "state"
    routed = fn.RoutedNetwork(subnet, masquerade=False)
    config = (
        guest_builder(unique("netvm"), vmm_binary, guest_kernel, short_tmp)
        .kernel_args("console=ttyS0")
        .add_network_interface(fn.Interface("eth0", unique("fctap"), network=routed))
        .state_dir(state)
        .build()
    )
    with firec.Machine.create(config) as original:
        original.start()
        snapshot = original.snapshot(short_tmp / "snap")
    taps = [unique("fctap") for _ in range(3)]

    def own_network(index: int, clone: firec.Config) -> firec.Config:
        nic = fn.Interface("eth0", taps[index], network=routed)
        return clone.replace(network_interfaces=(nic,), state_dir=state)

    if binary_version(vmm_binary) < Version(1, 12):
        with pytest.raises(UnsupportedError, match=r"1\.12"):  # refused before anything is made
            firec.Machine.clone(snapshot, 3, configure=own_network)
        assert fn.LeaseStore(state, subnet).leases() == []
        return
    clones = firec.Machine.clone(snapshot, 3, configure=own_network)
    try:
        namespaces = {clone.config.net_ns for clone in clones}
        assert len(namespaces) == 3 and None not in namespaces
        for clone, tap in zip(clones, taps, strict=True):
            assert clone.state() is firec.MachineState.RUNNING
            assert tap in links_in(clone.config.net_ns)
        assert len(fn.LeaseStore(state, subnet).leases()) == 3
    finally:
        for clone in clones:
            clone.delete()
    assert not any(netns_exists(ns) for ns in namespaces if ns)
    assert fn.LeaseStore(state, subnet).leases() == []
