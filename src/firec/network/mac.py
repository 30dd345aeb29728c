"""MAC addresses: validation, and deterministic derivation from (VM id, interface id).

A derived MAC is a locally administered unicast address (first octet ``06``:
the "locally administered" bit set, the "multicast" bit clear), followed by
five bytes of SHA-256 of the VM id and the interface id. The same VM and
interface always get the same MAC, across restarts and hosts, so a guest's
udev names and DHCP leases stay put; different ones differ.

>>> derive_mac("vm1", "eth0") == derive_mac("vm1", "eth0")
True
>>> derive_mac("vm1", "eth0").startswith("06:")
True
>>> derive_mac("vm1", "eth0") != derive_mac("vm1", "eth1")
True
>>> validate_mac("06:AB:cd:00:11:22")
'06:ab:cd:00:11:22'
"""

from __future__ import annotations

import hashlib
import re

from firec.errors import ConfigError

__all__ = ["derive_mac", "validate_mac"]

_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_PREFIX = 0x06
"""Locally administered (0x02), unicast (0x01 clear)."""


def derive_mac(vm_id: str, iface_id: str) -> str:
    """The MAC of interface ``iface_id`` of VM ``vm_id``: ``06:xx:xx:xx:xx:xx``."""
    digest = hashlib.sha256(f"firec-mac\0{vm_id}\0{iface_id}".encode()).digest()
    return ":".join(f"{b:02x}" for b in bytes([_PREFIX]) + digest[:5])


def validate_mac(mac: str, field: str = "guest_mac") -> str:
    """Return ``mac`` in lower case if it is a usable guest MAC, else raise :class:`ConfigError`.

    Six colon-separated hex bytes (what Firecracker takes); a multicast
    address (lowest bit of the first octet set) or the all-zero address
    cannot be an interface's own address and is refused.

    >>> validate_mac("01:00:5e:00:00:01")
    Traceback (most recent call last):
    ...
    firec.errors.ConfigError: guest_mac: '01:00:5e:00:00:01' is a multicast address; \
an interface needs a unicast MAC (first octet even)
    """
    if not isinstance(mac, str) or not _MAC.fullmatch(mac):
        raise ConfigError(
            field,
            f"{mac!r} is not a MAC address (six colon-separated hex bytes, 06:00:ac:10:00:02)",
        )
    value = mac.lower()
    if int(value[:2], 16) & 0x01:
        raise ConfigError(
            field,
            f"{mac!r} is a multicast address; an interface needs a unicast MAC (first octet even)",
        )
    if value == "00:00:00:00:00:00":
        raise ConfigError(field, "00:00:00:00:00:00 is not a usable MAC address")
    return value
