"""A VM's config from a snapshot's manifest: what :meth:`Config.from_snapshot` builds.

A snapshot keeps the configuration of the VM it was taken from as ``GET
/vm/config`` gave it (paths as Firecracker saw them, inside the jail when it
ran in one) and the host paths of its files. :func:`config_fields` turns them
into the fields of a :class:`~firec.vm.config.Config`. It lives in the ``vm``
room because configs do: a snapshot knows nothing of them
(docs/architecture.md), and :meth:`firec.Snapshot.config` asks
:meth:`Config.from_snapshot <firec.vm.config.Config.from_snapshot>`.

Example::

    >>> import json
    >>> from pathlib import Path
    >>> from firec.api.models import SnapshotType
    >>> from firec.api.versions import Version
    >>> from firec.snapshots import Snapshot
    >>> exported = {
    ...     "machine-config": {"vcpu_count": 2, "mem_size_mib": 64},
    ...     "boot-source": {"kernel_image_path": "/vmlinux", "boot_args": "console=ttyS0"},
    ... }
    >>> snap = Snapshot(
    ...     Path("/srv/snap"), Path("/srv/snap/vmstate"), Path("/srv/snap/memory"),
    ...     SnapshotType.FULL, Version.parse("1.14.2"), Version.parse("6.0.0"), "base",
    ...     json.dumps(exported), json.dumps({"/vmlinux": "/srv/images/vmlinux"}),
    ... )
    >>> fields = config_fields(snap, "copy-1")
    >>> fields["vm_id"], fields["kernel_image"], fields["machine"].vcpu_count
    ('copy-1', PosixPath('/srv/images/vmlinux'), 2)
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from firec.api import models
from firec.network.interface import Interface
from firec.snapshots.snapshot import Snapshot

__all__ = ["config_fields"]


def config_fields(snapshot: Snapshot, vm_id: str | None = None) -> dict[str, Any]:
    """The fields of a :class:`~firec.vm.config.Config` for a VM restored from ``snapshot``.

    Its devices are the snapshot's (host paths), its id ``vm_id`` (a new
    random one by default), its Firecracker the one that took the snapshot
    when it still exists. Runtime settings (jailer, workdir, logs...) are
    left out: the config's defaults.
    """
    exported = models.FullVmConfiguration.from_api(snapshot.vm_config)
    host = snapshot.host_paths

    def on_host(path: str | None) -> str | None:
        return host.get(path, path) if path is not None else None

    boot = exported.boot_source
    kernel = snapshot.kernel_image or on_host(boot.kernel_image_path if boot else None)
    drives = [
        d.model_copy(update={"path_on_host": on_host(d.path_on_host)})
        for d in exported.drives or []
    ]
    pmem = [
        p.model_copy(update={"path_on_host": on_host(p.path_on_host)}) for p in exported.pmem or []
    ]
    vsock = exported.vsock
    if vsock is not None:
        vsock = vsock.model_copy(update={"uds_path": on_host(vsock.uds_path)})
    binary = snapshot.firecracker_binary
    machine = exported.machine_config or models.MachineConfiguration(
        vcpu_count=1, mem_size_mib=snapshot.mem_size_mib
    )
    return {
        "vm_id": vm_id or str(uuid.uuid4()),
        "kernel_image": Path(kernel or "/"),
        "kernel_args": boot.boot_args if boot else None,
        "initrd": Path(p) if boot and (p := on_host(boot.initrd_path)) else None,
        "machine": machine,
        "drives": tuple(drives),
        "network_interfaces": tuple(
            Interface(
                i.iface_id,
                i.host_dev_name,
                guest_mac=i.guest_mac,
                rx_rate_limiter=i.rx_rate_limiter,
                tx_rate_limiter=i.tx_rate_limiter,
            )
            for i in exported.network_interfaces or ()
        ),
        "vsock": vsock,
        "balloon": exported.balloon,
        "entropy": exported.entropy,
        "pmem": tuple(pmem),
        "firecracker_binary": binary if binary is not None and binary.is_file() else None,
    }
