"""A census of everything a microVM can leave on a host: the fault tests' "nothing left".

:func:`leftovers` looks, for a set of VM ids, at every kind of thing firec
or Firecracker makes, and names what is still there: processes, files
(VM directories, jails, sockets), cgroups, links, network namespaces, nft
chains, leases and records. An empty list means the host is clean of them.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from firec.network.setup import host_link_name, netns_name, vm_key


def _argv(pid: str) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def _zombie(pid: str) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def processes(vm_ids: Iterable[str]) -> list[str]:
    """Live processes started for these VMs (their argv has ``--id <vm id>``)."""
    wanted = {os.fsencode(i) for i in vm_ids}
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        argv = _argv(entry.name)
        ours = any(a == b"--id" and b in wanted for a, b in itertools.pairwise(argv))
        if ours and not _zombie(entry.name):
            found.append(f"process {entry.name}: {b' '.join(argv).decode(errors='replace')}")
    return found


def leftovers(
    vm_ids: Iterable[str],
    *,
    state_dir: Path,
    workdir: Path | None = None,
    chroot_base: Path | None = None,
    network_state: Path | None = None,
) -> list[str]:
    """Everything of these VMs still on the host (empty: nothing left)."""
    ids = list(vm_ids)
    left = processes(ids)
    network_state = network_state or state_dir / "network"
    for vm_id in ids:
        key = vm_key(vm_id)
        candidates = [
            state_dir / "vms" / f"{vm_id}.json",
            state_dir / "vms" / f"{vm_id}.lock",
            network_state / "networks" / f"{vm_id}.json",
        ]
        if workdir is not None:
            candidates.append(workdir / vm_id)
        if chroot_base is not None:
            candidates += list(chroot_base.glob(f"*/{vm_id}"))
        left += [f"file {p}" for p in candidates if p.exists() or p.is_symlink()]
        cgroups = Path("/sys/fs/cgroup")
        found = (*cgroups.glob(f"*/*/{vm_id}"), *cgroups.glob(f"*/{vm_id}"))
        left += [f"cgroup {p}" for p in found]
        if Path("/var/run/netns", netns_name(vm_id)).exists():
            left.append(f"network namespace {netns_name(vm_id)}")
        if Path("/sys/class/net", host_link_name(vm_id)).exists():
            left.append(f"link {host_link_name(vm_id)}")
        left += [f"link {p.name}" for p in Path("/sys/class/net").glob(f"fct{key}*")]
        for lease_file in (network_state / "leases").glob("*.json"):
            try:
                leases = json.loads(lease_file.read_text()).get("leases", {})
            except (OSError, ValueError):
                continue
            mine = [owner for owner in leases if owner.startswith(f"{vm_id}/")]
            left += [f"lease {owner} in {lease_file}" for owner in mine]
        left += [f"nft chain vm_{key}" for chain in _nft_chains() if chain == f"vm_{key}"]
    return left


def _nft_chains() -> list[str]:
    nft = shutil.which("nft")
    if nft is None:
        return []
    result = subprocess.run(
        [nft, "-j", "list", "table", "inet", "firec"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        return []
    items = json.loads(result.stdout).get("nftables", [])
    return [item["chain"]["name"] for item in items if "chain" in item]
