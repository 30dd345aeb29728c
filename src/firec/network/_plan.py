"""Planning a VM's network set-up, and checking it against the host before any change.

:func:`make_plan` checks the arguments of
:func:`~firec.network.setup.setup_network` (names, ids, interfaces that
cannot work together) and :func:`check_host` what the host has (the VM's
namespace and links not there yet, leases available, subnets not
overlapping host addresses, uplinks forwarding, CNI plugins present, nft
rules accepted): a refusal changes nothing. :func:`nft_rules` are the VM's
rules in firec's nftables table.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

from firec.errors import ConfigError, NetworkError
from firec.network import nat as _nat
from firec.network import netns as _netns
from firec.network._netlink import netlink
from firec.network.guest_ip import validate_hostname
from firec.network.interface import BridgedNetwork, CNINetwork, Interface, RoutedNetwork
from firec.network.leases import LeaseStore
from firec.network.names import NS_UPLINK, host_link_name, netns_name, validate_vm_id, vm_key
from firec.network.record import already_set_up, record_path

__all__ = ["SetupPlan", "check_host", "make_plan", "nft_rules"]


@dataclass(frozen=True)
class SetupPlan:
    """What :func:`~firec.network.setup.setup_network` is to make, its arguments checked."""

    vm_id: str
    key: str
    interfaces: tuple[Interface, ...]
    state_dir: Path
    netns: str | None
    host_netns: str | None
    uid: int | None
    gid: int | None
    hostname: str | None

    @property
    def routed(self) -> list[tuple[int, Interface, RoutedNetwork]]:
        return [
            (i, nic, nic.network)
            for i, nic in enumerate(self.interfaces)
            if isinstance(nic.network, RoutedNetwork)
        ]

    @property
    def uplink(self) -> str | None:
        """The host-side veth (netns mode with routed interfaces)."""
        if self.netns is not None and self.routed:
            return host_link_name(self.vm_id)
        return None

    def owner(self, nic: Interface) -> str:
        return f"{self.vm_id}/{nic.iface_id}"

    def store(self, plan: RoutedNetwork) -> LeaseStore:
        return LeaseStore(self.state_dir, plan.network, gateway=plan.gateway_address)


def make_plan(
    vm_id: str,
    interfaces: Sequence[Interface],
    *,
    state_dir: str | os.PathLike[str],
    netns: bool,
    uid: int | None,
    gid: int | None,
    hostname: str | None,
    host_netns: str | None,
) -> SetupPlan:
    """The plan for :func:`~firec.network.setup.setup_network`'s arguments.

    Raises:
        ConfigError: a value is invalid, or the interfaces cannot work together.
    """
    validate_vm_id(vm_id)
    nics = tuple(interfaces)
    for i, nic in enumerate(nics):
        if not isinstance(nic, Interface):
            raise ConfigError(f"interfaces[{i}]", f"{nic!r} is not a firec.network.Interface")
    for what, values in (
        ("iface_id", [n.iface_id for n in nics]),
        ("host_dev_name", [n.host_dev_name for n in nics]),
    ):
        dupes = sorted({v for v in values if values.count(v) > 1})
        if dupes:
            raise ConfigError(f"interfaces.{what}", f"used by several interfaces: {dupes}")
    cni_ifnames = [n.network.ifname for n in nics if isinstance(n.network, CNINetwork)]
    if len(set(cni_ifnames)) != len(cni_ifnames):
        raise ConfigError("interfaces.network.ifname", "several CNI networks use the same ifname")
    for i, nic in enumerate(nics):
        plan = nic.network
        if isinstance(plan, BridgedNetwork) and netns:
            raise ConfigError(
                f"interfaces[{i}].network",
                "a bridged tap must be on the host, where the bridge is: use netns=False",
            )
        if isinstance(plan, CNINetwork):
            if not netns:
                raise ConfigError(
                    f"interfaces[{i}].network", "CNI networks need the VM's namespace (netns=True)"
                )
            if nic.host_dev_name in (plan.ifname, NS_UPLINK) or plan.ifname == NS_UPLINK:
                raise ConfigError(
                    f"interfaces[{i}].network.ifname",
                    f"{plan.ifname!r} clashes with the tap name or {NS_UPLINK!r}",
                )
            if nic.guest_mac is not None:
                raise ConfigError(
                    f"interfaces[{i}].guest_mac",
                    "with CNI the guest uses the MAC of the CNI interface; leave guest_mac unset",
                )
        if isinstance(plan, RoutedNetwork) and plan.guest_address is not None and not netns:
            raise ConfigError(
                f"interfaces[{i}].network.guest_address",
                "translating a guest address needs the VM's namespace (netns=True)",
            )
        if netns and nic.host_dev_name == NS_UPLINK:
            raise ConfigError(f"interfaces[{i}].host_dev_name", f"{NS_UPLINK!r} is reserved")
    if len({n.network.masquerade for n in nics if isinstance(n.network, RoutedNetwork)}) > 1:
        raise ConfigError(
            "interfaces.network.masquerade",
            "the routed interfaces of one VM share its link to the host: they must agree on "
            "masquerade",
        )
    inner = [
        n.network.inner_address
        for n in nics
        if isinstance(n.network, RoutedNetwork) and n.network.inner_address is not None
    ]
    if len(set(inner)) != len(inner):
        raise ConfigError("interfaces.network.guest_address", "used by several interfaces")
    for name, value in (("uid", uid), ("gid", gid)):
        if value is not None and (not isinstance(value, int) or value < 0):
            raise ConfigError(name, f"{value!r} is not a uid/gid (a non-negative integer)")
    if hostname is not None:
        validate_hostname(hostname)
    if host_netns is not None:
        _netns.validate_netns_name(host_netns, "host_netns")
    return SetupPlan(
        vm_id=vm_id,
        key=vm_key(vm_id),
        interfaces=nics,
        state_dir=Path(state_dir),
        netns=netns_name(vm_id) if netns else None,
        host_netns=host_netns,
        uid=uid,
        gid=gid,
        hostname=hostname,
    )


def check_host(plan: SetupPlan) -> None:
    """Refuse, before any change, what would make set-up fail."""
    record = record_path(plan.state_dir, plan.vm_id)
    if record.exists():
        raise already_set_up(plan.vm_id, record)
    if plan.host_netns is not None and not _netns.netns_exists(plan.host_netns):
        raise NetworkError(f"host namespace {plan.host_netns!r} does not exist")
    if plan.netns is not None and _netns.netns_path(plan.netns).exists():
        raise NetworkError(
            f"network namespace {plan.netns!r} already exists: another VM with id "
            f"{plan.vm_id!r}, or a leftover (`ip netns delete {plan.netns}`)"
        )

    def scan() -> tuple[set[str], list[tuple[str, IPv4Interface]]]:
        with netlink() as nl:
            return set(nl.links()), nl.addresses()

    links, addresses = _netns.run_in_netns(plan.host_netns, scan)
    where = "the host namespace" if plan.host_netns is None else f"namespace {plan.host_netns!r}"
    if plan.uplink is not None and plan.uplink in links:
        raise NetworkError(f"link {plan.uplink!r} already exists in {where}")
    for i, nic in enumerate(plan.interfaces):
        if plan.netns is None and nic.host_dev_name in links:
            raise NetworkError(
                f"interfaces[{i}]: link {nic.host_dev_name!r} already exists in {where}; choose "
                "another host_dev_name"
            )
        if isinstance(nic.network, BridgedNetwork) and nic.network.bridge not in links:
            raise NetworkError(
                f"interfaces[{i}]: bridge {nic.network.bridge!r} does not exist in {where}"
            )
        if isinstance(nic.network, CNINetwork):
            nic.network.conf.find_plugins(nic.network.plugin_path)

    wanted: dict[IPv4Network, int] = {}
    for i, nic, routed in plan.routed:
        net = routed.network
        for link, address in addresses:
            if address.network.prefixlen < 32 and address.network.overlaps(net):
                raise NetworkError(
                    f"interfaces[{i}]: subnet {net} overlaps {address} on {link!r} in {where}; "
                    "choose a subnet the host does not use"
                )
            if routed.wanted_address is not None and address.ip == routed.wanted_address:
                raise NetworkError(
                    f"interfaces[{i}]: address {routed.wanted_address} is already assigned to "
                    f"{link!r} in {where}"
                )
        store = plan.store(routed)
        store.check(plan.owner(nic), address=routed.wanted_address)
        if store.get(plan.owner(nic)) is None:
            wanted[net] = wanted.get(net, 0) + 1
            if store.free() < wanted[net]:
                raise NetworkError(
                    f"subnet {net} is exhausted: {store.free()} free addresses for "
                    f"{wanted[net]} interfaces"
                )
    if any(r.masquerade or r.port_forwards for _, _, r in plan.routed):
        off = _nat.uplinks_without_forwarding(plan.host_netns)
        if off:
            sysctls = " ".join(f"net.ipv4.conf.{u}.forwarding=1" for u in off)
            raise NetworkError(
                f"NAT needs IPv4 forwarding on the uplink {', '.join(off)} in {where}: replies "
                f"come in there. firec does not change host-wide settings; enable it with "
                f"`sysctl -w {sysctls}` (or net.ipv4.ip_forward=1)"
            )
    if plan.routed:
        _nat.NatTable(netns=plan.host_netns, lock_dir=plan.state_dir).check(
            nft_rules(plan, [(r, IPv4Address("0.0.0.0")) for _, _, r in plan.routed])
        )


def nft_rules(plan: SetupPlan, guests: Sequence[tuple[RoutedNetwork, IPv4Address]]) -> _nat.VMRules:
    """The VM's nft rules, for its routed interfaces and their guests' addresses."""
    if plan.uplink is not None:
        links: tuple[str, ...] = (plan.uplink,)
    else:
        links = tuple(nic.host_dev_name for _, nic, _ in plan.routed)
    return _nat.VMRules(
        key=plan.key,
        links=links,
        guests=tuple(_nat.GuestRule(address, routed.allow) for routed, address in guests),
        masquerade=all(routed.masquerade for routed, _ in guests),
        port_forwards=tuple(
            (fwd, address) for routed, address in guests for fwd in routed.port_forwards
        ),
    )
