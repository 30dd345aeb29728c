"""Configuring the VM before boot: ``PUT /boot-source``, ``/machine-config``, ``/drives``...

Each method applies one configuration action (Firecracker's ``VmResources``)
with the checks and error texts of the emulated release: boot source, machine
config, drives, network interfaces, vsock, balloon, entropy device, pmem,
memory hotplug device, logger and metrics. The MMDS configuration is in
:mod:`._mmds`.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from . import _vsock
from ._errors import ActionError, action_error, io_debug, os_error
from ._jail import host_path
from ._schema import MAX_VCPUS
from ._state import VmmState

__all__ = ["VmResources"]


class VmResources(VmmState):
    """The pre-boot configuration actions of a VMM (a mixin of :class:`._vmm.Vmm`)."""

    def set_boot_source(self, cfg: dict[str, Any]) -> None:
        self.boot_path = True
        try:
            with open(host_path(cfg["kernel_image_path"]), "rb"):
                pass
        except OSError as exc:
            raise action_error(
                self.rel, "Boot source error", f"The kernel file cannot be opened: {os_error(exc)}"
            ) from None
        if cfg["initrd_path"] is not None:
            try:
                with open(host_path(cfg["initrd_path"]), "rb"):
                    pass
            except OSError as exc:
                raise action_error(
                    self.rel,
                    "Boot source error",
                    "The initrd file cannot be opened due to invalid path or invalid "
                    f"permissions. {os_error(exc)}",
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
                raise action_error(
                    self.rel,
                    "Machine config error",
                    "The number of vCPUs must be greater than 0, less than "
                    f"{MAX_VCPUS} and must be 1 or an even number if SMT is enabled.",
                )
            page_mib = 2 if new["huge_pages"] == "2M" else 0
            if new["mem_size_mib"] == 0 or (page_mib and new["mem_size_mib"] % page_mib):
                raise action_error(
                    self.rel,
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
            raise action_error(
                self.rel,
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
            raise action_error(
                self.rel,
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
                raise action_error(
                    self.rel, "Drive config error", "A root block device already exists!"
                )
            if self.rel.at_least(14) and self._root_pmem():
                raise action_error(
                    self.rel,
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
                    f"{os_error(exc)} {path}"
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
            raise action_error(
                self.rel,
                "Network config error",
                f"The MAC address is already in use: {mac}",
                f"The guest MAC address {mac} is already in use.",
            )
        if any(n["host_dev_name"] == net["host_dev_name"] for n in others):
            raise action_error(
                self.rel,
                "Network config error",
                "Could not create the network device: Open tap device failed: Error while "
                "creating ifreq structure: Resource busy (os error 16). Invalid TUN/TAP Backend "
                f"provided by {net['host_dev_name']}. Check our documentation on setting up the "
                "network devices.",
                f"Cannot open TAP device. Invalid name/permissions. CreateTap(IfreqExecuteError("
                f'Os {{ code: 16, kind: ResourceBusy, message: "Resource busy" }}, '
                f'"{net["host_dev_name"]}"))',
            )
        _replace_or_append(self.nets, "iface_id", net)

    def set_vsock(self, cfg: dict[str, Any]) -> None:
        self.boot_path = True
        uds = cfg["uds_path"]
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(host_path(uds))
            sock.listen(8)
        except OSError as exc:
            sock.close()
            raise action_error(
                self.rel,
                "Vsock config error",
                "Cannot create backend for vsock device: Error binding to the host-side Unix "
                f"socket: {os_error(exc)}",
                f"Cannot create backend for vsock device: UnixBind({io_debug(exc)})",
            ) from None
        if self.vsock_socket is not None:
            self.vsock_socket.close()
        self.vsock_socket = sock
        self.vsock = {"guest_cid": cfg["guest_cid"], "uds_path": uds}
        _vsock.serve(self, sock)

    def set_balloon(self, cfg: dict[str, Any]) -> None:
        self.boot_path = True
        if cfg["amount_mib"] > self.machine["mem_size_mib"]:
            raise action_error(
                self.rel, "Balloon config error", "Amount of pages requested is too large."
            )
        self.balloon = {
            "amount_mib": cfg["amount_mib"],
            "deflate_on_oom": cfg["deflate_on_oom"],
            "stats_polling_interval_s": cfg["stats_polling_interval_s"],
            "free_page_hinting": cfg.get("free_page_hinting") or False,
            "free_page_reporting": cfg.get("free_page_reporting") or False,
        }

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
                f"backing file: {os_error(exc)}"
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
        _replace_or_append(self.pmem, "id", entry)

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
            raise action_error(
                self.rel,
                "Logger error",
                f"Failed to open target file: {os_error(exc)}",
                os_error(exc),
            ) from None
        self.logger_configured = True

    def configure_metrics(self, path: str) -> None:
        if self.metrics.fd is not None:
            raise action_error(
                self.rel,
                "Metrics error",
                "Reinitialization of metrics not allowed.",
                "Reinitialization of metrics not allowed.",
            )
        try:
            self.metrics.configure(path)
        except OSError as exc:
            raise action_error(
                self.rel,
                "Metrics error",
                f"Cannot initialize the metrics system due to bad user input: {os_error(exc)}",
                os_error(exc),
            ) from None
        self.metrics_configured = True


def _replace_or_append(devices: list[dict[str, Any]], key: str, device: dict[str, Any]) -> None:
    """A device put again under a known id replaces it, in its place; a new one comes last."""
    for i, known in enumerate(devices):
        if known[key] == device[key]:
            devices[i] = device
            return
    devices.append(device)
