"""What configures a VM, as Firecracker takes it: API calls in order, or one ``--config-file``.

:func:`api_calls` lists the API requests that configure the VM, in the order
Firecracker needs them, and :func:`config_file` the same as one
``--config-file`` document. Every path in them is as Firecracker sees it: the
VM's :class:`~firec.vm.layout.Layout` translates each (inside the jail, when
there is one). Both take the VM's launch facts
(:class:`~firec.vm._launch.Launch`), or anything with the same three
attributes (:class:`Placed`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from firec.api import models
from firec.errors import ConfigError
from firec.vm.config import Config
from firec.vm.guest_agent import boot_args
from firec.vm.layout import Layout

__all__ = ["Placed", "api_calls", "boot_source", "config_file", "drives", "pmems", "vsock"]


class Placed(Protocol):
    """A config and where its VM's files are (a :class:`~firec.vm._launch.Launch` is one)."""

    @property
    def config(self) -> Config: ...
    @property
    def layout(self) -> Layout: ...
    @property
    def metrics_path(self) -> Path | None: ...


def _seen(layout: Layout, host_path: str | None) -> str | None:
    return layout.seen(host_path) if host_path is not None else None


def api_calls(launch: Placed) -> list[tuple[str, Any]]:
    """The client calls that configure the VM, in order, paths as Firecracker sees them.

    Each item is ``(client method name, argument)``; InstanceStart is not included.
    """
    config, layout = launch.config, launch.layout
    calls: list[tuple[str, Any]] = []
    if launch.metrics_path is not None:
        metrics = models.Metrics(metrics_path=layout.seen(launch.metrics_path))
        calls.append(("put_metrics", metrics))
    calls.append(("put_machine_config", config.machine))
    if config.cpu_config is not None:
        calls.append(("put_cpu_config", config.cpu_config))
    calls.append(("put_boot_source", boot_source(launch)))
    calls += [("put_drive", drive) for drive in drives(launch)]
    calls += [("put_pmem", pmem) for pmem in pmems(launch)]
    calls += [("put_network_interface", i.to_model()) for i in config.network_interfaces]
    if config.vsock is not None:
        calls.append(("put_vsock", vsock(launch)))
    if config.entropy is not None:
        calls.append(("put_entropy", config.entropy))
    if config.balloon is not None:
        calls.append(("put_balloon", config.balloon))
    if config.serial is not None:
        serial = config.serial.model_copy(
            update={"serial_out_path": _seen(layout, config.serial.serial_out_path)}
        )
        calls.append(("put_serial", serial))
    if config.memory_hotplug is not None:
        calls.append(("put_memory_hotplug", config.memory_hotplug))
    if config.mmds_config is not None:
        calls.append(("put_mmds_config", config.mmds_config))
    if config.mmds_data is not None:
        calls.append(("put_mmds", dict(config.mmds_data)))
    return calls


def boot_source(launch: Placed) -> models.BootSource:
    """The boot source, paths as Firecracker sees them, the agent's arguments added."""
    config, layout = launch.config, launch.layout
    return models.BootSource(
        kernel_image_path=layout.seen(config.kernel_image),
        initrd_path=layout.seen(config.initrd) if config.initrd is not None else None,
        boot_args=boot_args(config.kernel_args, config.agent),
    )


def drives(launch: Placed) -> list[models.Drive]:
    """The drives, paths as Firecracker sees them."""
    return [
        d.model_copy(update={"path_on_host": _seen(launch.layout, d.path_on_host)})
        for d in launch.config.drives
    ]


def pmems(launch: Placed) -> list[models.Pmem]:
    """The pmem devices, paths as Firecracker sees them."""
    return [
        p.model_copy(update={"path_on_host": _seen(launch.layout, p.path_on_host)})
        for p in launch.config.pmem
    ]


def vsock(launch: Placed) -> models.Vsock:
    """The vsock device, its socket as Firecracker sees it (in a jail: made inside it)."""
    device = launch.config.vsock
    assert device is not None
    return device.model_copy(update={"uds_path": launch.layout.seen(device.uds_path)})


def config_file(launch: Placed) -> dict[str, Any]:
    """The ``--config-file`` document equivalent to :func:`api_calls`."""
    config = launch.config
    for name in ("serial", "cpu_config"):  # 1.14.2 ignores a "serial" key in the file
        if getattr(config, name) is not None:
            raise ConfigError(
                name, "cannot be given in a --config-file boot; use the API boot method"
            )
    document: dict[str, Any] = {
        "boot-source": boot_source(launch).to_api(),
        "machine-config": config.machine.to_api(),
        "drives": [d.to_api() for d in drives(launch)],
        "network-interfaces": [i.to_model().to_api() for i in config.network_interfaces],
    }
    if config.pmem:
        document["pmem"] = [p.to_api() for p in pmems(launch)]
    if launch.metrics_path is not None:
        document["metrics"] = {"metrics_path": launch.layout.seen(launch.metrics_path)}
    if config.vsock is not None:
        document["vsock"] = vsock(launch).to_api()
    if config.entropy is not None:
        document["entropy"] = config.entropy.to_api()
    if config.balloon is not None:
        document["balloon"] = config.balloon.to_api()
    if config.mmds_config is not None:
        document["mmds-config"] = config.mmds_config.to_api()
    if config.memory_hotplug is not None:
        document["memory-hotplug"] = config.memory_hotplug.to_api()
    return document
