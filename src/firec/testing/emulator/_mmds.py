"""The MMDS: its configuration (``PUT /mmds/config``) and its data store (``/mmds``).

The store holds one JSON document, within the ``--mmds-size-limit``: ``PUT``
replaces it, ``PATCH`` merges into it (RFC 7396), ``GET`` reads it.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from ._errors import ActionError, action_error
from ._state import VmmState

__all__ = ["Mmds"]


class Mmds(VmmState):
    """The MMDS actions of a VMM (a mixin of :class:`._vmm.Vmm`)."""

    def set_mmds_config(self, cfg: dict[str, Any]) -> None:
        self.boot_path = True
        prefix = "MMMDS config error" if self.rel.at_least(6) else ""
        ifaces = cfg["network_interfaces"]
        if not ifaces:
            raise action_error(
                self.rel,
                prefix,
                "The list of network interface IDs that allow forwarding MMDS requests is empty.",
            )
        ip = cfg["ipv4_address"]
        if ip is not None and not ip.startswith("169.254."):
            raise action_error(self.rel, prefix, "The MMDS IPv4 address is not link local.")
        known = {n["iface_id"] for n in self.nets}
        if any(i not in known for i in ifaces):
            raise action_error(
                self.rel,
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

    def _mmds_fits(self, value: Any) -> bool:
        return len(json.dumps(value, separators=(",", ":"))) <= self.mmds_size_limit

    def mmds_put(self, value: Any) -> None:
        if not self._mmds_fits(value):
            raise _limit(self, "The MMDS request doesn't fit.")
        self.mmds_data = value

    def mmds_patch(self, value: Any) -> None:
        current = copy.deepcopy(self.mmds_data if self.mmds_data is not None else {})
        if not isinstance(current, dict):
            raise action_error(self.rel, "MMDS error", "The MMDS data store is not initialized.")
        merged = _merge_patch(current, value)
        if not self._mmds_fits(merged):
            raise _limit(self, "The MMDS patch request doesn't fit.")
        self.mmds_data = merged

    def mmds_get(self) -> Any:
        return {} if self.mmds_data is None else self.mmds_data


def _limit(vmm: VmmState, text: str) -> ActionError:
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
