"""CNI: run real CNI plugins from a network configuration list, for a VM's namespace.

firec is a small CNI runtime (spec 1.0, also 0.4/0.3.x plugins): it runs each
plugin of a conflist in order with ``CNI_COMMAND=ADD`` (``CNI_CONTAINERID``,
``CNI_NETNS``, ``CNI_IFNAME``, ``CNI_PATH``; the plugin's configuration, with
the previous plugin's result as ``prevResult``, on stdin), and ``DEL`` in
reverse order with the final ADD result. A plugin's error (its JSON error on
stdout) becomes a :class:`~firec.errors.NetworkError` naming the plugin.

The plugins (``bridge``, ``ptp``...) give the VM's namespace an interface
(``CNI_IFNAME``, a veth) with the address IPAM chose. A VM needs that traffic
on its tap: :func:`attach_tap` creates the tap in the namespace and couples
the two with tc ingress ``mirred`` redirects in both directions, so every frame
passes unchanged between the CNI interface and the guest; the namespace's own
stack keeps out of the way (the interface's addresses are removed and IPv6 is
disabled on both links). The guest takes over the interface's identity: its
MAC (the guest MAC must be the veth's, which ARP on the other side knows), its
address and routes (:meth:`CNIResult.guest_config`) and its MTU.

Example::

    >>> conflist = CNIConfList.load("/etc/cni/net.d/10-fc.conflist")       # doctest: +SKIP
    >>> result = cni_add(conflist, container_id="vm1",
    ...                  netns_path="/var/run/netns/fc-vm1", ifname="eth0")  # doctest: +SKIP
    >>> result.guest_config("eth0").kernel_ip_arg()                          # doctest: +SKIP
    'ip=10.88.0.5::10.88.0.1:255.255.0.0::eth0:off'
    >>> cni_del(conflist, container_id="vm1", netns_path="/var/run/netns/fc-vm1",
    ...         ifname="eth0", prev_result=result.raw)                       # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv6Address,
    IPv6Interface,
    ip_address,
    ip_interface,
)
from pathlib import Path
from typing import Any

from firec.errors import ConfigError, NetworkError
from firec.network._netlink import netlink
from firec.network._sysctl import write_sysctl
from firec.network.guest_ip import GuestIPConfig
from firec.network.netns import run_in_netns
from firec.network.tap import validate_ifname

__all__ = [
    "DEFAULT_CNI_PATH",
    "CNIConfList",
    "CNIResult",
    "attach_tap",
    "cni_add",
    "cni_del",
]

DEFAULT_CNI_PATH: tuple[Path, ...] = (Path("/usr/lib/cni"), Path("/opt/cni/bin"))
"""Where plugins are looked for by default (Debian's package, then the upstream place)."""

_CONTAINER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_PLUGIN_TIMEOUT = 60.0


@dataclass(frozen=True)
class CNIConfList:
    """A CNI network configuration list (``*.conflist``).

    Attributes:
        name: the network's name.
        cni_version: the spec version the list is written for.
        plugins: each plugin's configuration, in order.
    """

    name: str
    cni_version: str
    plugins: tuple[Mapping[str, Any], ...]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "conflist") -> CNIConfList:
        """Read a conflist's JSON object; :class:`ConfigError` names what is missing."""
        if not isinstance(data, Mapping):
            raise ConfigError(source, "a CNI conflist must be a JSON object")
        name = data.get("name")
        version = data.get("cniVersion")
        plugins = data.get("plugins")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{source}.name", "a CNI conflist needs a non-empty 'name'")
        if not isinstance(version, str) or not version:
            raise ConfigError(f"{source}.cniVersion", "a CNI conflist needs a 'cniVersion'")
        if not isinstance(plugins, list) or not plugins:
            raise ConfigError(
                f"{source}.plugins", "a CNI conflist needs a non-empty 'plugins' list"
            )
        for i, plugin in enumerate(plugins):
            kind = plugin.get("type") if isinstance(plugin, Mapping) else None
            if not isinstance(kind, str) or not kind or "/" in kind:
                raise ConfigError(
                    f"{source}.plugins[{i}].type", "each plugin needs a 'type' (a plugin name)"
                )
        return cls(name=name, cni_version=version, plugins=tuple(dict(p) for p in plugins))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CNIConfList:
        """Read a ``.conflist`` file."""
        try:
            data = json.loads(Path(path).read_text())
        except OSError as exc:
            raise ConfigError("conflist", f"cannot read {path}: {exc.strerror or exc}") from exc
        except json.JSONDecodeError as exc:
            raise ConfigError("conflist", f"{path} is not valid JSON: {exc}") from exc
        return cls.from_dict(data, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        """The conflist as JSON data (for records)."""
        return {"name": self.name, "cniVersion": self.cni_version, "plugins": list(self.plugins)}

    def find_plugins(self, cni_path: Sequence[Path] = DEFAULT_CNI_PATH) -> dict[str, Path]:
        """Each plugin type's executable; :class:`NetworkError` names a missing one."""
        found: dict[str, Path] = {}
        for plugin in self.plugins:
            kind = str(plugin["type"])
            for directory in cni_path:
                candidate = Path(directory) / kind
                if os.access(candidate, os.X_OK):
                    found[kind] = candidate
                    break
            else:
                raise NetworkError(
                    f"CNI plugin {kind!r} (network {self.name!r}) not found in "
                    f"{':'.join(str(d) for d in cni_path)}; install it (Debian: "
                    "containernetworking-plugins)"
                )
        return found


@dataclass(frozen=True)
class CNIResult:
    """What a CNI ADD returned (the final plugin's result).

    Attributes:
        ips: the addresses, each with its gateway (if any) and interface index.
        routes: ``(destination, gateway or None)`` pairs.
        nameservers: DNS servers.
        search: DNS search domains.
        interfaces: ``(name, mac, sandbox)`` of each interface the plugins reported.
        raw: the result JSON as the plugins wrote it (DEL needs it back).
    """

    ips: tuple[
        tuple[IPv4Interface | IPv6Interface, IPv4Address | IPv6Address | None, int | None], ...
    ]
    routes: tuple[tuple[str, IPv4Address | IPv6Address | None], ...]
    nameservers: tuple[IPv4Address | IPv6Address, ...]
    search: tuple[str, ...]
    interfaces: tuple[tuple[str, str, str], ...]
    raw: Mapping[str, Any] = field(repr=False)

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> CNIResult:
        """Read a result (spec 1.0 or 0.3/0.4 layout)."""
        try:
            ips = []
            for entry in raw.get("ips", []):
                iface = ip_interface(entry["address"])
                gw = ip_address(entry["gateway"]) if entry.get("gateway") else None
                idx = entry.get("interface")
                ips.append((iface, gw, int(idx) if idx is not None else None))
            routes = [
                (str(r["dst"]), ip_address(r["gw"]) if r.get("gw") else None)
                for r in raw.get("routes", []) or []
            ]
            dns = raw.get("dns", {}) or {}
            servers = tuple(ip_address(s) for s in dns.get("nameservers", []) or [])
            search = tuple(str(s) for s in dns.get("search", []) or [])
            interfaces = tuple(
                (str(i.get("name", "")), str(i.get("mac", "")), str(i.get("sandbox", "")))
                for i in raw.get("interfaces", []) or []
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise NetworkError(f"could not read the CNI result {dict(raw)!r}: {exc}") from exc
        return cls(
            ips=tuple(ips),
            routes=tuple(routes),
            nameservers=servers,
            search=search,
            interfaces=interfaces,
            raw=dict(raw),
        )

    def _mine(self, ifname: str) -> list[int]:
        return [
            i for i, (name, _, sandbox) in enumerate(self.interfaces) if name == ifname and sandbox
        ]

    def guest_config(
        self,
        ifname: str,
        *,
        device: str = "eth0",
        hostname: str | None = None,
        mac: str | None = None,
        mtu: int | None = None,
    ) -> GuestIPConfig:
        """The guest's configuration: the addresses CNI gave interface ``ifname``.

        The IPv4 address (and its gateway, else the default route's) goes to
        ``ip=``; an IPv6 address, routes' gateway and DNS go to MMDS as well.

        Raises:
            NetworkError: the result has no IPv4 address for ``ifname``.
        """
        mine = set(self._mine(ifname))

        def ours(idx: int | None) -> bool:
            return idx is None or not mine or idx in mine

        v4 = [(a, g) for a, g, i in self.ips if isinstance(a, IPv4Interface) and ours(i)]
        v6 = [(a, g) for a, g, i in self.ips if isinstance(a, IPv6Interface) and ours(i)]
        if not v4:
            raise NetworkError(
                f"the CNI result has no IPv4 address for interface {ifname!r}: {dict(self.raw)!r}"
            )
        address, gateway = v4[0]
        if gateway is None:
            gateway = next(
                (g for d, g in self.routes if d in ("0.0.0.0/0",) and isinstance(g, IPv4Address)),
                None,
            )
        v6_addr, v6_gw = v6[0] if v6 else (None, None)
        if v6_gw is None and v6_addr is not None:
            v6_gw = next(
                (g for d, g in self.routes if d == "::/0" and isinstance(g, IPv6Address)), None
            )
        assert isinstance(address, IPv4Interface)
        return GuestIPConfig(
            address=address,
            gateway=gateway if isinstance(gateway, IPv4Address) else None,
            nameservers=self.nameservers,
            hostname=hostname,
            device=device,
            mac=mac,
            mtu=mtu,
            ipv6_address=v6_addr if isinstance(v6_addr, IPv6Interface) else None,
            ipv6_gateway=v6_gw if isinstance(v6_gw, IPv6Address) else None,
            search_domains=self.search,
        )


def _check_args(container_id: str, ifname: str) -> None:
    if not isinstance(container_id, str) or not _CONTAINER_ID.fullmatch(container_id):
        raise ConfigError(
            "container_id",
            f"{container_id!r} is not a CNI container id (letters, digits, '_', '.', '-')",
        )
    validate_ifname(ifname, "ifname")


def _run_plugin(
    binary: Path,
    command: str,
    config: Mapping[str, Any],
    *,
    container_id: str,
    netns_path: str,
    ifname: str,
    cni_path: Sequence[Path],
    args: Mapping[str, str],
    host_netns: str | None,
) -> dict[str, Any]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns_path,
        "CNI_IFNAME": ifname,
        "CNI_PATH": os.pathsep.join(str(p) for p in cni_path),
    }
    if args:
        env["CNI_ARGS"] = ";".join(f"{k}={v}" for k, v in args.items())

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(binary)],
            input=json.dumps(config),
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=_PLUGIN_TIMEOUT,
        )

    try:
        done = run_in_netns(host_netns, run)
    except subprocess.TimeoutExpired as exc:
        raise NetworkError(
            f"CNI plugin {binary.name} {command} did not finish within {_PLUGIN_TIMEOUT:.0f}s"
        ) from exc
    except OSError as exc:
        raise NetworkError(f"could not run CNI plugin {binary}: {exc.strerror or exc}") from exc
    out = done.stdout.strip()
    if done.returncode != 0:
        detail = out or done.stderr.strip()
        try:
            err = json.loads(out)
            detail = f"{err.get('msg', '')} (code {err.get('code')})"
            if err.get("details"):
                detail += f": {err['details']}"
        except (ValueError, AttributeError):
            pass
        raise NetworkError(
            f"CNI plugin {binary.name} {command} failed for {container_id!r} "
            f"(network {config.get('name')!r}): {detail}"
        )
    if not out:
        return {}
    try:
        result = json.loads(out)
    except ValueError as exc:
        raise NetworkError(
            f"CNI plugin {binary.name} {command} wrote something that is not JSON: {out[:200]!r}"
        ) from exc
    if not isinstance(result, dict):
        raise NetworkError(f"CNI plugin {binary.name} {command} wrote {out[:200]!r}")
    return result


def _plugin_config(
    conflist: CNIConfList, plugin: Mapping[str, Any], prev: Mapping[str, Any] | None
) -> dict[str, Any]:
    config = dict(plugin)
    config["name"] = conflist.name
    config["cniVersion"] = conflist.cni_version
    if prev is not None:
        config["prevResult"] = dict(prev)
    return config


def cni_add(
    conflist: CNIConfList,
    *,
    container_id: str,
    netns_path: str | os.PathLike[str],
    ifname: str,
    cni_path: Sequence[Path] = DEFAULT_CNI_PATH,
    args: Mapping[str, str] | None = None,
    host_netns: str | None = None,
) -> CNIResult:
    """Run ADD for every plugin of ``conflist``; return the final result.

    When a plugin fails, DEL runs for the whole list (as the spec asks) before
    the error is raised, so nothing the earlier plugins set up stays.

    Args:
        conflist: the network configuration list.
        container_id: the VM's id.
        netns_path: the VM's namespace (``/var/run/netns/<name>``).
        ifname: the interface to create inside it.
        cni_path: where the plugins are.
        args: ``CNI_ARGS`` key/value pairs.
        host_netns: the namespace the plugins run in (``None``: this one).
    """
    _check_args(container_id, ifname)
    binaries = conflist.find_plugins(cni_path)
    common: dict[str, Any] = {
        "container_id": container_id,
        "netns_path": os.fspath(netns_path),
        "ifname": ifname,
        "cni_path": tuple(cni_path),
        "args": dict(args or {}),
        "host_netns": host_netns,
    }
    prev: dict[str, Any] | None = None
    try:
        for plugin in conflist.plugins:
            config = _plugin_config(conflist, plugin, prev)
            prev = _run_plugin(binaries[str(plugin["type"])], "ADD", config, **common)
    except NetworkError:
        with contextlib.suppress(NetworkError):
            cni_del(conflist, prev_result=prev, **common)
        raise
    return CNIResult.parse(prev or {})


def cni_del(
    conflist: CNIConfList,
    *,
    container_id: str,
    netns_path: str | os.PathLike[str],
    ifname: str,
    prev_result: Mapping[str, Any] | None,
    cni_path: Sequence[Path] = DEFAULT_CNI_PATH,
    args: Mapping[str, str] | None = None,
    host_netns: str | None = None,
) -> None:
    """Run DEL for every plugin of ``conflist``, in reverse order.

    Every plugin gets its DEL even when an earlier one fails; the first
    failure is raised at the end. Plugins tolerate a namespace or interface
    that is already gone, so DEL may be repeated.
    """
    _check_args(container_id, ifname)
    binaries = conflist.find_plugins(cni_path)
    first: NetworkError | None = None
    for plugin in reversed(conflist.plugins):
        config = _plugin_config(conflist, plugin, prev_result)
        try:
            _run_plugin(
                binaries[str(plugin["type"])],
                "DEL",
                config,
                container_id=container_id,
                netns_path=os.fspath(netns_path),
                ifname=ifname,
                cni_path=tuple(cni_path),
                args=dict(args or {}),
                host_netns=host_netns,
            )
        except NetworkError as exc:
            first = first or exc
    if first is not None:
        raise first


def attach_tap(
    netns: str, *, ifname: str, tap: str, uid: int | None = None, gid: int | None = None
) -> tuple[str, int]:
    """Create ``tap`` in ``netns`` and couple it both ways with CNI interface ``ifname``.

    Returns ``(mac, mtu)`` of ``ifname``: the guest must use that MAC, and
    should use that MTU. Nothing is left behind when a step fails (the tap is
    removed; the CNI interface belongs to the plugins' DEL).
    """
    validate_ifname(tap)
    validate_ifname(ifname, "ifname")

    def couple() -> tuple[str, int]:
        with netlink() as nl:
            mac = nl.mac(ifname)
            mtu = nl.mtu(ifname)
            nl.add_tap(tap, uid=uid, gid=gid)
            try:
                for link in (ifname, tap):
                    write_sysctl(f"net/ipv6/conf/{link}/disable_ipv6", "1")
                nl.flush_addresses(ifname)
                nl.set_mtu(tap, mtu)
                nl.set_up(tap)
                nl.set_up(ifname)
                nl.redirect_ingress(ifname, tap)
                nl.redirect_ingress(tap, ifname)
            except BaseException:
                nl.delete(tap)
                raise
            return mac, mtu

    return run_in_netns(netns, couple)
