"""Tearing a VM's network down: its recorded steps undone, in reverse, idempotently.

:func:`teardown_network` reads the VM's record
(:mod:`~firec.network.record`) and undoes each step: nft rules, CNI DEL,
links, the namespace, leases. It works in a new process, after a crash and
after a half-finished set-up, and does nothing the second time.
:func:`reclaim_leases` frees the leases whose VM is gone.

Example::

    >>> teardown_network("no-such-vm", state_dir="/nonexistent")
    False
"""

from __future__ import annotations

import os
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from firec.errors import ConfigError, NetworkError
from firec.network import cni as _cni
from firec.network import nat as _nat
from firec.network import netns as _netns
from firec.network import tap as _tap
from firec.network.leases import Lease, LeaseStore
from firec.network.record import NetworkRecord, record_path

__all__ = ["reclaim_leases", "teardown_network", "undo"]


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


def undo(record: NetworkRecord, state_dir: Path) -> None:
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
    record = NetworkRecord.load(path)
    if record is None:
        return False
    undo(record, Path(state_dir))
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
