"""The VM's configuration as the GET endpoints show it, in each release's shape.

``GET /machine-config``, ``GET /balloon`` and ``GET /vm/config`` (with its
drives, network interfaces, MMDS config, entropy device, pmem and memory
hotplug device), keys in the order the emulated release serializes them.
"""

from __future__ import annotations

from typing import Any

from ._state import VmmState

__all__ = ["MMDS_DEFAULT_IPV4", "ConfigViews"]

MMDS_DEFAULT_IPV4 = "169.254.169.254"


class ConfigViews(VmmState):
    """Serializes the configuration of a VMM (a mixin of :class:`._vmm.Vmm`)."""

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
