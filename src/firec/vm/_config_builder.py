"""The setters of :class:`firec.vm.config.Builder`: :class:`BuilderSetters`.

Each setter checks its value at once (refusing it with a
:class:`~firec.errors.ConfigError` that names the field) and returns a new
builder with it set; :class:`~firec.vm.config.Builder` adds the few that need
:mod:`firec.vm.config` itself and ``build()``. The setters know the config
only as :class:`Settings` (what they read of it), so this module needs
nothing of :mod:`firec.vm.config`::

    >>> from firec.vm import Config
    >>> builder = Config.builder("vm-1", "/srv/vmlinux").balloon(64).workdir("/tmp")
    >>> builder.build(check_files=False).balloon.amount_mib
    64
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, Self

from firec.api import models
from firec.errors import ConfigError
from firec.network.interface import Interface
from firec.vm._checks import bool_value, enum_value, optional_path, path_value, str_value
from firec.vm._config_checks import check_mmds_data, instance, model
from firec.vm.builders import DriveBuilder, JailerBuilder, MachineBuilder
from firec.vm.guest_agent import AgentSettings, check_port, check_token, new_token
from firec.vm.jailer import JailerConfig

if TYPE_CHECKING:
    from firec.vm.console import Console

__all__ = ["BuilderSetters", "Settings"]


class Settings(Protocol):
    """What the setters read of the config being built (:class:`~firec.vm.config.Config` has it)."""

    @property
    def network_interfaces(self) -> tuple[Interface, ...]: ...
    @property
    def drives(self) -> tuple[models.Drive, ...]: ...
    @property
    def pmem(self) -> tuple[models.Pmem, ...]: ...
    @property
    def machine(self) -> models.MachineConfiguration: ...
    @property
    def jailer(self) -> JailerConfig | None: ...
    @property
    def extra_args(self) -> tuple[str, ...]: ...


class BuilderSetters:
    """The setters of :class:`~firec.vm.config.Builder`; each returns a new builder."""

    _config: Settings

    def _with(self, **changes: Any) -> Self:
        """A builder whose config has ``changes`` (:class:`~firec.vm.config.Builder` says how)."""
        raise NotImplementedError

    def socket_path(self, path: str | os.PathLike[str]) -> Self:
        """The API socket (inside the jail when jailed)."""
        return self._with(socket_path=path_value("socket_path", path))

    def log_path(self, path: str | os.PathLike[str]) -> Self:
        """Firecracker logs to this file."""
        return self._with(log_path=path_value("log_path", path))

    def log_fifo(self, path: str | os.PathLike[str]) -> Self:
        """Firecracker logs to this fifo, which firec creates and reads."""
        return self._with(log_fifo=path_value("log_fifo", path))

    def log_level(self, level: models.LogLevel | str) -> Self:
        """Firecracker's log level (``"Error"``, ``"Warning"``, ``"Info"``, ``"Debug"``...)."""
        return self._with(log_level=enum_value("log_level", models.LogLevel, level))

    def metrics_path(self, path: str | os.PathLike[str]) -> Self:
        """Firecracker writes metrics to this file."""
        return self._with(metrics_path=path_value("metrics_path", path))

    def metrics_fifo(self, path: str | os.PathLike[str]) -> Self:
        """Firecracker writes metrics to this fifo, which firec creates and reads."""
        return self._with(metrics_fifo=path_value("metrics_fifo", path))

    def initrd_path(self, path: str | os.PathLike[str]) -> Self:
        """An initrd."""
        return self._with(initrd=path_value("initrd", path))

    def net_ns(self, name_or_path: str) -> Self:
        """Run in this network namespace (a name under ``/var/run/netns``, or a path)."""
        return self._with(
            net_ns=str_value("net_ns", name_or_path, what="a network namespace name or path")
        )

    def add_network_interface(self, interface: Interface | models.NetworkInterface) -> Self:
        """Add a virtio-net device: a :class:`firec.network.Interface` or an API model.

        An interface with a ``network`` plan gets its tap, namespace, address
        and NAT set up by the machine, and torn down with it.
        """
        if not isinstance(interface, Interface | models.NetworkInterface):
            raise ConfigError(
                f"network_interfaces[{len(self._config.network_interfaces)}]",
                "must be a firec.network.Interface or a models.NetworkInterface, "
                f"not {type(interface).__name__}",
            )
        if isinstance(interface, models.NetworkInterface):
            interface = Interface(
                interface.iface_id,
                interface.host_dev_name,
                guest_mac=interface.guest_mac,
                rx_rate_limiter=interface.rx_rate_limiter,
                tx_rate_limiter=interface.tx_rate_limiter,
            )
        return self._with(network_interfaces=(*self._config.network_interfaces, interface))

    def _added_drive(self, drive: models.Drive) -> Self:
        return self._with(drives=(*self._config.drives, drive))

    def add_drive(self, drive_id: str, src_path: str | os.PathLike[str]) -> DriveBuilder[Self]:
        """Add a block device backed by ``src_path``; :meth:`DriveBuilder.build` comes back here."""
        path = path_value(f"drives.{drive_id}.path_on_host", src_path)
        return DriveBuilder(self, drive_id, path)

    def machine_cfg(self) -> MachineBuilder[Self]:
        """Set vCPUs, memory and the rest; :meth:`MachineBuilder.build` comes back here."""
        return MachineBuilder(self, self._config.machine.to_api())

    def jailer_cfg(self) -> JailerBuilder[Self]:
        """Run under the jailer; :meth:`JailerBuilder.build` comes back here."""
        return JailerBuilder(self, self._config.jailer or JailerConfig())

    def vsock(self, guest_cid: int, uds_path: str | os.PathLike[str]) -> Self:
        """A virtio-vsock device with guest CID ``guest_cid`` and host socket ``uds_path``."""
        path = path_value("vsock.uds_path", uds_path)
        return self._with(
            vsock=model("vsock", models.Vsock, guest_cid=guest_cid, uds_path=str(path))
        )

    def agent(self, *, port: int | None = None, token: str | bool = True) -> Self:
        """The guest agent's vsock ``port`` (default 61932) and ``token``, for ``machine.exec``.

        ``token=True`` (the default) makes a random one for this config,
        ``False`` asks for none, a string is that token. The guest is told
        both on its kernel command line (``firec.agent_port=``,
        ``firec.agent_token=``), the machine's agent client uses them
        (:mod:`firec.vm.guest_agent`). Clones and restored VMs keep their
        snapshot's. Example::

            >>> from firec.vm import Config
            >>> config = Config.builder("vm-1", "/k").agent(token="s3cret").build(check_files=False)
            >>> config.agent
            AgentSettings(port=61932)
            >>> config.agent.token
            's3cret'
        """
        if token is True:
            chosen: str | None = new_token()
        elif token is False:
            chosen = None
        else:
            chosen = check_token(token)
        kwargs = {} if port is None else {"port": check_port(port)}
        return self._with(agent=AgentSettings(token=chosen, **kwargs))

    def mmds(
        self,
        data: Mapping[str, Any] | None = None,
        *,
        version: models.MmdsVersion | str = "V2",
        network_interfaces: Sequence[str] = (),
        ipv4_address: str | None = None,
        imds_compat: bool | None = None,
    ) -> Self:
        """The MMDS: its config (reachable from ``network_interfaces``) and initial ``data``."""
        if isinstance(network_interfaces, str) or not isinstance(network_interfaces, Sequence):
            raise ConfigError(
                "mmds_config.network_interfaces",
                f"must be a list of interface ids, not {type(network_interfaces).__name__}",
            )
        config = model(
            "mmds_config",
            models.MmdsConfig,
            version=enum_value("mmds_config.version", models.MmdsVersion, version),
            network_interfaces=list(network_interfaces),
            ipv4_address=ipv4_address,
            imds_compat=imds_compat,
        )
        mmds_data = dict(check_mmds_data(data)) if data is not None else None
        return self._with(mmds_config=config, mmds_data=mmds_data)

    def balloon(
        self, amount_mib: int, *, deflate_on_oom: bool = False, stats_polling_interval_s: int = 0
    ) -> Self:
        """A balloon device inflated to ``amount_mib``."""
        balloon = model(
            "balloon",
            models.Balloon,
            amount_mib=amount_mib,
            deflate_on_oom=deflate_on_oom,
            stats_polling_interval_s=stats_polling_interval_s,
        )
        return self._with(balloon=balloon)

    def entropy(self, rate_limiter: models.RateLimiter | None = None) -> Self:
        """A virtio-rng device, optionally rate limited."""
        return self._with(entropy=model("entropy", models.EntropyDevice, rate_limiter=rate_limiter))

    def serial(self, serial_out_path: str | os.PathLike[str]) -> Self:
        """Write the serial console to this file (Firecracker 1.14+)."""
        path = path_value("serial.serial_out_path", serial_out_path)
        return self._with(serial=model("serial", models.SerialDevice, serial_out_path=str(path)))

    def cpu_config(self, cpu_config: models.CpuConfig) -> Self:
        """A custom CPU template."""
        instance("cpu_config", cpu_config, models.CpuConfig, "a models.CpuConfig")
        return self._with(cpu_config=cpu_config)

    def add_pmem(self, pmem: models.Pmem) -> Self:
        """A virtio-pmem device (Firecracker 1.14+)."""
        instance(f"pmem[{len(self._config.pmem)}]", pmem, models.Pmem, "a models.Pmem")
        return self._with(pmem=(*self._config.pmem, pmem))

    def memory_hotplug(self, config: models.MemoryHotplugConfig) -> Self:
        """A hotpluggable memory region (Firecracker 1.14+)."""
        instance(
            "memory_hotplug", config, models.MemoryHotplugConfig, "a models.MemoryHotplugConfig"
        )
        return self._with(memory_hotplug=config)

    def logger(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        fifo: str | os.PathLike[str] | None = None,
        level: models.LogLevel | str | None = None,
        show_level: bool = False,
        show_log_origin: bool = False,
    ) -> Self:
        """Firecracker's logger: to a file ``path`` or a ``fifo`` firec reads, and its format.

        A machine forwards every line to Python :mod:`logging`, on the one
        logger ``firec.vmm`` for all VMs; each record's ``vm_id`` attribute
        names the VM (keep one VM's lines with :class:`firec.vm.logs.VmFilter`).
        """
        return self._with(
            log_path=optional_path("log_path", path),
            log_fifo=optional_path("log_fifo", fifo),
            log_level=enum_value("log_level", models.LogLevel, level)
            if level is not None
            else None,
            log_show_level=bool_value("log_show_level", show_level),
            log_show_origin=bool_value("log_show_origin", show_log_origin),
        )

    def metrics(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        fifo: str | os.PathLike[str] | None = None,
    ) -> Self:
        """Firecracker's metrics: to a file ``path``, or a ``fifo`` firec reads."""
        return self._with(
            metrics_path=optional_path("metrics_path", path),
            metrics_fifo=optional_path("metrics_fifo", fifo),
        )

    def firecracker_binary(self, path: str | os.PathLike[str]) -> Self:
        """The Firecracker executable for plain (unjailed) runs."""
        return self._with(firecracker_binary=path_value("firecracker_binary", path))

    def http_api_max_payload_size(self, size: int) -> Self:
        """The largest API request body Firecracker takes, in bytes (default 51200)."""
        return self._with(http_api_max_payload_size=size)

    def extra_args(self, *args: str) -> Self:
        """More Firecracker command-line arguments."""
        for arg in args:
            str_value("extra_args", arg, what="a command-line argument", empty=True)
        return self._with(extra_args=(*self._config.extra_args, *args))

    def console(self, console: Console) -> Self:
        """Where the serial console goes (:mod:`firec.vm.console`)."""
        from firec.vm.console import Console

        instance("console", console, Console, "a firec.vm.console.Console")
        return self._with(console=console)

    def workdir(self, path: str | os.PathLike[str]) -> Self:
        """Where firec keeps this VM's sockets and fifos (plain runs): an absolute path."""
        return self._with(workdir=path_value("workdir", path))

    def state_dir(self, path: str | os.PathLike[str]) -> Self:
        """Where firec keeps leases and network records (shared by all VMs): an absolute path."""
        return self._with(state_dir=path_value("state_dir", path))

    def host_record(self, enabled: bool) -> Self:
        """Keep a host record of the VM (default), or not.

        See :attr:`Config.host_record <firec.vm.config.Config.host_record>`.
        """
        return self._with(host_record=enabled)
