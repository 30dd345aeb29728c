"""Set a VM's network up, in order, with rollback; tear it down again, idempotently.

:func:`setup_network` takes a VM id and its :class:`~firec.network.Interface`
values and does everything their plans ask for:

1. checks everything it can before touching the host: names, the VM's
   namespace and links not existing yet, leases available and not
   conflicting, the subnet not overlapping host addresses, host ports free,
   uplinks forwarding, CNI plugins present; a refusal changes nothing;
2. leases the guest addresses (:mod:`~firec.network.leases`);
3. creates the VM's network namespace (:mod:`~firec.network.netns`);
4. for routed interfaces, links the namespace to the host with a veth pair
   (``fc<key>`` on the host, ``fchost`` inside), routes each guest address
   through it, and forwards in the namespace;
5. creates each tap, owned by ``uid``/``gid``, in the namespace (routed: with
   the gateway address and a route to the guest; CNI: after the plugins' ADD,
   coupled to their interface; bridged: on the host, in the bridge);
6. for clones (``RoutedNetwork.guest_address``), translates between the
   guest's own address and its lease inside the namespace;
7. adds the VM's nft rules (:mod:`~firec.network.nat`).

The plan and the checks of step 1 are in :mod:`firec.network._plan`; the
names of what is made in :mod:`~firec.network.names`. Each step is written
to a record (:mod:`~firec.network.record`) before it is taken. If a step
fails, everything done so far is undone in reverse order and the error is
raised. :func:`~firec.network.teardown.teardown_network` undoes a VM's
recorded steps (nft rules, CNI DEL, links, namespace, leases), works after a
crash or restart, and does nothing the second time.

Routed topology, per VM::

    host namespace                 VM namespace fc-<vm_id>          guest
    uplink ── nft table inet firec ── fc<key> ═══ veth ═══ fchost ── tap0 (gateway/32) ── eth0
              (masquerade, ports,     169.254.77.1/32   169.254.77.2/32   route guest/32
               allow-list, no VM-     route guest/32    default via       forwarding on
               to-VM)                 via .77.2 onlink  .77.1 onlink

Example::

    >>> net = setup_network("vm1", [Interface("eth0", "tap0", network=RoutedNetwork(
    ...     subnet="172.30.0.0/16", nameservers=("1.1.1.1",)))],
    ...     state_dir="/var/lib/firec", uid=123, gid=100)               # doctest: +SKIP
    >>> net.netns_path                       # the jailer's --netns       # doctest: +SKIP
    PosixPath('/var/run/netns/fc-vm1')
    >>> net.kernel_ip_arg()                  # add to the boot args       # doctest: +SKIP
    'ip=172.30.0.2::172.30.0.1:255.255.0.0::eth0:off:1.1.1.1'
    >>> [i.interface.to_model() for i in net.interfaces]  # PUT bodies    # doctest: +SKIP
    >>> net.teardown()                       # after the VMM exited       # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

from firec.errors import NetworkError
from firec.network import cni as _cni
from firec.network import nat as _nat
from firec.network import netns as _netns
from firec.network import tap as _tap
from firec.network._netlink import netlink
from firec.network._plan import SetupPlan, check_host, make_plan, nft_rules
from firec.network._sysctl import write_sysctl
from firec.network.guest_ip import GuestIPConfig
from firec.network.interface import BridgedNetwork, CNINetwork, Interface, RoutedNetwork
from firec.network.mac import derive_mac

# Their home before they had modules of their own: still importable from here.
from firec.network.names import NS_UPLINK, host_link_name, netns_name, validate_vm_id, vm_key
from firec.network.record import RECORD_FORMAT, NetworkRecord, network_owner, record_path
from firec.network.teardown import reclaim_leases, teardown_network, undo

__all__ = [
    "NS_UPLINK",
    "RECORD_FORMAT",
    "AttachedInterface",
    "VMNetwork",
    "host_link_name",
    "netns_name",
    "network_owner",
    "reclaim_leases",
    "record_path",
    "setup_network",
    "teardown_network",
    "validate_vm_id",
    "vm_key",
]

_HOST_SIDE = IPv4Interface("169.254.77.1/32")
_NS_SIDE = IPv4Interface("169.254.77.2/32")


@dataclass(frozen=True)
class AttachedInterface:
    """One interface after set-up.

    Attributes:
        interface: the interface, with its ``guest_mac`` filled in (derived,
            or the CNI interface's); its :meth:`~Interface.to_model` is the
            body for ``PUT /network-interfaces/{iface_id}``.
        guest: the guest's IP configuration, when firec knows it.
        device: the guest's device name (``eth<index>``).
    """

    interface: Interface
    guest: GuestIPConfig | None
    device: str


@dataclass(frozen=True)
class VMNetwork:
    """A VM's network as set up by :func:`setup_network`.

    Attributes:
        vm_id: the VM's id.
        netns: the VM's namespace name, or ``None`` when it has none.
        host_netns: the namespace that played the host (``None``: firec's own).
        state_dir: where the record and leases are.
        interfaces: every interface, in order.
    """

    vm_id: str
    netns: str | None
    host_netns: str | None
    state_dir: Path
    interfaces: tuple[AttachedInterface, ...]

    @property
    def netns_path(self) -> Path | None:
        """The namespace path for the jailer's ``--netns`` (``None`` without a namespace)."""
        return None if self.netns is None else _netns.netns_path(self.netns)

    def preexec_fn(self) -> Callable[[], None] | None:
        """A ``preexec_fn`` that starts a plain firecracker inside the VM's namespace."""
        return None if self.netns is None else _netns.netns_preexec(self.netns)

    def kernel_ip_arg(self) -> str | None:
        """The ``ip=`` boot argument for the first interface with a known configuration.

        The kernel configures one interface from ``ip=``; the others (and
        everything ``ip=`` cannot say) are in :meth:`mmds`.
        """
        for attached in self.interfaces:
            if attached.guest is not None:
                return attached.guest.kernel_ip_arg()
        return None

    def mmds(self) -> dict[str, object]:
        """The guests' network configuration as an MMDS document.

        ``{"network": {"interfaces": {"eth0": {...}}}}``, one entry per guest
        device with a known configuration (see
        :meth:`~firec.network.guest_ip.GuestIPConfig.mmds`), plus the
        Firecracker ``iface-id``. Merge it into the VM's MMDS data.
        """
        docs: dict[str, object] = {}
        for attached in self.interfaces:
            if attached.guest is not None:
                docs[attached.guest.device] = {
                    **attached.guest.mmds(),
                    "iface-id": attached.interface.iface_id,
                }
        return {"network": {"interfaces": docs}}

    def teardown(self) -> None:
        """Remove everything the set-up created (see :func:`teardown_network`)."""
        teardown_network(self.vm_id, state_dir=self.state_dir)


# -- set-up -------------------------------------------------------------------------------------


def setup_network(
    vm_id: str,
    interfaces: Sequence[Interface],
    *,
    state_dir: str | os.PathLike[str],
    netns: bool = True,
    uid: int | None = None,
    gid: int | None = None,
    hostname: str | None = None,
    host_netns: str | None = None,
) -> VMNetwork:
    """Set up the network of VM ``vm_id`` for ``interfaces``; undo it all if a step fails.

    Args:
        vm_id: the VM's id (letters, digits, ``-``; the jailer's ``--id``).
        interfaces: the VM's interfaces, in guest order (``eth0`` first).
        state_dir: firec's state directory (records, leases, locks). Every
            process managing VMs on the host must use the same one.
        netns: give the VM its own network namespace ``fc-<vm_id>`` (taps go
            inside it). ``False`` puts taps on the host (needed for bridges).
        uid: owner of the taps (the jailed VMM's uid).
        gid: group of the taps.
        hostname: the guest's host name (``ip=`` and MMDS).
        host_netns: a named namespace to treat as the host (default: firec's own).

    Returns:
        The :class:`VMNetwork`: namespace path, MAC-complete interfaces, ``ip=``
        argument, MMDS document, and ``teardown()``.

    Raises:
        ConfigError: invalid values (names, ids, plans that cannot work).
        NetworkError: the host refuses (conflicts, exhausted subnet, missing
            plugins, kernel errors). Nothing is left behind either way.
    """
    plan = make_plan(
        vm_id,
        interfaces,
        state_dir=state_dir,
        netns=netns,
        uid=uid,
        gid=gid,
        hostname=hostname,
        host_netns=host_netns,
    )
    check_host(plan)
    record = NetworkRecord.create(record_path(plan.state_dir, vm_id), vm_id, host_netns)
    try:
        attached = _build(plan, record)
    except BaseException as exc:
        try:
            undo(record, plan.state_dir)
        except NetworkError as undo_exc:
            raise undo_exc from exc
        raise
    return VMNetwork(
        vm_id=vm_id,
        netns=plan.netns,
        host_netns=host_netns,
        state_dir=plan.state_dir,
        interfaces=attached,
    )


def _build(plan: SetupPlan, record: NetworkRecord) -> tuple[AttachedInterface, ...]:
    # 1. leases
    leased: dict[int, tuple[IPv4Interface, IPv4Address]] = {}
    for i, nic, routed in plan.routed:
        store = plan.store(routed)
        record.add(
            {
                "kind": "lease",
                "subnet": str(store.subnet),
                "gateway": str(store.gateway),
                "owner": plan.owner(nic),
            }
        )
        lease = store.allocate(plan.owner(nic), address=routed.wanted_address)
        leased[i] = (lease.interface, lease.gateway)

    # 2. the VM's namespace
    if plan.netns is not None:
        record.add({"kind": "netns", "name": plan.netns})
        _netns.create_netns(plan.netns)

    # 3. the veth pair between host and namespace (routed interfaces)
    if plan.uplink is not None and plan.netns is not None:
        _link_namespace(plan, record, [leased[i][0].ip for i, _, _ in plan.routed])

    # 4.-5. taps
    attached: list[AttachedInterface] = []
    for i, nic in enumerate(plan.interfaces):
        device = f"eth{i}"
        attached.append(_attach(plan, record, nic, device, leased.get(i)))

    # 6. clones: the guest's own address <-> its lease, inside its namespace
    pairs = [
        (leased[i][0].ip, r.inner_address)
        for i, _, r in plan.routed
        if r.inner_address is not None and r.inner_address != leased[i][0].ip
    ]
    if pairs:
        assert plan.netns is not None
        _nat.add_clone_nat(plan.netns, NS_UPLINK, pairs)

    # 7. nft rules
    if plan.routed:
        rules = nft_rules(plan, [(r, leased[i][0].ip) for i, _, r in plan.routed])
        # recorded first: removal only touches this VM's chain, links and leased addresses
        record.add(
            {
                "kind": "nft",
                "netns": plan.host_netns,
                "key": rules.key,
                "links": list(rules.links),
                "addresses": [str(g.address) for g in rules.guests],
            }
        )
        _nat.NatTable(netns=plan.host_netns, lock_dir=plan.state_dir).add(rules)
    return tuple(attached)


def _link_namespace(plan: SetupPlan, record: NetworkRecord, guests: Sequence[IPv4Address]) -> None:
    assert plan.uplink is not None and plan.netns is not None
    uplink, vm_ns = plan.uplink, plan.netns

    def host_side() -> None:
        with netlink() as nl:
            nl.add_veth(uplink, NS_UPLINK, peer_netns=vm_ns)

    record.add({"kind": "link", "name": uplink, "netns": plan.host_netns})
    _netns.run_in_netns(plan.host_netns, host_side)

    def configure_host() -> None:
        with netlink() as nl:
            nl.add_address(uplink, _HOST_SIDE)
            nl.set_up(uplink)
            write_sysctl(f"net/ipv4/conf/{uplink}/forwarding", "1")
            for guest in guests:
                nl.add_route(IPv4Network(f"{guest}/32"), uplink, via=_NS_SIDE.ip, onlink=True)

    def configure_ns() -> None:
        write_sysctl("net/ipv4/conf/all/forwarding", "1")
        with netlink() as nl:
            nl.add_address(NS_UPLINK, _NS_SIDE)
            nl.set_up(NS_UPLINK)
            nl.add_route(IPv4Network("0.0.0.0/0"), NS_UPLINK, via=_HOST_SIDE.ip, onlink=True)

    _netns.run_in_netns(plan.host_netns, configure_host)
    _netns.run_in_netns(vm_ns, configure_ns)


def _attach(
    plan: SetupPlan,
    record: NetworkRecord,
    nic: Interface,
    device: str,
    lease: tuple[IPv4Interface, IPv4Address] | None,
) -> AttachedInterface:
    tap_ns = plan.netns if plan.netns is not None else plan.host_netns
    network = nic.network
    mac = nic.guest_mac or derive_mac(plan.vm_id, nic.iface_id)

    if isinstance(network, CNINetwork):
        assert plan.netns is not None
        step: dict[str, Any] = {
            "kind": "cni",
            "conflist": network.conf.to_dict(),
            "container_id": plan.vm_id,
            "netns_path": str(_netns.netns_path(plan.netns)),
            "ifname": network.ifname,
            "cni_path": [str(p) for p in network.plugin_path],
            "args": dict(network.args),
            "host_netns": plan.host_netns,
            "result": None,
        }
        record.add(step)
        result = _cni.cni_add(
            network.conf,
            container_id=plan.vm_id,
            netns_path=_netns.netns_path(plan.netns),
            ifname=network.ifname,
            cni_path=network.plugin_path,
            args=network.args,
            host_netns=plan.host_netns,
        )
        step["result"] = dict(result.raw)
        record.write()
        record.add({"kind": "link", "name": nic.host_dev_name, "netns": plan.netns})
        cni_mac, mtu = _cni.attach_tap(
            plan.netns, ifname=network.ifname, tap=nic.host_dev_name, uid=plan.uid, gid=plan.gid
        )
        guest = result.guest_config(
            network.ifname, device=device, hostname=plan.hostname, mac=cni_mac, mtu=mtu
        )
        return AttachedInterface(replace(nic, guest_mac=cni_mac), guest, device)

    if isinstance(network, RoutedNetwork):
        assert lease is not None
        leased, gateway = lease
        inner = network.inner_address
        address = leased if inner is None else IPv4Interface(f"{inner}/{leased.network.prefixlen}")
        record.add({"kind": "link", "name": nic.host_dev_name, "netns": tap_ns})
        _tap.create_tap(
            nic.host_dev_name,
            netns=tap_ns,
            uid=plan.uid,
            gid=plan.gid,
            mtu=network.mtu,
            address=IPv4Interface(f"{gateway}/32"),
            routes=[IPv4Network(f"{address.ip}/32")],
        )
        if plan.netns is None:
            name = nic.host_dev_name
            _netns.run_in_netns(tap_ns, write_sysctl, f"net/ipv4/conf/{name}/forwarding", "1")
        guest = GuestIPConfig(
            address=address,
            gateway=gateway,
            nameservers=network.dns,
            hostname=plan.hostname,
            device=device,
            mac=mac,
            mtu=network.mtu,
        )
        return AttachedInterface(replace(nic, guest_mac=mac), guest, device)

    if isinstance(network, BridgedNetwork):
        record.add({"kind": "link", "name": nic.host_dev_name, "netns": tap_ns})
        _tap.create_tap(
            nic.host_dev_name, netns=tap_ns, uid=plan.uid, gid=plan.gid, bridge=network.bridge
        )
        guest_cfg = network.guest
        if guest_cfg is not None:
            guest_cfg = replace(guest_cfg, mac=mac, device=device)
        return AttachedInterface(replace(nic, guest_mac=mac), guest_cfg, device)

    record.add({"kind": "link", "name": nic.host_dev_name, "netns": tap_ns})
    _tap.create_tap(nic.host_dev_name, netns=tap_ns, uid=plan.uid, gid=plan.gid)
    return AttachedInterface(replace(nic, guest_mac=mac), None, device)
