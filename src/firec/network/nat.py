"""Outbound NAT, port forwarding and egress allow-lists with nftables.

firec keeps every rule it needs in one table it owns, ``table inet firec``,
and touches nothing else: no other table, no chain policy, no host-wide
sysctl. The table holds a few sets and maps keyed by VM link and a chain per
VM; adding or removing a VM is one atomic ``nft -f -`` transaction under a
lock, and the table itself goes away with the last VM::

    table inet firec {
        set links   { type ifname; }                  # every VM link (host side)
        set masq    { type ifname; }                  # links whose traffic is masqueraded
        map egress  { type ifname : verdict; }        # link -> jump vm_<key>
        map ports   { type inet_proto . inet_service : ipv4_addr . inet_service; }
        chain forward     { ...filter hook forward...;  iifname @links oifname @links drop;
                                                        iifname vmap @egress }
        chain input       { ...filter hook input...;    iifname vmap @egress }
        chain prerouting  { ...nat hook prerouting...;  dnat to host-local port via @ports }
        chain output      { ...nat hook output...;      the same for the host's own connections }
        chain postrouting { ...nat hook postrouting...; iifname @masq oifname != @links masquerade }
        chain vm_<key> {                              # one per VM
            ct state established,related accept
            ip saddr <guest> ip daddr { <allow-list> } accept   # or: ip saddr <guest> accept
            drop                                      # anything else, spoofed sources included
        }
    }

What it means for a VM: it can reach what its allow-list names (everything
without one), seen from outside as the host (masquerade); it cannot reach
other VMs; it cannot send from an address it was not given; host ports listed
in its port forwards reach it (and are no longer the host's own).

Forwarding. Replies to a VM's traffic come in through the host's uplink and
are forwarded, which Linux only does when the *incoming* interface has
``net.ipv4.conf.<uplink>.forwarding=1``. firec enables forwarding only on the
links it creates; it checks the uplinks (the links of the default routes) and
refuses with a clear :class:`~firec.errors.NetworkError` when NAT is asked
for and an uplink has forwarding off, rather than flipping a host-wide switch.
Note also that a host firewall whose ``FORWARD`` policy is ``drop`` (iptables
or another nft table) drops VM traffic whatever firec's table accepts: allow
the VM links there (firec never changes other tables' policies).

Example::

    >>> table = NatTable(lock_dir=state_dir)                           # doctest: +SKIP
    >>> table.add(VMRules(key="3f2a9c", links=("fc3f2a9c0",),
    ...                   guests=(GuestRule(IPv4Address("172.30.0.2")),),
    ...                   port_forwards=((PortForward(8080, 80), IPv4Address("172.30.0.2")),)))
    ... # doctest: +SKIP
    >>> table.remove("3f2a9c", links=("fc3f2a9c0",),
    ...              addresses=(IPv4Address("172.30.0.2"),))            # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any, Literal

import filelock

from firec.errors import ConfigError, NetworkError
from firec.network._netlink import netlink
from firec.network._sysctl import read_sysctl
from firec.network.netns import run_in_netns

__all__ = [
    "FAMILY",
    "TABLE",
    "GuestRule",
    "NatTable",
    "PortForward",
    "VMRules",
    "add_clone_nat",
    "run_nft",
    "uplinks_without_forwarding",
]

FAMILY = "inet"
TABLE = "firec"
_LOCK_TIMEOUT = 30.0
_KEY = re.compile(r"^[a-z0-9_]{1,64}$")


@dataclass(frozen=True)
class PortForward:
    """Forward ``protocol`` port ``host_port`` of the host to ``guest_port`` of the guest.

    >>> PortForward(8080, 80)
    PortForward(host_port=8080, guest_port=80, protocol='tcp')
    >>> PortForward(2222).guest_port
    2222
    """

    host_port: int
    guest_port: int | None = None
    protocol: Literal["tcp", "udp"] = "tcp"

    def __post_init__(self) -> None:
        for name in ("host_port", "guest_port"):
            value = getattr(self, name)
            if value is None and name == "guest_port":
                object.__setattr__(self, "guest_port", self.host_port)
                continue
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
                raise ConfigError(name, f"{value!r} is not a port number (1-65535)")
        if self.protocol not in ("tcp", "udp"):
            raise ConfigError("protocol", f"{self.protocol!r} is not 'tcp' or 'udp'")

    @property
    def target_port(self) -> int:
        """The guest port (``guest_port``, or ``host_port`` when that was not given)."""
        return self.host_port if self.guest_port is None else self.guest_port


@dataclass(frozen=True)
class GuestRule:
    """One guest address of a VM and what it may reach (``allow=None``: everything)."""

    address: IPv4Address
    allow: tuple[IPv4Network, ...] | None = None


@dataclass(frozen=True)
class VMRules:
    """Everything one VM adds to the firec table.

    Attributes:
        key: the VM's key in chain names (``vm_<key>``): lower-case letters,
            digits, ``_``.
        links: the VM's links on this side (veth ends or taps).
        guests: the guest addresses behind them, with their allow-lists.
        masquerade: whether traffic from ``links`` leaving through another
            link is masqueraded.
        port_forwards: ``(forward, guest address)`` pairs.
    """

    key: str
    links: tuple[str, ...]
    guests: tuple[GuestRule, ...]
    masquerade: bool = True
    port_forwards: tuple[tuple[PortForward, IPv4Address], ...] = field(default=())

    def __post_init__(self) -> None:
        if not _KEY.fullmatch(self.key):
            raise ConfigError("key", f"{self.key!r} is not a usable VM key ([a-z0-9_], 1-64)")
        if not self.links:
            raise ConfigError("links", "a VM needs at least one link for its rules")
        seen: set[tuple[str, int]] = set()
        for fwd, _ in self.port_forwards:
            if (fwd.protocol, fwd.host_port) in seen:
                raise ConfigError(
                    "port_forwards",
                    f"host {fwd.protocol} port {fwd.host_port} is forwarded twice",
                )
            seen.add((fwd.protocol, fwd.host_port))

    @property
    def chain(self) -> str:
        """The VM's own chain."""
        return f"vm_{self.key}"


def _base_ruleset() -> str:
    t = f"{FAMILY} {TABLE}"
    local = "meta nfproto ipv4 fib daddr type local meta l4proto { tcp, udp }"
    dnat = "dnat ip to meta l4proto . th dport map @ports"
    return "\n".join(
        [
            f"add table {t}",
            f"add set {t} links {{ type ifname; }}",
            f"add set {t} masq {{ type ifname; }}",
            f"add map {t} egress {{ type ifname : verdict; }}",
            f"add map {t} ports {{ type inet_proto . inet_service : ipv4_addr . inet_service; }}",
            f"add chain {t} forward {{ type filter hook forward priority filter; policy accept; }}",
            f"add chain {t} input {{ type filter hook input priority filter; policy accept; }}",
            f"add chain {t} prerouting {{ type nat hook prerouting priority dstnat; "
            "policy accept; }",
            f"add chain {t} output {{ type nat hook output priority -100; policy accept; }}",
            f"add chain {t} postrouting {{ type nat hook postrouting priority srcnat; "
            "policy accept; }",
            # flush + re-add keeps the base rules single even when two processes race here
            f"flush chain {t} forward",
            f"flush chain {t} input",
            f"flush chain {t} prerouting",
            f"flush chain {t} output",
            f"flush chain {t} postrouting",
            f"add rule {t} forward iifname @links oifname @links drop",
            f"add rule {t} forward iifname vmap @egress",
            f"add rule {t} input iifname vmap @egress",
            f"add rule {t} prerouting {local} {dnat}",
            f"add rule {t} output ip daddr != 127.0.0.0/8 {local} {dnat}",
            f"add rule {t} postrouting iifname @masq oifname != @links masquerade",
        ]
    )


def _q(name: str) -> str:
    return json.dumps(name)


def run_nft(
    args: Sequence[str],
    script: str | None = None,
    *,
    netns: str | None = None,
    missing_ok: bool = False,
) -> str | None:
    """Run ``nft args`` (``script`` on stdin) in ``netns``; return its output.

    Returns ``None`` when ``missing_ok`` and nft says the object does not exist.

    Raises:
        NetworkError: nft is missing, or failed (with its message).
    """
    binary = shutil.which("nft") or "/usr/sbin/nft"
    if not os.path.exists(binary):
        raise NetworkError("nft not found: install the nftables package")
    cmd = [binary, *args]

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            cmd, input=script, capture_output=True, text=True, check=False, timeout=30
        )

    done = run_in_netns(netns, run)
    if done.returncode != 0:
        detail = done.stderr.strip() or done.stdout.strip()
        if missing_ok and "No such file or directory" in detail:
            return None
        where = "" if netns is None else f" in network namespace {netns!r}"
        raise NetworkError(f"nft {' '.join(args)} failed{where}: {detail}")
    return done.stdout


class NatTable:
    """The firec table in one network namespace.

    Args:
        netns: the named namespace whose table this is (``None``: the
            caller's, normally the host's).
        lock_dir: a directory for the lock serialising changes (firec's state
            directory; every process managing VMs on this host must use the same).
    """

    def __init__(self, *, netns: str | None = None, lock_dir: str | os.PathLike[str]) -> None:
        self.netns = netns
        self.lock_dir = Path(lock_dir)
        suffix = "host" if netns is None else f"netns-{netns}"
        self._lock = filelock.FileLock(
            str(self.lock_dir / f"nft-{suffix}.lock"), timeout=_LOCK_TIMEOUT
        )

    # -- running nft -------------------------------------------------------------------------

    def _nft(
        self, args: Sequence[str], script: str | None = None, *, missing_ok: bool = False
    ) -> str | None:
        return run_nft(args, script, netns=self.netns, missing_ok=missing_ok)

    def _apply(self, script: str) -> None:
        self._nft(["-f", "-"], script + "\n")

    def state(self) -> dict[str, Any] | None:
        """The table as ``nft -j`` lists it, or ``None`` when it does not exist."""
        out = self._nft(["-j", "list", "table", FAMILY, TABLE], missing_ok=True)
        if out is None:
            return None
        data: dict[str, Any] = json.loads(out)
        return data

    def exists(self) -> bool:
        """Whether the firec table exists."""
        return self.state() is not None

    # -- VM rules ----------------------------------------------------------------------------

    def check(self, rules: VMRules) -> None:
        """Refuse, before anything changes, what :meth:`add` would fail on.

        Raises:
            NetworkError: nft is missing, a host port is already forwarded to
                another guest, or the VM's chain already exists.
        """
        with self._locked():
            self._check(rules, self.state())

    def _check(self, rules: VMRules, state: dict[str, Any] | None) -> None:
        if state is None:
            return
        view = _View(state)
        if rules.chain in view.chains:
            raise NetworkError(
                f"nft chain {rules.chain} already exists in table {FAMILY} {TABLE}; the VM's "
                "previous network was not torn down"
            )
        for fwd, _ in rules.port_forwards:
            taken = view.ports.get((fwd.protocol, fwd.host_port))
            if taken is not None:
                raise NetworkError(
                    f"host {fwd.protocol} port {fwd.host_port} is already forwarded to "
                    f"{taken[0]}:{taken[1]} (another VM); choose another host port"
                )
        for link in rules.links:
            if link in view.links:
                raise NetworkError(f"link {link!r} already has rules in table {FAMILY} {TABLE}")

    def add(self, rules: VMRules) -> None:
        """Add a VM's rules in one transaction (creating the table if needed)."""
        t = f"{FAMILY} {TABLE}"
        lines = [_base_ruleset(), f"add chain {t} {rules.chain}"]
        lines.append(f"add rule {t} {rules.chain} ct state established,related accept")
        for guest in rules.guests:
            if guest.allow is None:
                lines.append(f"add rule {t} {rules.chain} ip saddr {guest.address} accept")
            elif guest.allow:
                allowed = ", ".join(str(n) for n in guest.allow)
                lines.append(
                    f"add rule {t} {rules.chain} ip saddr {guest.address} "
                    f"ip daddr {{ {allowed} }} accept"
                )
        lines.append(f"add rule {t} {rules.chain} drop")
        links = ", ".join(_q(link) for link in rules.links)
        lines.append(f"add element {t} links {{ {links} }}")
        if rules.masquerade:
            lines.append(f"add element {t} masq {{ {links} }}")
        verdicts = ", ".join(f"{_q(link)} : jump {rules.chain}" for link in rules.links)
        lines.append(f"add element {t} egress {{ {verdicts} }}")
        for fwd, target in rules.port_forwards:
            lines.append(
                f"create element {t} ports {{ {fwd.protocol} . {fwd.host_port} : "
                f"{target} . {fwd.target_port} }}"
            )
        with self._locked():
            self._check(rules, self.state())
            self._apply("\n".join(lines))

    def remove(self, key: str, *, links: Iterable[str], addresses: Iterable[IPv4Address]) -> None:
        """Remove whatever of a VM's rules exists; drop the table when nothing else is left.

        Idempotent: removing rules that are gone (or a missing table) is fine.
        Port forwards are found by their guest address (``addresses``).
        """
        chain = f"vm_{key}"
        link_set = set(links)
        address_set = {str(a) for a in addresses}
        with self._locked():
            state = self.state()
            if state is None:
                return
            view = _View(state)
            t = f"{FAMILY} {TABLE}"
            lines: list[str] = []
            mine_links = sorted(view.links & link_set)
            mine_masq = sorted(view.masq & link_set)
            mine_egress = sorted(set(view.egress) & link_set)
            mine_ports = sorted(k for k, v in view.ports.items() if v[0] in address_set)
            for name, items in (
                ("links", mine_links),
                ("masq", mine_masq),
                ("egress", mine_egress),
            ):
                if items:
                    lines.append(
                        f"delete element {t} {name} {{ {', '.join(_q(i) for i in items)} }}"
                    )
            for proto, port in mine_ports:
                lines.append(f"delete element {t} ports {{ {proto} . {port} }}")
            if chain in view.chains:
                lines += [f"flush chain {t} {chain}", f"delete chain {t} {chain}"]
            left_chains = {c for c in view.chains if c.startswith("vm_")} - {chain}
            left = bool(
                (view.links - link_set)
                or (view.masq - link_set)
                or (set(view.egress) - link_set)
                or any(v[0] not in address_set for v in view.ports.values())
                or left_chains
            )
            if not left:
                lines = [f"delete table {t}"]
            if lines:
                self._apply("\n".join(lines))

    def _locked(self) -> filelock.BaseFileLock:
        try:
            self.lock_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise NetworkError(f"could not create {self.lock_dir}: {exc.strerror or exc}") from exc
        return self._lock


class _View:
    """The parts of ``nft -j list table inet firec`` that matter here."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.chains: set[str] = set()
        self.links: set[str] = set()
        self.masq: set[str] = set()
        self.egress: dict[str, str] = {}
        self.ports: dict[tuple[str, int], tuple[str, int]] = {}
        for item in state.get("nftables", []):
            if "chain" in item:
                self.chains.add(item["chain"]["name"])
            for kind in ("set", "map"):
                if kind in item:
                    self._elements(item[kind])

    def _elements(self, obj: dict[str, Any]) -> None:
        name = obj["name"]
        elems = obj.get("elem", [])
        if name in ("links", "masq"):
            getattr(self, name).update(str(e) for e in elems)
        elif name == "egress":
            for link, verdict in elems:
                target = verdict.get("jump", {}).get("target", "")
                self.egress[str(link)] = str(target)
        elif name == "ports":
            for key, value in elems:
                proto, port = key["concat"]
                addr, target = value["concat"]
                self.ports[(str(proto), int(port))] = (str(addr), int(target))


def uplinks_without_forwarding(netns: str | None = None) -> list[str]:
    """The uplinks (links of the IPv4 default routes) with forwarding off.

    NAT replies and port-forwarded traffic arrive on the uplink and are only
    forwarded when ``net.ipv4.conf.<uplink>.forwarding`` is 1.
    """

    def scan() -> list[str]:
        with netlink() as nl:
            uplinks = nl.default_route_links()
        return [u for u in uplinks if read_sysctl(f"net/ipv4/conf/{u}/forwarding") != "1"]

    return run_in_netns(netns, scan)


def add_clone_nat(
    netns: str, uplink: str, pairs: Sequence[tuple[IPv4Address, IPv4Address]]
) -> None:
    """Translate 1:1 between each ``(outside, inside)`` address pair in a VM's namespace.

    Traffic arriving on ``uplink`` for ``outside`` goes to ``inside``; traffic
    from ``inside`` leaving through ``uplink`` comes from ``outside``. It lets
    clones of one snapshot keep the guest address baked into them while each
    is reached at its own leased address. The rules live in ``table ip firec``
    of the VM's own namespace and go away with it.
    """
    t = "ip firec"
    lines = [
        f"add table {t}",
        f"add chain {t} prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}",
        f"add chain {t} postrouting {{ type nat hook postrouting priority srcnat; "
        "policy accept; }",
    ]
    for outside, inside in pairs:
        lines.append(
            f"add rule {t} prerouting iifname {_q(uplink)} ip daddr {outside} dnat to {inside}"
        )
        lines.append(
            f"add rule {t} postrouting oifname {_q(uplink)} ip saddr {inside} snat to {outside}"
        )
    run_nft(["-f", "-"], "\n".join(lines) + "\n", netns=netns)
