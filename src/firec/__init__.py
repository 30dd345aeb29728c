"""firec: the Python SDK and command line for Firecracker microVMs.

A microVM's whole life, in the shape of the ``firec`` Rust crate::

    import firec

    config = (
        firec.Config.builder(None, "/srv/images/vmlinux")
        .kernel_args("console=ttyS0 reboot=k panic=1")
        .machine_cfg().vcpu_count(2).mem_size_mib(512).build()
        .add_drive("root", "/srv/images/rootfs.ext4").is_root_device(True).build()
        .build()
    )
    with firec.Machine.create(config) as machine:   # spawn, wait until ready
        machine.start()                             # configure, InstanceStart
        machine.pause(); machine.resume()
        machine.shutdown()
    # everything the VM needed is gone again

:class:`AsyncMachine` is the asyncio twin. :class:`Pool` (and :class:`AsyncPool`)
keep microVMs restored from a snapshot ready, and hand each out once.

The low-level clients speak every endpoint of the Firecracker API, typed,
and refuse what the connected Firecracker version lacks::

    import firec
    from firec.api.models import MachineConfiguration

    with firec.Client("/run/firecracker.socket") as client:
        client.put_machine_config(MachineConfiguration(vcpu_count=2, mem_size_mib=512))

:class:`AsyncClient` is the asyncio twin. Errors: :mod:`firec.errors`.
Models of every API body: :mod:`firec.api.models`. Versions: :mod:`firec.api.versions`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from firec import _moved
from firec._lazy import lazy_door

if TYPE_CHECKING:
    from firec import agent, api, cli, errors, host, images, network, pool, snapshots, testing, vm
    from firec.api import models, versions
    from firec.api._async.client import AsyncClient
    from firec.api._sync.client import Client
    from firec.api.versions import Version
    from firec.errors import APIError, FirecError
    from firec.pool._async.pool import AsyncPool
    from firec.pool._sync.pool import Pool
    from firec.snapshots.snapshot import Snapshot
    from firec.vm._async.machine import AsyncMachine
    from firec.vm._sync.machine import Machine
    from firec.vm.config import BootMethod, Builder, Config
    from firec.vm.console import Console
    from firec.vm.jailer import JailerConfig, JailerMode
    from firec.vm.process import ExitStatus
    from firec.vm.state import MachineState

__version__ = "0.1.0"

# Names and subpackages are imported on first use: `import firec` stays cheap
# for programs (the emulator, the CLI) that need only a corner of it, and
# `import firec` is enough for `firec.network.VMNetwork` or `firec.testing.Emulator`.
_HOMES = {
    "APIError": "firec.errors",
    "AsyncClient": "firec.api._async.client",
    "AsyncMachine": "firec.vm._async.machine",
    "AsyncPool": "firec.pool._async.pool",
    "BootMethod": "firec.vm.config",
    "Builder": "firec.vm.config",
    "Client": "firec.api._sync.client",
    "Config": "firec.vm.config",
    "Console": "firec.vm.console",
    "ExitStatus": "firec.vm.process",
    "FirecError": "firec.errors",
    "JailerConfig": "firec.vm.jailer",
    "JailerMode": "firec.vm.jailer",
    "Machine": "firec.vm._sync.machine",
    "MachineState": "firec.vm.state",
    "Pool": "firec.pool._sync.pool",
    # firec.Snapshot is firec.snapshots.Snapshot, reached through vm.config: the room that
    # teaches Snapshot.config() to build a Config (snapshots may not import vm).
    "Snapshot": "firec.vm.config",
    "Version": "firec.api.versions",
}
_SUBPACKAGES = (
    "agent",
    "api",
    "cli",
    "cluster",
    "errors",
    "host",
    "images",
    "network",
    "pool",
    "snapshots",
    "testing",
    "vm",
)

__all__ = [
    "APIError",
    "AsyncClient",
    "AsyncMachine",
    "AsyncPool",
    "BootMethod",
    "Builder",
    "Client",
    "Config",
    "Console",
    "ExitStatus",
    "FirecError",
    "JailerConfig",
    "JailerMode",
    "Machine",
    "MachineState",
    "Pool",
    "Snapshot",
    "Version",
    "__version__",
    "agent",
    "api",
    "cli",
    "cluster",
    "errors",
    "host",
    "images",
    "models",
    "network",
    "pool",
    "snapshots",
    "testing",
    "versions",
    "vm",
]

# The paths of firec before its layers became packages (firec.config,
# firec.models...) keep working: see firec/_moved.py.
_moved.install()
__getattr__, __dir__ = lazy_door(__name__, _HOMES, _SUBPACKAGES, _moved.MOVED)
