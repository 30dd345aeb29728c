"""Parsing Firecracker metrics lines (captured from real 1.14.2 and 1.0.0) and forwarding them."""

from __future__ import annotations

import gc
import json
import logging
import os
import re
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pydantic
import pytest

from firec.errors import ValidationError
from firec.testing.guest import BOOT_LINE, build_test_guest, echo_line, guest_args
from firec.vm.metrics import MetricsForwarder, MetricsSnapshot, parse_metrics_line
from firec.vm.streams import LineReader
from tests.support import require_firecracker

# Real lines, verbatim: 1.14.2 with two drives (rootfs, data), eth0, vsock, balloon, entropy,
# written at boot; 1.0.0 with the same devices but entropy, written on FlushMetrics.
METRICS_1_14_2 = (
    '{"utc_timestamp_ms":1795786758911,"api_server":{"process_startup_time_us":0,"process_s'
    'tartup_time_cpu_us":0},"balloon":{"activate_fails":0,"inflate_count":0,"stats_updates_'
    'count":0,"stats_update_fails":0,"deflate_count":0,"event_fails":0,"free_page_report_co'
    'unt":0,"free_page_report_freed":0,"free_page_report_fails":0,"free_page_hint_count":0,'
    '"free_page_hint_freed":0,"free_page_hint_fails":0},"block_data":{"activate_fails":0,"c'
    'fg_fails":0,"no_avail_buffer":0,"event_fails":0,"execute_fails":0,"invalid_reqs_count"'
    ':0,"flush_count":0,"queue_event_count":0,"rate_limiter_event_count":0,"update_count":0'
    ',"update_fails":0,"read_bytes":0,"write_bytes":0,"read_count":0,"write_count":0,"read_'
    'agg":{"min_us":0,"max_us":0,"sum_us":0},"write_agg":{"min_us":0,"max_us":0,"sum_us":0}'
    ',"rate_limiter_throttled_events":0,"io_engine_throttled_events":0,"remaining_reqs_coun'
    't":0},"block_rootfs":{"activate_fails":0,"cfg_fails":0,"no_avail_buffer":0,"event_fail'
    's":0,"execute_fails":0,"invalid_reqs_count":0,"flush_count":0,"queue_event_count":0,"r'
    'ate_limiter_event_count":0,"update_count":0,"update_fails":0,"read_bytes":0,"write_byt'
    'es":0,"read_count":0,"write_count":0,"read_agg":{"min_us":0,"max_us":0,"sum_us":0},"wr'
    'ite_agg":{"min_us":0,"max_us":0,"sum_us":0},"rate_limiter_throttled_events":0,"io_engi'
    'ne_throttled_events":0,"remaining_reqs_count":0},"block":{"activate_fails":0,"cfg_fail'
    's":0,"no_avail_buffer":0,"event_fails":0,"execute_fails":0,"invalid_reqs_count":0,"flu'
    'sh_count":0,"queue_event_count":0,"rate_limiter_event_count":0,"update_count":0,"updat'
    'e_fails":0,"read_bytes":0,"write_bytes":0,"read_count":0,"write_count":0,"read_agg":{"'
    'min_us":0,"max_us":0,"sum_us":0},"write_agg":{"min_us":0,"max_us":0,"sum_us":0},"rate_'
    'limiter_throttled_events":0,"io_engine_throttled_events":0,"remaining_reqs_count":0},"'
    'deprecated_api":{"deprecated_http_api_calls":0},"get_api_requests":{"instance_info_cou'
    'nt":0,"machine_cfg_count":0,"mmds_count":0,"vmm_version_count":0,"hotplug_memory_count'
    '":0},"i8042":{"error_count":0,"missed_read_count":0,"missed_write_count":0,"read_count'
    '":0,"reset_count":0,"write_count":0},"uart":{"error_count":0,"flush_count":0,"missed_r'
    'ead_count":0,"missed_write_count":0,"read_count":0,"write_count":41},"latencies_us":{"'
    'full_create_snapshot":0,"diff_create_snapshot":0,"load_snapshot":0,"pause_vm":0,"resum'
    'e_vm":0,"vmm_full_create_snapshot":0,"vmm_diff_create_snapshot":0,"vmm_load_snapshot":'
    '0,"vmm_pause_vm":0,"vmm_resume_vm":0},"logger":{"missed_metrics_count":0,"metrics_fail'
    's":0,"missed_log_count":0},"mmds":{"rx_accepted":0,"rx_accepted_err":0,"rx_accepted_un'
    'usual":0,"rx_bad_eth":0,"rx_invalid_token":0,"rx_no_token":0,"rx_count":0,"tx_bytes":0'
    ',"tx_count":0,"tx_errors":0,"tx_frames":0,"connections_created":0,"connections_destroy'
    'ed":0},"net_eth0":{"activate_fails":0,"cfg_fails":0,"mac_address_updates":0,"no_rx_ava'
    'il_buffer":0,"no_tx_avail_buffer":0,"event_fails":0,"rx_queue_event_count":0,"rx_event'
    '_rate_limiter_count":0,"rx_rate_limiter_throttled":0,"rx_tap_event_count":0,"rx_bytes_'
    'count":0,"rx_packets_count":0,"rx_fails":0,"rx_count":0,"tap_read_fails":0,"tap_write_'
    'fails":0,"tap_write_agg":{"min_us":0,"max_us":0,"sum_us":0},"tx_bytes_count":0,"tx_mal'
    'formed_frames":0,"tx_fails":0,"tx_count":0,"tx_packets_count":0,"tx_queue_event_count"'
    ':0,"tx_rate_limiter_event_count":0,"tx_rate_limiter_throttled":0,"tx_spoofed_mac_count'
    '":0,"tx_remaining_reqs_count":0},"net":{"activate_fails":0,"cfg_fails":0,"mac_address_'
    'updates":0,"no_rx_avail_buffer":0,"no_tx_avail_buffer":0,"event_fails":0,"rx_queue_eve'
    'nt_count":0,"rx_event_rate_limiter_count":0,"rx_rate_limiter_throttled":0,"rx_tap_even'
    't_count":0,"rx_bytes_count":0,"rx_packets_count":0,"rx_fails":0,"rx_count":0,"tap_read'
    '_fails":0,"tap_write_fails":0,"tap_write_agg":{"min_us":0,"max_us":0,"sum_us":0},"tx_b'
    'ytes_count":0,"tx_malformed_frames":0,"tx_fails":0,"tx_count":0,"tx_packets_count":0,"'
    'tx_queue_event_count":0,"tx_rate_limiter_event_count":0,"tx_rate_limiter_throttled":0,'
    '"tx_spoofed_mac_count":0,"tx_remaining_reqs_count":0},"patch_api_requests":{"drive_cou'
    'nt":0,"drive_fails":0,"network_count":0,"network_fails":0,"machine_cfg_count":0,"machi'
    'ne_cfg_fails":0,"mmds_count":0,"mmds_fails":0,"hotplug_memory_count":0,"hotplug_memory'
    '_fails":0},"put_api_requests":{"actions_count":1,"actions_fails":0,"boot_source_count"'
    ':1,"boot_source_fails":0,"drive_count":2,"drive_fails":0,"logger_count":0,"logger_fail'
    's":0,"machine_cfg_count":1,"machine_cfg_fails":0,"cpu_cfg_count":0,"cpu_cfg_fails":0,"'
    'metrics_count":1,"metrics_fails":0,"network_count":1,"network_fails":0,"mmds_count":0,'
    '"mmds_fails":0,"vsock_count":1,"vsock_fails":0,"pmem_count":0,"pmem_fails":0,"serial_c'
    'ount":0,"serial_fails":0,"hotplug_memory_count":0,"hotplug_memory_fails":0},"seccomp":'
    '{"num_faults":0},"vcpu":{"exit_io_in":41,"exit_io_out":41,"exit_mmio_read":0,"exit_mmi'
    'o_write":0,"failures":0,"kvmclock_ctrl_fails":0,"exit_io_in_agg":{"min_us":0,"max_us":'
    '3,"sum_us":6},"exit_io_out_agg":{"min_us":1,"max_us":3,"sum_us":48},"exit_mmio_read_ag'
    'g":{"min_us":0,"max_us":0,"sum_us":0},"exit_mmio_write_agg":{"min_us":0,"max_us":0,"su'
    'm_us":0}},"vmm":{"panic_count":0},"signals":{"sigbus":0,"sigsegv":0,"sigxfsz":0,"sigxc'
    'pu":0,"sigpipe":0,"sighup":0,"sigill":0},"vsock":{"activate_fails":0,"cfg_fails":0,"rx'
    '_queue_event_fails":0,"tx_queue_event_fails":0,"ev_queue_event_fails":0,"muxer_event_f'
    'ails":0,"conn_event_fails":0,"rx_queue_event_count":0,"tx_queue_event_count":0,"rx_byt'
    'es_count":0,"tx_bytes_count":0,"rx_packets_count":0,"tx_packets_count":0,"conns_added"'
    ':0,"conns_killed":0,"conns_removed":0,"killq_resync":0,"tx_flush_fails":0,"tx_write_fa'
    'ils":0,"rx_read_fails":0},"entropy":{"activate_fails":0,"entropy_event_fails":0,"entro'
    'py_event_count":0,"entropy_bytes":0,"host_rng_fails":0,"entropy_rate_limiter_throttled'
    '":0,"rate_limiter_event_count":0},"pmem":{"activate_fails":0,"cfg_fails":0,"event_fail'
    's":0,"queue_event_count":0},"interrupts":{"triggers":0,"config_updates":0},"memory_hot'
    'plug":{"activate_fails":0,"queue_event_fails":0,"queue_event_count":0,"plug_agg":{"min'
    '_us":0,"max_us":0,"sum_us":0},"plug_count":0,"plug_bytes":0,"plug_fails":0,"unplug_agg'
    '":{"min_us":0,"max_us":0,"sum_us":0},"unplug_count":0,"unplug_bytes":0,"unplug_fails":'
    '0,"unplug_discard_fails":0,"unplug_all_agg":{"min_us":0,"max_us":0,"sum_us":0},"unplug'
    '_all_count":0,"unplug_all_fails":0,"state_agg":{"min_us":0,"max_us":0,"sum_us":0},"sta'
    'te_count":0,"state_fails":0}}'
)
METRICS_1_0_0 = (
    '{"utc_timestamp_ms":1795786761809,"api_server":{"process_startup_time_us":0,"process_s'
    'tartup_time_cpu_us":0,"sync_response_fails":0,"sync_vmm_send_timeout_count":0},"balloo'
    'n":{"activate_fails":0,"inflate_count":0,"stats_updates_count":0,"stats_update_fails":'
    '0,"deflate_count":0,"event_fails":0},"block":{"activate_fails":0,"cfg_fails":0,"no_ava'
    'il_buffer":0,"event_fails":0,"execute_fails":0,"invalid_reqs_count":0,"flush_count":0,'
    '"queue_event_count":0,"rate_limiter_event_count":0,"update_count":0,"update_fails":0,"'
    'read_bytes":0,"write_bytes":0,"read_count":0,"write_count":0,"rate_limiter_throttled_e'
    'vents":0,"io_engine_throttled_events":0},"deprecated_api":{"deprecated_http_api_calls"'
    ':0,"deprecated_cmd_line_api_calls":0},"get_api_requests":{"instance_info_count":0,"mac'
    'hine_cfg_count":0,"mmds_count":0,"vmm_version_count":0},"i8042":{"error_count":0,"miss'
    'ed_read_count":0,"missed_write_count":0,"read_count":0,"reset_count":0,"write_count":0'
    '},"latencies_us":{"full_create_snapshot":0,"diff_create_snapshot":0,"load_snapshot":0,'
    '"pause_vm":0,"resume_vm":0,"vmm_full_create_snapshot":0,"vmm_diff_create_snapshot":0,"'
    'vmm_load_snapshot":0,"vmm_pause_vm":0,"vmm_resume_vm":0},"logger":{"missed_metrics_cou'
    'nt":0,"metrics_fails":0,"missed_log_count":0,"log_fails":0},"mmds":{"rx_accepted":0,"r'
    'x_accepted_err":0,"rx_accepted_unusual":0,"rx_bad_eth":0,"rx_count":0,"tx_bytes":0,"tx'
    '_count":0,"tx_errors":0,"tx_frames":0,"connections_created":0,"connections_destroyed":'
    '0},"net":{"activate_fails":0,"cfg_fails":0,"mac_address_updates":0,"no_rx_avail_buffer'
    '":0,"no_tx_avail_buffer":0,"event_fails":0,"rx_queue_event_count":0,"rx_event_rate_lim'
    'iter_count":0,"rx_partial_writes":0,"rx_rate_limiter_throttled":0,"rx_tap_event_count"'
    ':0,"rx_bytes_count":0,"rx_packets_count":0,"rx_fails":0,"rx_count":0,"tap_read_fails":'
    '0,"tap_write_fails":0,"tx_bytes_count":0,"tx_malformed_frames":0,"tx_fails":0,"tx_coun'
    't":0,"tx_packets_count":0,"tx_partial_reads":0,"tx_queue_event_count":0,"tx_rate_limit'
    'er_event_count":0,"tx_rate_limiter_throttled":0,"tx_spoofed_mac_count":0},"patch_api_r'
    'equests":{"drive_count":0,"drive_fails":0,"network_count":0,"network_fails":0,"machine'
    '_cfg_count":0,"machine_cfg_fails":0,"mmds_count":0,"mmds_fails":0},"put_api_requests":'
    '{"actions_count":1,"actions_fails":0,"boot_source_count":0,"boot_source_fails":0,"driv'
    'e_count":0,"drive_fails":0,"logger_count":0,"logger_fails":0,"machine_cfg_count":0,"ma'
    'chine_cfg_fails":0,"metrics_count":0,"metrics_fails":0,"network_count":0,"network_fail'
    's":0,"mmds_count":0,"mmds_fails":0,"vsock_count":0,"vsock_fails":0},"seccomp":{"num_fa'
    'ults":0},"vcpu":{"exit_io_in":41,"exit_io_out":41,"exit_mmio_read":0,"exit_mmio_write"'
    ':0,"failures":0,"filter_cpuid":0},"vmm":{"device_events":0,"panic_count":0},"uart":{"e'
    'rror_count":0,"flush_count":0,"missed_read_count":0,"missed_write_count":0,"read_count'
    '":0,"write_count":41},"signals":{"sigbus":0,"sigsegv":0,"sigxfsz":0,"sigxcpu":0,"sigpi'
    'pe":0,"sighup":0,"sigill":0},"vsock":{"activate_fails":0,"cfg_fails":0,"rx_queue_event'
    '_fails":0,"tx_queue_event_fails":0,"ev_queue_event_fails":0,"muxer_event_fails":0,"con'
    'n_event_fails":0,"rx_queue_event_count":0,"tx_queue_event_count":0,"rx_bytes_count":0,'
    '"tx_bytes_count":0,"rx_packets_count":0,"tx_packets_count":0,"conns_added":0,"conns_ki'
    'lled":0,"conns_removed":0,"killq_resync":0,"tx_flush_fails":0,"tx_write_fails":0,"rx_r'
    'ead_fails":0}}'
)

GUEST_OUTPUT = f"{BOOT_LINE}\n{echo_line('hi')}\n"  # 41 bytes on the serial console


def test_parse_real_1_14_line() -> None:
    snapshot = parse_metrics_line(METRICS_1_14_2)
    assert snapshot.utc_timestamp_ms == 1795786758911
    assert snapshot.time == datetime(2026, 11, 27, 13, 39, 18, 911000, tzinfo=UTC)
    assert snapshot.uart["write_count"] == len(GUEST_OUTPUT)
    assert snapshot.vcpu["exit_io_out"] == len(GUEST_OUTPUT)
    assert snapshot.put_api_requests["drive_count"] == 2
    assert snapshot.put_api_requests["actions_count"] == 1
    assert snapshot.seccomp == {"num_faults": 0}
    assert set(snapshot.signals) == {
        "sigbus",
        "sigsegv",
        "sigxfsz",
        "sigxcpu",
        "sigpipe",
        "sighup",
        "sigill",
    }
    # Nested aggregates are flattened to dotted names; the raw line keeps them nested.
    assert snapshot.block["read_agg.sum_us"] == 0
    assert snapshot.raw["block"]["read_agg"] == {"min_us": 0, "max_us": 0, "sum_us": 0}
    assert set(snapshot.drives) == {"rootfs", "data"}
    assert set(snapshot.interfaces) == {"eth0"}
    assert "tap_write_agg.max_us" in snapshot.interfaces["eth0"]
    for group in (
        "api_server",
        "balloon",
        "entropy",
        "latencies_us",
        "logger",
        "mmds",
        "net",
        "vmm",
        "vsock",
        "get_api_requests",
        "patch_api_requests",
    ):
        assert getattr(snapshot, group), group
    # Groups the model does not name are kept.
    assert snapshot.group("i8042")["reset_count"] == 0
    assert snapshot.group("memory_hotplug")["plug_agg.sum_us"] == 0
    assert snapshot.model_extra is not None and "pmem" in snapshot.model_extra
    assert set(snapshot.groups) == set(json.loads(METRICS_1_14_2)) - {"utc_timestamp_ms"}


def test_parse_real_1_0_line() -> None:
    snapshot = parse_metrics_line(METRICS_1_0_0)
    assert snapshot.uart["write_count"] == len(GUEST_OUTPUT)
    assert snapshot.api_server["sync_response_fails"] == 0  # a 1.0-only key
    assert snapshot.vcpu["filter_cpuid"] == 0
    assert snapshot.drives == {} and snapshot.interfaces == {}
    assert snapshot.entropy == {}  # 1.0 has no entropy device
    assert snapshot.group("nope") == {}
    assert snapshot.group("deprecated_api")["deprecated_cmd_line_api_calls"] == 0


def test_values_that_are_not_integers_stay_only_in_raw() -> None:
    line = (
        '{"utc_timestamp_ms": 5, "vmm": {"panic_count": 1, "name": "x", "f": 1.5, "b": true,'
        ' "n": null}, "version": "9"}'
    )
    snapshot = parse_metrics_line(line)
    assert snapshot.vmm == {"panic_count": 1}
    assert snapshot.raw["vmm"]["f"] == 1.5
    assert snapshot.raw["version"] == "9"


def test_snapshot_is_frozen() -> None:
    snapshot = parse_metrics_line(METRICS_1_0_0)
    with pytest.raises(pydantic.ValidationError):
        snapshot.utc_timestamp_ms = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("", "not a JSON line"),
        ("{truncated", "not a JSON line"),
        ("[1, 2]", "not a JSON object"),
        ('{"vmm": {}}', "no integer utc_timestamp_ms"),
        ('{"utc_timestamp_ms": "1"}', "no integer utc_timestamp_ms"),
        ('{"utc_timestamp_ms": 1, "vmm": 3}', "vmm"),
    ],
)
def test_bad_lines_are_refused(line: str, reason: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_metrics_line(line)
    assert info.value.field == ("metrics.vmm" if reason == "vmm" else "metrics")
    assert reason in str(info.value)


def test_forwarder_keeps_the_latest_and_skips_bad_lines(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[MetricsSnapshot] = []
    forwarder = MetricsForwarder(seen.append)
    assert forwarder.latest is None
    with caplog.at_level(logging.WARNING, logger="firec.metrics"):
        for line in [METRICS_1_0_0, "", "garbage", METRICS_1_14_2]:
            forwarder(line)
    assert [s.utc_timestamp_ms for s in seen] == [1795786761809, 1795786758911]
    assert forwarder.latest is seen[-1]
    assert (forwarder.snapshots_seen, forwarder.bad_lines) == (2, 1)
    assert "skipping a metrics line" in caplog.text


# --- end to end with a real Firecracker ----------------------------------------------------


def test_real_firecracker_metrics_on_a_fifo(short_tmp: Path) -> None:
    binary = require_firecracker()
    fifo = short_tmp / "metrics.fifo"
    os.mkfifo(fifo)
    drive = short_tmp / "drive.img"
    drive.write_bytes(b"\0" * 4096)
    socket_path = short_tmp / "api.sock"
    snapshots: list[MetricsSnapshot] = []
    metrics = MetricsForwarder(snapshots.append)
    gc.collect()
    fds = sorted(os.listdir("/proc/self/fd"))
    with LineReader(fifo, metrics) as reader:
        proc = subprocess.Popen(
            [binary, "--api-sock", str(socket_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while not socket_path.exists():
                assert proc.poll() is None and time.monotonic() < deadline, "no API socket"
                time.sleep(0.005)
            transport = httpx.HTTPTransport(uds=str(socket_path))
            with httpx.Client(transport=transport, base_url="http://localhost") as client:
                version = client.get("/version").json()["firecracker_version"]
                boot_args = f"console=ttyS0 {guest_args(echo=['hi'])}"  # the guest parks
                for path, body in [
                    ("/metrics", {"metrics_path": str(fifo)}),
                    (
                        "/boot-source",
                        {"kernel_image_path": str(build_test_guest()), "boot_args": boot_args},
                    ),
                    ("/machine-config", {"vcpu_count": 1, "mem_size_mib": 64}),
                    (
                        "/drives/rootfs",
                        {
                            "drive_id": "rootfs",
                            "path_on_host": str(drive),
                            "is_root_device": False,
                            "is_read_only": True,
                        },
                    ),
                    ("/actions", {"action_type": "InstanceStart"}),
                ]:
                    response = client.put(path, json=body)
                    assert response.status_code == 204, f"{path}: {response.text}"
                # The guest's output is done once the serial console has counted it.
                deadline = time.monotonic() + 10
                written = 0
                while written < len(GUEST_OUTPUT):
                    assert time.monotonic() < deadline, f"uart counted {written} bytes"
                    before = metrics.snapshots_seen
                    response = client.put("/actions", json={"action_type": "FlushMetrics"})
                    assert response.status_code == 204, response.text
                    while metrics.snapshots_seen == before:
                        assert time.monotonic() < deadline, "FlushMetrics wrote no line"
                        time.sleep(0.005)
                    written = sum(s.uart["write_count"] for s in snapshots)
        finally:
            proc.kill()
            proc.wait(10)
    gc.collect()
    assert sorted(os.listdir("/proc/self/fd")) == fds
    assert reader.lines_seen == metrics.snapshots_seen >= 2
    assert metrics.bad_lines == 0
    latest = metrics.latest
    assert latest is not None
    assert written == len(GUEST_OUTPUT)  # counters are deltas: their sum is the total
    assert latest.put_api_requests["actions_count"] == 1  # just this FlushMetrics
    assert "exit_io_out" in latest.vcpu and "num_faults" in latest.seccomp
    major_minor = tuple(int(x) for x in re.match(r"(\d+)\.(\d+)", version).groups())  # type: ignore[union-attr]
    if major_minor >= (1, 14):
        assert set(latest.drives) == {"rootfs"}
    if major_minor < (1, 1):
        assert latest.drives == {}
