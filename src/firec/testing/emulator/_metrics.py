"""Firecracker's metrics: one JSON object per line, counters reset at every flush.

The groups and keys are those real Firecracker writes (1.14 shape from 1.6 on,
the 1.0 shape before); counters the emulator has no reason to move stay 0.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from firec.testing.emulator._log import open_nonblocking
from firec.testing.emulator._release import Release

__all__ = ["FLUSH_PERIOD_S", "Metrics"]

FLUSH_PERIOD_S = 60.0
"""Real Firecracker writes the metrics every 60 seconds once the VM runs."""

_MODERN = {
    "api_server": "process_startup_time_us process_startup_time_cpu_us",
    "balloon": "activate_fails inflate_count stats_updates_count stats_update_fails deflate_count "
    "event_fails free_page_report_count free_page_report_freed free_page_report_fails "
    "free_page_hint_count free_page_hint_freed free_page_hint_fails",
    "block": "activate_fails cfg_fails no_avail_buffer event_fails execute_fails "
    "invalid_reqs_count flush_count queue_event_count rate_limiter_event_count update_count "
    "update_fails read_bytes write_bytes read_count write_count read_agg* write_agg* "
    "rate_limiter_throttled_events io_engine_throttled_events remaining_reqs_count",
    "deprecated_api": "deprecated_http_api_calls",
    "get_api_requests": "instance_info_count machine_cfg_count mmds_count vmm_version_count "
    "hotplug_memory_count",
    "i8042": "error_count missed_read_count missed_write_count read_count reset_count write_count",
    "uart": "error_count flush_count missed_read_count missed_write_count read_count write_count",
    "latencies_us": "full_create_snapshot diff_create_snapshot load_snapshot pause_vm resume_vm "
    "vmm_full_create_snapshot vmm_diff_create_snapshot vmm_load_snapshot vmm_pause_vm "
    "vmm_resume_vm",
    "logger": "missed_metrics_count metrics_fails missed_log_count",
    "mmds": "rx_accepted rx_accepted_err rx_accepted_unusual rx_bad_eth rx_invalid_token "
    "rx_no_token rx_count tx_bytes tx_count tx_errors tx_frames connections_created "
    "connections_destroyed",
    "net": "activate_fails cfg_fails mac_address_updates no_rx_avail_buffer no_tx_avail_buffer "
    "event_fails rx_queue_event_count rx_event_rate_limiter_count rx_rate_limiter_throttled "
    "rx_tap_event_count rx_bytes_count rx_packets_count rx_fails rx_count tap_read_fails "
    "tap_write_fails tap_write_agg* tx_bytes_count tx_malformed_frames tx_fails tx_count "
    "tx_packets_count tx_queue_event_count tx_rate_limiter_event_count tx_rate_limiter_throttled "
    "tx_spoofed_mac_count tx_remaining_reqs_count",
    "patch_api_requests": "drive_count drive_fails network_count network_fails machine_cfg_count "
    "machine_cfg_fails mmds_count mmds_fails hotplug_memory_count hotplug_memory_fails",
    "put_api_requests": "actions_count actions_fails boot_source_count boot_source_fails "
    "drive_count drive_fails logger_count logger_fails machine_cfg_count machine_cfg_fails "
    "cpu_cfg_count cpu_cfg_fails metrics_count metrics_fails network_count network_fails "
    "mmds_count mmds_fails vsock_count vsock_fails pmem_count pmem_fails serial_count "
    "serial_fails hotplug_memory_count hotplug_memory_fails",
    "seccomp": "num_faults",
    "vcpu": "exit_io_in exit_io_out exit_mmio_read exit_mmio_write failures kvmclock_ctrl_fails "
    "exit_io_in_agg* exit_io_out_agg* exit_mmio_read_agg* exit_mmio_write_agg*",
    "vmm": "panic_count",
    "signals": "sigbus sigsegv sigxfsz sigxcpu sigpipe sighup sigill",
    "vsock": "activate_fails cfg_fails rx_queue_event_fails tx_queue_event_fails "
    "ev_queue_event_fails muxer_event_fails conn_event_fails rx_queue_event_count "
    "tx_queue_event_count rx_bytes_count tx_bytes_count rx_packets_count tx_packets_count "
    "conns_added conns_killed conns_removed killq_resync tx_flush_fails tx_write_fails "
    "rx_read_fails",
    "entropy": "activate_fails entropy_event_fails entropy_event_count entropy_bytes "
    "host_rng_fails entropy_rate_limiter_throttled rate_limiter_event_count",
    "pmem": "activate_fails cfg_fails event_fails queue_event_count",
    "interrupts": "triggers config_updates",
    "memory_hotplug": "activate_fails queue_event_fails queue_event_count plug_agg* plug_count "
    "plug_bytes plug_fails unplug_agg* unplug_count unplug_bytes unplug_fails "
    "unplug_discard_fails unplug_all_agg* unplug_all_count unplug_all_fails state_agg* "
    "state_count state_fails",
}

_LEGACY = {
    "api_server": "process_startup_time_us process_startup_time_cpu_us sync_response_fails "
    "sync_vmm_send_timeout_count",
    "balloon": "activate_fails inflate_count stats_updates_count stats_update_fails deflate_count "
    "event_fails",
    "block": "activate_fails cfg_fails no_avail_buffer event_fails execute_fails "
    "invalid_reqs_count flush_count queue_event_count rate_limiter_event_count update_count "
    "update_fails read_bytes write_bytes read_count write_count rate_limiter_throttled_events "
    "io_engine_throttled_events",
    "deprecated_api": "deprecated_http_api_calls deprecated_cmd_line_api_calls",
    "get_api_requests": "instance_info_count machine_cfg_count mmds_count vmm_version_count",
    "i8042": "error_count missed_read_count missed_write_count read_count reset_count write_count",
    "latencies_us": _MODERN["latencies_us"],
    "logger": "missed_metrics_count metrics_fails missed_log_count log_fails",
    "mmds": "rx_accepted rx_accepted_err rx_accepted_unusual rx_bad_eth rx_count tx_bytes "
    "tx_count tx_errors tx_frames connections_created connections_destroyed",
    "net": "activate_fails cfg_fails mac_address_updates no_rx_avail_buffer no_tx_avail_buffer "
    "event_fails rx_queue_event_count rx_event_rate_limiter_count rx_partial_writes "
    "rx_rate_limiter_throttled rx_tap_event_count rx_bytes_count rx_packets_count rx_fails "
    "rx_count tap_read_fails tap_write_fails tx_bytes_count tx_malformed_frames tx_fails "
    "tx_count tx_packets_count tx_partial_reads tx_queue_event_count tx_rate_limiter_event_count "
    "tx_rate_limiter_throttled tx_spoofed_mac_count",
    "patch_api_requests": "drive_count drive_fails network_count network_fails machine_cfg_count "
    "machine_cfg_fails mmds_count mmds_fails",
    "put_api_requests": "actions_count actions_fails boot_source_count boot_source_fails "
    "drive_count drive_fails logger_count logger_fails machine_cfg_count machine_cfg_fails "
    "metrics_count metrics_fails network_count network_fails mmds_count mmds_fails vsock_count "
    "vsock_fails",
    "seccomp": "num_faults",
    "vcpu": "exit_io_in exit_io_out exit_mmio_read exit_mmio_write failures filter_cpuid",
    "vmm": "device_events panic_count",
    "uart": _MODERN["uart"],
    "signals": _MODERN["signals"],
    "vsock": _MODERN["vsock"],
}

# Counters that keep their value across flushes (gauges), the rest are reset.
_KEEP = {("api_server", "process_startup_time_us"), ("api_server", "process_startup_time_cpu_us")}


class Metrics:
    """Counters plus the metrics target (file or fifo)."""

    def __init__(self, rel: Release) -> None:
        self.layout = {
            group: keys.split() for group, keys in (_MODERN if rel.modern else _LEGACY).items()
        }
        self.values: dict[tuple[str, str], int] = {}
        self.fd: int | None = None
        self.rel = rel

    def configure(self, path: str) -> None:
        """Open the metrics target; raises OSError (Firecracker refuses a second one)."""
        self.fd = open_nonblocking(path, create=self.rel.modern)

    def inc(self, group: str, key: str, amount: int = 1) -> None:
        self.values[(group, key)] = self.values.get((group, key), 0) + amount

    def set(self, group: str, key: str, value: int) -> None:
        self.values[(group, key)] = value

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {"utc_timestamp_ms": time.time_ns() // 1_000_000}
        for group, keys in self.layout.items():
            entries: dict[str, Any] = {}
            for key in keys:
                if key.endswith("*"):
                    entries[key[:-1]] = {"min_us": 0, "max_us": 0, "sum_us": 0}
                else:
                    entries[key] = self.values.get((group, key), 0)
            out[group] = entries
        return out

    def write(self) -> bool:
        """Write one line if a target is configured; counters restart from 0."""
        if self.fd is None:
            return False
        line = json.dumps(self.snapshot(), separators=(",", ":")) + "\n"
        self.values = {k: v for k, v in self.values.items() if k in _KEEP}
        try:
            os.write(self.fd, line.encode())
        except OSError:  # EAGAIN, EPIPE, ENOSPC...: Firecracker counts it as missed
            self.inc("logger", "missed_metrics_count")
        return True

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
