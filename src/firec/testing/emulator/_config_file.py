"""Booting from ``--config-file``: the whole VM configured from one JSON document.

:func:`boot_from_config` parses the document (Firecracker's ``VmmConfig``),
applies each section as the matching API request would (:func:`apply_config`)
and starts the VM; a failure is the :class:`._exits.Fatal` Firecracker's
``main()`` returns, which differs with and without ``--no-api``.
"""

from __future__ import annotations

from typing import NoReturn

from ._errors import ActionError
from ._exits import Fatal
from ._schema import schema
from ._serde import SerdeError, from_text
from ._vmm import Vmm

__all__ = ["apply_config", "boot_from_config"]


def boot_from_config(vmm: Vmm, config_json: str, *, api: bool) -> None:
    """Configure ``vmm`` from the document and start it; raises :class:`Fatal`."""
    s = schema(vmm.rel)
    where = (
        "RunWithApiError error: Failed to build MicroVM from Json: "
        if api
        else ("RunWithoutApiError error: Failed to build MicroVM from Json: ")
    )
    debug_where = "RunWithApi(BuildFromJson(" if api else "RunWithoutApiError(BuildMicroVMFromJson("
    try:
        cfg = from_text(config_json, s.vmm_config)
    except SerdeError as err:
        text = "Configuration for VMM from one single json failed: Invalid JSON: " + err.render(
            config_json
        )
        _config_failed(vmm, where, text, debug_where)
    try:
        apply_config(vmm, cfg)
    except ActionError as err:
        _config_failed(
            vmm,
            where,
            f"Configuration for VMM from one single json failed: {err.message}",
            debug_where,
        )
    try:
        vmm.start()
    except ActionError as err:
        _config_failed(
            vmm, where, f"Could not Start MicroVM from one single json: {err.message}", debug_where
        )
    vmm.log.info(
        "Successfully started microvm that was configured from one single json",
        origin="src/firecracker/src/main.rs:620",
    )


def _config_failed(vmm: Vmm, where: str, text: str, debug_where: str) -> NoReturn:
    if vmm.rel.modern:
        raise Fatal(where + text, debug_where + "ParseFromJson))", 1)
    raise Fatal(text, "", 152)


def apply_config(vmm: Vmm, cfg: dict[str, object]) -> None:
    """Apply each section of a parsed document to ``vmm``, in Firecracker's order."""
    if cfg.get("logger"):
        vmm.configure_logger(cfg["logger"])  # type: ignore[arg-type]
    if cfg.get("metrics"):
        vmm.configure_metrics(cfg["metrics"]["metrics_path"])  # type: ignore[index]
    if cfg.get("machine-config"):
        vmm.update_machine_config(cfg["machine-config"], full=True)  # type: ignore[arg-type]
    vmm.set_boot_source(cfg["boot-source"])  # type: ignore[arg-type]
    for drive in cfg["drives"]:  # type: ignore[attr-defined]
        vmm.insert_drive(drive)
    for net in cfg.get("network-interfaces") or []:  # type: ignore[attr-defined]
        vmm.insert_net(net)
    if cfg.get("vsock"):
        vmm.set_vsock(cfg["vsock"])  # type: ignore[arg-type]
    if cfg.get("balloon"):
        vmm.set_balloon(cfg["balloon"])  # type: ignore[arg-type]
    if cfg.get("mmds-config"):
        vmm.set_mmds_config(cfg["mmds-config"])  # type: ignore[arg-type]
    if cfg.get("entropy"):
        vmm.set_entropy(cfg["entropy"])  # type: ignore[arg-type]
    for pmem in cfg.get("pmem") or []:  # type: ignore[attr-defined]
        vmm.insert_pmem(pmem)
    if cfg.get("memory-hotplug"):
        vmm.set_memory_hotplug(cfg["memory-hotplug"])  # type: ignore[arg-type]
