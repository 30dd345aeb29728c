"""Representative instances of every request model, shared by the model and conformance tests.

``full_samples()`` sets every optional field (one instance per mutually
exclusive variant), ``minimal_samples()`` only the required ones, and
``enum_variants()`` one instance per value of every enumeration field.
"""

from __future__ import annotations

import typing
from enum import Enum
from typing import Any

from firec.api import models as m

BUCKET = {"size": 1_048_576, "refill_time": 100, "one_time_burst": 4096}
LIMITER = {"bandwidth": BUCKET, "ops": {"size": 1000, "refill_time": 1000, "one_time_burst": 10}}
BITS32 = "0b" + "x" * 30 + "01"
BITS64 = "0b" + "x" * 62 + "10"


def full_samples() -> list[m.APIModel]:
    """Every request model with all its optional fields set."""
    return [
        m.BootSource(
            kernel_image_path="/srv/vmlinux", boot_args="console=ttyS0", initrd_path="/srv/initrd"
        ),
        m.Drive(
            drive_id="rootfs",
            is_root_device=True,
            partuuid="0eaa91a0-01",
            cache_type="Writeback",
            is_read_only=False,
            path_on_host="/srv/rootfs.ext4",
            rate_limiter=LIMITER,
            io_engine="Async",
        ),
        m.Drive(drive_id="vhost", is_root_device=False, socket="/run/vhost-user-blk.sock"),
        m.PartialDrive(drive_id="rootfs", path_on_host="/srv/other.ext4", rate_limiter=LIMITER),
        m.NetworkInterface(
            iface_id="eth0",
            host_dev_name="tap0",
            guest_mac="06:00:AC:10:00:02",
            mtu=1500,
            rx_rate_limiter=LIMITER,
            tx_rate_limiter=LIMITER,
        ),
        m.PartialNetworkInterface(
            iface_id="eth0", rx_rate_limiter=LIMITER, tx_rate_limiter=LIMITER
        ),
        m.MachineConfiguration(
            vcpu_count=2,
            mem_size_mib=256,
            smt=False,
            track_dirty_pages=True,
            cpu_template="T2",
            huge_pages="2M",
        ),
        m.CpuConfig(
            kvm_capabilities=["121", "!122"],
            cpuid_modifiers=[
                {
                    "leaf": "0x1",
                    "subleaf": "0x0",
                    "flags": 0,
                    "modifiers": [{"register": "eax", "bitmap": BITS32}],
                }
            ],
            msr_modifiers=[{"addr": "0x10a", "bitmap": BITS64}],
            reg_modifiers=[{"addr": "0x603000000013c020", "bitmap": BITS64}],
            vcpu_features=[{"index": 0, "bitmap": BITS32}],
        ),
        m.Logger(
            log_path="/tmp/fc.log",
            level="Debug",
            show_level=True,
            show_log_origin=True,
            module="api_server::request",
        ),
        m.Metrics(metrics_path="/tmp/fc.metrics"),
        m.MmdsConfig(
            network_interfaces=["eth0"],
            version="V2",
            ipv4_address="169.254.169.254",
            imds_compat=True,
        ),
        m.MmdsContentsObject.from_api({"latest": {"meta-data": {"ami-id": "ami-1", "n": None}}}),
        m.Balloon(
            amount_mib=64,
            deflate_on_oom=True,
            stats_polling_interval_s=1,
            free_page_hinting=True,
            free_page_reporting=True,
        ),
        m.BalloonUpdate(amount_mib=32),
        m.BalloonStatsUpdate(stats_polling_interval_s=5),
        m.BalloonStartCmd(acknowledge_on_stop=True),
        m.SnapshotCreateParams(
            snapshot_path="/tmp/vm.snap",
            mem_file_path="/tmp/vm.mem",
            snapshot_type="Diff",
            version="1.0.0",
        ),
        m.SnapshotLoadParams(
            snapshot_path="/tmp/vm.snap",
            mem_backend={"backend_type": "Uffd", "backend_path": "/tmp/uffd.sock"},
            track_dirty_pages=True,
            enable_diff_snapshots=True,
            resume_vm=True,
            network_overrides=[{"iface_id": "eth0", "host_dev_name": "tap9"}],
            vsock_override={"uds_path": "/tmp/v2.sock"},
            clock_realtime=True,
        ),
        m.SnapshotLoadParams(
            snapshot_path="/tmp/vm.snap",
            mem_file_path="/tmp/vm.mem",
            enable_diff_snapshots=False,
            resume_vm=False,
        ),
        m.Vm(state="Paused"),
        m.InstanceActionInfo(action_type="InstanceStart"),
        m.Vsock(guest_cid=3, uds_path="/tmp/v.sock", vsock_id="vsock0"),
        m.EntropyDevice(rate_limiter=LIMITER),
        m.SerialDevice(serial_out_path="/tmp/serial.out", rate_limiter=BUCKET),
        m.Pmem(
            id="pmem0",
            path_on_host="/srv/pmem.img",
            root_device=False,
            read_only=True,
            rate_limiter=LIMITER,
        ),
        m.PartialPmem(id="pmem0", rate_limiter=LIMITER),
        m.MemoryHotplugConfig(total_size_mib=1024, slot_size_mib=128, block_size_mib=2),
        m.MemoryHotplugSizeUpdate(requested_size_mib=512),
    ]


def minimal_samples() -> list[m.APIModel]:
    """Every request model with only what the model requires."""
    return [
        m.BootSource(kernel_image_path="/srv/vmlinux"),
        m.Drive(drive_id="rootfs", is_root_device=True),
        m.PartialDrive(drive_id="rootfs"),
        m.NetworkInterface(iface_id="eth0", host_dev_name="tap0"),
        m.PartialNetworkInterface(iface_id="eth0"),
        m.MachineConfiguration(vcpu_count=1, mem_size_mib=128),
        m.CpuConfig(),
        m.Logger(),
        m.Metrics(metrics_path="/tmp/fc.metrics"),
        m.MmdsConfig(network_interfaces=["eth0"]),
        m.MmdsContentsObject(),
        m.Balloon(amount_mib=0, deflate_on_oom=False),
        m.BalloonUpdate(amount_mib=0),
        m.BalloonStatsUpdate(stats_polling_interval_s=0),
        m.BalloonStartCmd(),
        m.SnapshotCreateParams(snapshot_path="/tmp/vm.snap", mem_file_path="/tmp/vm.mem"),
        m.SnapshotLoadParams(
            snapshot_path="/tmp/vm.snap",
            mem_backend={"backend_type": "File", "backend_path": "/tmp/vm.mem"},
        ),
        m.SnapshotLoadParams(snapshot_path="/tmp/vm.snap", mem_file_path="/tmp/vm.mem"),
        m.Vm(state="Resumed"),
        m.InstanceActionInfo(action_type="FlushMetrics"),
        m.Vsock(guest_cid=3, uds_path="/tmp/v.sock"),
        m.EntropyDevice(),
        m.SerialDevice(),
        m.Pmem(id="pmem0", path_on_host="/srv/pmem.img"),
        m.PartialPmem(id="pmem0"),
        m.MemoryHotplugConfig(total_size_mib=1024),
        m.MemoryHotplugSizeUpdate(requested_size_mib=0),
    ]


def enum_types(annotation: Any) -> list[type[Enum]]:
    """The enumerations a field annotation takes (through ``| None`` and ``Annotated``)."""
    if typing.get_origin(annotation) is typing.Annotated:
        return enum_types(typing.get_args(annotation)[0])
    if isinstance(annotation, type):
        return [annotation] if issubclass(annotation, Enum) else []
    return [e for arg in typing.get_args(annotation) for e in enum_types(arg)]


def enum_variants() -> list[m.APIModel]:
    """For every top-level enumeration field of every sample, one copy per enum value."""
    variants: list[m.APIModel] = []
    seen: set[tuple[str, str]] = set()
    for sample in full_samples():
        for name, field in type(sample).model_fields.items():
            enums = enum_types(field.annotation)
            if not enums or (sample.api_name, name) in seen:
                continue
            seen.add((sample.api_name, name))
            for member in enums[0]:
                variants.append(sample.model_copy(update={name: member}))
    return variants
