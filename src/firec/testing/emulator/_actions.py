"""VMM actions, and the controllers that perform them on the VMM.

An :class:`Action` is Firecracker's ``VmmAction`` (``InsertBlockDevice``,
``StartMicroVm``...), as :mod:`._routes` makes it from a request. :func:`perform`
is the ``PrebootApiController`` before boot and the ``RuntimeApiController``
after: it refuses what the VMM's state does not allow, then has the VMM do the
action (configuration in :mod:`._resources`, the MMDS in :mod:`._mmds`, the
lifecycle in :mod:`._vmm`) or does it here (the balloon's, drives' and network
interfaces' runtime updates, hotplug), and makes the :class:`Response`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._errors import POSTBOOT_ONLY, PREBOOT_ONLY, ActionError, action_error, os_error
from ._jail import host_path
from ._state import NOT_STARTED
from ._vmm import Vmm

__all__ = ["Action", "Response", "perform"]


@dataclass
class Response:
    """An API response: status, optional JSON body, deprecation header."""

    status: int
    body: str | None = None
    deprecated: bool = False


@dataclass
class Action:
    """A parsed VMM action: ``name`` like Firecracker's VmmAction, its payload."""

    name: str
    payload: Any = None
    deprecation: str | None = None


_PREBOOT_REFUSED = {
    "CreateSnapshot",
    "FlushMetrics",
    "Pause",
    "Resume",
    "GetBalloonStats",
    "GetMemoryHotplugStatus",
    "UpdateBalloon",
    "UpdateBalloonStatistics",
    "UpdateBlockDevice",
    "UpdateMemoryHotplugSize",
    "UpdateNetworkInterface",
    "UpdatePmemDevice",
    "StartFreePageHinting",
    "GetFreePageHintingStatus",
    "StopFreePageHinting",
    "HotUnplugDevice",
    "SendCtrlAltDel",
}
_POSTBOOT_REFUSED = {
    "ConfigureBootSource",
    "ConfigureLogger",
    "ConfigureMetrics",
    "ConfigureSerial",
    "LoadSnapshot",
    "PutCpuConfiguration",
    "SetBalloonDevice",
    "SetVsockDevice",
    "SetMmdsConfiguration",
    "SetEntropyDevice",
    "SetMemoryHotplugDevice",
    "StartMicroVm",
    "UpdateMachineConfiguration",
}
_HOTPLUG = {"InsertBlockDevice", "InsertPmemDevice", "InsertNetworkDevice"}


def _json(value: Any) -> Response:
    return Response(200, json.dumps(value, separators=(",", ":"), ensure_ascii=False))


def _device_not_found(vmm: Vmm, prefix: str) -> ActionError:
    return ActionError(f"{prefix}: Failed perform action on device: Device not found")


def perform(vmm: Vmm, action: Action) -> Response:
    """Run one action through the pre-boot or runtime controller."""
    name, p = action.name, action.payload
    if vmm.state == NOT_STARTED:
        if name in _PREBOOT_REFUSED:
            raise ActionError(PREBOOT_ONLY)
    elif name in _POSTBOOT_REFUSED or (name in _HOTPLUG and not vmm.rel.at_least(16)):
        raise ActionError(POSTBOOT_ONLY)
    started = vmm.state != NOT_STARTED
    handler: Callable[[], Response | None] | None = {
        "GetVmInstanceInfo": lambda: _json(vmm.instance_info()),
        "GetVmmVersion": lambda: _json({"firecracker_version": vmm.rel.version}),
        "GetVmMachineConfig": lambda: _json(vmm.machine_config_out()),
        "GetFullVmConfig": lambda: _full_config(vmm),
        "GetMMDS": lambda: _json(vmm.mmds_get()),
        "PutMMDS": lambda: vmm.mmds_put(p),
        "PatchMMDS": lambda: vmm.mmds_patch(p),
        "GetBalloonConfig": lambda: _balloon_config(vmm, started),
        "GetBalloonStats": lambda: _balloon_stats(vmm),
        "UpdateBalloon": lambda: _balloon_update(vmm),
        "UpdateBalloonStatistics": lambda: _balloon_stats_update(vmm, p),
        "StartFreePageHinting": lambda: _hinting(vmm),
        "GetFreePageHintingStatus": lambda: _hinting(vmm, status=True),
        "StopFreePageHinting": lambda: _hinting(vmm),
        "ConfigureBootSource": lambda: vmm.set_boot_source(p),
        "ConfigureLogger": lambda: vmm.configure_logger(p),
        "ConfigureMetrics": lambda: vmm.configure_metrics(p["metrics_path"]),
        "ConfigureSerial": lambda: setattr(vmm, "serial_out_path", p["serial_out_path"]),
        "PutCpuConfiguration": lambda: None,
        "UpdateMachineConfiguration": lambda: vmm.update_machine_config(p[0], full=p[1]),
        "InsertBlockDevice": lambda: (
            _hotplug(vmm, vmm.insert_drive, p) if started else vmm.insert_drive(p)
        ),
        "InsertNetworkDevice": lambda: (
            _hotplug(vmm, vmm.insert_net, p) if started else vmm.insert_net(p)
        ),
        "InsertPmemDevice": lambda: (
            _hotplug(vmm, vmm.insert_pmem, p) if started else vmm.insert_pmem(p)
        ),
        "SetVsockDevice": lambda: vmm.set_vsock(p),
        "SetBalloonDevice": lambda: vmm.set_balloon(p),
        "SetMmdsConfiguration": lambda: vmm.set_mmds_config(p),
        "SetEntropyDevice": lambda: vmm.set_entropy(p),
        "SetMemoryHotplugDevice": lambda: vmm.set_memory_hotplug(p),
        "GetMemoryHotplugStatus": lambda: _memory_hotplug_status(vmm),
        "UpdateMemoryHotplugSize": lambda: _memory_hotplug_update(vmm),
        "StartMicroVm": vmm.start,
        "Pause": vmm.pause,
        "Resume": vmm.resume,
        "SendCtrlAltDel": lambda: None,
        "FlushMetrics": lambda: _flush(vmm),
        "CreateSnapshot": lambda: vmm.create_snapshot(p),
        "LoadSnapshot": lambda: vmm.load_snapshot(p),
        "UpdateBlockDevice": lambda: _update_drive(vmm, p),
        "UpdateNetworkInterface": lambda: _update_net(vmm, p),
        "UpdatePmemDevice": lambda: _update_pmem(vmm, p),
        "HotUnplugDevice": lambda: _unplug(vmm, p),
    }.get(name)
    assert handler is not None, name
    result = handler()
    return result if isinstance(result, Response) else Response(204)


def _full_config(vmm: Vmm) -> Response:
    if vmm.state == NOT_STARTED and vmm.rel.at_least(6):
        vmm.log.warn(
            "If the VM was restored from snapshot, boot-source, machine-config.smt, and "
            "machine-config.cpu_template will all be empty.",
            origin="src/vmm/src/rpc_interface.rs:433",
        )
    return _json(vmm.full_config())


def _balloon_config(vmm: Vmm, started: bool) -> Response:
    if vmm.balloon is None:
        if started and vmm.rel.modern:
            raise _device_not_found(vmm, "Internal VMM error")
        raise action_error(vmm.rel, "Balloon config error", "No balloon device found.")
    return _json(vmm.balloon_out())


def _balloon_stats(vmm: Vmm) -> Response:
    if vmm.balloon is None:
        raise _device_not_found(vmm, "Internal VMM error")
    if not vmm.balloon["stats_polling_interval_s"]:
        raise action_error(
            vmm.rel,
            "Internal VMM error",
            "Balloon: Received stats query when stats are disabled.",
            "Statistics for the balloon device are not enabled",
        )
    amount = vmm.balloon["amount_mib"]
    return _json(
        {"target_pages": amount * 256, "actual_pages": 0, "target_mib": amount, "actual_mib": 0}
    )


def _balloon_update(vmm: Vmm) -> None:
    if vmm.balloon is None:
        raise _device_not_found(vmm, "Balloon update error")
    # firec's test guest has no virtio-balloon driver: the device never activates.
    raise action_error(
        vmm.rel,
        "Balloon update error",
        "Balloon: Device not activated yet.",
        "Device is inactive, check if balloon driver is enabled in guest kernel.",
    )


def _balloon_stats_update(vmm: Vmm, cfg: dict[str, Any]) -> None:
    if vmm.balloon is None:
        raise _device_not_found(vmm, "Balloon update error")
    old, new = vmm.balloon["stats_polling_interval_s"], cfg["stats_polling_interval_s"]
    if (old == 0) != (new == 0):
        raise action_error(
            vmm.rel,
            "Balloon update error",
            "Balloon: Statistics cannot be enabled/disabled after activation.",
            "Cannot enable/disable the statistics after boot.",
        )
    vmm.log.warn("Failed to update balloon stats, missing descriptor.")
    vmm.balloon["stats_polling_interval_s"] = new


def _hinting(vmm: Vmm, *, status: bool = False) -> Response | None:
    if vmm.balloon is None:
        raise _device_not_found(vmm, "Balloon update error")
    if not vmm.balloon.get("free_page_hinting"):
        raise ActionError(
            "Balloon update error: Balloon: Attempting to use hinting when not enabled"
        )
    if status:  # the status is kept by the VMM, whether or not the guest's driver is there
        return _json({"host_cmd": 0, "guest_cmd": None})
    raise ActionError("Balloon update error: Balloon: Device not activated yet.")


def _memory_hotplug_status(vmm: Vmm) -> Response:
    if vmm.memory_hotplug is None:
        raise _device_not_found(vmm, "Internal VMM error")
    sizes = {
        k: vmm.memory_hotplug[k] for k in ("block_size_mib", "total_size_mib", "slot_size_mib")
    }
    return _json({**sizes, "plugged_size_mib": 0, "requested_size_mib": 0})


def _memory_hotplug_update(vmm: Vmm) -> None:
    if vmm.memory_hotplug is None:
        raise _device_not_found(vmm, "Memory hotplug update error")
    # firec's test guest has no virtio-mem driver: the device never activates.
    raise ActionError(
        "Memory hotplug update error: Failed to create memory hotplug device: Device is not active"
    )


def _update_rate_limiter(current: dict[str, Any] | None, update: dict[str, Any]) -> dict[str, Any]:
    """A PATCH replaces the buckets it names (size or refill_time 0: no limit), keeps the rest."""
    merged = dict(current or {"bandwidth": None, "ops": None})
    for key in ("bandwidth", "ops"):
        bucket = update.get(key)
        if bucket is not None:
            enabled = bucket["size"] and bucket["refill_time"]
            merged[key] = bucket if enabled else None
    return merged


def _flush(vmm: Vmm) -> None:
    vmm.metrics.write()


def _update_drive(vmm: Vmm, cfg: dict[str, Any]) -> None:
    drive = next((d for d in vmm.drives if d["drive_id"] == cfg["drive_id"]), None)
    if drive is None:
        if vmm.rel.modern:
            raise ActionError(
                "Drive config error: Unable to patch the block device: Failed perform action on "
                "device: Device not found Please verify the request arguments."
            )
        if vmm.rel.minor == 0:
            raise ActionError("Error during drive update (patch): the device couldn't be found")
        raise ActionError("Unable to patch the block device: Failed to find the device on the bus.")
    if cfg["path_on_host"] is None and cfg["rate_limiter"] is None:
        if not vmm.rel.modern:  # measured on 1.0; 1.14 answers below (between: a guess)
            raise ActionError(
                "Please specify at least one property to patch: path_on_host, rate_limiter."
            )
        raise ActionError(
            "Drive config error: Unable to patch the block device: Block: Running method "
            "expected different backend. Please verify the request arguments."
        )
    if cfg["path_on_host"] is not None:
        try:
            with open(host_path(cfg["path_on_host"]), "rb"):
                pass
        except OSError as exc:
            raise action_error(
                vmm.rel,
                "Drive config error",
                "Unable to patch the block device: Block: Virtio backend error: Error "
                f"manipulating the backing file: {os_error(exc)} {cfg['path_on_host']} Please "
                "verify the request arguments.",
                f"Invalid block device path: {cfg['path_on_host']}",
            ) from None
        drive["path_on_host"] = cfg["path_on_host"]
    if cfg["rate_limiter"] is not None:
        drive["rate_limiter"] = _update_rate_limiter(drive["rate_limiter"], cfg["rate_limiter"])


def _update_net(vmm: Vmm, cfg: dict[str, Any]) -> None:
    net = next((n for n in vmm.nets if n["iface_id"] == cfg["iface_id"]), None)
    if net is None:
        raise action_error(
            vmm.rel,
            "Network config error",
            "Unable to update the net device: Failed perform action on device: Device not found",
            "Error during interface update (patch): the device couldn't be found",
        )
    for key in ("rx_rate_limiter", "tx_rate_limiter"):
        if cfg[key] is not None:
            net[key] = _update_rate_limiter(net[key], cfg[key])


def _update_pmem(vmm: Vmm, cfg: dict[str, Any]) -> None:
    pmem = next((x for x in vmm.pmem if x["id"] == cfg["id"]), None)
    if cfg["rate_limiter"] is None:
        return
    if pmem is None:
        raise ActionError(
            "Pmem device error: Unable to patch the pmem device: Failed perform action on "
            "device: Device not found Please verify the request arguments."
        )
    pmem["rate_limiter"] = cfg["rate_limiter"]


def _hotplug(vmm: Vmm, insert: Callable[[dict[str, Any]], None], cfg: dict[str, Any]) -> None:
    if not vmm.pci_enabled:
        raise ActionError("PCI is not enabled")
    key = "drive_id" if "drive_id" in cfg else "iface_id" if "iface_id" in cfg else "id"
    ids = {d["drive_id"] for d in vmm.drives} | {n["iface_id"] for n in vmm.nets}
    ids |= {x["id"] for x in vmm.pmem}
    if cfg[key] in ids:
        raise ActionError("Device ID in use")
    insert(cfg)


def _unplug(vmm: Vmm, target: tuple[str, str]) -> None:
    kind, dev_id = target
    if not vmm.pci_enabled:
        raise ActionError("PCI is not enabled")
    table: list[dict[str, Any]]
    key, table = {
        "drives": ("drive_id", vmm.drives),
        "pmem": ("id", vmm.pmem),
        "network-interfaces": ("iface_id", vmm.nets),
    }[kind]
    for i, entry in enumerate(table):
        if entry[key] == dev_id:
            if entry.get("is_root_device") or entry.get("root_device"):
                raise ActionError("Cannot unplug root device")
            del table[i]
            return
    raise ActionError("Device not found")
