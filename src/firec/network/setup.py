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

Each step is written to a record (``<state_dir>/networks/<vm_id>.json``)
as it is taken. If a step fails, everything done so far is undone in reverse
order and the error is raised. :func:`teardown_network` undoes a VM's
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

import contextlib
import dataclasses
import hashlib
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

from firec import _jsonfile
from firec.errors import ConfigError, NetworkError
from firec.network import cni as _cni
from firec.network import nat as _nat
from firec.network import netns as _netns
from firec.network import tap as _tap
from firec.network._netlink import netlink
from firec.network._sysctl import write_sysctl
from firec.network.guest_ip import GuestIPConfig, validate_hostname
from firec.network.interface import BridgedNetwork, CNINetwork, Interface, RoutedNetwork
from firec.network.leases import Lease, LeaseStore
from firec.network.mac import derive_mac
from firec.vm.process import ProcessRef

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

#: The format of network records (:mod:`firec._jsonfile`).
_NETWORK_RECORD = _jsonfile.Format("firec-network", 1)
#: What a network record's ``format`` key holds.
RECORD_FORMAT = str(_NETWORK_RECORD)
NS_UPLINK = "fchost"
"""The VM namespace's end of the veth pair to the host."""
_HOST_SIDE = IPv4Interface("169.254.77.1/32")
_NS_SIDE = IPv4Interface("169.254.77.2/32")
_VM_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")


def validate_vm_id(vm_id: str) -> str:
    """Return ``vm_id`` if usable (letters, digits, ``-``; at most 64: the jailer's ``--id``).

    >>> validate_vm_id("vm-1")
    'vm-1'
    """
    if not isinstance(vm_id, str) or not _VM_ID.fullmatch(vm_id):
        raise ConfigError(
            "vm_id",
            f"{vm_id!r} is not a VM id (letters, digits and '-', starting with a letter or "
            "digit, at most 64 characters)",
        )
    return vm_id


def vm_key(vm_id: str) -> str:
    """The VM's short key in link and chain names: 10 hex digits of SHA-256 of its id.

    >>> len(vm_key("vm1"))
    10
    """
    return hashlib.sha256(vm_id.encode()).hexdigest()[:10]


def netns_name(vm_id: str) -> str:
    """The name of the VM's network namespace: ``fc-<vm_id>``.

    >>> netns_name("vm1")
    'fc-vm1'
    """
    return f"fc-{validate_vm_id(vm_id)}"


def host_link_name(vm_id: str) -> str:
    """The host end of the VM's veth pair: ``fc<key>`` (12 characters)."""
    return f"fc{vm_key(vm_id)}"


def record_path(state_dir: str | os.PathLike[str], vm_id: str) -> Path:
    """Where the record of the VM's network set-up is kept."""
    return Path(state_dir) / "networks" / f"{validate_vm_id(vm_id)}.json"


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


# -- the record ---------------------------------------------------------------------------------


class _Record:
    """The write-ahead record of one VM's set-up steps.

    It names the process that set the network up (``owner``: pid, start time
    and boot, as :class:`~firec.vm.process.ProcessRef`), so that a clean-up of
    what crashed processes left (``firec gc``) never touches the network of a
    VM whose owner still runs. Written with :mod:`firec._jsonfile`: a full
    disk leaves no record behind, never an empty one.
    """

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    @classmethod
    def create(cls, path: Path, vm_id: str, host_netns: str | None) -> _Record:
        owner = ProcessRef.of(os.getpid())
        data: dict[str, Any] = {
            "vm_id": vm_id,
            "host_netns": host_netns,
            "owner": dataclasses.asdict(owner) if owner is not None else None,
            "steps": [],
        }
        try:
            _jsonfile.create(path, data, _NETWORK_RECORD, mode=0o644)
        except FileExistsError:
            raise NetworkError(
                f"the network of VM {vm_id!r} is already set up (record {path}); tear it down "
                "first (firec.network.teardown_network)"
            ) from None
        return cls(path, data)

    @classmethod
    def load(cls, path: Path) -> _Record | None:
        data = _jsonfile.read(path, _NETWORK_RECORD)
        return cls(path, data) if data is not None else None

    @property
    def owner(self) -> ProcessRef | None:
        """The process that set the network up (``None`` in records older than this field)."""
        owner = self.data.get("owner")
        if not isinstance(owner, dict):
            return None
        try:
            return ProcessRef(**owner)
        except TypeError:
            return None

    @property
    def steps(self) -> list[dict[str, Any]]:
        steps: list[dict[str, Any]] = self.data["steps"]
        return steps

    def add(self, step: dict[str, Any]) -> None:
        """Record ``step``, *before* taking it (undoing a step not taken is a no-op)."""
        self.steps.append(step)
        self.write()

    def write(self) -> None:
        # replaced atomically, not fsynced: what it records (links, namespaces, rules)
        # does not survive a power loss either, only a crash of this process
        _jsonfile.write(self.path, self.data, _NETWORK_RECORD, mode=0o644)

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def network_owner(vm_id: str, *, state_dir: str | os.PathLike[str]) -> ProcessRef | None:
    """The process that set up ``vm_id``'s network, if it has a record that names one.

    ``firec gc`` leaves a network alone while its owner runs.
    """
    record = _Record.load(record_path(state_dir, vm_id))
    return record.owner if record is not None else None


def _undo_step(step: dict[str, Any], state_dir: Path) -> None:
    kind = step["kind"]
    where = step.get("host_netns") if kind == "cni" else step.get("netns")
    if kind in ("link", "nft", "cni") and where is not None and not _netns.netns_exists(where):
        return  # the namespace is gone, and all it held with it
    if kind == "lease":
        LeaseStore(state_dir, step["subnet"]).release(step["owner"])
    elif kind == "netns":
        _netns.delete_netns(step["name"])
    elif kind == "link":
        _tap.delete_link(step["name"], netns=step.get("netns"))
    elif kind == "nft":
        _nat.NatTable(netns=step.get("netns"), lock_dir=state_dir).remove(
            step["key"],
            links=step["links"],
            addresses=[IPv4Address(a) for a in step["addresses"]],
        )
    elif kind == "cni":
        _cni.cni_del(
            _cni.CNIConfList.from_dict(step["conflist"]),
            container_id=step["container_id"],
            netns_path=step["netns_path"],
            ifname=step["ifname"],
            prev_result=step.get("result"),
            cni_path=[Path(p) for p in step["cni_path"]],
            args=step.get("args") or {},
            host_netns=step.get("host_netns"),
        )
    else:
        raise NetworkError(f"unknown step {kind!r} in a network record")


def _describe(step: dict[str, Any]) -> str:
    kind = str(step["kind"])
    if kind == "lease":
        return f"lease of {step['owner']} in {step['subnet']}"
    if kind == "netns":
        return f"network namespace {step['name']}"
    if kind == "link":
        where = f" in {step['netns']}" if step.get("netns") else ""
        return f"link {step['name']}{where}"
    if kind == "nft":
        return f"nft rules of vm_{step['key']}"
    if kind == "cni":
        return f"CNI network {step['conflist'].get('name')} ({step['ifname']})"
    return kind


def _undo(record: _Record, state_dir: Path) -> None:
    """Undo the recorded steps in reverse; keep the record (with what is left) on failure."""
    failures: list[str] = []
    left: list[dict[str, Any]] = []
    for step in reversed(list(record.steps)):
        try:
            _undo_step(step, state_dir)
        except Exception as exc:
            failures.append(f"{_describe(step)}: {exc}")
            left.insert(0, step)
    if failures:
        record.data["steps"] = left
        record.write()
        raise NetworkError(
            f"could not remove everything of VM {record.data.get('vm_id')!r} (record kept at "
            f"{record.path}; run teardown_network again once fixed):\n  " + "\n  ".join(failures)
        )
    record.remove()


def teardown_network(vm_id: str, *, state_dir: str | os.PathLike[str]) -> bool:
    """Remove everything the VM's network set-up created; return whether there was any.

    Reads the VM's record, so it works in a new process, after a crash, and
    after a half-finished set-up. Idempotent: objects already gone are
    skipped, and a VM without a record is a no-op (``False``). Run it after the
    VMM exited (a namespace in use outlives its name until its last process).

    Raises:
        NetworkError: something could not be removed; the record keeps what is
            left, and calling again retries it.
    """
    path = record_path(state_dir, vm_id)
    record = _Record.load(path)
    if record is None:
        return False
    _undo(record, Path(state_dir))
    return True


def reclaim_leases(
    state_dir: str | os.PathLike[str], is_alive: Callable[[Lease], bool] | None = None
) -> list[Lease]:
    """Free the leases of every subnet whose VM is gone; return them.

    By default a lease is alive while its VM has a network record (set-up
    writes it before leasing, teardown removes it after releasing), so this
    frees what a crashed process leased without recording. Pass ``is_alive``
    to decide otherwise (e.g. whether the VM's process still runs); it gets
    each :class:`~firec.network.leases.Lease` (``owner`` is
    ``"<vm_id>/<iface_id>"``).
    """
    root = Path(state_dir)

    def has_record(lease: Lease) -> bool:
        vm_id = lease.owner.split("/", 1)[0]
        try:
            return record_path(root, vm_id).exists()
        except ConfigError:
            return False  # not a firec VM id: not one of ours to keep

    check = is_alive or has_record
    freed: list[Lease] = []
    for path in sorted((root / "leases").glob("*.json")):
        freed += LeaseStore.from_file(path).reclaim(check)
    return freed


# -- planning and checks ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
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


def _make_plan(
    vm_id: str,
    interfaces: Sequence[Interface],
    *,
    state_dir: str | os.PathLike[str],
    netns: bool,
    uid: int | None,
    gid: int | None,
    hostname: str | None,
    host_netns: str | None,
) -> _Plan:
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
    return _Plan(
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


def _check_host(plan: _Plan) -> None:
    """Refuse, before any change, what would make set-up fail."""
    if record_path(plan.state_dir, plan.vm_id).exists():
        raise NetworkError(
            f"the network of VM {plan.vm_id!r} is already set up (record "
            f"{record_path(plan.state_dir, plan.vm_id)}); tear it down first"
        )
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
            _nft_rules(plan, [(r, IPv4Address("0.0.0.0")) for _, _, r in plan.routed])
        )


def _nft_rules(plan: _Plan, guests: Sequence[tuple[RoutedNetwork, IPv4Address]]) -> _nat.VMRules:
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
    plan = _make_plan(
        vm_id,
        interfaces,
        state_dir=state_dir,
        netns=netns,
        uid=uid,
        gid=gid,
        hostname=hostname,
        host_netns=host_netns,
    )
    _check_host(plan)
    record = _Record.create(record_path(plan.state_dir, vm_id), vm_id, host_netns)
    try:
        attached = _build(plan, record)
    except BaseException as exc:
        try:
            _undo(record, plan.state_dir)
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


def _build(plan: _Plan, record: _Record) -> tuple[AttachedInterface, ...]:
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
        rules = _nft_rules(plan, [(r, leased[i][0].ip) for i, _, r in plan.routed])
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


def _link_namespace(plan: _Plan, record: _Record, guests: Sequence[IPv4Address]) -> None:
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
    plan: _Plan,
    record: _Record,
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
