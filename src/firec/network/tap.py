"""Tap devices: the host end of a VM's virtio-net interface.

Firecracker opens a tap by name (``host_dev_name``) in the network namespace
it runs in. firec creates it beforehand, persistent, owned by the uid/gid the
VMM will run as (the jailer's ``--uid``/``--gid``), in the VM's namespace,
and either attaches it to a bridge or gives it an address and routes. All of
it over rtnetlink with pyroute2; nothing shells out to ``ip``.

Example::

    >>> from ipaddress import IPv4Interface, IPv4Network
    >>> from firec.network import tap
    >>> tap.create_tap("tap0", netns="fc-vm1", uid=123, gid=100,
    ...                address=IPv4Interface("172.30.0.1/32"),
    ...                routes=[IPv4Network("172.30.0.2/32")])   # doctest: +SKIP
    >>> tap.delete_link("tap0", netns="fc-vm1")                 # doctest: +SKIP
    True
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from ipaddress import IPv4Interface, IPv4Network

from firec.errors import ConfigError, NetworkError
from firec.network._netlink import netlink
from firec.network.netns import netns_exists, run_in_netns

__all__ = ["IFNAME_MAX", "create_tap", "delete_link", "link_exists", "validate_ifname"]

IFNAME_MAX = 15
"""The longest interface name Linux takes (``IFNAMSIZ`` - 1)."""

_IFNAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def validate_ifname(name: str, field: str = "host_dev_name") -> str:
    """Return ``name`` if Linux takes it as an interface name, else raise :class:`ConfigError`.

    At most 15 characters of letters, digits, ``_``, ``.`` and ``-`` (not
    starting with ``.`` or ``-``).

    >>> validate_ifname("tap0")
    'tap0'
    >>> validate_ifname("a-very-long-tap-name")
    Traceback (most recent call last):
    ...
    firec.errors.ConfigError: host_dev_name: 'a-very-long-tap-name' is 20 characters long; \
Linux interface names have at most 15
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(field, "an interface name must be a non-empty string")
    if len(name) > IFNAME_MAX:
        raise ConfigError(
            field,
            f"{name!r} is {len(name)} characters long; Linux interface names have at most "
            f"{IFNAME_MAX}",
        )
    if not isinstance(name, str) or not _IFNAME.fullmatch(name):
        raise ConfigError(
            field,
            f"{name!r} is not a valid interface name (letters, digits, '_', '.', '-'; "
            "not starting with '.' or '-')",
        )
    return name


def create_tap(
    name: str,
    *,
    netns: str | None = None,
    uid: int | None = None,
    gid: int | None = None,
    mtu: int | None = None,
    bridge: str | None = None,
    address: IPv4Interface | None = None,
    routes: Iterable[IPv4Network] = (),
) -> None:
    """Create a persistent tap ``name`` in ``netns`` (``None``: here) and bring it up.

    Args:
        name: the tap's name (Firecracker's ``host_dev_name``).
        netns: the named namespace to create it in.
        uid: owner allowed to open it (the jailed VMM's uid).
        gid: group allowed to open it.
        mtu: its MTU.
        bridge: a bridge (in the same namespace) to attach it to.
        address: an address for the host end (e.g. the guest's gateway, ``/32``).
        routes: destinations routed through the tap (e.g. the guest's ``/32``).

    Nothing is left behind when a step fails: the tap is removed again.

    Raises:
        ConfigError: bad name, or both ``bridge`` and ``address``.
        NetworkError: the link exists already, the bridge is missing, or the
            kernel refused.
    """
    validate_ifname(name)
    if bridge is not None:
        validate_ifname(bridge, "bridge")
        if address is not None:
            raise ConfigError("bridge", "a tap is either attached to a bridge or given an address")
    route_list = list(routes)

    def create() -> None:
        with netlink() as nl:
            if nl.index(name) is not None:
                raise NetworkError(
                    f"link {name!r} already exists{_where(netns)}; choose another tap name"
                )
            if bridge is not None and nl.index(bridge) is None:
                raise NetworkError(f"bridge {bridge!r} does not exist{_where(netns)}")
            nl.add_tap(name, uid=uid, gid=gid)
            try:
                if mtu is not None:
                    nl.set_mtu(name, mtu)
                if bridge is not None:
                    nl.set_master(name, bridge)
                nl.set_up(name)
                if address is not None:
                    nl.add_address(name, address)
                for dst in route_list:
                    nl.add_route(dst, name)
            except BaseException:
                nl.delete(name)
                raise

    run_in_netns(netns, create)


def delete_link(name: str, *, netns: str | None = None) -> bool:
    """Delete link ``name`` (a tap, a veth and its peer...); return whether it existed.

    A missing link or a missing namespace is not an error: teardown is idempotent.
    """
    validate_ifname(name, "name")

    def delete() -> bool:
        with netlink() as nl:
            return nl.delete(name)

    try:
        return run_in_netns(netns, delete)
    except NetworkError:
        if netns is not None and not netns_exists(netns):
            return False
        raise


def link_exists(name: str, *, netns: str | None = None) -> bool:
    """Whether link ``name`` exists in ``netns`` (``None``: here)."""

    def lookup() -> bool:
        with netlink() as nl:
            return nl.index(name) is not None

    return run_in_netns(netns, lookup)


def _where(netns: str | None) -> str:
    return "" if netns is None else f" in network namespace {netns!r}"
