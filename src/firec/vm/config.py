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
(:attr:`Config.kernel_image_path`...) ask it. The checks of a whole config
are in ``_config_checks.py``.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from firec._statedirs import network_dir
from firec.api import models
from firec.api.operations import DEFAULT_MAX_PAYLOAD_SIZE, payload_limit_in_args
from firec.errors import ConfigError
from firec.network.interface import Interface
from firec.snapshots.snapshot import Snapshot, register_config_reader
from firec.vm._checks import (
    absolute_path,
    bool_value,
    control_char,
    enum_value,
    path_value,
    str_value,
)
from firec.vm._config_builder import BuilderSetters
from firec.vm._config_checks import (
    MAX_SOCKET_PATH,
    check_mmds_data,
    check_mmds_interfaces,
    check_payload_limit,
    check_roots,
    check_shared_files,
    check_socket_length,
    check_unique,
    host_paths,
)
from firec.vm._snapshot_config import config_fields
from firec.vm.binaries import resolve_binary
from firec.vm.builders import DriveBuilder, JailerBuilder, MachineBuilder
from firec.vm.guest_agent import AgentSettings
from firec.vm.jailer import Jail, JailerConfig, validate_id
from firec.vm.layout import JAILED_SOCKET_PATH, Layout, layout_for, layout_type

if TYPE_CHECKING:
    from firec.vm.console import Console

__all__ = [
    "JAILED_SOCKET_PATH",
    "MAX_SOCKET_PATH",
    "BootMethod",
    "Builder",
    "Config",
    "DriveBuilder",
    "JailerBuilder",
    "MachineBuilder",
    "check_kernel_args",
    "check_mmds_data",
]


class BootMethod(enum.StrEnum):
    """How the configuration reaches Firecracker.

    * ``API``: one request per setting over the API socket, then InstanceStart.
    * ``CONFIG_FILE``: one ``--config-file`` at spawn; Firecracker boots at once.
    """

    API = "api"
    CONFIG_FILE = "config-file"


#: The default of :attr:`Config.state_dir` (leases, network records): see
#: :mod:`firec._statedirs` for where it is and why.
state_dir = network_dir


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
        agent: the guest agent's port and token (:mod:`firec.vm.guest_agent`).
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
    agent: AgentSettings | None = None

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
        check_unique("drives", [d.drive_id for d in self.drives], "drive_id")
        ids = [i.iface_id for i in self.network_interfaces]
        check_unique("network_interfaces", ids, "iface_id")
        taps = [i.host_dev_name for i in self.network_interfaces]
        check_unique("network_interfaces", taps, "host_dev_name")
        check_unique("pmem", [p.id for p in self.pmem], "id")
        check_roots(self.drives, self.pmem)
        if self.log_path is not None and self.log_fifo is not None:
            raise ConfigError("log_fifo", "set either log_path or log_fifo, not both")
        if self.metrics_path is not None and self.metrics_fifo is not None:
            raise ConfigError("metrics_fifo", "set either metrics_path or metrics_fifo, not both")
        if self.boot_method is BootMethod.CONFIG_FILE and self.mmds_data and not self.mmds_config:
            raise ConfigError("mmds_data", "MMDS data needs an mmds_config (which interfaces)")
        if self.mmds_config is not None:
            check_mmds_interfaces(self.mmds_config, ids)
        if self.jailer is not None:
            self.jailer.validate()
        check_payload_limit(self.http_api_max_payload_size, self._all_extra_args())
        check_socket_length(self.host_socket_path)
        check_shared_files(self.drives, self.pmem, look=check_files)
        if check_files:
            self._check_files()

    def _check_values(self) -> None:
        """Each field alone: types, kernel arguments, enums, absolute host paths."""
        if self.kernel_args is not None:
            check_kernel_args(self.kernel_args)
        paths = host_paths(
            self.kernel_image, self.initrd, self.firecracker_binary, self.drives, self.pmem
        )
        for name, path in paths:
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
        layout = layout_type(self.jailer)  # a jail adds its base, and one name per file
        directories = [("workdir", self.workdir), ("state_dir", self.state_dir)]
        for name, directory in [*directories, *layout.config_directories(self.jailer)]:
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
            layout.check_input_name(name, path, names)

    # -- as data -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """This config as JSON-ready data, defaults left out; :meth:`from_dict` reverses it.

        A console that goes to a callback is written as such, and read back as
        :meth:`~firec.vm.console.Console.discard` (a function does not outlive
        its process). The host registry records each VM's config this way.

        >>> config = Config(vm_id="vm-1", kernel_image=Path("/k"), kernel_args="console=ttyS0")
        >>> config.to_dict()
        {'vm_id': 'vm-1', 'kernel_image': '/k', 'kernel_args': 'console=ttyS0'}
        >>> Config.from_dict(config.to_dict()) == config
        True
        """
        from firec.vm import _codec

        return _codec.encode_fields(self, omit_defaults=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Config:
        """The config that :meth:`to_dict` wrote as ``data``, each field checked against its type.

        The config is not validated as a whole (:meth:`validate`): its files need not exist.

        >>> Config.from_dict({"vm_id": "vm-1", "kernel_image": "/k"}).kernel_image
        PosixPath('/k')
        >>> Config.from_dict({"vm_id": 5, "kernel_image": "/k"})
        Traceback (most recent call last):
        ...
        firec.errors.ConfigError: vm_id: 5 is not a str

        Raises:
            ConfigError: ``data`` is not such a config; it names the field at fault.
        """
        from firec.vm import _codec

        try:
            return _codec.decode(cls, data)
        except _codec.DecodeError as exc:
            raise ConfigError(exc.where, exc.reason) from exc

    @classmethod
    def from_snapshot(cls, snapshot: Snapshot, vm_id: str | None = None) -> Config:
        """A config for a VM restored from ``snapshot`` (:meth:`firec.Snapshot.config` is this).

        Its id is ``vm_id`` (default: a random one), its devices and Firecracker
        the snapshot's (``vm/_snapshot_config.py``); the rest are the defaults.
        """
        return cls(**config_fields(snapshot, vm_id))


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


@dataclass(frozen=True)
class Builder(BuilderSetters):
    """Builds a :class:`Config` step by step. Start with :meth:`Config.builder`.

    Every setter returns a new builder, so a partly set builder can be the
    common start of several configs. Most setters are in ``_config_builder.py``
    (:class:`~firec.vm._config_builder.BuilderSetters`).
    """

    _config: Config

    def _with(self, **changes: Any) -> Self:
        return dataclasses.replace(self, _config=self._config.replace(**changes))

    def kernel_args(self, args: str) -> Self:
        """The kernel command line: one line of printable ASCII (no newline, tab or NUL)."""
        return self._with(kernel_args=check_kernel_args(args))

    def boot_method(self, method: BootMethod | str) -> Self:
        """Configure over the API (default) or with one ``--config-file``."""
        return self._with(boot_method=enum_value("boot_method", BootMethod, method))

    def build(self, *, check_files: bool = True) -> Config:
        """Finish: validate the whole config and return it."""
        self._config.validate(check_files=check_files)
        return self._config


register_config_reader(Config.from_snapshot)  # for Snapshot.config(): snapshots may not import vm
