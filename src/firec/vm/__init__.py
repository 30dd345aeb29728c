"""The microVM: its configuration, its process, and its whole life.

* :mod:`firec.vm.config`: :class:`Config`, the value a user gives, and its
  builders (``Config.builder(...)``, the ``firec`` crate's shape; the setters
  in ``_config_builder.py``, the checks of a whole config in ``_config_checks.py``);
* :mod:`firec.vm.layout`: where each of a VM's files is, on the host and as
  Firecracker sees it (:class:`PlainLayout`, or the :class:`JailedLayout` of its
  jail): the one place that knows whether a VM is jailed;
* :mod:`firec.vm.jailer`: the jailer's settings (:class:`JailerConfig`), its
  command line and cgroups (:class:`Jail` is the :class:`JailedLayout`);
* :mod:`firec.vm.binaries`: where ``firecracker`` and ``jailer`` are found,
  in one documented order;
* ``_launch.py``: one VM's spawn: files brought into place, the process
  started, and undone; ``_configure.py``: the API calls (or config file)
  that configure it;
* ``_restore.py``: what a restore or a clone needs before Firecracker loads
  a :class:`firec.snapshots.Snapshot`; ``_snapshot_config.py``: the config of
  a VM restored from one (:meth:`Config.from_snapshot`);
* ``_registry/``: the host registry's code (records, claims, reaping), whose
  door is :mod:`firec.host.registry`: a machine claims its id there first;
* :class:`Machine` / :class:`AsyncMachine`: create, start, pause, snapshot,
  restore, clone, shutdown, delete (written once, for asyncio, in layers:
  ``_async/vmm.py`` the VMM process, ``lifecycle.py`` create to delete,
  ``snapshots.py`` snapshot, restore and clone, ``devices.py`` vsock, drives
  and metrics at runtime, put together in ``machine.py``; their ``_sync/``
  twins are generated; ``_sync/io.py`` and ``_async/io.py`` are their
  blocking and asyncio waits);
* :mod:`firec.vm.process`: the VMM's process, exit status and threads (with
  the views of processes that rooms below use too, from ``firec._proc``);
* :mod:`firec.vm.console`, :mod:`firec.vm.logs`, :mod:`firec.vm.metrics`,
  :mod:`firec.vm.streams`: what Firecracker writes, as lines and records;
* :mod:`firec.vm.vsock`: host ends of the guest's vsock;
* :mod:`firec.vm.state`: :class:`MachineState`.

Example::

    >>> from firec.vm import Config
    >>> config = Config.builder("vm-1", "/srv/vmlinux").machine_cfg().vcpu_count(2).build().build()
    >>> config.vm_id, config.machine_cfg.vcpu_count
    ('vm-1', 2)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from firec._lazy import lazy_door

if TYPE_CHECKING:
    from firec.vm import (
        binaries,
        config,
        console,
        jailer,
        layout,
        logs,
        metrics,
        process,
        state,
        streams,
        vsock,
    )
    from firec.vm._async.machine import AsyncMachine
    from firec.vm._sync.machine import Machine
    from firec.vm.builders import DriveBuilder, JailerBuilder, MachineBuilder
    from firec.vm.config import BootMethod, Builder, Config
    from firec.vm.console import Console, ConsoleKind
    from firec.vm.jailer import Jail, JailerConfig, JailerMode
    from firec.vm.layout import JailedLayout, Layout, PlainLayout
    from firec.vm.logs import LogForwarder, VmFilter
    from firec.vm.metrics import MetricsForwarder
    from firec.vm.process import ExitStatus, ExitWatch
    from firec.vm.state import MachineState
    from firec.vm.streams import AsyncLineReader, LineReader

_HOMES = {
    "AsyncLineReader": "firec.vm.streams",
    "AsyncMachine": "firec.vm._async.machine",
    "BootMethod": "firec.vm.config",
    "Builder": "firec.vm.config",
    "Config": "firec.vm.config",
    "Console": "firec.vm.console",
    "ConsoleKind": "firec.vm.console",
    "ExitStatus": "firec.vm.process",
    "ExitWatch": "firec.vm.process",
    "Jail": "firec.vm.jailer",
    "JailedLayout": "firec.vm.layout",
    "Layout": "firec.vm.layout",
    "PlainLayout": "firec.vm.layout",
    "JailerBuilder": "firec.vm.builders",
    "DriveBuilder": "firec.vm.builders",
    "MachineBuilder": "firec.vm.builders",
    "JailerConfig": "firec.vm.jailer",
    "JailerMode": "firec.vm.jailer",
    "LineReader": "firec.vm.streams",
    "LogForwarder": "firec.vm.logs",
    "Machine": "firec.vm._sync.machine",
    "MachineState": "firec.vm.state",
    "MetricsForwarder": "firec.vm.metrics",
    "VmFilter": "firec.vm.logs",
}
_SUBMODULES = (
    "binaries",
    "config",
    "console",
    "jailer",
    "layout",
    "logs",
    "metrics",
    "process",
    "state",
    "streams",
    "vsock",
)

__all__ = [
    "AsyncLineReader",
    "AsyncMachine",
    "BootMethod",
    "Builder",
    "Config",
    "Console",
    "ConsoleKind",
    "DriveBuilder",
    "ExitStatus",
    "ExitWatch",
    "Jail",
    "JailedLayout",
    "JailerBuilder",
    "JailerConfig",
    "JailerMode",
    "Layout",
    "LineReader",
    "LogForwarder",
    "Machine",
    "MachineBuilder",
    "MachineState",
    "MetricsForwarder",
    "PlainLayout",
    "VmFilter",
    "binaries",
    "config",
    "console",
    "jailer",
    "layout",
    "logs",
    "metrics",
    "process",
    "state",
    "streams",
    "vsock",
]

__getattr__, __dir__ = lazy_door(__name__, _HOMES, _SUBMODULES)
