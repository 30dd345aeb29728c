"""Routing a request: method, path and body to a VMM action, or a refusal (HTTP 400).

:func:`route` is Firecracker's ``ParsedRequest::try_from`` for the emulated
release: it knows each endpoint's methods (``PUT /drives/{id}`` is
``InsertBlockDevice``), parses the body into its Rust struct (:mod:`._schema`)
and refuses what Firecracker's API server refuses before the VMM sees it (an
unknown path, a body that does not parse, a path id that is not the body's).
"""

from __future__ import annotations

from typing import Any

from ._actions import Action
from ._schema import schema
from ._serde import Any_, SerdeError, Struct, from_text
from ._vmm import Vmm

__all__ = ["METHOD_NAME", "RequestError", "route"]

METHOD_NAME = {"GET": "Get", "PUT": "Put", "PATCH": "Patch", "DELETE": "Delete"}
"""The Rust names of the HTTP methods, as Firecracker's messages print them."""


class RequestError(Exception):
    """A request refused before reaching the VMM (always HTTP 400)."""

    def __init__(self, message: str, debug: str) -> None:
        super().__init__(message)
        self.message = message
        self.debug = debug


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


def _parse_for(
    path_id: str | None, struct: Struct, body: str, key: str, *, show_ids: bool = False
) -> dict[str, Any]:
    """The body of a request on ``/<devices>/<path_id>``, whose ``key`` must be that id.

    The path's id is checked first, then the body parsed; ``show_ids``: the
    refusal of a mismatch names both ids (network interfaces, 1.6 and newer).
    """
    checked = _checked_id(path_id)
    cfg = _parse(struct, body)
    if cfg[key] != checked:
        if show_ids:
            raise _generic(
                f"The id from the path [{checked}] does not match the id from the "
                f"body [{cfg[key]}]!"
            )
        raise _generic("The id from the path does not match the id from the body!")
    return cfg


def _invalid_path(path: str, method: str) -> RequestError:
    return RequestError(
        f"Invalid request method and/or path: {method} {path}.",
        f'InvalidPathMethod("{path}", {METHOD_NAME[method]})',
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
            return Action("InsertBlockDevice", _parse_for(nxt, s.drive, body, "drive_id"))
        if path == "pmem" and m >= 14:
            return Action("InsertPmemDevice", _parse_for(nxt, s.pmem, body, "id"))
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
            cfg = _parse_for(nxt, s.net, body, "iface_id", show_ids=rel.modern)
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
                cfg = _parse_for(nxt, s.drive_update, body, "drive_id")
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
                cfg = _parse_for(nxt, s.net_update, body, "iface_id", show_ids=rel.modern)
                return Action("UpdateNetworkInterface", cfg)
            if path == "pmem" and m >= 16:
                return Action("UpdatePmemDevice", _parse_for(nxt, s.pmem_update, body, "id"))
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
