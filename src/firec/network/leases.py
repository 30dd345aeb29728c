"""IPv4 leases: addresses for guests, from a configurable subnet, kept on disk.

One JSON file per subnet under ``<state_dir>/leases/``, rewritten atomically
and synced to the disk under its lock (:mod:`firec._jsonfile`), so concurrent
processes on the host never hand out the same address and a restart (even
after a power loss) finds every lease again. The subnet's
gateway (its first host address, unless told otherwise) is never leased, nor
are its network and broadcast addresses. Addresses are handed out round-robin
(the one after the last handed out), so a released address is not reused at
once while stale ARP or conntrack entries may still point at it.

Example::

    >>> store = LeaseStore(state_dir, "172.30.0.0/24")             # doctest: +SKIP
    >>> store.allocate("vm1/eth0")                                 # doctest: +SKIP
    Lease(owner='vm1/eth0', address=IPv4Address('172.30.0.2'), ...)
    >>> store.allocate("vm2/eth0", address="172.30.0.2")           # doctest: +SKIP
    Traceback (most recent call last):
    firec.errors.NetworkError: 172.30.0.2 is already leased to 'vm1/eth0' in 172.30.0.0/24 ...
    >>> store.reclaim(lambda lease: vm_is_running(lease.owner))    # doctest: +SKIP
    [...the leases whose VM is gone, now free again...]
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import (
    AddressValueError,
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    NetmaskValueError,
)
from pathlib import Path
from typing import Any

from firec import _jsonfile
from firec.errors import ConfigError, NetworkError, StateError

__all__ = ["FORMAT", "Lease", "LeaseStore", "parse_address", "parse_subnet"]

_LEASE_FILE = _jsonfile.Format("firec-leases", 1)
FORMAT = str(_LEASE_FILE)
"""The ``format`` key of a lease file."""

_LOCK_TIMEOUT = 30.0
_MAX_PREFIX = 30


@dataclass(frozen=True)
class Lease:
    """One address held by one owner.

    Attributes:
        owner: who holds it (firec uses ``"<vm_id>/<iface_id>"``).
        address: the leased address.
        subnet: the subnet it comes from.
        gateway: the subnet's gateway (the guest's default route).
        created: when it was handed out (seconds since the epoch).
    """

    owner: str
    address: IPv4Address
    subnet: IPv4Network
    gateway: IPv4Address
    created: float

    @property
    def interface(self) -> IPv4Interface:
        """The address with the subnet's prefix length (``172.30.0.2/24``)."""
        return IPv4Interface(f"{self.address}/{self.subnet.prefixlen}")


def parse_subnet(value: str | IPv4Network, field: str = "subnet") -> IPv4Network:
    """Read an IPv4 subnet in CIDR form, or raise :class:`ConfigError` saying what is wrong.

    >>> parse_subnet("172.30.0.0/16")
    IPv4Network('172.30.0.0/16')
    >>> parse_subnet("172.30.0.1/16")
    Traceback (most recent call last):
    ...
    firec.errors.ConfigError: subnet: '172.30.0.1/16' has host bits set; did you mean 172.30.0.0/16?
    >>> parse_subnet("10.0.0.0/31")
    Traceback (most recent call last):
    ...
    firec.errors.ConfigError: subnet: 10.0.0.0/31 is too small: it needs room for a gateway \
and a guest (a prefix of at most /30)
    """
    if isinstance(value, IPv4Network):
        net = value
    else:
        if not isinstance(value, str) or "/" not in value:
            raise ConfigError(
                field, f"{value!r} is not an IPv4 subnet in CIDR form (like 172.30.0.0/16)"
            )
        try:
            net = IPv4Network(value, strict=True)
        except ValueError as exc:
            try:
                loose = IPv4Network(value, strict=False)
            except (AddressValueError, NetmaskValueError, ValueError):
                raise ConfigError(
                    field, f"{value!r} is not an IPv4 subnet in CIDR form (like 172.30.0.0/16)"
                ) from exc
            raise ConfigError(field, f"{value!r} has host bits set; did you mean {loose}?") from exc
    if net.prefixlen > _MAX_PREFIX:
        raise ConfigError(
            field,
            f"{net} is too small: it needs room for a gateway and a guest (a prefix of at most "
            f"/{_MAX_PREFIX})",
        )
    return net


def parse_address(value: str | IPv4Address, field: str) -> IPv4Address:
    """Read an IPv4 address, or raise :class:`ConfigError` naming ``field``."""
    if isinstance(value, IPv4Address):
        return value
    try:
        return IPv4Address(value)
    except (AddressValueError, ValueError):
        raise ConfigError(field, f"{value!r} is not an IPv4 address") from None


class LeaseStore:
    """The leases of one subnet, persisted in ``<state_dir>/leases/<subnet>.json``.

    Every method takes the file lock, reads the file, and (when it changes
    anything) rewrites it atomically before releasing the lock. Instances are
    cheap; any number of them, in any number of processes, may share a file.

    Args:
        state_dir: firec's state directory (created if missing).
        subnet: the subnet to lease from, in CIDR form.
        gateway: the address kept for the host side (default: the subnet's
            first host address). A subnet's gateway is fixed by its first use.

    Raises:
        ConfigError: invalid subnet or gateway, or a gateway that differs from
            the one the existing lease file records.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        subnet: str | IPv4Network,
        *,
        gateway: str | IPv4Address | None = None,
    ) -> None:
        self.subnet = parse_subnet(subnet)
        first = self.subnet.network_address + 1
        self.gateway = first if gateway is None else parse_address(gateway, "gateway")
        if self.gateway not in self.subnet or self.gateway in (
            self.subnet.network_address,
            self.subnet.broadcast_address,
        ):
            raise ConfigError(
                "gateway", f"{self.gateway} is not a host address of subnet {self.subnet}"
            )
        self.directory = Path(state_dir) / "leases"
        stem = f"{self.subnet.network_address}_{self.subnet.prefixlen}"
        self.path = self.directory / f"{stem}.json"
        self._lock = _jsonfile.Lock(self.path, mode=0o644)  # <stem>.lock
        self._explicit_gateway = gateway is not None
        if self.path.exists():
            with self._locked():
                pass  # reads the file: its gateway wins, or a conflicting one is refused

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> LeaseStore:
        """The store of the lease file ``path`` (``<state_dir>/leases/<subnet>.json``).

        Raises:
            NetworkError: the file cannot be read, or is not a lease file.
            StateError: it is the lease file of a newer firec (naming both formats).
        """
        path = Path(path)
        try:
            data = _jsonfile.read(path, _LEASE_FILE)
            if data is None:
                raise StateError(path, "No such file or directory")
            subnet = data["subnet"]
        except _jsonfile.NewerFormatError:
            raise
        except StateError as exc:
            raise NetworkError(f"could not read lease file {path}: {exc.reason}") from exc
        except KeyError:
            raise NetworkError(f"could not read lease file {path}: it names no subnet") from None
        return cls(path.parent.parent, subnet)

    # -- public API --------------------------------------------------------------------------

    def allocate(self, owner: str, *, address: str | IPv4Address | None = None) -> Lease:
        """Lease an address to ``owner`` (the given one, or the next free one).

        Idempotent: an owner that already holds a lease gets it back (asking
        for a different specific address is then a conflict).

        Raises:
            ConfigError: ``address`` is not a guest address of this subnet.
            NetworkError: ``address`` is leased to someone else, or the subnet
                is exhausted.
        """
        wanted = self._check_address(address)
        with self._locked() as state:
            lease = self._pick(state, owner, wanted)
            if lease.owner in state["leases"]:
                return lease
            state["leases"][owner] = {"address": str(lease.address), "created": lease.created}
            state["next"] = str(lease.address)
            return lease  # written as the block ends

    def check(self, owner: str, *, address: str | IPv4Address | None = None) -> None:
        """Raise what :meth:`allocate` would raise, without leasing anything."""
        wanted = self._check_address(address)
        with self._locked() as state:
            self._pick(state, owner, wanted)

    def release(self, owner: str) -> Lease | None:
        """Give ``owner``'s address back; return the lease it held (``None``: none)."""
        with self._locked() as state:
            entry = state["leases"].pop(owner, None)
            if entry is None:
                return None
            return self._lease(owner, entry)

    def get(self, owner: str) -> Lease | None:
        """``owner``'s lease, if it holds one."""
        with self._locked() as state:
            entry = state["leases"].get(owner)
            return None if entry is None else self._lease(owner, entry)

    def leases(self) -> list[Lease]:
        """Every lease, ordered by address."""
        with self._locked() as state:
            found = [self._lease(o, e) for o, e in state["leases"].items()]
        return sorted(found, key=lambda lease: lease.address)

    def free(self) -> int:
        """How many addresses are still free."""
        with self._locked() as state:
            return self._capacity() - len(state["leases"])

    def reclaim(self, is_alive: Callable[[Lease], bool]) -> list[Lease]:
        """Release every lease whose owner ``is_alive`` says is gone; return them.

        ``is_alive`` is called with each lease, under the lock; keep it quick
        (e.g. look up a pid or a VM record).
        """
        with self._locked() as state:
            gone = [
                self._lease(owner, entry)
                for owner, entry in list(state["leases"].items())
                if not is_alive(self._lease(owner, entry))
            ]
            for lease in gone:
                del state["leases"][lease.owner]
        return gone

    # -- internals ---------------------------------------------------------------------------

    def _capacity(self) -> int:
        return self.subnet.num_addresses - 3

    def _check_address(self, address: str | IPv4Address | None) -> IPv4Address | None:
        if address is None:
            return None
        wanted = parse_address(address, "address")
        if wanted not in self.subnet:
            raise ConfigError("address", f"{wanted} is not in subnet {self.subnet}")
        if wanted in (self.subnet.network_address, self.subnet.broadcast_address):
            raise ConfigError(
                "address", f"{wanted} is the network or broadcast address of {self.subnet}"
            )
        if wanted == self.gateway:
            raise ConfigError("address", f"{wanted} is the gateway of {self.subnet}")
        return wanted

    def _pick(self, state: dict[str, Any], owner: str, wanted: IPv4Address | None) -> Lease:
        if not isinstance(owner, str) or not owner or not owner.isprintable():
            raise ConfigError("owner", f"{owner!r} is not a usable lease owner")
        leases: dict[str, dict[str, Any]] = state["leases"]
        held = leases.get(owner)
        if held is not None:
            lease = self._lease(owner, held)
            if wanted is not None and wanted != lease.address:
                raise NetworkError(
                    f"{owner!r} already holds {lease.address} in {self.subnet}; release it "
                    f"before asking for {wanted}"
                )
            return lease
        used = {int(IPv4Address(e["address"])) for e in leases.values()}
        if wanted is not None:
            if int(wanted) in used:
                holder = next(o for o, e in leases.items() if e["address"] == str(wanted))
                raise NetworkError(
                    f"{wanted} is already leased to {holder!r} in {self.subnet}; choose another "
                    "address or leave it to firec"
                )
            return Lease(owner, wanted, self.subnet, self.gateway, time.time())
        if len(used) >= self._capacity():
            raise NetworkError(
                f"subnet {self.subnet} is exhausted: all {self._capacity()} guest addresses are "
                f"leased (lease file {self.path}); release or reclaim leases, or use a larger "
                "subnet"
            )
        first = int(self.subnet.network_address) + 1
        last = int(self.subnet.broadcast_address) - 1
        span = last - first + 1
        start = int(IPv4Address(state["next"])) + 1 if state.get("next") else first
        for step in range(span):
            candidate = first + (start - first + step) % span
            if candidate not in used and candidate != int(self.gateway):
                return Lease(owner, IPv4Address(candidate), self.subnet, self.gateway, time.time())
        raise AssertionError("unreachable: free addresses were counted")  # pragma: no cover

    def _lease(self, owner: str, entry: dict[str, Any]) -> Lease:
        return Lease(
            owner=owner,
            address=IPv4Address(entry["address"]),
            subnet=self.subnet,
            gateway=self.gateway,
            created=float(entry.get("created", 0.0)),
        )

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """The lease file's state, under its lock; written back if the block changed it."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise NetworkError(
                f"could not create the lease directory {self.directory}: {exc.strerror or exc}"
            ) from exc
        try:
            with _jsonfile.update(
                self.path,
                _LEASE_FILE,
                new=self._empty,
                lock=self._lock,
                timeout=_LOCK_TIMEOUT,
                fsync=True,  # a lease outlives a power loss: addresses are never handed out twice
            ) as state:
                self._check(state)
                yield state
        except _jsonfile.LockTimeout as exc:
            if exc.lock_file != self._lock.file:
                raise
            raise NetworkError(
                f"timed out after {_LOCK_TIMEOUT:.0f}s waiting for the lease lock {exc.lock_file}"
            ) from exc
        except _jsonfile.NewerFormatError:
            raise
        except StateError as exc:
            if exc.path != os.fspath(self.path):
                raise  # not the lease file's: raised by the block
            if isinstance(exc, _jsonfile.FormatError):
                raise self._corrupt(exc.reason) from exc
            raise NetworkError(f"could not use lease file {self.path}: {exc.reason}") from exc

    def _empty(self) -> dict[str, Any]:
        return {
            "subnet": str(self.subnet),
            "gateway": str(self.gateway),
            "next": None,
            "leases": {},
        }

    def _corrupt(self, reason: object) -> NetworkError:
        return NetworkError(
            f"lease file {self.path} is corrupt ({reason}); fix or remove it by hand (it lists "
            "which VM holds which address)"
        )

    def _check(self, state: dict[str, Any]) -> None:
        """Refuse a lease file that is not this subnet's; take the gateway it records."""
        try:
            if not isinstance(state.get("leases"), dict):
                raise ValueError("it has no leases")
            for entry in state["leases"].values():
                IPv4Address(entry["address"])
            recorded = IPv4Address(state["gateway"])
        except (ValueError, KeyError, TypeError) as exc:
            raise self._corrupt(exc) from exc
        if state.get("subnet") != str(self.subnet):
            raise NetworkError(
                f"lease file {self.path} is for {state.get('subnet')}, not {self.subnet}"
            )
        if recorded != self.gateway:
            if self._explicit_gateway:
                raise ConfigError(
                    "gateway",
                    f"subnet {self.subnet} already uses gateway {recorded} (lease file "
                    f"{self.path}); a subnet's gateway cannot change while it has a lease file",
                )
            self.gateway = recorded
