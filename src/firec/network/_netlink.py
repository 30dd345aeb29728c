"""A narrow, typed wrapper over :class:`pyroute2.IPRoute` (which is untyped).

Everything firec does over rtnetlink goes through :class:`Netlink`, in the
namespace of the thread that opened it (see
:func:`firec.network.netns.run_in_netns`). Netlink errors become
:class:`firec.errors.NetworkError` naming the link and the operation.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, ip_interface
from typing import Any

from firec.errors import NetworkError

__all__ = ["Netlink", "netlink"]

_RTNH_F_ONLINK = 4
_ETH_P_ALL = 0x0003
_INGRESS_PARENT = 0xFFFF0000


class Netlink:
    """Typed rtnetlink operations in one namespace (the one it was opened in)."""

    def __init__(self, ipr: Any) -> None:
        from pyroute2.netlink.exceptions import NetlinkError

        self._ipr = ipr
        self._error: type[Exception] = NetlinkError

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except self._error as exc:
            raise NetworkError(
                f"{what} failed: {exc.args[-1]} (errno {getattr(exc, 'code', '?')})"
            ) from exc
        except OSError as exc:
            raise NetworkError(f"{what} failed: {exc.strerror or exc}") from exc

    # -- links -------------------------------------------------------------------------------

    def index(self, name: str) -> int | None:
        """The index of link ``name``, or ``None`` when there is none."""
        found = self._call(f"looking up link {name!r}", self._ipr.link_lookup, ifname=name)
        return int(found[0]) if found else None

    def require(self, name: str) -> int:
        """The index of link ``name``; :class:`NetworkError` when it does not exist."""
        idx = self.index(name)
        if idx is None:
            raise NetworkError(f"link {name!r} does not exist")
        return idx

    def links(self) -> list[str]:
        """The names of every link."""
        return [str(m.get("ifname")) for m in self._call("listing links", self._ipr.get_links)]

    def kind(self, name: str) -> str | None:
        """The link's kind (``"tun"``, ``"veth"``, ``"bridge"``...), ``None`` for plain ones."""
        msg = self._call(f"reading link {name!r}", self._ipr.link, "get", index=self.require(name))
        kind = msg[0].get(("linkinfo", "kind"))
        return None if kind is None else str(kind)

    def mac(self, name: str) -> str:
        """The link's MAC address (lower case)."""
        msg = self._call(f"reading link {name!r}", self._ipr.link, "get", index=self.require(name))
        return str(msg[0].get("address")).lower()

    def mtu(self, name: str) -> int:
        """The link's MTU."""
        msg = self._call(f"reading link {name!r}", self._ipr.link, "get", index=self.require(name))
        return int(msg[0].get("mtu"))

    def tun_info(self, name: str) -> dict[str, int]:
        """A tap's tun attributes: ``owner``, ``group``, ``type``, ``pi``, ``vnet_hdr``...

        ``owner``/``group`` are absent when not set. Empty for links that are not tun/tap.
        """
        msg = self._call(f"reading link {name!r}", self._ipr.link, "get", index=self.require(name))
        data = msg[0].get(("linkinfo", "data"))
        attrs = data.get("attrs", []) if isinstance(data, dict) else []
        prefix = "IFLA_TUN_"
        return {
            key[len(prefix) :].lower(): int(value)
            for key, value in attrs
            if isinstance(key, str) and key.startswith(prefix) and isinstance(value, int)
        }

    def add_tap(self, name: str, *, uid: int | None = None, gid: int | None = None) -> None:
        """Create a persistent tap (no packet info, vnet header) owned by ``uid``/``gid``."""
        kwargs: dict[str, Any] = {
            "ifname": name,
            "kind": "tuntap",
            "mode": "tap",
            "ifr": {"no_pi": True, "one_queue": False, "vnet_hdr": True, "multi_queue": False},
        }
        if uid is not None:
            kwargs["uid"] = uid
        if gid is not None:
            kwargs["gid"] = gid
        self._call(f"creating tap {name!r}", self._ipr.link, "add", **kwargs)
        if self.index(name) is None:  # pragma: no cover - the ioctl path reports errors itself
            raise NetworkError(f"creating tap {name!r} failed: it did not appear")

    def add_veth(self, name: str, peer: str, *, peer_netns: str | None = None) -> None:
        """Create a veth pair ``name``/``peer``, the peer put in ``peer_netns`` if given."""
        peer_spec: dict[str, Any] = {"ifname": peer}
        if peer_netns is not None:
            peer_spec["net_ns_fd"] = peer_netns
        self._call(
            f"creating veth pair {name!r}/{peer!r}",
            self._ipr.link,
            "add",
            ifname=name,
            kind="veth",
            peer=peer_spec,
        )

    def delete(self, name: str) -> bool:
        """Delete link ``name``; return whether it existed."""
        idx = self.index(name)
        if idx is None:
            return False
        try:
            self._ipr.link("del", index=idx)
        except self._error as exc:
            if getattr(exc, "code", None) == errno.ENODEV:
                return False
            raise NetworkError(f"deleting link {name!r} failed: {exc.args[-1]}") from exc
        return True

    def set_up(self, name: str) -> None:
        """Bring link ``name`` up."""
        idx = self.require(name)
        self._call(f"bringing up {name!r}", self._ipr.link, "set", index=idx, state="up")

    def set_mtu(self, name: str, mtu: int) -> None:
        """Set the MTU of link ``name``."""
        idx = self.require(name)
        self._call(
            f"setting the MTU of {name!r} to {mtu}", self._ipr.link, "set", index=idx, mtu=mtu
        )

    def set_mac(self, name: str, mac: str) -> None:
        """Set the MAC address of link ``name``."""
        idx = self.require(name)
        self._call(f"setting the MAC of {name!r}", self._ipr.link, "set", index=idx, address=mac)

    def set_master(self, name: str, bridge: str) -> None:
        """Enslave link ``name`` to bridge ``bridge``."""
        idx = self.require(name)
        master = self.require(bridge)
        self._call(
            f"attaching {name!r} to bridge {bridge!r}",
            self._ipr.link,
            "set",
            index=idx,
            master=master,
        )

    # -- addresses and routes ----------------------------------------------------------------

    def add_address(self, name: str, address: IPv4Interface) -> None:
        """Add ``address`` (with its prefix length) to link ``name``."""
        idx = self.require(name)
        self._call(
            f"adding {address} to {name!r}",
            self._ipr.addr,
            "add",
            index=idx,
            address=str(address.ip),
            prefixlen=address.network.prefixlen,
        )

    def flush_addresses(self, name: str) -> None:
        """Remove every address from link ``name``."""
        idx = self.require(name)
        self._call(f"flushing the addresses of {name!r}", self._ipr.flush_addr, index=idx)

    def addresses(self) -> list[tuple[str, IPv4Interface]]:
        """Every IPv4 address here, as ``(link name, address/prefix)``."""
        names = {
            int(m["index"]): str(m.get("ifname"))
            for m in self._call("listing links", self._ipr.get_links)
        }
        found: list[tuple[str, IPv4Interface]] = []
        for msg in self._call("listing addresses", self._ipr.get_addr, family=socket.AF_INET):
            iface = ip_interface(f"{msg.get('IFA_ADDRESS')}/{msg['prefixlen']}")
            assert isinstance(iface, IPv4Interface)
            found.append((names.get(int(msg["index"]), "?"), iface))
        return found

    def add_route(
        self, dst: IPv4Network, dev: str, *, via: IPv4Address | None = None, onlink: bool = False
    ) -> None:
        """Route ``dst`` through link ``dev`` (through gateway ``via`` if given)."""
        idx = self.require(dev)
        kwargs: dict[str, Any] = {"dst": str(dst), "oif": idx}
        if via is not None:
            kwargs["gateway"] = str(via)
        if onlink:
            kwargs["flags"] = _RTNH_F_ONLINK
        self._call(f"adding a route to {dst} via {dev!r}", self._ipr.route, "add", **kwargs)

    def default_route_links(self) -> list[str]:
        """The links the IPv4 default routes go out through."""
        names = {
            int(m["index"]): str(m.get("ifname"))
            for m in self._call("listing links", self._ipr.get_links)
        }
        routes = self._call("listing routes", self._ipr.get_default_routes, family=socket.AF_INET)
        return [names[int(r.get("oif"))] for r in routes if r.get("oif") in names]

    # -- traffic control ---------------------------------------------------------------------

    def redirect_ingress(self, src: str, dst: str) -> None:
        """Send every frame arriving on ``src`` out of ``dst`` (tc ingress + mirred redirect)."""
        idx = self.require(src)
        to = self.require(dst)
        self._call(f"adding an ingress qdisc to {src!r}", self._ipr.tc, "add", "ingress", idx)
        # u32 "match everything" rather than matchall: kernels built without
        # CONFIG_NET_CLS_MATCHALL (like this project's CI host) still have u32
        self._call(
            f"redirecting {src!r} to {dst!r}",
            self._ipr.tc,
            "add-filter",
            "u32",
            idx,
            parent=_INGRESS_PARENT,
            protocol=_ETH_P_ALL,
            prio=1,
            keys=["0x0/0x0+0"],
            target=0x10001,
            action={"kind": "mirred", "direction": "egress", "action": "redirect", "ifindex": to},
        )


@contextmanager
def netlink() -> Iterator[Netlink]:
    """A :class:`Netlink` on a fresh socket in the current thread's namespace."""
    from pyroute2 import IPRoute  # imported here: loading pyroute2 takes ~80 ms

    try:
        ipr = IPRoute()
    except OSError as exc:
        raise NetworkError(f"could not open a netlink socket: {exc}") from exc
    try:
        yield Netlink(ipr)
    finally:
        ipr.close()
