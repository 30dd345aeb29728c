"""Restoring snapshots: the checks before spawning, the files a restore needs, and clones.

:meth:`firec.AsyncMachine.restore` (and :meth:`firec.Machine.restore`) use
:func:`plan_restore` to refuse, before any VMM is spawned, what cannot work:
a Firecracker that cannot load the snapshot, a missing or truncated memory
file, overrides naming unknown interfaces, options the Firecracker lacks.
:func:`prepare_restore` then makes the VM's directory (and jail), links the
snapshot files in without ever writing to them, and starts the page-fault
handler for the ``Uffd`` backend. :func:`clone_plans` gives each of the
clones of :meth:`firec.Machine.clone` its id and overrides.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firec.api import models
from firec.api.versions import Version, check_supported, has_field
from firec.errors import ConfigError, SnapshotError, UnsupportedError
from firec.network.interface import CNINetwork
from firec.network.mac import derive_mac
from firec.snapshots._format import probe
from firec.snapshots.snapshot import PerClone, Snapshot
from firec.snapshots.uffd import UffdHandler
from firec.vm._launch import Launch, attach_network
from firec.vm.config import Config
from firec.vm.guest_agent import runs_agent

if TYPE_CHECKING:
    from firec.network import VMNetwork

__all__ = [
    "RestorePlan",
    "RestoreSetup",
    "attach_restore_network",
    "clone_plans",
    "first_failure",
    "plan_restore",
    "prepare_restore",
    "tap_overrides",
]

_LOAD = "SnapshotLoadParams"
#: The file name of firec's own page-fault handler's socket (the layout says where).
UFFD_SOCKET = "uffd.sock"


@dataclass(frozen=True)
class RestorePlan:
    """A restore that passed every check: what to spawn and how to load.

    Attributes:
        snapshot: the snapshot.
        config: the restored VM's config (runtime settings from the caller's
            config, devices from the snapshot).
        version: the Firecracker version that will load it.
        backend: the memory backend.
        uffd_handler: a page-fault handler the caller runs (its socket path as
            Firecracker sees it, or a :class:`UffdHandler`); ``None``: firec's own.
        network_overrides: ``iface_id`` -> new tap name.
        vsock_override: the new vsock socket (host path).
        track_dirty_pages: dirty page tracking after the load.
        resume: resume the VM in the load request.
    """

    snapshot: Snapshot
    config: Config
    version: Version
    backend: models.MemoryBackendType
    uffd_handler: UffdHandler | str | None
    network_overrides: Mapping[str, str]
    vsock_override: str | None
    track_dirty_pages: bool | None
    resume: bool


@dataclass(frozen=True)
class RestoreSetup:
    """What :func:`prepare_restore` made: the load request, and firec's handler to stop later."""

    params: models.SnapshotLoadParams
    handler: UffdHandler | None = None


def plan_restore(
    snapshot: Snapshot,
    config: Config | None,
    *,
    resume: bool,
    backend: models.MemoryBackendType | str,
    uffd_handler: UffdHandler | str | os.PathLike[str] | None,
    network_overrides: Mapping[str, str] | None,
    vsock_override: str | os.PathLike[str] | None,
    track_dirty_pages: bool | None,
) -> RestorePlan:
    """Check everything a restore needs, without making anything.

    Raises:
        SnapshotError: the target Firecracker cannot load the snapshot, or a
            snapshot file (or a drive it names) is missing or truncated.
        ConfigError: overrides naming interfaces the snapshot lacks, a vsock
            override without a vsock device, a bad config.
        UnsupportedError: a Firecracker older than 1.0, or an option the target
            Firecracker does not have (network overrides before 1.12, vsock
            override before 1.16, the Uffd backend on 1.0).
    """
    kind = models.MemoryBackendType(backend)
    if snapshot.type is models.SnapshotType.DIFF:
        raise SnapshotError(
            f"snapshot {snapshot.directory} is a diff: its memory file holds only the pages "
            "written since its parent; restore Snapshot.flatten(<new directory>) instead",
            path=str(snapshot.directory),
        )
    if uffd_handler is not None and kind is not models.MemoryBackendType.UFFD:
        raise ConfigError("uffd_handler", 'a page-fault handler needs backend="Uffd"')
    base = config if config is not None else Config.from_snapshot(snapshot)
    binary = probe(base.exec_file)
    version = binary.version
    check_supported(version)  # firec does not speak the API before 1.0
    snapshot.check_compatible(version, binary.snapshot_format)
    snapshot.check_files(memory=kind is models.MemoryBackendType.FILE or uffd_handler is None)
    overrides = dict(network_overrides or {})
    if overrides:
        if not has_field(_LOAD, "network_overrides", version):
            raise UnsupportedError(
                "network_overrides of a snapshot load", introduced="1.12", connected=str(version)
            )
        known = snapshot.interfaces
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ConfigError(
                "network_overrides",
                f"the snapshot has no interface {', '.join(map(repr, unknown))}; "
                f"its interfaces: {', '.join(sorted(known)) or 'none'}",
            )
    vsock = os.fspath(vsock_override) if vsock_override is not None else None
    if vsock is not None:
        if not has_field(_LOAD, "vsock_override", version):
            raise UnsupportedError(
                "vsock_override of a snapshot load", introduced="1.16", connected=str(version)
            )
        if not snapshot.vm_config.get("vsock"):
            raise ConfigError("vsock_override", "the snapshot has no vsock device to override")
    if kind is models.MemoryBackendType.UFFD and not has_field(_LOAD, "mem_backend", version):
        raise UnsupportedError(
            "the Uffd memory backend (mem_backend of a snapshot load)",
            introduced="1.1",
            connected=str(version),
        )
    restored = _restored_config(snapshot, base, config is not None, overrides, vsock)
    overrides = tap_overrides(snapshot, restored, version)
    if track_dirty_pages is not None:
        machine = restored.machine.model_copy(update={"track_dirty_pages": track_dirty_pages})
        restored = restored.replace(machine=machine)
    restored.validate(check_files=False)
    for name, host in _device_files(snapshot, restored).items():
        if not Path(host).exists():
            hint = ""
            if snapshot.jailed and not restored.layout.jailed:
                hint = " (it was taken in a jail, whose paths these are: restore it jailed)"
            raise SnapshotError(
                f"snapshot {snapshot.directory}: {name} {host} does not exist; Firecracker "
                f"reopens the VM's drives when it loads a snapshot{hint}",
                path=host,
            )
    handler = uffd_handler if isinstance(uffd_handler, UffdHandler) else None
    external = os.fspath(uffd_handler) if isinstance(uffd_handler, str | os.PathLike) else None
    return RestorePlan(
        snapshot=snapshot,
        config=restored,
        version=version,
        backend=kind,
        uffd_handler=handler or external,
        network_overrides=overrides,
        vsock_override=vsock,
        track_dirty_pages=track_dirty_pages,
        resume=resume,
    )


def tap_overrides(snapshot: Snapshot, config: Config, version: Version) -> dict[str, str]:
    """The interfaces whose tap in ``config`` is not the snapshot's: ``iface_id`` -> tap.

    Raises:
        UnsupportedError: there are some, and Firecracker ``version`` cannot
            override taps (before 1.12).
    """
    taps = snapshot.interfaces
    changed = {
        i.iface_id: i.host_dev_name
        for i in config.network_interfaces
        if i.iface_id in taps and i.host_dev_name != taps[i.iface_id]
    }
    if changed and not has_field(_LOAD, "network_overrides", version):
        moved = ", ".join(f"{i} ({taps[i]} -> {tap})" for i, tap in changed.items())
        raise UnsupportedError(
            f"network_overrides of a snapshot load (interfaces on other taps: {moved})",
            introduced="1.12",
            connected=str(version),
        )
    return changed


def attach_restore_network(plan: RestorePlan) -> tuple[RestorePlan, VMNetwork | None]:
    """Set up the network plans of the restored VM's interfaces (as ``create`` does).

    The taps the plans make become the load's network overrides where they
    differ from the snapshot's. Nothing is left on failure.
    """
    config, network = attach_network(plan.config)
    if network is None:
        return plan, None
    try:
        overrides = tap_overrides(plan.snapshot, config, plan.version)
    except BaseException:
        network.teardown()
        raise
    return dataclasses.replace(plan, config=config, network_overrides=overrides), network


def _restored_config(
    snapshot: Snapshot,
    base: Config,
    given: bool,
    overrides: Mapping[str, str],
    vsock_override: str | None,
) -> Config:
    """The caller's runtime settings with the snapshot's devices."""
    derived = Config.from_snapshot(snapshot, base.vm_id)
    own = {d.drive_id: d for d in base.drives} if given else {}
    drives = tuple(
        d.model_copy(update={"path_on_host": own[d.drive_id].path_on_host})
        if d.drive_id in own
        else d
        for d in derived.drives
    )
    # the caller's interface of the same id brings its tap and network plan
    theirs = {i.iface_id: i for i in base.network_interfaces} if given else {}
    interfaces = tuple(theirs.get(i.iface_id, i) for i in derived.network_interfaces)
    interfaces = tuple(
        dataclasses.replace(i, host_dev_name=overrides[i.iface_id])
        if i.iface_id in overrides
        else i
        for i in interfaces
    )
    vsock = derived.vsock
    if vsock is not None and vsock_override is not None:
        vsock = vsock.model_copy(update={"uds_path": vsock_override})
    changes: dict[str, Any] = {
        "machine": derived.machine,
        "drives": drives,
        "network_interfaces": interfaces,
        "vsock": vsock,
        "balloon": derived.balloon,
        "entropy": derived.entropy,
        "pmem": derived.pmem,
    }
    if not given:
        changes["firecracker_binary"] = base.firecracker_binary
    return base.replace(**changes)


def _device_files(snapshot: Snapshot, config: Config) -> dict[str, str]:
    """The files Firecracker reopens at load: ``"drive <id>"`` -> host path.

    Each is reopened at the path the snapshot recorded, where the config's
    file is brought in (in a jail), or which is itself the file (plainly).
    """
    files: dict[str, str] = {}
    exported = snapshot.vm_config
    layout = config.layout
    seen = {d["drive_id"]: d.get("path_on_host") for d in exported.get("drives") or []}
    for drive in config.drives:
        if drive.path_on_host is None:
            continue
        at = seen.get(drive.drive_id) or None
        files[f"drive {drive.drive_id}"] = str(layout.opened_file(drive.path_on_host, at))
    seen_pmem = {p["id"]: p["path_on_host"] for p in exported.get("pmem") or []}
    for pmem in config.pmem:
        at = seen_pmem.get(pmem.id) or None
        files[f"pmem {pmem.id}"] = str(layout.opened_file(pmem.path_on_host, at))
    return files


def _restore_files(plan: RestorePlan) -> list[tuple[str, Path, str | None, bool]]:
    """What a restore brings in: ``(field, host path, where Firecracker opens it, writable)``.

    The snapshot's state and memory files (only read), and each drive and
    pmem device of the config that the snapshot has, at the path the
    snapshot recorded (writable unless marked read-only). ``None``: where
    the layout puts it (:meth:`~firec.vm.layout.Layout.seen`).
    """
    snapshot, config = plan.snapshot, plan.config
    files: list[tuple[str, Path, str | None, bool]] = [
        ("snapshot state file", snapshot.state_file, None, False)
    ]
    if plan.backend is not models.MemoryBackendType.UFFD:
        files.append(("snapshot memory file", snapshot.memory_file, None, False))
    exported = snapshot.vm_config
    seen_drives = {d["drive_id"]: d.get("path_on_host") for d in exported.get("drives") or []}
    for drive in config.drives:
        seen = seen_drives.get(drive.drive_id)
        if drive.path_on_host and seen:
            field_name = f"drives.{drive.drive_id}.path_on_host"
            files.append((field_name, Path(drive.path_on_host), seen, not drive.is_read_only))
    seen_pmem = {p["id"]: p["path_on_host"] for p in exported.get("pmem") or []}
    for pmem in config.pmem:
        if pmem.id in seen_pmem:
            field_name = f"pmem.{pmem.id}.path_on_host"
            host = Path(pmem.path_on_host)
            files.append((field_name, host, seen_pmem[pmem.id], not pmem.read_only))
    return files


def prepare_restore(launch: Launch, plan: RestorePlan) -> RestoreSetup:
    """Make what the restore needs; everything lands in the VM directory or the jail.

    The state file, the memory file and the drives are brought in by the
    VM's layout (:meth:`~firec.vm.layout.Layout.bring_in`), which never
    changes them: plainly Firecracker opens them where they are; in a jail
    the snapshot's files (only read) are hard-linked when the jail's user
    may read them as they are, copied otherwise, and a writable drive is
    hard-linked, or refused (before anything is made) when the jail's user
    may not write it as it is. A page-fault handler is started for the Uffd
    backend unless the caller runs one.
    """
    snapshot, config, layout = plan.snapshot, launch.config, launch.layout
    uffd = plan.backend is models.MemoryBackendType.UFFD
    brought = _restore_files(plan)
    for field_name, host, _, writable in brought:  # refuse before anything is made
        layout.check_bring_in(host, writable=writable, field=field_name)
    launch.vm_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    layout.make_root()
    seen = {
        host: layout.bring_in(host, writable=writable, at=at, field=field_name)
        for field_name, host, at, writable in brought
    }
    layout.make_dirs(Path(config.api_socket_path).parent)
    vsock_seen = layout.seen(plan.vsock_override) if plan.vsock_override else None
    if vsock_seen is not None:  # where the caller asked
        layout.make_dirs(Path(vsock_seen).parent)
    elif recorded := (snapshot.vm_config.get("vsock") or {}).get("uds_path"):
        layout.make_own_dirs(Path(recorded).parent)  # where the snapshot's VM had it
    layout.make_output(launch.log_path, fifo=launch.log_is_fifo)
    if launch.metrics_path is not None:
        layout.make_output(launch.metrics_path, fifo=launch.metrics_is_fifo)
    handler = None
    if uffd:
        _give_jail_userfaultfd(launch)
        backend_path, handler = _uffd_backend(launch, plan)
    else:
        backend_path = seen[snapshot.memory_file]
    state = seen[snapshot.state_file]
    return RestoreSetup(_load_params(plan, state, backend_path, vsock_seen), handler)


_JAILER_VERSIONS: dict[tuple[str, int, int], Version | None] = {}


def _jailer_version(binary: Path) -> Version | None:
    """The jailer's release (``--version``), cached per file; ``None`` if it does not say."""
    stat = binary.stat()
    key = (str(binary), stat.st_ino, stat.st_mtime_ns)
    if key not in _JAILER_VERSIONS:
        answer = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
        found = re.search(r"Jailer v?(\d+\.\d+\.\d+)", answer.stdout + answer.stderr)
        _JAILER_VERSIONS[key] = Version.parse(found[1]) if found else None
    return _JAILER_VERSIONS[key]


def _give_jail_userfaultfd(launch: Launch) -> None:
    """Make ``/dev/userfaultfd`` in a jail whose jailer does not (before 1.5).

    A jailed Firecracker runs as an unprivileged user, which may not call
    ``userfaultfd(2)``; it then opens the device instead. Jailers from 1.5
    on create it themselves (and would fail if it existed already). Without
    a jailer Firecracker opens the host's own device.
    """
    device = Path("/dev/userfaultfd")
    jailer = launch.config.jailer  # its release decides
    if jailer is None or launch.layout.vmm_uid == 0 or not device.is_char_device():
        return
    version = _jailer_version(launch.config.jailer_binary)
    if version is None or version >= Version(1, 5, 0):
        return
    launch.layout.make_device(device)


def _uffd_backend(launch: Launch, plan: RestorePlan) -> tuple[str, UffdHandler | None]:
    """The ``backend_path`` of the load (as Firecracker sees it), and firec's own handler."""
    layout = launch.layout
    given = plan.uffd_handler
    if isinstance(given, UffdHandler):
        seen = layout.seen(given.socket_path)
        if layout.on_host(seen) != Path(os.path.abspath(given.socket_path)):
            raise ConfigError(
                "uffd_handler",
                f"Firecracker cannot reach the handler's socket {given.socket_path}: make it "
                f"where the VM's Firecracker sees it (e.g. {layout.own_file(UFFD_SOCKET)}), "
                "or give its path as Firecracker sees it",
            )
        return seen, None
    if given is not None:
        return given, None
    path = layout.own_file(UFFD_SOCKET)
    handler = UffdHandler(path, plan.snapshot.memory_file, owner=layout.owner)
    return layout.seen(path), handler.start()


def _load_params(
    plan: RestorePlan, state: str, backend_path: str, vsock: str | None
) -> models.SnapshotLoadParams:
    version = plan.version
    fields: dict[str, Any] = {"snapshot_path": state, "resume_vm": plan.resume}
    if has_field(_LOAD, "mem_backend", version):
        fields["mem_backend"] = models.MemoryBackend(
            backend_type=plan.backend, backend_path=backend_path
        )
    else:
        fields["mem_file_path"] = backend_path
    if plan.track_dirty_pages is not None:
        name = "track_dirty_pages" if has_field(_LOAD, "track_dirty_pages", version) else None
        fields[name or "enable_diff_snapshots"] = plan.track_dirty_pages
    if plan.network_overrides:
        fields["network_overrides"] = [
            models.NetworkOverride(iface_id=i, host_dev_name=tap)
            for i, tap in plan.network_overrides.items()
        ]
    if vsock is not None:
        fields["vsock_override"] = models.VsockOverride(uds_path=vsock)
    return models.SnapshotLoadParams(**fields)


# -- clones -----------------------------------------------------------------------------------


def _per_clone(value: PerClone | None, index: int) -> dict[str, str] | None:
    if value is None:
        return None
    if callable(value):
        return dict(value(index))
    return {key: template.format(i=index) for key, template in value.items()}


def own_macs(snapshot: Snapshot, config: Config) -> Config:
    """``config`` with each interface's guest MAC derived from the VM's id, when the
    snapshot's guest runs firec's agent; else ``config`` as it is.

    A restored guest keeps the snapshot's MACs whatever the config says; its
    agent sets the config's (``renew_identity``), so only then may the config
    say another. A CNI interface keeps the MAC of the CNI interface.
    """
    if not runs_agent(snapshot.boot_args):
        return config
    return config.replace(
        network_interfaces=tuple(
            i
            if isinstance(i.network, CNINetwork)
            else dataclasses.replace(i, guest_mac=derive_mac(config.vm_id, i.iface_id))
            for i in config.network_interfaces
        )
    )


def clone_plans(
    snapshot: Snapshot,
    n: int,
    config: Config | None,
    configure: Callable[[int, Config], Config] | None,
    network_overrides: PerClone | None,
    vsock_override: str | Callable[[int], str] | None,
) -> list[tuple[Config, dict[str, Any]]]:
    """Each clone's config and restore arguments: ids ``<vm_id>-<i>``, per-clone overrides."""
    if n < 1:
        raise ConfigError("n", f"must be at least 1, got {n}")
    base = config if config is not None else Config.from_snapshot(snapshot)
    result = []
    for i in range(n):
        clone_config = base.replace(vm_id=f"{base.vm_id[: 64 - len(str(i)) - 1]}-{i}")
        clone_config = own_macs(snapshot, clone_config)
        if configure is not None:
            clone_config = configure(i, clone_config)
        vsock = vsock_override(i) if callable(vsock_override) else vsock_override
        if isinstance(vsock, str):
            vsock = vsock.format(i=i)
        kwargs: dict[str, Any] = {
            "network_overrides": _per_clone(network_overrides, i),
            "vsock_override": vsock,
        }
        result.append((clone_config, kwargs))
    ids = [c.vm_id for c, _ in result]
    if len(set(ids)) != len(ids):
        raise ConfigError("vm_id", "two clones would get the same vm_id; give each its own")
    return result


def first_failure(failures: list[BaseException], n: int) -> BaseException:
    """The error a failed clone raises: the first, noting how many failed."""
    first = failures[0]
    if len(failures) > 1 or n > 1:
        first.add_note(
            f"{len(failures)} of {n} clones failed; the clones already started were "
            "stopped and deleted"
        )
    return first
