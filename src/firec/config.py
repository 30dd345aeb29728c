"""A microVM's whole configuration: :class:`Config`, and the builder that makes one.

In the shape of the ``firec`` Rust crate: ``Config.builder(vm_id, kernel)``
returns a :class:`Builder` with setters and sub-builders for drives, the
machine and the jailer; ``build()`` finishes (and validates) the config::

    import firec

    config = (
        firec.Config.builder(None, "/srv/images/vmlinux")   # None: a random id
        .kernel_args("console=ttyS0 reboot=k panic=1")
        .machine_cfg()
            .vcpu_count(2)
            .mem_size_mib(512)
            .build()
        .add_drive("root", "/srv/images/rootfs.ext4")
            .is_root_device(True)
            .build()
        .build()
    )

Plain keyword construction works too::

    config = firec.Config(vm_id="vm-1", kernel_image="/srv/images/vmlinux",
                          machine=MachineConfiguration(vcpu_count=2, mem_size_mib=512))

A :class:`Config` is immutable; :meth:`Config.replace` makes a changed copy.
Paths are the caller's host paths; the getters (:attr:`Config.kernel_image_path`
...) give them as Firecracker sees them, inside the jail when there is one.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from . import models
from .errors import ConfigError, ValidationError
from .jailer import Jail, JailerBuilder, JailerConfig, resolve_binary, validate_id
from .network.interface import Interface

if TYPE_CHECKING:
    from .console import Console

__all__ = ["BootMethod", "Builder", "Config", "DriveBuilder", "MachineBuilder"]

#: The longest Unix socket path Linux accepts (sun_path is 108 bytes, NUL included).
MAX_SOCKET_PATH = 107

#: The socket path Firecracker is told to use inside a jail.
JAILED_SOCKET_PATH = "/run/firecracker.socket"


class BootMethod(enum.StrEnum):
    """How the configuration reaches Firecracker.

    * ``API``: one request per setting over the API socket, then InstanceStart.
    * ``CONFIG_FILE``: one ``--config-file`` at spawn; Firecracker boots at once.
    """

    API = "api"
    CONFIG_FILE = "config-file"


def state_dir() -> Path:
    """Where firec keeps what must outlive a process (leases, network records).

    ``/var/lib/firec`` for root, ``$XDG_STATE_HOME/firec`` (or
    ``~/.local/state/firec``) for others.
    """
    if os.geteuid() == 0:
        return Path("/var/lib/firec")
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "firec"


def runtime_dir() -> Path:
    """Where firec keeps per-VM sockets and fifos: ``/run/firec`` for root, else per user."""
    if os.geteuid() == 0:
        return Path("/run/firec")
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/firec-{os.geteuid()}"
    return Path(base) / "firec"


@dataclass(frozen=True, kw_only=True)
class Config:
    """Everything about one microVM: what to boot, its devices, and how to run it.

    Attributes:
        vm_id: the microVM id (1-64 letters, digits, hyphens).
        kernel_image: the guest kernel on the host.
        kernel_args: the kernel command line.
        initrd: an initrd on the host.
        machine: vCPUs, memory, SMT, dirty-page tracking, CPU template, huge pages.
        drives: block devices (``path_on_host`` on the host).
        network_interfaces: virtio-net devices and, for those with a network
            plan, how firec connects them (taps, namespace, NAT, CNI).
        vsock, balloon, entropy, serial, cpu_config, memory_hotplug, mmds_config:
            the optional devices and settings, each an API model.
        pmem: virtio-pmem devices.
        mmds_data: the initial MMDS contents.
        socket_path: the API socket (host path when plain; inside the jail when jailed).
        log_path, log_fifo, metrics_path, metrics_fifo: where Firecracker logs
            and writes metrics (a file, or a fifo firec creates and reads).
        log_level: Firecracker's log level.
        log_show_level, log_show_origin: add the level / the source location to log lines.
        net_ns: a network namespace (name in ``/var/run/netns`` or a path) to run in.
        jailer: jailer settings; ``None`` runs Firecracker plainly.
        firecracker_binary: the Firecracker executable for plain runs.
        extra_args: further Firecracker command-line arguments.
        boot_method: :class:`BootMethod`.
        console: where the serial console goes (:mod:`firec.console`).
        workdir: where firec keeps this VM's files when not jailed.
        state_dir: where firec keeps leases and network records (default:
            :func:`state_dir`); every process managing VMs on a host must share it.
    """

    vm_id: str
    kernel_image: Path
    kernel_args: str | None = None
    initrd: Path | None = None
    machine: models.MachineConfiguration = field(
        default_factory=lambda: models.MachineConfiguration(vcpu_count=1, mem_size_mib=128)
    )
    drives: tuple[models.Drive, ...] = ()
    network_interfaces: tuple[Interface, ...] = ()
    vsock: models.Vsock | None = None
    balloon: models.Balloon | None = None
    entropy: models.EntropyDevice | None = None
    serial: models.SerialDevice | None = None
    cpu_config: models.CpuConfig | None = None
    memory_hotplug: models.MemoryHotplugConfig | None = None
    pmem: tuple[models.Pmem, ...] = ()
    mmds_config: models.MmdsConfig | None = None
    mmds_data: Mapping[str, Any] | None = None
    socket_path: Path | None = None
    log_path: Path | None = None
    log_fifo: Path | None = None
    log_level: models.LogLevel | None = None
    log_show_level: bool = False
    log_show_origin: bool = False
    metrics_path: Path | None = None
    metrics_fifo: Path | None = None
    net_ns: str | None = None
    jailer: JailerConfig | None = None
    firecracker_binary: Path | None = None
    extra_args: tuple[str, ...] = ()
    boot_method: BootMethod = BootMethod.API
    console: Console | None = None
    workdir: Path | None = None
    state_dir: Path | None = None

    @staticmethod
    def builder(
        vm_id: str | uuid.UUID | None, kernel_image_path: str | os.PathLike[str]
    ) -> Builder:
        """Start building a config for ``vm_id`` (``None``: a random id) booting that kernel."""
        vm = str(vm_id) if vm_id is not None else str(uuid.uuid4())
        return Builder(Config(vm_id=vm, kernel_image=Path(kernel_image_path)))

    def replace(self, **changes: Any) -> Config:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    # -- seed-style getters ------------------------------------------------------
    # (the paths are worked out once per config: a config is a value, never changed)

    @functools.cached_property
    def jail(self) -> Jail | None:
        """The jail this VM runs in, or ``None`` when not jailed."""
        if self.jailer is None:
            return None
        return Jail.for_vm(self.vm_id, self.jailer, self.exec_file)

    @property
    def exec_file(self) -> Path:
        """The Firecracker executable (the jailer's ``--exec-file`` when jailed)."""
        explicit = self.jailer.exec_file if self.jailer else None
        return resolve_binary(explicit or self.firecracker_binary, "firecracker")

    @property
    def jailer_binary(self) -> Path:
        """The jailer executable."""
        explicit = self.jailer.jailer_binary if self.jailer else None
        return resolve_binary(explicit, "jailer")

    @functools.cached_property
    def vm_dir(self) -> Path:
        """firec's own directory for this VM on the host (outside any jail).

        It holds the console and error output, and for plain runs the API
        socket, the log and the config file.
        """
        return (self.workdir or runtime_dir()) / self.vm_id

    @functools.cached_property
    def api_socket_path(self) -> str:
        """The ``--api-sock`` value, as Firecracker sees it."""
        if self.socket_path is not None:
            return str(self.socket_path)
        if self.jailer is not None:
            return JAILED_SOCKET_PATH
        return str(self.vm_dir / "firecracker.socket")

    @functools.cached_property
    def host_socket_path(self) -> Path:
        """The API socket's path on the host."""
        jail = self.jail
        if jail is not None:
            return jail.on_host(self.api_socket_path)
        return Path(self.api_socket_path)

    @property
    def kernel_image_path(self) -> str:
        """The kernel as Firecracker sees it."""
        return self._seen(self.kernel_image)

    @property
    def initrd_path(self) -> str | None:
        """The initrd as Firecracker sees it."""
        return self._seen(self.initrd) if self.initrd is not None else None

    def _seen(self, host_path: Path) -> str:
        jail = self.jail
        return jail.inside(host_path) if jail is not None else str(host_path)

    # -- validation ----------------------------------------------------------------

    def validate(self, *, check_files: bool = True) -> None:
        """Check the config as a whole; raise :class:`ConfigError` naming the culprit.

        Finds bad ids, duplicate drive/interface/pmem ids, two root devices,
        files that do not exist, clashing file names inside a jail, and
        jailer settings the jailer would refuse.
        """
        validate_id(self.vm_id)
        _unique("drives", [d.drive_id for d in self.drives], "drive_id")
        _unique("network_interfaces", [i.iface_id for i in self.network_interfaces], "iface_id")
        _unique(
            "network_interfaces",
            [i.host_dev_name for i in self.network_interfaces],
            "host_dev_name",
        )
        _unique("pmem", [p.id for p in self.pmem], "id")
        roots = [d.drive_id for d in self.drives if d.is_root_device]
        roots += [p.id for p in self.pmem if getattr(p, "root_device", False)]
        if len(roots) > 1:
            raise ConfigError("drives", f"more than one root device: {', '.join(roots)}")
        if self.log_path is not None and self.log_fifo is not None:
            raise ConfigError("log_fifo", "set either log_path or log_fifo, not both")
        if self.metrics_path is not None and self.metrics_fifo is not None:
            raise ConfigError("metrics_fifo", "set either metrics_path or metrics_fifo, not both")
        if self.boot_method is BootMethod.CONFIG_FILE and self.mmds_data and not self.mmds_config:
            raise ConfigError("mmds_data", "MMDS data needs an mmds_config (which interfaces)")
        if self.jailer is not None:
            self.jailer.validate()
        socket_bytes = len(os.fsencode(self.host_socket_path))
        if socket_bytes > MAX_SOCKET_PATH:
            raise ConfigError(
                "socket_path",
                f"{self.host_socket_path} is {socket_bytes} bytes; a Unix socket path takes at "
                f"most {MAX_SOCKET_PATH}: use a shorter vm_id, workdir or chroot_base_dir",
            )
        if check_files:
            self._check_files()

    def input_files(self) -> list[tuple[str, Path]]:
        """Every host file the VM reads, with the config field naming it."""
        files: list[tuple[str, Path]] = [("kernel_image", self.kernel_image)]
        if self.initrd is not None:
            files.append(("initrd", self.initrd))
        for i, drive in enumerate(self.drives):
            if drive.path_on_host is not None:
                files.append(
                    (f"drives[{i}].path_on_host ({drive.drive_id})", Path(drive.path_on_host))
                )
        for i, pmem in enumerate(self.pmem):
            files.append((f"pmem[{i}].path_on_host ({pmem.id})", Path(pmem.path_on_host)))
        return files

    def _check_files(self) -> None:
        names: dict[str, str] = {}
        for name, path in self.input_files():
            if not path.exists():
                raise ConfigError(name, f"{path} does not exist")
            if not path.is_file() and not path.is_block_device():
                raise ConfigError(name, f"{path} is not a file")
            if not os.access(path, os.R_OK):
                raise ConfigError(name, f"{path} is not readable")
            if self.jailer is not None:
                other = names.setdefault(path.name, name)
                if other != name:
                    raise ConfigError(
                        name,
                        f"{path.name} is also the file name of {other}: inside the jail "
                        "both would be /" + path.name + "; rename one",
                    )


def _unique(field_name: str, values: Sequence[str], key: str) -> None:
    seen: set[str] = set()
    for i, value in enumerate(values):
        if value in seen:
            raise ConfigError(f"{field_name}[{i}].{key}", f"duplicate {key} {value!r}")
        seen.add(value)


def _optional_path(value: str | os.PathLike[str] | None) -> Path | None:
    return Path(value) if value is not None else None


@dataclass(frozen=True)
class Builder:
    """Builds a :class:`Config` step by step. Start with :meth:`Config.builder`.

    Every setter returns a new builder, so a partly set builder can be the
    common start of several configs.
    """

    _config: Config

    def _with(self, **changes: Any) -> Self:
        return dataclasses.replace(self, _config=self._config.replace(**changes))

    def socket_path(self, path: str | os.PathLike[str]) -> Self:
        """The API socket (inside the jail when jailed)."""
        return self._with(socket_path=Path(path))

    def log_path(self, path: str | os.PathLike[str]) -> Self:
        """Firecracker logs to this file."""
        return self._with(log_path=Path(path))

    def log_fifo(self, path: str | os.PathLike[str]) -> Self:
        """Firecracker logs to this fifo, which firec creates and reads."""
        return self._with(log_fifo=Path(path))

    def log_level(self, level: models.LogLevel | str) -> Self:
        """Firecracker's log level (``"Error"``, ``"Warning"``, ``"Info"``, ``"Debug"``...)."""
        return self._with(log_level=models.LogLevel(level))

    def metrics_path(self, path: str | os.PathLike[str]) -> Self:
        """Firecracker writes metrics to this file."""
        return self._with(metrics_path=Path(path))

    def metrics_fifo(self, path: str | os.PathLike[str]) -> Self:
        """Firecracker writes metrics to this fifo, which firec creates and reads."""
        return self._with(metrics_fifo=Path(path))

    def initrd_path(self, path: str | os.PathLike[str]) -> Self:
        """An initrd."""
        return self._with(initrd=Path(path))

    def kernel_args(self, args: str) -> Self:
        """The kernel command line."""
        return self._with(kernel_args=args)

    def net_ns(self, name_or_path: str) -> Self:
        """Run in this network namespace (a name under ``/var/run/netns``, or a path)."""
        return self._with(net_ns=name_or_path)

    def add_network_interface(self, interface: Interface | models.NetworkInterface) -> Self:
        """Add a virtio-net device: a :class:`firec.network.Interface` or an API model.

        An interface with a ``network`` plan gets its tap, namespace, address
        and NAT set up by the machine, and torn down with it.
        """
        if isinstance(interface, models.NetworkInterface):
            interface = Interface(
                interface.iface_id,
                interface.host_dev_name,
                guest_mac=interface.guest_mac,
                rx_rate_limiter=interface.rx_rate_limiter,
                tx_rate_limiter=interface.tx_rate_limiter,
            )
        return self._with(network_interfaces=(*self._config.network_interfaces, interface))

    def add_drive(self, drive_id: str, src_path: str | os.PathLike[str]) -> DriveBuilder:
        """Add a block device backed by ``src_path``; :meth:`DriveBuilder.build` comes back here."""
        return DriveBuilder(self, drive_id, Path(src_path))

    def machine_cfg(self) -> MachineBuilder:
        """Set vCPUs, memory and the rest; :meth:`MachineBuilder.build` comes back here."""
        return MachineBuilder(self, self._config.machine.to_api())

    def jailer_cfg(self) -> JailerBuilder:
        """Run under the jailer; :meth:`JailerBuilder.build` comes back here."""
        return JailerBuilder(self, self._config.jailer or JailerConfig())

    def vsock(self, guest_cid: int, uds_path: str | os.PathLike[str]) -> Self:
        """A virtio-vsock device with guest CID ``guest_cid`` and host socket ``uds_path``."""
        return self._with(vsock=models.Vsock(guest_cid=guest_cid, uds_path=os.fspath(uds_path)))

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
        config = models.MmdsConfig(
            version=models.MmdsVersion(version),
            network_interfaces=list(network_interfaces),
            ipv4_address=ipv4_address,
            imds_compat=imds_compat,
        )
        return self._with(mmds_config=config, mmds_data=dict(data) if data is not None else None)

    def balloon(
        self, amount_mib: int, *, deflate_on_oom: bool = False, stats_polling_interval_s: int = 0
    ) -> Self:
        """A balloon device inflated to ``amount_mib``."""
        balloon = models.Balloon(
            amount_mib=amount_mib,
            deflate_on_oom=deflate_on_oom,
            stats_polling_interval_s=stats_polling_interval_s,
        )
        return self._with(balloon=balloon)

    def entropy(self, rate_limiter: models.RateLimiter | None = None) -> Self:
        """A virtio-rng device, optionally rate limited."""
        return self._with(entropy=models.EntropyDevice(rate_limiter=rate_limiter))

    def serial(self, serial_out_path: str | os.PathLike[str]) -> Self:
        """Write the serial console to this file (Firecracker 1.14+)."""
        return self._with(serial=models.SerialDevice(serial_out_path=os.fspath(serial_out_path)))

    def cpu_config(self, cpu_config: models.CpuConfig) -> Self:
        """A custom CPU template."""
        return self._with(cpu_config=cpu_config)

    def add_pmem(self, pmem: models.Pmem) -> Self:
        """A virtio-pmem device (Firecracker 1.14+)."""
        return self._with(pmem=(*self._config.pmem, pmem))

    def memory_hotplug(self, config: models.MemoryHotplugConfig) -> Self:
        """A hotpluggable memory region (Firecracker 1.14+)."""
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
        names the VM (keep one VM's lines with :class:`firec.logs.VmFilter`).
        """
        return self._with(
            log_path=_optional_path(path),
            log_fifo=_optional_path(fifo),
            log_level=models.LogLevel(level) if level is not None else None,
            log_show_level=show_level,
            log_show_origin=show_log_origin,
        )

    def metrics(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        fifo: str | os.PathLike[str] | None = None,
    ) -> Self:
        """Firecracker's metrics: to a file ``path``, or a ``fifo`` firec reads."""
        return self._with(metrics_path=_optional_path(path), metrics_fifo=_optional_path(fifo))

    def firecracker_binary(self, path: str | os.PathLike[str]) -> Self:
        """The Firecracker executable for plain (unjailed) runs."""
        return self._with(firecracker_binary=Path(path))

    def extra_args(self, *args: str) -> Self:
        """More Firecracker command-line arguments."""
        return self._with(extra_args=(*self._config.extra_args, *args))

    def boot_method(self, method: BootMethod | str) -> Self:
        """Configure over the API (default) or with one ``--config-file``."""
        return self._with(boot_method=BootMethod(method))

    def console(self, console: Console) -> Self:
        """Where the serial console goes (:mod:`firec.console`)."""
        return self._with(console=console)

    def workdir(self, path: str | os.PathLike[str]) -> Self:
        """Where firec keeps this VM's sockets and fifos (plain runs)."""
        return self._with(workdir=Path(path))

    def state_dir(self, path: str | os.PathLike[str]) -> Self:
        """Where firec keeps leases and network records (shared by every VM of the host)."""
        return self._with(state_dir=Path(path))

    def build(self, *, check_files: bool = True) -> Config:
        """Finish: validate the whole config and return it."""
        self._config.validate(check_files=check_files)
        return self._config


@dataclass(frozen=True)
class DriveBuilder:
    """Sets a drive's options; :meth:`build` adds it and returns to the :class:`Builder`."""

    _parent: Builder
    _drive_id: str
    _src_path: Path
    _fields: dict[str, Any] = field(default_factory=dict)

    def _set(self, **changes: Any) -> Self:
        return dataclasses.replace(self, _fields={**self._fields, **changes})

    def is_read_only(self, read_only: bool) -> Self:
        """Attach read-only."""
        return self._set(is_read_only=read_only)

    def is_root_device(self, root: bool) -> Self:
        """The guest boots from this drive."""
        return self._set(is_root_device=root)

    def part_uuid(self, part_uuid: str) -> Self:
        """The root partition's PARTUUID (root devices only)."""
        return self._set(partuuid=part_uuid)

    def rate_limiter(self, limiter: models.RateLimiter) -> Self:
        """Limit bandwidth and operations."""
        return self._set(rate_limiter=limiter)

    def io_engine(self, engine: models.IoEngine | str) -> Self:
        """``Sync`` (default) or ``Async`` (io_uring)."""
        return self._set(io_engine=models.IoEngine(engine))

    def cache_type(self, cache: models.CacheType | str) -> Self:
        """``Unsafe`` (default) or ``Writeback``."""
        return self._set(cache_type=models.CacheType(cache))

    def build(self) -> Builder:
        """Add the drive and go back to the config builder."""
        fields: dict[str, Any] = {"is_root_device": False, "is_read_only": False} | self._fields
        try:
            drive = models.Drive(
                drive_id=self._drive_id, path_on_host=str(self._src_path), **fields
            )
        except ValidationError as exc:
            raise ConfigError(f"drives.{self._drive_id}.{exc.field}", exc.reason) from None
        parent = self._parent
        return parent._with(drives=(*parent._config.drives, drive))


@dataclass(frozen=True)
class MachineBuilder:
    """Sets vCPUs, memory and the rest; :meth:`build` returns to the :class:`Builder`."""

    _parent: Builder
    _fields: dict[str, Any]

    def _set(self, **changes: Any) -> Self:
        return dataclasses.replace(self, _fields={**self._fields, **changes})

    def vcpu_count(self, count: int) -> Self:
        """Number of vCPUs (1 to 32)."""
        return self._set(vcpu_count=count)

    def mem_size_mib(self, size: int) -> Self:
        """Guest memory in MiB."""
        return self._set(mem_size_mib=size)

    def smt(self, smt: bool) -> Self:
        """Simultaneous multithreading (x86)."""
        return self._set(smt=smt)

    def track_dirty_pages(self, track: bool) -> Self:
        """Track dirty pages, needed for diff snapshots."""
        return self._set(track_dirty_pages=track)

    def cpu_template(self, template: models.CpuTemplate | str) -> Self:
        """A static CPU template (``"T2"``, ``"C3"``...)."""
        return self._set(cpu_template=template)

    def huge_pages(self, huge_pages: models.HugePages | str) -> Self:
        """Back guest memory with huge pages (``"2M"``)."""
        return self._set(huge_pages=huge_pages)

    def build(self) -> Builder:
        """Set the machine configuration and go back to the config builder."""
        try:
            machine = models.MachineConfiguration(**self._fields)
        except ValidationError as exc:
            raise ConfigError(f"machine.{exc.field}", exc.reason) from None
        return self._parent._with(machine=machine)
