"""A guest's own identity: what each VM restored from one snapshot must not share.

Every VM restored from a snapshot wakes with the snapshot's clock, kernel
random state, hostname and MAC addresses: two clones would draw the same
"random" numbers (the same TLS keys, UUIDs, ASLR of new processes) and answer
with the same MAC. :class:`GuestIdentity` is what the host sends each one
through the agent (the ``identity`` operation, docs/agent-protocol.md): the
time now, a fresh random seed the guest's kernel is reseeded with, a
hostname, and a MAC per interface. The agent applies it as the guest's init;
as a service (firec's emulator) it applies nothing and says so.

On Firecracker 1.8+ a guest kernel built with ``CONFIG_VMGENID`` also reseeds
itself at restore (the VMGenID device); the seed makes that true on every
version and kernel, before any code of the caller runs.

Example::

    >>> identity = GuestIdentity.fresh("sandbox-7", {"eth0": "06:00:0a:00:00:07"})
    >>> sorted(identity.request())
    ['hostname', 'macs', 'op', 'seed', 'time']
    >>> len(identity.seed), identity  # the seed is never shown
    (32, GuestIdentity(hostname='sandbox-7', macs={'eth0': '06:00:0a:00:00:07'}, time=...))
"""

from __future__ import annotations

import re
import secrets
import time as time_module
from collections.abc import Mapping
from dataclasses import dataclass, field

from firec.errors import ValidationError
from firec.network.mac import validate_mac

__all__ = ["SEED_BYTES", "GuestIdentity", "is_hostname"]

#: Bytes of the random seed each guest is given (256 bits, credited to its kernel's pool).
SEED_BYTES = 32
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,62}[A-Za-z0-9])?")
_IFNAME = re.compile(r"[^/\s]{1,15}")


def is_hostname(name: str) -> bool:
    """Whether ``name`` can be a guest's hostname: 1 to 64 letters, digits, ``-`` or ``.``,
    starting and ending with a letter or digit.

    >>> is_hostname("sandbox-7"), is_hostname("-x"), is_hostname("a_b")
    (True, False, False)
    """
    return bool(_HOSTNAME.fullmatch(name))


@dataclass(frozen=True)
class GuestIdentity:
    """What one guest is told it is (each member optional: ``None`` or empty keeps the guest's).

    Attributes:
        hostname: its hostname (letters, digits, ``-`` and ``.``, at most 64).
        macs: guest interface name (``eth0``, ``eth1``...) -> its MAC address.
        seed: random bytes its kernel's pool is credited with, then reseeded from.
        time: the wall clock to set, in seconds since the epoch.

    Raises:
        ValidationError: a hostname, interface name or seed the guest would refuse.
        ConfigError: a MAC that is not a unicast address.
    """

    hostname: str | None = None
    macs: Mapping[str, str] = field(default_factory=dict)
    seed: bytes = field(default=b"", repr=False)
    time: float | None = None

    def __post_init__(self) -> None:
        if self.hostname is not None and not is_hostname(self.hostname):
            raise ValidationError(
                "hostname",
                f"{self.hostname!r} is not a hostname: 1 to 64 letters, digits, '-' or '.'",
            )
        for name, mac in self.macs.items():
            if not _IFNAME.fullmatch(name):
                raise ValidationError(f"macs.{name}", "not an interface name (1 to 15 bytes)")
            validate_mac(mac, f"macs.{name}")
        if len(self.seed) > 512:
            raise ValidationError("seed", f"at most 512 bytes, not {len(self.seed)}")

    @classmethod
    def fresh(
        cls, hostname: str | None = None, macs: Mapping[str, str] | None = None
    ) -> GuestIdentity:
        """An identity with the time now and a new random seed of :data:`SEED_BYTES`."""
        return cls(
            hostname=hostname,
            macs=dict(macs or {}),
            seed=secrets.token_bytes(SEED_BYTES),
            time=time_module.time(),
        )

    def request(self) -> dict[str, object]:
        """The agent's ``identity`` request for it (the seed in hex)."""
        message: dict[str, object] = {"op": "identity"}
        if self.time is not None:
            message["time"] = self.time
        if self.seed:
            message["seed"] = self.seed.hex()
        if self.hostname is not None:
            message["hostname"] = self.hostname
        if self.macs:
            message["macs"] = dict(self.macs)
        return message
