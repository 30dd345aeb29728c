"""A guest's IP configuration: as a kernel ``ip=`` boot argument, and as an MMDS document.

The kernel's own IP autoconfiguration (``CONFIG_IP_PNP``, see the kernel's
``Documentation/admin-guide/nfs/nfsroot.rst``) reads::

    ip=<client-ip>:<server-ip>:<gw-ip>:<netmask>:<hostname>:<device>:<autoconf>:<dns0-ip>:<dns1-ip>:<ntp0-ip>

:meth:`GuestIPConfig.kernel_ip_arg` writes exactly the fields a static set-up
needs and nothing after the last one used: no NFS server, a dotted netmask
(never a prefix length), the device named explicitly (``eth0``: with several
devices the kernel would otherwise try them all), autoconf ``off`` (no
DHCP/BOOTP/RARP, no waiting), then at most two IPv4 name servers (the kernel
writes them to ``/proc/net/pnp``; link ``/etc/resolv.conf`` there)::

    ip=172.30.0.2::172.30.0.1:255.255.0.0:vm1:eth0:off:1.1.1.1

A guest kernel built without ``CONFIG_IP_PNP`` (as several published 6.1
guest configurations are) does not know ``ip=`` at all and hands it to init
("Unknown kernel command line parameters ... will be passed to user space",
go-sdk#516): such a guest reads the same data from MMDS instead
(:meth:`GuestIPConfig.mmds`), which also carries what ``ip=`` cannot (IPv6,
MTU, MAC, more name servers, search domains).

Example:

>>> from ipaddress import IPv4Interface, IPv4Address
>>> cfg = GuestIPConfig(
...     address=IPv4Interface("172.30.0.2/16"), gateway=IPv4Address("172.30.0.1"),
...     nameservers=(IPv4Address("1.1.1.1"),), hostname="vm1")
>>> cfg.kernel_ip_arg()
'ip=172.30.0.2::172.30.0.1:255.255.0.0:vm1:eth0:off:1.1.1.1'
>>> cfg.mmds()["ipv4"]
{'address': '172.30.0.2', 'prefix-length': '16', 'netmask': '255.255.0.0', 'cidr': \
'172.30.0.2/16', 'gateway': '172.30.0.1'}
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface

from firec.errors import ConfigError
from firec.network.mac import validate_mac
from firec.network.tap import validate_ifname

__all__ = ["GuestIPConfig", "validate_hostname"]

_HOSTNAME_MAX = 64
"""The kernel's ``__NEW_UTS_LEN``: longer names are cut short by ``ip=``."""
_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def validate_hostname(name: str, field: str = "hostname") -> str:
    """Return ``name`` if it is a hostname the kernel and DNS both take, else raise.

    Dot-separated labels of letters, digits and inner ``-``, at most 64
    characters in all. With ``ip=``, the part before the first dot becomes the
    host name and the rest the NIS domain name.

    >>> validate_hostname("vm-1")
    'vm-1'
    >>> validate_hostname("vm:1")
    Traceback (most recent call last):
    ...
    firec.errors.ConfigError: hostname: 'vm:1' is not a valid host name (letters, digits and \
inner '-' in dot-separated labels, at most 64 characters)
    """
    ok = (
        isinstance(name, str)
        and 0 < len(name) <= _HOSTNAME_MAX
        and all(_LABEL.fullmatch(label) for label in name.split("."))
    )
    if not ok:
        raise ConfigError(
            field,
            f"{name!r} is not a valid host name (letters, digits and inner '-' in dot-separated "
            f"labels, at most {_HOSTNAME_MAX} characters)",
        )
    return name


@dataclass(frozen=True)
class GuestIPConfig:
    """The IP configuration of one guest interface.

    Attributes:
        address: the guest's IPv4 address with its prefix length.
        gateway: the default gateway, if any (it must be on ``address``'s subnet).
        nameservers: DNS servers, IPv4 or IPv6 (``ip=`` carries the first two IPv4 ones).
        hostname: the guest's host name.
        device: the guest's device name (``eth0`` for the first virtio-net device).
        mac: the guest interface's MAC address.
        mtu: the link MTU.
        ipv6_address: an IPv6 address with prefix length (MMDS only).
        ipv6_gateway: the IPv6 default gateway (MMDS only).
        search_domains: DNS search domains (MMDS only).
    """

    address: IPv4Interface
    gateway: IPv4Address | None = None
    nameservers: tuple[IPv4Address | IPv6Address, ...] = ()
    hostname: str | None = None
    device: str = "eth0"
    mac: str | None = None
    mtu: int | None = None
    ipv6_address: IPv6Interface | None = None
    ipv6_gateway: IPv6Address | None = None
    search_domains: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.address, IPv4Interface):
            raise ConfigError("address", f"{self.address!r} is not an IPv4Interface (addr/prefix)")
        if (
            self.address.ip
            in (
                self.address.network.network_address,
                self.address.network.broadcast_address,
            )
            and self.address.network.prefixlen < 31
        ):
            raise ConfigError(
                "address", f"{self.address} is the network or broadcast address of its subnet"
            )
        if self.gateway is not None:
            if not isinstance(self.gateway, IPv4Address):
                raise ConfigError("gateway", f"{self.gateway!r} is not an IPv4Address")
            if self.gateway not in self.address.network:
                raise ConfigError(
                    "gateway",
                    f"{self.gateway} is not on the guest's subnet {self.address.network}; the "
                    "kernel could not reach it",
                )
            if self.gateway == self.address.ip:
                raise ConfigError("gateway", f"{self.gateway} is the guest's own address")
        for i, server in enumerate(self.nameservers):
            if not isinstance(server, IPv4Address | IPv6Address):
                raise ConfigError(f"nameservers[{i}]", f"{server!r} is not an IP address")
        if self.hostname is not None:
            validate_hostname(self.hostname)
        validate_ifname(self.device, "device")
        if self.mac is not None:
            object.__setattr__(self, "mac", validate_mac(self.mac, "mac"))
        if self.mtu is not None and not (isinstance(self.mtu, int) and 68 <= self.mtu <= 65535):
            raise ConfigError("mtu", f"{self.mtu!r} is not an MTU between 68 and 65535")
        if self.ipv6_address is not None and not isinstance(self.ipv6_address, IPv6Interface):
            raise ConfigError("ipv6_address", f"{self.ipv6_address!r} is not an IPv6Interface")
        if self.ipv6_gateway is not None and not isinstance(self.ipv6_gateway, IPv6Address):
            raise ConfigError("ipv6_gateway", f"{self.ipv6_gateway!r} is not an IPv6Address")
        for i, domain in enumerate(self.search_domains):
            validate_hostname(domain, f"search_domains[{i}]")

    def kernel_ip_arg(self) -> str:
        """The ``ip=`` kernel boot argument that configures this interface at boot.

        Empty trailing fields are left out; IPv6, MTU, MAC and search domains
        have no place in ``ip=`` (use :meth:`mmds`).
        """
        dns = [str(s) for s in self.nameservers if isinstance(s, IPv4Address)][:2]
        fields = [
            str(self.address.ip),
            "",  # NFS server: none
            "" if self.gateway is None else str(self.gateway),
            str(self.address.netmask),
            self.hostname or "",
            self.device,
            "off",
            *dns,
        ]
        return "ip=" + ":".join(fields)

    def mmds(self) -> dict[str, object]:
        """This configuration as an MMDS document for the guest's own network set-up.

        Every leaf is a string and there are no lists, so the document reads the
        same in MMDS's JSON and IMDS formats (IMDS serves only strings and
        objects). Lists (name servers, search domains) are space-separated
        strings, like ``resolv.conf`` writes them. Absent values are left out::

            {"device": "eth0", "mac": "06:..", "mtu": "1500", "hostname": "vm1",
             "ipv4": {"address": "172.30.0.2", "prefix-length": "16",
                      "netmask": "255.255.0.0", "cidr": "172.30.0.2/16",
                      "gateway": "172.30.0.1"},
             "ipv6": {"address": "fd00::2", "prefix-length": "64",
                      "cidr": "fd00::2/64", "gateway": "fd00::1"},
             "nameservers": "1.1.1.1 2606:4700:4700::1111",
             "search": "example.com"}
        """
        ipv4: dict[str, str] = {
            "address": str(self.address.ip),
            "prefix-length": str(self.address.network.prefixlen),
            "netmask": str(self.address.netmask),
            "cidr": str(self.address),
        }
        if self.gateway is not None:
            ipv4["gateway"] = str(self.gateway)
        doc: dict[str, object] = {"device": self.device}
        if self.mac is not None:
            doc["mac"] = self.mac
        if self.mtu is not None:
            doc["mtu"] = str(self.mtu)
        if self.hostname is not None:
            doc["hostname"] = self.hostname
        doc["ipv4"] = ipv4
        if self.ipv6_address is not None:
            ipv6: dict[str, str] = {
                "address": str(self.ipv6_address.ip),
                "prefix-length": str(self.ipv6_address.network.prefixlen),
                "cidr": str(self.ipv6_address),
            }
            if self.ipv6_gateway is not None:
                ipv6["gateway"] = str(self.ipv6_gateway)
            doc["ipv6"] = ipv6
        if self.nameservers:
            doc["nameservers"] = " ".join(str(s) for s in self.nameservers)
        if self.search_domains:
            doc["search"] = " ".join(self.search_domains)
        return doc
