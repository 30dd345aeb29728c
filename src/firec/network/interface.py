"""A VM's network interface, and the plans that say how its tap reaches the world.

:class:`Interface` is the value the config builder takes
(``Builder.add_network_interface(firec.network.Interface(...))``) and the
Machine hands to :func:`firec.network.setup_network`. It names the
Firecracker device (``iface_id``), its tap (``host_dev_name``), the guest MAC
and rate limiters, and optionally a plan for the host side:

* :class:`RoutedNetwork`: firec leases the guest an address from a subnet,
  routes it (through the VM's namespace), masquerades its traffic, forwards
  host ports to it, and limits where it may connect (nftables);
* :class:`BridgedNetwork`: the tap joins an existing bridge (the bridge's
  owner handles addresses and NAT);
* :class:`CNINetwork`: a CNI conflist sets up the VM's namespace and firec
  couples the CNI interface to the tap;
* ``None``: just the tap.

Example:

>>> from firec.network import Interface, RoutedNetwork, PortForward
>>> nic = Interface("eth0", "tap0", network=RoutedNetwork(
...     subnet="172.30.0.0/16", nameservers=("1.1.1.1",),
...     port_forwards=(PortForward(2222, 22),), egress_allow=("0.0.0.0/0",)))
>>> nic.to_model().to_api()
{'iface_id': 'eth0', 'host_dev_name': 'tap0'}
>>> Interface("eth0", "tap-name-too-long")
Traceback (most recent call last):
...
firec.errors.ConfigError: host_dev_name: 'tap-name-too-long' is 17 characters long; Linux \
interface names have at most 15
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    ip_address,
)
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firec.errors import ConfigError
from firec.network.cni import DEFAULT_CNI_PATH, CNIConfList
from firec.network.guest_ip import GuestIPConfig
from firec.network.leases import parse_address, parse_subnet
from firec.network.mac import validate_mac
from firec.network.nat import PortForward
from firec.network.tap import validate_ifname

if TYPE_CHECKING:
    from firec.api.models import NetworkInterface, RateLimiter

__all__ = ["BridgedNetwork", "CNINetwork", "Interface", "NetworkPlan", "RoutedNetwork"]

_IFACE_ID = re.compile(r"[A-Za-z0-9_]+")


def _parse_nameservers(values: Sequence[Any]) -> tuple[IPv4Address | IPv6Address, ...]:
    if isinstance(values, str):
        raise ConfigError("nameservers", "give a sequence of addresses, not one string")
    out: list[IPv4Address | IPv6Address] = []
    for i, value in enumerate(values):
        try:
            out.append(value if isinstance(value, IPv4Address | IPv6Address) else ip_address(value))
        except ValueError:
            raise ConfigError(f"nameservers[{i}]", f"{value!r} is not an IP address") from None
    return tuple(out)


def _parse_allow(values: Sequence[Any]) -> tuple[IPv4Network, ...]:
    if isinstance(values, str):
        raise ConfigError("egress_allow", "give a sequence of CIDRs, not one string")
    out: list[IPv4Network] = []
    for i, value in enumerate(values):
        if isinstance(value, IPv4Network):
            out.append(value)
            continue
        try:
            out.append(IPv4Network(value, strict=True))
        except ValueError as exc:
            raise ConfigError(
                f"egress_allow[{i}]", f"{value!r} is not an IPv4 address or CIDR ({exc})"
            ) from None
    return tuple(out)


@dataclass(frozen=True)
class RoutedNetwork:
    """Routed networking with a leased address, NAT, port forwards and an allow-list.

    The guest gets an address from ``subnet`` (the next free one, or
    ``address``), with the subnet's first host address (or ``gateway``) as its
    default gateway, which lives on the tap. Its traffic is routed through the
    VM's namespace to the host, masqueraded behind the host's address
    (``masquerade``), and limited to ``egress_allow`` (every destination when
    ``None``; nothing but replies when empty). Host ports in ``port_forwards``
    reach the guest. IPv4 only.

    Clones: a VM restored from a snapshot keeps the address (and MAC) of the VM
    the snapshot was taken from. Give that address as ``guest_address`` (and
    the original ``guest_mac`` to the :class:`Interface`): firec then leases a
    fresh address as usual and translates between the two inside the clone's
    own namespace (1:1 NAT), so any number of clones of one snapshot run side
    by side, each reachable at its own leased address.

    Attributes:
        subnet: the subnet leases come from (CIDR; at most /30).
        address: a specific guest address to lease.
        gateway: the gateway address (default: the subnet's first host address).
        nameservers: DNS servers for the guest (``ip=`` carries two; MMDS all).
        masquerade: masquerade the guest's outgoing traffic behind the host.
        port_forwards: host ports forwarded to the guest.
        egress_allow: CIDRs the guest may connect to (``None``: anywhere).
        mtu: MTU of the tap (and of the guest, through MMDS).
        guest_address: the address the guest itself uses, when it is not its
            lease (a clone); needs the VM's namespace.
    """

    subnet: str | IPv4Network
    address: str | IPv4Address | None = None
    gateway: str | IPv4Address | None = None
    nameservers: Sequence[str | IPv4Address | IPv6Address] = ()
    masquerade: bool = True
    port_forwards: Sequence[PortForward] = ()
    egress_allow: Sequence[str | IPv4Network] | None = None
    mtu: int | None = None
    guest_address: str | IPv4Address | None = None

    def __post_init__(self) -> None:
        net = parse_subnet(self.subnet)
        object.__setattr__(self, "subnet", net)
        if self.gateway is not None:
            object.__setattr__(self, "gateway", parse_address(self.gateway, "gateway"))
        object.__setattr__(self, "nameservers", _parse_nameservers(self.nameservers))
        forwards = tuple(self.port_forwards)
        for i, fwd in enumerate(forwards):
            if not isinstance(fwd, PortForward):
                raise ConfigError(f"port_forwards[{i}]", f"{fwd!r} is not a PortForward")
        object.__setattr__(self, "port_forwards", forwards)
        if self.egress_allow is not None:
            object.__setattr__(self, "egress_allow", _parse_allow(self.egress_allow))
        if not isinstance(self.masquerade, bool):
            raise ConfigError("masquerade", f"{self.masquerade!r} is not a bool")
        if self.mtu is not None and not (isinstance(self.mtu, int) and 68 <= self.mtu <= 65535):
            raise ConfigError("mtu", f"{self.mtu!r} is not an MTU between 68 and 65535")
        gateway = self.gateway_address or net.network_address + 1
        for name in ("address", "guest_address"):
            value = getattr(self, name)
            if value is None:
                continue
            value = parse_address(value, name)
            object.__setattr__(self, name, value)
            if value not in net:
                raise ConfigError(name, f"{value} is not in subnet {net}")
            if value in (net.network_address, net.broadcast_address):
                raise ConfigError(name, f"{value} is the network or broadcast address of {net}")
            if value == gateway:
                raise ConfigError(name, f"{value} is the gateway of {net}")
        if gateway not in net or gateway in (net.network_address, net.broadcast_address):
            raise ConfigError("gateway", f"{gateway} is not a host address of subnet {net}")

    @property
    def network(self) -> IPv4Network:
        """``subnet`` as an :class:`~ipaddress.IPv4Network`."""
        return parse_subnet(self.subnet)

    @property
    def wanted_address(self) -> IPv4Address | None:
        """``address`` as an :class:`~ipaddress.IPv4Address`."""
        return None if self.address is None else parse_address(self.address, "address")

    @property
    def inner_address(self) -> IPv4Address | None:
        """``guest_address`` as an :class:`~ipaddress.IPv4Address`."""
        if self.guest_address is None:
            return None
        return parse_address(self.guest_address, "guest_address")

    @property
    def gateway_address(self) -> IPv4Address | None:
        """``gateway`` as an :class:`~ipaddress.IPv4Address` (``None``: the default)."""
        return None if self.gateway is None else parse_address(self.gateway, "gateway")

    @property
    def dns(self) -> tuple[IPv4Address | IPv6Address, ...]:
        """``nameservers`` as addresses."""
        return _parse_nameservers(self.nameservers)

    @property
    def allow(self) -> tuple[IPv4Network, ...] | None:
        """``egress_allow`` as networks (``None``: anywhere)."""
        return None if self.egress_allow is None else _parse_allow(self.egress_allow)


@dataclass(frozen=True)
class BridgedNetwork:
    """Attach the tap to an existing bridge (on the host; not with a VM namespace).

    Attributes:
        bridge: the bridge's name.
        guest: the guest's static IP configuration, if firec should pass one on
            (``ip=``/MMDS); the bridge's owner runs DHCP otherwise.
    """

    bridge: str
    guest: GuestIPConfig | None = None

    def __post_init__(self) -> None:
        validate_ifname(self.bridge, "bridge")
        if self.guest is not None and not isinstance(self.guest, GuestIPConfig):
            raise ConfigError("guest", f"{self.guest!r} is not a GuestIPConfig")


@dataclass(frozen=True)
class CNINetwork:
    """Set the VM's namespace up with a CNI conflist (needs a VM namespace).

    Attributes:
        conflist: the conflist: a :class:`CNIConfList`, a path, or its JSON data.
        ifname: the interface the plugins create in the VM's namespace.
        cni_path: where the plugins are.
        args: ``CNI_ARGS`` key/value pairs.
    """

    conflist: CNIConfList | str | os.PathLike[str] | Mapping[str, Any]
    ifname: str = "eth0"
    cni_path: Sequence[str | os.PathLike[str]] = DEFAULT_CNI_PATH
    args: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.conflist, CNIConfList):
            conf = self.conflist
        elif isinstance(self.conflist, Mapping):
            conf = CNIConfList.from_dict(self.conflist)
        else:
            conf = CNIConfList.load(self.conflist)
        object.__setattr__(self, "conflist", conf)
        validate_ifname(self.ifname, "ifname")
        object.__setattr__(self, "cni_path", tuple(Path(p) for p in self.cni_path))
        object.__setattr__(self, "args", dict(self.args))

    @property
    def conf(self) -> CNIConfList:
        """The conflist, read."""
        assert isinstance(self.conflist, CNIConfList)
        return self.conflist

    @property
    def plugin_path(self) -> tuple[Path, ...]:
        """``cni_path`` as paths."""
        return tuple(Path(p) for p in self.cni_path)


NetworkPlan = RoutedNetwork | BridgedNetwork | CNINetwork
"""How an interface's tap reaches the world."""


@dataclass(frozen=True)
class Interface:
    """One virtio-net interface of a VM: the Firecracker device and its host tap.

    Attributes:
        iface_id: Firecracker's id of the device (letters, digits, ``_``).
        host_dev_name: the tap's name (at most 15 characters).
        guest_mac: the guest's MAC; ``None`` lets firec derive one from the VM
            and interface ids when it sets the network up (see
            :func:`firec.network.mac.derive_mac`), or Firecracker pick one.
        rx_rate_limiter: limits what the guest receives.
        tx_rate_limiter: limits what the guest sends.
        network: how the tap reaches the world (``None``: only the tap).
    """

    iface_id: str
    host_dev_name: str
    guest_mac: str | None = None
    rx_rate_limiter: RateLimiter | None = None
    tx_rate_limiter: RateLimiter | None = None
    network: NetworkPlan | None = None

    def __post_init__(self) -> None:
        from firec.api.models import RateLimiter

        if not isinstance(self.iface_id, str) or not _IFACE_ID.fullmatch(self.iface_id):
            raise ConfigError(
                "iface_id", f"{self.iface_id!r} is not an interface id (letters, digits, '_')"
            )
        validate_ifname(self.host_dev_name)
        if self.guest_mac is not None:
            object.__setattr__(self, "guest_mac", validate_mac(self.guest_mac))
        for name in ("rx_rate_limiter", "tx_rate_limiter"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, RateLimiter):
                raise ConfigError(name, f"{value!r} is not a firec.api.models.RateLimiter")
        if self.network is not None and not isinstance(
            self.network, RoutedNetwork | BridgedNetwork | CNINetwork
        ):
            raise ConfigError(
                "network",
                f"{self.network!r} is not a RoutedNetwork, BridgedNetwork or CNINetwork",
            )

    def to_model(self) -> NetworkInterface:
        """The body of ``PUT /network-interfaces/{iface_id}`` for this interface."""
        from firec.api.models import NetworkInterface

        body: dict[str, Any] = {"iface_id": self.iface_id, "host_dev_name": self.host_dev_name}
        if self.guest_mac is not None:
            body["guest_mac"] = self.guest_mac
        if self.rx_rate_limiter is not None:
            body["rx_rate_limiter"] = self.rx_rate_limiter
        if self.tx_rate_limiter is not None:
            body["tx_rate_limiter"] = self.tx_rate_limiter
        return NetworkInterface(**body)
