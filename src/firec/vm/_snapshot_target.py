"""Where a snapshot being taken goes: :class:`SnapshotTarget`.

Taking a snapshot is the machine's work (:meth:`firec.vm.Machine.snapshot`):
Firecracker writes its files where it can (inside the jail, when there is
one), then they are brought to the directory asked for and the manifest of
the :class:`~firec.snapshots.Snapshot` value is written.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firec.api import models
from firec.api.versions import Version
from firec.errors import ConfigError
from firec.snapshots._format import describe_state_file, written_by
from firec.snapshots._sparse import copy_sparse
from firec.snapshots.snapshot import MANIFEST, MEMORY_FILE, STATE_FILE, Snapshot, new_directory, now
from firec.vm._launch import Launch
from firec.vm.config import Config

__all__ = ["SnapshotTarget"]


@dataclass(frozen=True)
class SnapshotTarget:
    """Where a snapshot being taken goes: Firecracker's paths and the final directory.

    Made by :meth:`for_launch`; :meth:`finish` moves the files out of the jail
    (if any) and writes the manifest; :meth:`discard` removes what a failed
    attempt left.
    """

    directory: Path
    launch: Launch
    staging: Path

    @classmethod
    def for_launch(cls, launch: Launch, directory: str | os.PathLike[str]) -> SnapshotTarget:
        """Prepare ``directory``, and where Firecracker writes (in a jail: a staging directory)."""
        target = new_directory(directory)
        return cls(target, launch, launch.layout.staging_dir(target))

    def _seen(self, name: str) -> str:
        return self.launch.layout.seen(self.staging / name)

    def params(self, diff: bool) -> models.SnapshotCreateParams:
        """The ``PUT /snapshot/create`` body."""
        return models.SnapshotCreateParams(
            snapshot_path=self._seen(STATE_FILE),
            mem_file_path=self._seen(MEMORY_FILE),
            snapshot_type=models.SnapshotType.DIFF if diff else models.SnapshotType.FULL,
        )

    def finish(
        self,
        *,
        diff: bool,
        version: Version,
        vm_config: Mapping[str, Any],
        parent: Snapshot | None,
        previous: Snapshot | None = None,
    ) -> Snapshot:
        """Bring the files to :attr:`directory`, record their format, write the manifest.

        ``previous`` is the VM's last snapshot, or the one it was restored from:
        Firecracker 1.0 forgets a restored VM's devices (``GET /vm/config``
        then shows none), so they are taken from there.
        """
        for name in (STATE_FILE, MEMORY_FILE):
            if self.staging != self.directory:
                _move_out(self.staging / name, self.directory / name)
        if self.staging != self.directory:
            self.staging.rmdir()
        config = self.launch.config
        state = self.directory / STATE_FILE
        try:
            binary: Path | None = config.exec_file
        except ConfigError:  # a VM firec only connected to: no known binary
            binary = None
        described = describe_state_file(binary, state) if binary is not None else None
        snapshot = Snapshot(
            directory=self.directory,
            state_file=state,
            memory_file=self.directory / MEMORY_FILE,
            type=models.SnapshotType.DIFF if diff else models.SnapshotType.FULL,
            firecracker_version=version,
            snapshot_format=described or written_by(version),
            vm_id=config.vm_id,
            vm_config_json=json.dumps(
                _with_memory_size(
                    _vm_config(vm_config, config, previous), self.directory / MEMORY_FILE
                ),
                sort_keys=True,
            ),
            host_paths_json=json.dumps(_host_paths(self.launch, previous), sort_keys=True),
            parent=parent.directory if parent is not None else None,
            created_at=now(),
            firecracker_binary=binary,
            jailed=self.launch.layout.jailed,
            kernel_image=config.kernel_image,
        )
        snapshot._save()
        return snapshot

    def discard(self) -> None:
        """Remove the files of a failed attempt (never a complete snapshot)."""
        if (self.directory / MANIFEST).exists():
            return
        for name in (STATE_FILE, MEMORY_FILE):
            for where in {self.staging, self.directory}:
                (where / name).unlink(missing_ok=True)
        if self.staging != self.directory:
            shutil.rmtree(self.staging, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.directory.rmdir()  # only if we left it empty


def _vm_config(
    exported: Mapping[str, Any], config: Config, previous: Snapshot | None
) -> dict[str, Any]:
    """``GET /vm/config``, or when Firecracker forgot a restored VM's devices, the last known."""
    vm_config = dict(exported)
    boot = vm_config.get("boot-source") or {}
    if previous is not None and not boot.get("kernel_image_path"):
        vm_config = previous.vm_config
        taps = {i.iface_id: i.host_dev_name for i in config.network_interfaces}
        for iface in vm_config.get("network-interfaces") or []:
            iface["host_dev_name"] = taps.get(iface["iface_id"], iface["host_dev_name"])
    return vm_config


def _with_memory_size(vm_config: dict[str, Any], memory_file: Path) -> dict[str, Any]:
    """The guest memory size as the memory file tells it (1.0 forgets it after a restore)."""
    if vm_config.get("memory-hotplug"):
        return vm_config  # the file then holds more than the boot memory
    machine = dict(vm_config.get("machine-config") or {})
    machine["mem_size_mib"] = memory_file.stat().st_size >> 20
    return {**vm_config, "machine-config": machine}


def _move_out(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        copy_sparse(source, target)
    source.unlink()


def _host_paths(launch: Launch, parent: Snapshot | None) -> dict[str, str]:
    """Firecracker's paths of the VM's input files and vsock socket -> host paths."""
    paths = dict(parent.host_paths) if parent is not None else {}
    config, layout = launch.config, launch.layout
    for _, host in config.input_files():
        paths[layout.seen(host)] = str(host)
    if config.vsock is not None:
        seen = layout.seen(config.vsock.uds_path)
        # a relative socket stays relative: a restored VM's Firecracker binds it in its own dir
        paths[seen] = str(layout.on_host(seen)) if os.path.isabs(seen) else seen
    return paths
