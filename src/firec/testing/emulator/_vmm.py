"""The emulated VMM: configured resources, the boot state machine, and their errors.

Requests arrive already parsed (see :mod:`._api`); :meth:`Vmm.handle` applies one
with real Firecracker's pre-boot/post-boot rules of the emulated release and
returns the response data or raises :class:`ActionError` with Firecracker's text.
"""

from __future__ import annotations

import copy
import ctypes
import json
import os
import socket
import threading
import time
from typing import Any

from firec.testing.emulator import _guest, _snapshot, _uffd, _vsock
from firec.testing.emulator._jail import host_path
from firec.testing.emulator._schema import MAX_VCPUS
from firec.testing.emulator._state import NOT_STARTED, PAUSED, RUNNING, Exit, VmmState

__all__ = ["ActionError", "Exit", "Vmm", "named_thread"]

PREBOOT_ONLY = "The requested operation is not supported before starting the microVM."
POSTBOOT_ONLY = "The requested operation is not supported after starting the microVM."
MMDS_DEFAULT_IPV4 = "169.254.169.254"
KVM_DEVICE_ENV = "FIREC_KVM_DEVICE"
"""Names a KVM device the emulator opens at boot, as Firecracker opens /dev/kvm (tests only)."""


class ActionError(Exception):
    """A VMM action refused: ``message`` is Firecracker's fault_message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


_PR_SET_NAME = 15


def named_thread(name: str, target: Any) -> threading.Thread:
    """Start a daemon thread whose kernel name (``/proc/<pid>/task/<tid>/comm``) is ``name``.

    Returns once the name is set. Firecracker's threads are ``fc_api`` and
    ``fc_vcpu N``; tools (and firec) tell a running VM from a stopping one by them.
    """
    named = threading.Event()

    def run() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)
        named.set()
        target()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    named.wait()
    return thread


def _os_error(exc: OSError) -> str:
    """Rust's io::Error display: ``No such file or directory (os error 2)``."""
    return f"{os.strerror(exc.errno or 0)} (os error {exc.errno})"


_KINDS = {2: "NotFound", 13: "PermissionDenied", 98: "AddrInUse"}


def _io_debug(exc: OSError) -> str:
    """Rust's io::Error Debug: ``Os { code: 2, kind: NotFound, message: "..." }``."""
    kind = _KINDS.get(exc.errno or 0, "Other")
    msg = "Address in use" if exc.errno == 98 else os.strerror(exc.errno or 0)
    return f'Os {{ code: {exc.errno}, kind: {kind}, message: "{msg}" }}'


class Vmm(VmmState):
    """One emulated Firecracker process: its state, and the rules that change it."""

    # --- helpers ---

    @property
    def started(self) -> bool:
        return self.state != NOT_STARTED

    def _err(self, modern_prefix: str, message: str, legacy: str | None = None) -> ActionError:
        if self.rel.modern:
            return ActionError(f"{modern_prefix}: {message}")
        return ActionError(legacy if legacy is not None else message)

    def instance_info(self) -> dict[str, Any]:
        return {
            "id": self.instance_id,
            "state": self.state,
            "vmm_version": self.rel.version,
            "app_name": "Firecracker",
        }

    # --- serialization (GET) ---

    def machine_config_out(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "vcpu_count": self.machine["vcpu_count"],
            "mem_size_mib": self.machine["mem_size_mib"],
            "smt": self.machine["smt"],
        }
        if self.machine["cpu_template"] not in (None, "None"):
            out["cpu_template"] = self.machine["cpu_template"]
        out["track_dirty_pages"] = self.machine["track_dirty_pages"]
        if self.rel.at_least(7):
            out["huge_pages"] = self.machine["huge_pages"]
        return out

    @staticmethod
    def _rate_limiter_out(value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None

        def bucket(b: dict[str, Any] | None) -> dict[str, Any] | None:
            if b is None:
                return None
            return {
                "size": b["size"],
                "one_time_burst": b["one_time_burst"],
                "refill_time": b["refill_time"],
            }

        return {"bandwidth": bucket(value["bandwidth"]), "ops": bucket(value["ops"])}

    def _drive_out(self, d: dict[str, Any]) -> dict[str, Any]:
        rl = self._rate_limiter_out(d["rate_limiter"])
        if self.rel.at_least(6):
            return {
                "drive_id": d["drive_id"],
                "partuuid": d["partuuid"],
                "is_root_device": d["is_root_device"],
                "cache_type": d["cache_type"],
                "is_read_only": bool(d["is_read_only"]),
                "path_on_host": d["path_on_host"],
                "rate_limiter": rl,
                "io_engine": d["io_engine"] or "Sync",
                "socket": d["socket"],
            }
        return {
            "drive_id": d["drive_id"],
            "path_on_host": d["path_on_host"],
            "is_root_device": d["is_root_device"],
            "partuuid": d["partuuid"],
            "is_read_only": d["is_read_only"],
            "cache_type": d["cache_type"],
            "rate_limiter": rl,
            "io_engine": d["io_engine"],
        }

    def _net_out(self, n: dict[str, Any]) -> dict[str, Any]:
        out = {"iface_id": n["iface_id"], "host_dev_name": n["host_dev_name"]}
        out["guest_mac"] = n["guest_mac"]
        if self.rel.at_least(16):
            out["mtu"] = n.get("mtu")
        out["rx_rate_limiter"] = self._rate_limiter_out(n["rx_rate_limiter"])
        out["tx_rate_limiter"] = self._rate_limiter_out(n["tx_rate_limiter"])
        return out

    def balloon_out(self) -> dict[str, Any]:
        assert self.balloon is not None
        out = {
            "amount_mib": self.balloon["amount_mib"],
            "deflate_on_oom": self.balloon["deflate_on_oom"],
            "stats_polling_interval_s": self.balloon["stats_polling_interval_s"],
        }
        if self.rel.at_least(14):
            out["free_page_hinting"] = self.balloon["free_page_hinting"]
            out["free_page_reporting"] = self.balloon["free_page_reporting"]
        return out

    def mmds_config_out(self) -> dict[str, Any] | None:
        if self.mmds_data is None and not self.mmds_ifaces:
            return None
        ifaces = [n["iface_id"] for n in self.nets if n["iface_id"] in self.mmds_ifaces]
        if not ifaces:
            return None
        out: dict[str, Any] = {
            "version": self.mmds_version,
            "network_interfaces": ifaces,
            "ipv4_address": self.mmds_ipv4 or MMDS_DEFAULT_IPV4,
        }
        if self.rel.at_least(13):
            out["imds_compat"] = self.mmds_imds_compat
        return out

    def full_config(self) -> dict[str, Any]:
        """GET /vm/config, in the emulated release's shape and key order."""
        bs = self.boot_source or {"kernel_image_path": "", "initrd_path": None, "boot_args": None}
        boot: dict[str, Any] = {
            "kernel_image_path": bs["kernel_image_path"],
            "initrd_path": bs["initrd_path"],
        }
        if bs["boot_args"] is not None or self.rel.at_least(7):
            boot["boot_args"] = bs["boot_args"]
        out: dict[str, Any] = {
            "balloon": self.balloon_out() if self.balloon is not None else None,
            "drives": [self._drive_out(d) for d in self.drives],
            "boot-source": boot,
        }
        if self.rel.at_least(4):
            out["cpu-config"] = None
        out["logger"] = None
        out["machine-config"] = self.machine_config_out()
        out["metrics"] = None
        out["mmds-config"] = self.mmds_config_out()
        out["network-interfaces"] = [self._net_out(n) for n in self.nets]
        vs = self.vsock
        out["vsock"] = {"guest_cid": vs["guest_cid"], "uds_path": vs["uds_path"]} if vs else None
        if self.rel.at_least(4):
            out["entropy"] = (
                {"rate_limiter": self._rate_limiter_out(self.entropy["rate_limiter"])}
                if self.entropy is not None
                else None
            )
        if self.rel.at_least(14):
            out["pmem"] = [self._pmem_out(p) for p in self.pmem]
            mh = self.memory_hotplug
            out["memory-hotplug"] = (
                {k: mh[k] for k in ("total_size_mib", "block_size_mib", "slot_size_mib")}
                if mh
                else None
            )
        return out

    def _pmem_out(self, p: dict[str, Any]) -> dict[str, Any]:
        out = {k: p[k] for k in ("id", "path_on_host", "root_device", "read_only")}
        if self.rel.at_least(16):
            out["rate_limiter"] = self._rate_limiter_out(p.get("rate_limiter"))
        return out

    # --- configuration actions (pre-boot) ---

    def set_boot_source(self, cfg: dict[str, Any]) -> None:
        self.boot_path = True
        try:
            with open(host_path(cfg["kernel_image_path"]), "rb"):
                pass
        except OSError as exc:
            raise self._err(
                "Boot source error", f"The kernel file cannot be opened: {_os_error(exc)}"
            ) from None
        if cfg["initrd_path"] is not None:
            try:
                with open(host_path(cfg["initrd_path"]), "rb"):
                    pass
            except OSError as exc:
                raise self._err(
                    "Boot source error",
                    "The initrd file cannot be opened due to invalid path or invalid "
                    f"permissions. {_os_error(exc)}",
                ) from None
        self.boot_source = {k: cfg[k] for k in ("kernel_image_path", "initrd_path", "boot_args")}

    def update_machine_config(self, cfg: dict[str, Any], *, full: bool) -> None:
        self.boot_path = True
        new = dict(self.machine)
        present = cfg.get("__present__", set())
        for key in ("vcpu_count", "mem_size_mib", "smt", "cpu_template", "track_dirty_pages"):
            if full or (key in present and cfg[key] is not None):
                new[key] = cfg[key]
        if "huge_pages" in cfg and (full or cfg["huge_pages"] is not None):
            new["huge_pages"] = cfg["huge_pages"] or "None"
        vcpus = new["vcpu_count"]
        if self.rel.modern:
            if vcpus == 0 or vcpus > MAX_VCPUS or (new["smt"] and vcpus > 1 and vcpus % 2):
                raise self._err(
                    "Machine config error",
                    "The number of vCPUs must be greater than 0, less than "
                    f"{MAX_VCPUS} and must be 1 or an even number if SMT is enabled.",
                )
            page_mib = 2 if new["huge_pages"] == "2M" else 0
            if new["mem_size_mib"] == 0 or (page_mib and new["mem_size_mib"] % page_mib):
                raise self._err(
                    "Machine config error",
                    "The memory size (MiB) is either 0, or not a multiple of the configured "
                    "page size.",
                )
        else:
            if new["smt"] and vcpus > 1 and vcpus % 2:
                raise ActionError(
                    "The vCPU number is invalid! The vCPU number can only be 1 or an even "
                    "number when SMT is enabled."
                )
            if new["mem_size_mib"] == 0:
                # 1.0-1.5 applied the vCPU settings before refusing the memory size.
                self.machine.update(vcpu_count=vcpus, smt=new["smt"])
                raise ActionError("The memory size (MiB) is invalid.")
        if self.balloon is not None and new["mem_size_mib"] < self.balloon["amount_mib"]:
            raise self._err(
                "Machine config error",
                "The memory size (MiB) is smaller than the previously set balloon device "
                "target size.",
            )
        self.machine = new

    def _root_pmem(self) -> bool:
        return any(p["root_device"] for p in self.pmem)

    def insert_drive(self, cfg: dict[str, Any]) -> None:
        self.boot_path = True
        drive = dict(cfg)
        drive.pop("__present__", None)
        path = drive.get("path_on_host")
        if self.rel.at_least(6) and (path is None or drive.get("socket") is not None):
            # vhost-user drives (``socket``) need a vhost-user backend the emulator lacks.
            raise self._err(
                "Drive config error",
                "Unable to create the virtio block device: Invalid block config.",
            )
        existing = next(
            (i for i, d in enumerate(self.drives) if d["drive_id"] == cfg["drive_id"]), None
        )
        if drive["is_root_device"]:
            other_root = any(
                d["is_root_device"] and d["drive_id"] != drive["drive_id"] for d in self.drives
            )
            if other_root:
                raise self._err("Drive config error", "A root block device already exists!")
            if self.rel.at_least(14) and self._root_pmem():
                raise self._err(
                    "Drive config error",
                    "Attempt to add block as a root device while the root device defined as a "
                    "pmem device",
                )
        try:
            flags = os.O_RDONLY if drive.get("is_read_only") else os.O_RDWR
            os.close(os.open(host_path(str(path)), flags))
        except OSError as exc:
            if self.rel.modern:
                raise ActionError(
                    "Drive config error: Unable to create the virtio block device: Virtio "
                    "backend error: Error manipulating the backing file: "
                    f"{_os_error(exc)} {path}"
                ) from None
            raise ActionError(f"Invalid block device path: {path}") from None
        size = os.stat(host_path(str(path))).st_size
        if size % 512:
            self.log.warn(
                f"Disk size {size} is not a multiple of sector size 512; the remainder will "
                "not be visible to the guest.",
                origin="src/vmm/src/devices/virtio/block/virtio/device.rs:96",
            )
        if existing is not None:
            self.drives[existing] = drive
        elif drive["is_root_device"]:
            self.drives.insert(0, drive)
        else:
            self.drives.append(drive)
        if drive["is_root_device"]:
            self.drives.sort(key=lambda d: not d["is_root_device"])

    def insert_net(self, cfg: dict[str, Any]) -> None:
        self.boot_path = True
        net = dict(cfg)
        net.pop("__present__", None)
        others = [n for n in self.nets if n["iface_id"] != net["iface_id"]]
        mac = net.get("guest_mac")
        if mac is not None and any(n.get("guest_mac") == mac for n in others):
            raise self._err(
                "Network config error",
                f"The MAC address is already in use: {mac}",
                f"The guest MAC address {mac} is already in use.",
            )
        if any(n["host_dev_name"] == net["host_dev_name"] for n in others):
            raise self._err(
                "Network config error",
                "Could not create the network device: Open tap device failed: Error while "
                "creating ifreq structure: Resource busy (os error 16). Invalid TUN/TAP Backend "
                f"provided by {net['host_dev_name']}. Check our documentation on setting up the "
                "network devices.",
                f"Cannot open TAP device. Invalid name/permissions. CreateTap(IfreqExecuteError("
                f'Os {{ code: 16, kind: ResourceBusy, message: "Resource busy" }}, '
                f'"{net["host_dev_name"]}"))',
            )
        for i, n in enumerate(self.nets):
            if n["iface_id"] == net["iface_id"]:
                self.nets[i] = net
                return
        self.nets.append(net)

    def set_vsock(self, cfg: dict[str, Any]) -> None:
        self.boot_path = True
        uds = cfg["uds_path"]
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(host_path(uds))
            sock.listen(8)
        except OSError as exc:
            sock.close()
            raise self._err(
                "Vsock config error",
                "Cannot create backend for vsock device: Error binding to the host-side Unix "
                f"socket: {_os_error(exc)}",
                f"Cannot create backend for vsock device: UnixBind({_io_debug(exc)})",
            ) from None
        if self.vsock_socket is not None:
            self.vsock_socket.close()
        self.vsock_socket = sock
        self.vsock = {"guest_cid": cfg["guest_cid"], "uds_path": uds}
        _vsock.serve(self, sock)

    def set_balloon(self, cfg: dict[str, Any]) -> None:
        self.boot_path = True
        if cfg["amount_mib"] > self.machine["mem_size_mib"]:
            raise self._err("Balloon config error", "Amount of pages requested is too large.")
        self.balloon = {
            "amount_mib": cfg["amount_mib"],
            "deflate_on_oom": cfg["deflate_on_oom"],
            "stats_polling_interval_s": cfg["stats_polling_interval_s"],
            "free_page_hinting": cfg.get("free_page_hinting") or False,
            "free_page_reporting": cfg.get("free_page_reporting") or False,
        }

    def set_mmds_config(self, cfg: dict[str, Any]) -> None:
        self.boot_path = True
        prefix = "MMMDS config error" if self.rel.at_least(6) else ""
        ifaces = cfg["network_interfaces"]
        if not ifaces:
            raise self._err(
                prefix,
                "The list of network interface IDs that allow forwarding MMDS requests is empty.",
            )
        ip = cfg["ipv4_address"]
        if ip is not None and not ip.startswith("169.254."):
            raise self._err(prefix, "The MMDS IPv4 address is not link local.")
        known = {n["iface_id"] for n in self.nets}
        if any(i not in known for i in ifaces):
            raise self._err(
                prefix,
                "The list of network interface IDs provided contains at least one ID that does "
                "not correspond to any existing network interface.",
            )
        self.mmds_version = cfg["version"]
        self.mmds_ipv4 = ip
        self.mmds_imds_compat = bool(cfg.get("imds_compat"))
        self.mmds_ifaces = list(ifaces)
        if self.mmds_data is None:
            self.mmds_data = {}

    def set_entropy(self, cfg: dict[str, Any]) -> None:
        self.boot_path = True
        self.entropy = {"rate_limiter": cfg["rate_limiter"]}

    def insert_pmem(self, cfg: dict[str, Any]) -> None:
        self.boot_path = True
        try:
            os.close(os.open(host_path(cfg["path_on_host"]), os.O_RDONLY))
        except OSError as exc:
            raise ActionError(
                "Pmem device error: Unable to create the virtio-pmem device: Error accessing "
                f"backing file: {_os_error(exc)}"
            ) from None
        if cfg["root_device"]:
            if any(d["is_root_device"] for d in self.drives):
                raise ActionError(
                    "Pmem device error: Attempt to add pmem as a root device while the root "
                    "device defined as a block device"
                )
            if any(p["root_device"] and p["id"] != cfg["id"] for p in self.pmem):
                raise ActionError("Pmem device error: A root pmem device already exist")
        entry = {k: v for k, v in cfg.items() if k != "__present__"}
        for i, p in enumerate(self.pmem):
            if p["id"] == cfg["id"]:
                self.pmem[i] = entry
                return
        self.pmem.append(entry)

    def set_memory_hotplug(self, cfg: dict[str, Any]) -> None:
        self.boot_path = True
        block, slot, total = cfg["block_size_mib"], cfg["slot_size_mib"], cfg["total_size_mib"]
        problem = None
        if block < 2:
            problem = "Block size must not be lower than 2 MiB"
        elif block & (block - 1):
            problem = "Block size must be a power of 2"
        elif slot < 128:
            problem = "Slot size must not be lower than 128 MiB"
        elif slot % block:
            problem = f"Slot size must be a multiple of block size ({block} MiB)"
        elif total < slot:
            problem = f"Total size must not be lower than slot size ({slot} MiB)"
        elif total % slot:
            problem = f"Total size must be a multiple of slot size ({slot} MiB)"
        if problem:
            raise ActionError(f"Memory hotplug config error: {problem}")
        self.memory_hotplug = {
            k: cfg[k] for k in ("total_size_mib", "block_size_mib", "slot_size_mib")
        }

    def configure_logger(self, cfg: dict[str, Any]) -> None:
        try:
            if self.rel.at_least(5):
                self.log.update(
                    log_path=cfg["log_path"],
                    level=cfg["level"],
                    show_level=cfg["show_level"],
                    show_origin=cfg["show_log_origin"],
                    module=cfg.get("module"),
                )
            else:
                if self.log.initialized:
                    raise ActionError(
                        "Logger initialization failure: Reinitialization of logger not allowed."
                    )
                self.log.init_legacy(
                    cfg["log_path"], cfg["level"], cfg["show_level"], cfg["show_log_origin"]
                )
        except OSError as exc:
            raise self._err(
                "Logger error", f"Failed to open target file: {_os_error(exc)}", _os_error(exc)
            ) from None
        self.logger_configured = True

    def configure_metrics(self, path: str) -> None:
        if self.metrics.fd is not None:
            raise self._err(
                "Metrics error",
                "Reinitialization of metrics not allowed.",
                "Reinitialization of metrics not allowed.",
            )
        try:
            self.metrics.configure(path)
        except OSError as exc:
            raise self._err(
                "Metrics error",
                f"Cannot initialize the metrics system due to bad user input: {_os_error(exc)}",
                _os_error(exc),
            ) from None
        self.metrics_configured = True

    # --- MMDS ---

    def _mmds_fits(self, value: Any) -> bool:
        return len(json.dumps(value, separators=(",", ":"))) <= self.mmds_size_limit

    def mmds_put(self, value: Any) -> None:
        if not self._mmds_fits(value):
            raise _limit(self, "The MMDS request doesn't fit.")
        self.mmds_data = value

    def mmds_patch(self, value: Any) -> None:
        current = copy.deepcopy(self.mmds_data if self.mmds_data is not None else {})
        if not isinstance(current, dict):
            raise self._err("MMDS error", "The MMDS data store is not initialized.")
        merged = _merge_patch(current, value)
        if not self._mmds_fits(merged):
            raise _limit(self, "The MMDS patch request doesn't fit.")
        self.mmds_data = merged

    def mmds_get(self) -> Any:
        return {} if self.mmds_data is None else self.mmds_data

    # --- lifecycle ---

    def start(self) -> None:
        """InstanceStart: validate like Firecracker, then run the simulated guest."""
        if self.boot_source is None:
            raise self._err(
                "Start microvm error", "Cannot start microvm without kernel configuration."
            )
        self._open_kvm()
        problem = _guest.check_kernel(host_path(self.boot_source["kernel_image_path"]))
        if problem:
            raise self._err(
                "Start microvm error",
                "System configuration error: Cannot load kernel due to invalid memory "
                f"configuration or invalid kernel image: Kernel Loader: failed to load ELF kernel "
                f"image: Kernel Loader: {problem}",
                f"Cannot load kernel due to invalid memory configuration or invalid kernel "
                f"image: {problem}",
            )
        serial_fd = None
        if self.serial_out_path is not None:
            try:
                serial_fd = os.open(
                    host_path(self.serial_out_path),
                    os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NONBLOCK,
                    0o644,
                )
            except OSError as exc:
                raise ActionError(
                    "Start microvm error: Failed to create device manager: Error with EventFd: "
                    f"{_os_error(exc)}"
                ) from None
        self.state = RUNNING
        self.start_vcpus()
        self.log.info("Artificially kick devices", origin="src/vmm/src/device_manager/mod.rs:280")
        self._after_boot(serial_fd)

    def _open_kvm(self) -> None:
        """Open the KVM device as Firecracker does at boot, when ``FIREC_KVM_DEVICE`` names one.

        The emulator needs no KVM; this lets a test play a host where the user
        may not use it. Firecracker 1.0 to 1.5 panic there; the emulator answers
        as 1.6 and newer do, for every release.
        """
        device = os.environ.get(KVM_DEVICE_ENV)
        if not device:
            return
        try:
            os.close(os.open(device, os.O_RDWR | os.O_CLOEXEC))
        except OSError as exc:
            raise ActionError(
                "Start microvm error: Kvm error: Error creating KVM object: "
                f"{_os_error(exc)} Make sure the user launching the firecracker process is "
                "configured on the /dev/kvm file's ACL."
            ) from None

    def start_vcpus(self) -> None:
        """One thread per vCPU, named as Firecracker names them, alive until :meth:`stop_vcpus`."""
        for index in range(int(self.machine.get("vcpu_count") or 1)):
            self.vcpus.append(named_thread(f"fc_vcpu {index}", self.vcpus_finish.wait))

    def stop_vcpus(self) -> None:
        """``VcpuEvent::Finish`` to every vCPU thread, then join them (``Vmm::stop``)."""
        self.vcpus_finish.set()
        for thread in self.vcpus:
            thread.join()
        self.vcpus.clear()

    def _after_boot(self, serial_fd: int | None) -> None:
        boot_args = (self.boot_source or {}).get("boot_args") or ""
        output, wants_exit = _guest.run(boot_args)
        self.metrics.inc("uart", "write_count", len(output))
        self.metrics.inc("vcpu", "exit_io_out", len(output))
        if serial_fd is not None:
            try:
                os.write(serial_fd, output.encode())
            except OSError:  # a full disk...: the serial device drops what it cannot write
                pass
            finally:
                os.close(serial_fd)
        else:
            _guest.write_stdout(output)
        if wants_exit:  # the guest resets once it has printed, a little later
            self.exit = Exit(0, at=time.monotonic() + _guest.run_time(output))
        else:
            _vsock.guest_boot(self)
        self.metrics.write()

    def pause(self) -> None:
        self.state = PAUSED
        self.log.info(
            "'pause vm' VMM action took 40 us.", origin="src/vmm/src/rpc_interface.rs:807"
        )

    def resume(self) -> None:
        self.state = RUNNING
        self.log.info("Artificially kick devices", origin="src/vmm/src/device_manager/mod.rs:280")
        self.log.info(
            "'resume vm' VMM action took 44 us.", origin="src/vmm/src/rpc_interface.rs:820"
        )

    def create_snapshot(self, cfg: dict[str, Any]) -> None:
        if self.state != PAUSED:
            raise self._err(
                "Create snapshot error",
                "Cannot save the microVM state: Operation not allowed: save/restore unavailable "
                "while running",
            )
        if cfg["snapshot_type"] == "Diff" and not self.machine["track_dirty_pages"]:
            raise self._err(
                "Create snapshot error",
                "Diff snapshots are not allowed on uVMs with dirty page tracking disabled.",
            )
        try:
            _snapshot.save(
                self,
                host_path(cfg["snapshot_path"]),
                host_path(cfg["mem_file_path"]),
                diff=cfg["snapshot_type"] == "Diff",
            )
        except _snapshot.SnapshotFileError as exc:
            raise self._err("Create snapshot error", exc.modern, exc.legacy) from None

    def load_snapshot(self, cfg: dict[str, Any]) -> None:
        if self.boot_path:
            raise self._err(
                "Load snapshot error",
                "Loading a microVM snapshot not allowed after configuring boot-specific resources.",
                "Loading a microVM snapshot not allowed after configuring boot-specific resources.",
            )
        mem_path = cfg.get("mem_file_path")
        backend = cfg.get("mem_backend")
        if backend is not None:
            mem_path = backend["backend_path"]
        uffd = backend is not None and backend["backend_type"] == "Uffd"
        try:
            load = _uffd.load if uffd else _snapshot.load
            saved = load(self.rel, host_path(cfg["snapshot_path"]), host_path(str(mem_path)))
        except _snapshot.SnapshotFileError as exc:
            self.exit = Exit(1 if self.rel.modern else 152, "Loading snapshot failed.")
            if self.rel.modern:
                raise ActionError(
                    f"Load snapshot error: Failed to restore from snapshot: {exc.modern}"
                ) from None
            raise ActionError(f"Load microVM snapshot error: {exc.legacy}") from None
        _snapshot.restore(self, saved, cfg)
        self.start_vcpus()
        if cfg.get("resume_vm"):
            self.resume()


def _limit(vmm: Vmm, text: str) -> ActionError:
    if vmm.rel.modern:
        return ActionError(f"MMDS limit exceeded error: {text}", 413)
    return ActionError(text, 413)


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch, as Firecracker's MMDS PATCH applies it."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = _merge_patch(target.get(key), value)
    return target
