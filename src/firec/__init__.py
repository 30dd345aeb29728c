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

:class:`AsyncMachine` is the asyncio twin.

The low-level clients speak every endpoint of the Firecracker API, typed,
and refuse what the connected Firecracker version lacks::

    import firec
    from firec.models import MachineConfiguration

    with firec.Client("/run/firecracker.socket") as client:
        client.put_machine_config(MachineConfiguration(vcpu_count=2, mem_size_mib=512))

:class:`AsyncClient` is the asyncio twin. Errors: :mod:`firec.errors`.
Models of every API body: :mod:`firec.models`. Versions: :mod:`firec.versions`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from firec import cli as cli
    from firec import errors, images, models, network, testing, versions
    from firec.async_client import AsyncClient
    from firec.async_machine import AsyncMachine
    from firec.client import Client
    from firec.config import BootMethod, Builder, Config
    from firec.console import Console
    from firec.errors import APIError, FirecError
    from firec.jailer import JailerConfig, JailerMode
    from firec.machine import Machine
    from firec.process import ExitStatus
    from firec.snapshot import Snapshot
    from firec.state import MachineState
    from firec.versions import Version

__version__ = "0.1.0"

# Names are imported on first use: `import firec` stays cheap for programs
# (the emulator, the CLI) that need only a corner of it.
_HOMES = {
    "APIError": "firec.errors",
    "AsyncClient": "firec.async_client",
    "AsyncMachine": "firec.async_machine",
    "BootMethod": "firec.config",
    "Builder": "firec.config",
    "Client": "firec.client",
    "Config": "firec.config",
    "Console": "firec.console",
    "ExitStatus": "firec.process",
    "FirecError": "firec.errors",
    "JailerConfig": "firec.jailer",
    "JailerMode": "firec.jailer",
    "Machine": "firec.machine",
    "MachineState": "firec.state",
    "Snapshot": "firec.snapshot",
    "Version": "firec.versions",
}
# Subpackages and modules, imported on first use too: `import firec` is enough for
# `firec.network.VMNetwork` or `firec.testing.Emulator`.
_SUBMODULES = {"cli", "errors", "images", "models", "network", "testing", "versions"}

__all__ = [
    "APIError",
    "AsyncClient",
    "AsyncMachine",
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
    "Snapshot",
    "Version",
    "__version__",
    "errors",
    "images",
    "models",
    "network",
    "testing",
    "versions",
]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES or (not name.startswith("_") and _is_submodule(name)):
        return importlib.import_module(f"firec.{name}")
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'firec' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def _is_submodule(name: str) -> bool:
    """Whether ``firec.<name>`` is a public module of the package (``firec.vsock``...)."""
    import importlib.util

    return name.isidentifier() and importlib.util.find_spec(f"firec.{name}") is not None


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | _SUBMODULES)
