"""Firecracker's API layer: request routing and body parsing, then the VMM action.

:func:`dispatch` turns one HTTP request into a response exactly like
``ParsedRequest::try_from`` + ``PrebootApiController`` / ``RuntimeApiController``
of the emulated release.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._errors import POSTBOOT_ONLY, PREBOOT_ONLY, ActionError, action_error, os_error
from ._jail import host_path
from ._schema import schema
from ._serde import SerdeError, Struct, from_text
from ._state import NOT_STARTED, PAUSED
from ._vmm import Vmm

__all__ = ["Response", "dispatch"]

_STATUS_TEXT = {
    200: "200 OK",
    204: "204 No Content",
    400: "400 Bad Request",
    413: "413 Payload too large",
}
_METHOD_NAME = {"GET": "Get", "PUT": "Put", "PATCH": "Patch", "DELETE": "Delete"}


@dataclass
class Response:
    """An API response: status, optional JSON body, deprecation header."""

    status: int
    body: str | None = None
    deprecated: bool = False


class RequestError(Exception):
    """A request refused before reaching the VMM (always HTTP 400)."""

    def __init__(self, message: str, debug: str) -> None:
        super().__init__(message)
        self.message = message
        self.debug = debug


def _fault(message: str) -> str:
    return json.dumps({"fault_message": message}, separators=(",", ":"), ensure_ascii=False)


def _rust_debug(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


@dataclass
class Action:
    """A parsed VMM action: ``name`` like Firecracker's VmmAction, its payload."""

    name: str
    payload: Any = None
    deprecation: str | None = None


def _parse(struct: Struct, body: str) -> dict[str, Any]:
    try:
        value: dict[str, Any] = from_text(body, struct)
        return value
    except SerdeError as err:
        text = err.render(body)
        pos = ""
        if err.offset is not None:
            line, column = text.rsplit(" at line ", 1)[1].split(" column ")
            pos = f", line: {line}, column: {column}"
        raise RequestError(
            f"An error occurred when deserializing the json body of a request: {text}.",
            f'SerdeJson(Error("{err.message}"{pos}))',
        ) from None


def _generic(message: str) -> RequestError:
    return RequestError(message, f'Generic(BadRequest, "{message}")')


def _checked_id(value: str | None) -> str:
    if not value:
        raise RequestError("The ID cannot be empty.", "EmptyID")
    if not all(c == "_" or c.isalnum() for c in value):
        raise RequestError(
            "API Resource IDs can only contain alphanumeric characters and underscores.",
            "InvalidID",
        )
    return value


def _invalid_path(path: str, method: str) -> RequestError:
    return RequestError(
        f"Invalid request method and/or path: {method} {path}.",
        f'InvalidPathMethod("{path}", {_METHOD_NAME[method]})',
    )


def route(vmm: Vmm, method: str, uri: str, body: str | None) -> Action:
    """``ParsedRequest::try_from``: map method + path (+ body) to a VMM action."""
    rel = vmm.rel
    s = schema(rel)
    tokens = uri.lstrip("/").split("/")
    if tokens and tokens[-1] == "" and len(tokens) > 1:
        tokens.pop()
    path, rest = tokens[0], tokens[1:]
    nxt = rest[0] if rest else None
    m = rel.minor

    if method == "GET" and body is None:
        if path == "":
            return Action("GetVmInstanceInfo")
        if path == "balloon":
            if nxt is None:
                return Action("GetBalloonConfig")
            if nxt == "statistics":
                return Action("GetBalloonStats")
            if nxt == "hinting" and m >= 14:
                sub = rest[1] if len(rest) > 1 else None
                if sub == "status":
                    return Action("GetFreePageHintingStatus")
                raise _generic(f"Unrecognized GET request path `/hinting/{sub or ''}`.")
            raise _generic(f"Unrecognized GET request path `{nxt}`.")
        if path == "version":
            return Action("GetVmmVersion")
        if path == "vm" and nxt == "config":
            return Action("GetFullVmConfig")
        if path == "machine-config":
            return Action("GetVmMachineConfig")
        if path == "mmds":
            return Action("GetMMDS")
        if path == "hotplug" and nxt == "memory" and m >= 14:
            return Action("GetMemoryHotplugStatus")
    if method == "GET" and body is not None:
        raise _generic("GET request cannot have a body.")

    if method == "PUT" and body is not None:
        if path == "actions":
            kind = _parse(s.action, body)["action_type"]
            return Action(
                {"InstanceStart": "StartMicroVm"}.get(kind, kind),
            )
        if path == "balloon":
            return Action("SetBalloonDevice", _parse(s.balloon, body))
        if path == "boot-source":
            return Action("ConfigureBootSource", _parse(s.boot_source, body))
        if path == "cpu-config" and m >= 4:
            return Action("PutCpuConfiguration", _parse(s.cpu_config, body))
        if path == "drives":
            drive_id = _checked_id(nxt)
            cfg = _parse(s.drive, body)
            if cfg["drive_id"] != drive_id:
                raise _generic("The id from the path does not match the id from the body!")
            return Action("InsertBlockDevice", cfg)
        if path == "pmem" and m >= 14:
            pmem_id = _checked_id(nxt)
            cfg = _parse(s.pmem, body)
            if cfg["id"] != pmem_id:
                raise _generic("The id from the path does not match the id from the body!")
            return Action("InsertPmemDevice", cfg)
        if path == "logger":
            return Action("ConfigureLogger", _parse(s.logger, body))
        if path == "serial" and m >= 14:
            return Action("ConfigureSerial", _parse(s.serial, body))
        if path == "machine-config":
            cfg = _parse(s.machine_config, body)
            dep = None
            if m >= 5 and cfg.get("cpu_template") is not None:
                dep = "PUT /machine-config: cpu_template field is deprecated."
            return Action("UpdateMachineConfiguration", (cfg, True), dep)
        if path == "metrics":
            return Action("ConfigureMetrics", _parse(s.metrics, body))
        if path == "mmds":
            if nxt is None:
                return Action("PutMMDS", _parse_value(body))
            if nxt == "config":
                cfg = _parse(s.mmds_config, body)
                dep = None
                if m >= 1 and cfg["version"] == "V1":
                    dep = "PUT /mmds/config: V1 is deprecated. Use V2 instead."
                return Action("SetMmdsConfiguration", cfg, dep)
            raise _generic(f"Unrecognized PUT request path `{nxt}`.")
        if path == "network-interfaces":
            iface_id = _checked_id(nxt)
            cfg = _parse(s.net, body)
            if cfg["iface_id"] != iface_id:
                if rel.modern:
                    raise _generic(
                        f"The id from the path [{iface_id}] does not match the id from the "
                        f"body [{cfg['iface_id']}]!"
                    )
                raise _generic("The id from the path does not match the id from the body!")
            return Action("InsertNetworkDevice", cfg)
        if path == "snapshot":
            if nxt is None:
                raise _generic("Missing snapshot operation type.")
            if nxt == "create":
                return Action("CreateSnapshot", _parse(s.snapshot_create, body))
            if nxt == "load":
                return _parse_load(vmm, s.snapshot_load, body)
            raise _invalid_path(f"/snapshot/{nxt}", "PUT")
        if path == "vsock":
            cfg = _parse(s.vsock, body)
            dep = "PUT /vsock: vsock_id field is deprecated." if cfg["vsock_id"] else None
            return Action("SetVsockDevice", cfg, dep)
        if path == "entropy" and m >= 4:
            return Action("SetEntropyDevice", _parse(s.entropy, body))
        if path == "hotplug" and nxt == "memory" and m >= 14:
            return Action("SetMemoryHotplugDevice", _parse(s.memory_hotplug, body))
    if method == "PUT" and body is None:
        raise _generic("Empty PUT request.")

    if method == "PATCH":
        if path == "balloon" and (body is not None or m >= 14):
            if nxt == "statistics" and body is not None:
                return Action("UpdateBalloonStatistics", _parse(s.balloon_stats_update, body))
            if nxt == "hinting" and m >= 14:
                sub = rest[1] if len(rest) > 1 else None
                if sub == "start":
                    cmd = _parse(s.hinting_start, body) if body else {"acknowledge_on_stop": True}
                    return Action("StartFreePageHinting", cmd)
                if sub == "stop":
                    return Action("StopFreePageHinting")
                raise _generic(f"Unrecognized PATCH request path `/hinting/{sub or ''}`.")
            if body is not None:
                return Action("UpdateBalloon", _parse(s.balloon_update, body))
            raise _generic("Empty PATCH request.")
        if body is not None:
            if path == "drives":
                drive_id = _checked_id(nxt)
                cfg = _parse(s.drive_update, body)
                if cfg["drive_id"] != drive_id:
                    raise _generic("The id from the path does not match the id from the body!")
                if not rel.modern and cfg["path_on_host"] is None and cfg["rate_limiter"] is None:
                    raise _generic(
                        "Please specify at least one property to patch: path_on_host, rate_limiter."
                    )
                return Action("UpdateBlockDevice", cfg)
            if path == "machine-config":
                cfg = _parse(s.machine_config_update, body)
                if all(cfg.get(k) is None for k in cfg if k != "__present__"):
                    raise _generic("Empty PATCH request.")
                dep = None
                if m >= 5 and cfg.get("cpu_template") is not None:
                    dep = "PATCH /machine-config: cpu_template field is deprecated."
                return Action("UpdateMachineConfiguration", (cfg, False), dep)
            if path == "mmds":
                return Action("PatchMMDS", _parse_value(body))
            if path == "network-interfaces":
                iface_id = _checked_id(nxt)
                cfg = _parse(s.net_update, body)
                if cfg["iface_id"] != iface_id:
                    if rel.modern:
                        raise _generic(
                            f"The id from the path [{iface_id}] does not match the id from the "
                            f"body [{cfg['iface_id']}]!"
                        )
                    raise _generic("The id from the path does not match the id from the body!")
                return Action("UpdateNetworkInterface", cfg)
            if path == "pmem" and m >= 16:
                pmem_id = _checked_id(nxt)
                cfg = _parse(s.pmem_update, body)
                if cfg["id"] != pmem_id:
                    raise _generic("The id from the path does not match the id from the body!")
                return Action("UpdatePmemDevice", cfg)
            if path == "vm":
                state = _parse(s.vm_state, body)["state"]
                return Action("Pause" if state == "Paused" else "Resume")
            if path == "hotplug" and nxt == "memory" and m >= 14:
                return Action("UpdateMemoryHotplugSize", _parse(s.memory_hotplug_update, body))
        else:
            raise _generic("Empty PATCH request.")

    if method == "DELETE" and m >= 16:
        if body is None and path in ("drives", "pmem", "network-interfaces"):
            return Action("HotUnplugDevice", (path, _checked_id(nxt)))
        if body is not None:
            raise _generic("Empty Delete request.")
    raise _invalid_path(path, method)


def _parse_value(body: str) -> Any:
    from ._serde import Any_

    try:
        return from_text(body, Any_())
    except SerdeError as err:
        text = err.render(body)
        raise RequestError(
            f"An error occurred when deserializing the json body of a request: {text}.",
            f'SerdeJson(Error("{err.message}"))',
        ) from None


def _parse_load(vmm: Vmm, struct: Struct, body: str) -> Action:
    cfg = _parse(struct, body)
    if vmm.rel.minor == 0:
        return Action("LoadSnapshot", cfg)
    if cfg.get("mem_backend") is not None and cfg.get("mem_file_path") is not None:
        msg = "too many fields: either `mem_backend` or `mem_file_path` exclusively is required"
        raise RequestError(
            f"An error occurred when deserializing the json body of a request: {msg}.",
            f'SerdeJson(Error("{msg}", line: 0, column: 0))',
        )
    if cfg.get("mem_backend") is None and cfg.get("mem_file_path") is None:
        msg = "missing field: either `mem_backend` or `mem_file_path` is required"
        raise RequestError(
            f"An error occurred when deserializing the json body of a request: {msg}.",
            f'SerdeJson(Error("{msg}", line: 0, column: 0))',
        )
    dep = None
    if cfg.get("mem_file_path") is not None or cfg.get("enable_diff_snapshots"):
        dep = (
            "PUT /snapshot/load: mem_file_path and enable_diff_snapshots fields are deprecated."
            if vmm.rel.at_least(13)
            else "PUT /snapshot/load: mem_file_path field is deprecated."
        )
        if cfg.get("mem_file_path") is None:
            dep = dep if vmm.rel.at_least(13) else None
    return Action("LoadSnapshot", cfg, dep)


# --- the VMM side ---------------------------------------------------------------------

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


# --- HTTP glue ------------------------------------------------------------------------


def _describe(method: str, uri: str, body: str | None, vmm: Vmm) -> str:
    name = _METHOD_NAME[method]
    if body is None or uri == "/mmds":
        return f"{name} request on {_rust_debug(uri)}"
    if uri == "/cpu-config" and not vmm.log.enabled(4):
        return (
            f"{name} request on {_rust_debug(uri)}. To view the CPU template received by the "
            "API, configure log-level to DEBUG"
        )
    return f"{name} request on {_rust_debug(uri)} with body {_rust_debug(body)}"


def dispatch(vmm: Vmm, method: str, uri: str, body: str | None) -> Response:
    """Handle one API request on ``vmm`` (never raises for API-level refusals)."""
    log = vmm.log
    api = {"thread": "fc_api", "module": "firecracker::api_server"}
    log.log(
        "Info",
        f"The API server received a {_describe(method, uri, body, vmm)}.",
        origin="src/firecracker/src/api_server/parsed_request.rs:74",
        force=True,
        **api,
    )
    try:
        action = route(vmm, method, uri, body)
    except RequestError as err:
        log.log(
            "Error",
            err.debug,
            origin="src/firecracker/src/api_server/mod.rs:143",
            force=True,
            **api,
        )
        return Response(400, _fault(err.message))
    _count(vmm, method, uri)
    try:
        response = perform(vmm, action)
    except ActionError as err:
        status_text = _STATUS_TEXT[err.status]
        log.log(
            "Error",
            f"Received Error. Status code: {status_text}. Message: {err.message}",
            origin="src/firecracker/src/api_server/parsed_request.rs:200",
            force=True,
            **api,
        )
        response = Response(err.status, _fault(err.message))
    else:
        log.log(
            "Info",
            f"The request was executed successfully. Status code: {_STATUS_TEXT[response.status]}.",
            origin="src/firecracker/src/api_server/parsed_request.rs:179",
            force=True,
            **api,
        )
    if action.deprecation:
        log.log(
            "Warn",
            action.deprecation,
            origin="src/firecracker/src/api_server/mod.rs:131",
            force=True,
            **api,
        )
        response.deprecated = True
        vmm.metrics.inc("deprecated_api", "deprecated_http_api_calls")
    return response


_COUNTERS = {
    ("GET", ""): ("get_api_requests", "instance_info_count"),
    ("GET", "machine-config"): ("get_api_requests", "machine_cfg_count"),
    ("GET", "mmds"): ("get_api_requests", "mmds_count"),
    ("GET", "version"): ("get_api_requests", "vmm_version_count"),
    ("PUT", "actions"): ("put_api_requests", "actions_count"),
    ("PUT", "boot-source"): ("put_api_requests", "boot_source_count"),
    ("PUT", "drives"): ("put_api_requests", "drive_count"),
    ("PUT", "logger"): ("put_api_requests", "logger_count"),
    ("PUT", "machine-config"): ("put_api_requests", "machine_cfg_count"),
    ("PUT", "metrics"): ("put_api_requests", "metrics_count"),
    ("PUT", "network-interfaces"): ("put_api_requests", "network_count"),
    ("PUT", "mmds"): ("put_api_requests", "mmds_count"),
    ("PUT", "vsock"): ("put_api_requests", "vsock_count"),
    ("PATCH", "drives"): ("patch_api_requests", "drive_count"),
    ("PATCH", "network-interfaces"): ("patch_api_requests", "network_count"),
    ("PATCH", "machine-config"): ("patch_api_requests", "machine_cfg_count"),
    ("PATCH", "mmds"): ("patch_api_requests", "mmds_count"),
}


def _count(vmm: Vmm, method: str, uri: str) -> None:
    key = _COUNTERS.get((method, uri.lstrip("/").split("/")[0]))
    if key:
        vmm.metrics.inc(*key)


__all__ += ["PAUSED"]
