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
It holds what the caller gave: paths are the caller's host paths. Where they
are for Firecracker (inside the jail when there is one) is its
:attr:`Config.layout`'s answer (:mod:`firec.vm.layout`); the getters
(:attr:`Config.kernel_image_path`...) ask it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import json
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypeVar

from firec.api import models
from firec.api.operations import DEFAULT_MAX_PAYLOAD_SIZE, MAX_PAYLOAD_FLAG, payload_limit_in_args
from firec.errors import ConfigError, ValidationError
from firec.network.interface import Interface
from firec.vm._checks import (
    absolute_path,
    bool_value,
    control_char,
    enum_value,
    optional_path,
    path_value,
    str_value,
)
from firec.vm.binaries import resolve_binary
from firec.vm.builders import DriveBuilder, JailerBuilder, MachineBuilder
from firec.vm.jailer import Jail, JailerConfig, validate_id
from firec.vm.layout import JAILED_SOCKET_PATH, Layout, layout_for, layout_type

if TYPE_CHECKING:
    from firec.vm.console import Console

__all__ = [
    "JAILED_SOCKET_PATH",
    "BootMethod",
    "Builder",
    "Config",
    "DriveBuilder",
    "MachineBuilder",
]

M = TypeVar("M", bound=models.APIModel)
T = TypeVar("T")

#: The longest Unix socket path Linux accepts (sun_path is 108 bytes, NUL included).
MAX_SOCKET_PATH = 107


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
        http_api_max_payload_size: the largest API request body Firecracker
            takes, in bytes (its ``--http-api-max-payload-size``; ``None``:
            Firecracker's default, 51200). The machine's client refuses larger
            bodies before sending them.
        extra_args: further Firecracker command-line arguments.
        boot_method: :class:`BootMethod`.
        console: where the serial console goes (:mod:`firec.vm.console`).
        workdir: where firec keeps this VM's files when not jailed.
        state_dir: where firec keeps leases and network records (default:
            :func:`state_dir`); every process managing VMs on a host must share it.
        host_record: keep a host record of the VM (default ``True``): its id is
            claimed atomically (a second VM with the same id is refused while
            this one runs), ``firec ls`` lists it, and ``firec gc`` removes
            what it left if this program is killed (:mod:`firec.host.registry`,
            in ``$FIREC_STATE_DIR``, else ``/run/firec/state`` for root).
            ``False`` opts out: nothing but the API socket then guards the id.
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
    http_api_max_payload_size: int | None = None
    extra_args: tuple[str, ...] = ()
    boot_method: BootMethod = BootMethod.API
    console: Console | None = None
    workdir: Path | None = None
    state_dir: Path | None = None
    host_record: bool = True

    @staticmethod
    def builder(
        vm_id: str | uuid.UUID | None, kernel_image_path: str | os.PathLike[str]
    ) -> Builder:
        """Start building a config for ``vm_id`` (``None``: a random id) booting that kernel."""
        if vm_id is None:
            vm = str(uuid.uuid4())
        elif isinstance(vm_id, str | uuid.UUID):
            vm = validate_id(str(vm_id))
        else:
            raise ConfigError(
                "vm_id", f"must be a str, a uuid.UUID or None, not {type(vm_id).__name__}"
            )
        kernel = path_value("kernel_image", kernel_image_path)
        return Builder(Config(vm_id=vm, kernel_image=kernel))

    def replace(self, **changes: Any) -> Config:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    # -- what follows from the settings --------------------------------------------
    # (worked out once per config: a config is a value, never changed)

    @functools.cached_property
    def layout(self) -> Layout:
        """Where this VM's files are, on the host and as Firecracker sees them.

        A :class:`~firec.vm.layout.PlainLayout`, or the
        :class:`~firec.vm.layout.JailedLayout` of its jail (:mod:`firec.vm.layout`);
        a machine's is ``machine.launch.layout``. The getters below ask it.
        """
        return layout_for(self.vm_id, self.vm_dir, self.jailer, lambda: self.exec_file)

    @property
    def jail(self) -> Jail | None:
        """The jail this VM runs in, or ``None`` when not jailed (its :attr:`layout`)."""
        layout = self.layout
        return layout if isinstance(layout, Jail) else None

    @property
    def exec_file(self) -> Path:
        """The Firecracker executable (the jailer's ``--exec-file`` when jailed).

        Found as :mod:`firec.vm.binaries` says, unless the config names it.
        """
        explicit = self.jailer.exec_file if self.jailer else None
        return resolve_binary(explicit or self.firecracker_binary, "firecracker")

    @property
    def jailer_binary(self) -> Path:
        """The jailer executable (found as :mod:`firec.vm.binaries` says, unless given)."""
        explicit = self.jailer.jailer_binary if self.jailer else None
        return resolve_binary(explicit, "jailer")

    @functools.cached_property
    def vm_dir(self) -> Path:
        """firec's own directory for this VM on the host (outside any jail).

        It holds the console and error output, and for plain runs the API
        socket, the log and the config file.
        """
        return (self.workdir or runtime_dir()) / self.vm_id

    @property
    def api_socket_path(self) -> str:
        """The ``--api-sock`` value, as Firecracker sees it."""
        return self.layout.api_socket(self.socket_path)

    @property
    def host_socket_path(self) -> Path:
        """The API socket's path on the host."""
        return self.layout.on_host(self.api_socket_path)

    @property
    def kernel_image_path(self) -> str:
        """The kernel as Firecracker sees it."""
        return self.layout.seen(self.kernel_image)

    @property
    def initrd_path(self) -> str | None:
        """The initrd as Firecracker sees it."""
        return self.layout.seen(self.initrd) if self.initrd is not None else None

    @property
    def max_payload_size(self) -> int:
        """The largest API request body this VM's Firecracker will take, in bytes.

        :attr:`http_api_max_payload_size`, or the flag given in the extra
        arguments, or Firecracker's default (51200).
        """
        if self.http_api_max_payload_size is not None:
            return self.http_api_max_payload_size
        given = payload_limit_in_args(self._all_extra_args())
        return given if given is not None else DEFAULT_MAX_PAYLOAD_SIZE

    def _all_extra_args(self) -> tuple[str, ...]:
        """The extra Firecracker arguments that reach it (the jailer's, when jailed)."""
        return self.jailer.extra_args if self.jailer is not None else self.extra_args

    # -- validation ----------------------------------------------------------------

    def validate(self, *, check_files: bool = True) -> None:
        """Check the config as a whole; raise :class:`ConfigError` naming the culprit.

        Finds bad ids, kernel arguments Firecracker refuses (not one line of
        printable ASCII), relative host paths, unknown log levels and boot
        methods, duplicate drive/interface/pmem ids, two root devices, one
        file behind two drives of which one is writable, MMDS interfaces that
        do not exist, files that do not exist, clashing file names inside a
        jail, and jailer settings the jailer would refuse (a root uid or gid too).
        """
        validate_id(self.vm_id)
        self._check_values()
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
        if self.mmds_config is not None:
            ids = [i.iface_id for i in self.network_interfaces]
            for i, name in enumerate(self.mmds_config.network_interfaces):
                if name not in ids:
                    raise ConfigError(
                        f"mmds_config.network_interfaces[{i}]",
                        f"no network interface {name!r}: the MMDS is reached through one of "
                        f"the VM's interfaces ({', '.join(map(repr, ids)) or 'it has none'})",
                    )
        if self.jailer is not None:
            self.jailer.validate()
        self._check_payload_limit()
        socket_bytes = len(os.fsencode(self.host_socket_path))
        if socket_bytes > MAX_SOCKET_PATH:
            raise ConfigError(
                "socket_path",
                f"{self.host_socket_path} is {socket_bytes} bytes; a Unix socket path takes at "
                f"most {MAX_SOCKET_PATH}: use a shorter vm_id, workdir or chroot_base_dir",
            )
        self._check_shared_files(check_files)
        if check_files:
            self._check_files()

    def _check_values(self) -> None:
        """Each field alone: types, kernel arguments, enums, absolute host paths."""
        if self.kernel_args is not None:
            check_kernel_args(self.kernel_args)
        for name, path in self._host_paths():
            absolute_path(name, path)
        for name in ("workdir", "state_dir"):
            value = getattr(self, name)
            if value is not None:
                absolute_path(name, value, "directory")
        runtime_path = layout_type(self.jailer).check_runtime_path  # jailed: inside the jail
        for name in ("socket_path", "log_path", "log_fifo", "metrics_path", "metrics_fifo"):
            value = getattr(self, name)
            if value is not None:
                runtime_path(name, value)
        if self.serial is not None and self.serial.serial_out_path is not None:
            runtime_path("serial.serial_out_path", self.serial.serial_out_path)
        if self.log_level is not None:
            enum_value("log_level", models.LogLevel, self.log_level)
        enum_value("boot_method", BootMethod, self.boot_method)
        bool_value("log_show_level", self.log_show_level)
        bool_value("log_show_origin", self.log_show_origin)
        if self.net_ns is not None:
            str_value("net_ns", self.net_ns, what="a network namespace name or path")
        for arg in self.extra_args:
            str_value("extra_args", arg, what="a command-line argument", empty=True)
        if self.mmds_data is not None:
            check_mmds_data(self.mmds_data)

    def _host_paths(self) -> list[tuple[str, object]]:
        paths: list[tuple[str, object]] = [("kernel_image", self.kernel_image)]
        if self.initrd is not None:
            paths.append(("initrd", self.initrd))
        if self.firecracker_binary is not None:
            paths.append(("firecracker_binary", self.firecracker_binary))
        for i, drive in enumerate(self.drives):
            if drive.path_on_host is not None:
                paths.append((f"drives[{i}].path_on_host", drive.path_on_host))
        for i, pmem in enumerate(self.pmem):
            paths.append((f"pmem[{i}].path_on_host", pmem.path_on_host))
        return paths

    def _check_shared_files(self, look: bool) -> None:
        """Refuse one file behind two drives (or pmem devices) when any of them may write it.

        Files are the same when their paths are, or (``look``) their inodes.
        """
        backing: list[tuple[str, Path, bool]] = []
        for i, drive in enumerate(self.drives):
            if drive.path_on_host is not None:
                name = f"drives[{i}].path_on_host ({drive.drive_id})"
                backing.append((name, Path(drive.path_on_host), not drive.is_read_only))
        for i, pmem in enumerate(self.pmem):
            name = f"pmem[{i}].path_on_host ({pmem.id})"
            backing.append((name, Path(pmem.path_on_host), not pmem.read_only))
        seen: dict[object, tuple[str, bool]] = {}
        for name, path, writable in backing:
            key: object = os.path.normpath(path)
            if look:
                with contextlib.suppress(OSError):
                    st = path.stat()
                    key = (st.st_dev, st.st_ino)
            if key in seen:
                other, other_writable = seen[key]
                if writable or other_writable:
                    raise ConfigError(
                        name,
                        f"{path} is also {other}, and {'this' if writable else 'that'} one is "
                        "writable: two devices on one file corrupt it; attach every one of "
                        "them read-only (is_read_only(True)), or give each its own copy",
                    )
            seen.setdefault(key, (name, writable))

    def _check_payload_limit(self) -> None:
        limit = self.http_api_max_payload_size
        in_args = MAX_PAYLOAD_FLAG in self._all_extra_args()
        if limit is None:
            if in_args and payload_limit_in_args(self._all_extra_args()) is None:
                raise ConfigError(
                    "extra_args", f"{MAX_PAYLOAD_FLAG} needs a number of bytes after it"
                )
            return
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigError(
                "http_api_max_payload_size", f"must be a number of bytes >= 1, not {limit!r}"
            )
        if in_args:
            raise ConfigError(
                "http_api_max_payload_size",
                f"{MAX_PAYLOAD_FLAG} is also in extra_args: give it once",
            )

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
        directories = [("workdir", self.workdir), ("state_dir", self.state_dir)]
        if self.jailer is not None:
            directories.append(("jailer.chroot_base_dir", self.jailer.chroot_base_dir))
        for name, directory in directories:
            if directory is not None and directory.exists() and not directory.is_dir():
                raise ConfigError(name, f"{directory} is not a directory")
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


def check_kernel_args(args: object) -> str:
    """Return ``args`` if Firecracker takes it as a kernel command line, else :class:`ConfigError`.

    Firecracker takes one line of printable ASCII (space to ``~``): no newline,
    no NUL, no tab, no other control or non-ASCII character.

    >>> check_kernel_args("console=ttyS0 reboot=k")
    'console=ttyS0 reboot=k'
    """
    if not isinstance(args, str):
        raise ConfigError("kernel_args", f"must be a str, not {type(args).__name__}")
    for i, char in enumerate(args):
        if not " " <= char <= "~":
            shown = control_char(char) or f"{char!r} at 0"
            raise ConfigError(
                "kernel_args",
                f"{shown.removesuffix(' at 0')} at {i}: the kernel command line is one line of "
                "printable ASCII (space to '~'); separate arguments with spaces",
            )
    return args


def check_mmds_data(data: object) -> Mapping[str, Any]:
    """Return ``data`` if it is a JSON object (what the MMDS holds), else :class:`ConfigError`."""
    if not isinstance(data, Mapping):
        raise ConfigError("mmds_data", f"must be a JSON object (a dict), not {type(data).__name__}")
    try:
        json.dumps(data, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ConfigError(
            "mmds_data",
            f"must be JSON (str keys; str, number, bool, None, list and dict values): {exc}",
        ) from None
    return data


def _model(prefix: str, cls: type[M], **fields: Any) -> M:
    """``cls(**fields)``, its :class:`ValidationError` named as a field of ``prefix``."""
    try:
        return cls(**fields)
    except ValidationError as exc:
        errors = [(f"{prefix}.{f}" if f else prefix, r) for f, r in exc.errors]
        raise ConfigError(errors[0][0], errors[0][1], errors=errors) from None


def _instance(field_name: str, value: object, cls: type[T], what: str) -> T:
    if not isinstance(value, cls):
        raise ConfigError(field_name, f"must be {what}, not {type(value).__name__}")
    return value


def _unique(field_name: str, values: Sequence[str], key: str) -> None:
    seen: set[str] = set()
    for i, value in enumerate(values):
        if value in seen:
            raise ConfigError(f"{field_name}[{i}].{key}", f"duplicate {key} {value!r}")
        seen.add(value)


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

    def kernel_args(self, args: str) -> Self:
        """The kernel command line: one line of printable ASCII (no newline, tab or NUL)."""
        return self._with(kernel_args=check_kernel_args(args))

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
            vsock=_model("vsock", models.Vsock, guest_cid=guest_cid, uds_path=str(path))
        )

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
        config = _model(
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
        balloon = _model(
            "balloon",
            models.Balloon,
            amount_mib=amount_mib,
            deflate_on_oom=deflate_on_oom,
            stats_polling_interval_s=stats_polling_interval_s,
        )
        return self._with(balloon=balloon)

    def entropy(self, rate_limiter: models.RateLimiter | None = None) -> Self:
        """A virtio-rng device, optionally rate limited."""
        return self._with(
            entropy=_model("entropy", models.EntropyDevice, rate_limiter=rate_limiter)
        )

    def serial(self, serial_out_path: str | os.PathLike[str]) -> Self:
        """Write the serial console to this file (Firecracker 1.14+)."""
        path = path_value("serial.serial_out_path", serial_out_path)
        return self._with(serial=_model("serial", models.SerialDevice, serial_out_path=str(path)))

    def cpu_config(self, cpu_config: models.CpuConfig) -> Self:
        """A custom CPU template."""
        _instance("cpu_config", cpu_config, models.CpuConfig, "a models.CpuConfig")
        return self._with(cpu_config=cpu_config)

    def add_pmem(self, pmem: models.Pmem) -> Self:
        """A virtio-pmem device (Firecracker 1.14+)."""
        _instance(f"pmem[{len(self._config.pmem)}]", pmem, models.Pmem, "a models.Pmem")
        return self._with(pmem=(*self._config.pmem, pmem))

    def memory_hotplug(self, config: models.MemoryHotplugConfig) -> Self:
        """A hotpluggable memory region (Firecracker 1.14+)."""
        _instance(
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

    def boot_method(self, method: BootMethod | str) -> Self:
        """Configure over the API (default) or with one ``--config-file``."""
        return self._with(boot_method=enum_value("boot_method", BootMethod, method))

    def console(self, console: Console) -> Self:
        """Where the serial console goes (:mod:`firec.vm.console`)."""
        from firec.vm.console import Console

        _instance("console", console, Console, "a firec.vm.console.Console")
        return self._with(console=console)

    def workdir(self, path: str | os.PathLike[str]) -> Self:
        """Where firec keeps this VM's sockets and fifos (plain runs): an absolute path."""
        return self._with(workdir=path_value("workdir", path))

    def state_dir(self, path: str | os.PathLike[str]) -> Self:
        """Where firec keeps leases and network records (shared by all VMs): an absolute path."""
        return self._with(state_dir=path_value("state_dir", path))

    def host_record(self, enabled: bool) -> Self:
        """Keep a host record of the VM (default), or not: see :attr:`Config.host_record`."""
        return self._with(host_record=enabled)

    def build(self, *, check_files: bool = True) -> Config:
        """Finish: validate the whole config and return it."""
        self._config.validate(check_files=check_files)
        return self._config
