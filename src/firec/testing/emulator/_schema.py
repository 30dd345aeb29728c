"""The Rust structs each emulated Firecracker release deserializes its API bodies into.

Field names, order, optionality and defaults follow Firecracker's sources at each
release (``src/vmm/src/vmm_config/*.rs``): the order matters, serde lists the
fields in it when it refuses an unknown one.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from functools import cache

from ._json_reader import Reader
from ._log import LEVEL_NAMES
from ._release import Release
from ._serde import (
    Any_,
    Bool,
    Custom,
    Enum,
    Field,
    Int,
    Opt,
    SerdeError,
    Struct,
    Text,
    Vec,
)

__all__ = ["MAX_VCPUS", "Schema", "schema"]

MAX_VCPUS = 32
STRING = Text()
PATH = Text("path string")
U8, U16, U32, U64, USIZE = Int("u8"), Int("u16"), Int("u32"), Int("u64"), Int("usize")
_MAC = re.compile(r"^[0-9A-Fa-f]{1,2}(:[0-9A-Fa-f]{1,2}){5}$")


def _mac(text: str) -> str:
    if not _MAC.match(text):
        raise SerdeError("The provided MAC address is invalid.")
    return ":".join(part.rjust(2, "0").lower() for part in text.split(":"))


def _ipv4(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise SerdeError("invalid IPv4 address syntax", -1) from None


def _level_filter(text: str) -> str:
    try:
        return LEVEL_NAMES[text.lower()]
    except KeyError:
        raise SerdeError("Invalid LevelFilter") from None


def _o(name: str, t: Opt | Text | Int | Bool | Enum | Struct | Custom | Vec | Any_) -> Field:
    return Field(name, t if isinstance(t, Opt) else Opt(t), None)


class _CheckedVcpus(Int):
    """Releases before 1.7 validate vcpu_count inside serde (custom errors).

    The error of the required field gets its position when the struct ends; that of
    the optional (PATCH) field is positioned right after the number.
    """

    def __init__(self, positioned: bool) -> None:
        super().__init__("u8")
        self.positioned = positioned

    def read(self, r: Reader) -> int:
        value = super().read(r)
        reason = ""
        if value == 0:
            reason = "should be larger than 0"
        elif value > MAX_VCPUS:
            reason = "exceeds the maximum limitation"
        if reason:
            raise SerdeError(
                f"invalid value: vcpu_num, expected number of vCPUs {reason}",
                r.i if self.positioned else None,
            )
        return value


@dataclass(frozen=True)
class Schema:
    """Every API body type of one release."""

    action: Struct
    boot_source: Struct
    machine_config: Struct
    machine_config_update: Struct
    drive: Struct
    drive_update: Struct
    net: Struct
    net_update: Struct
    vsock: Struct
    balloon: Struct
    balloon_update: Struct
    balloon_stats_update: Struct
    mmds_config: Struct
    logger: Struct
    metrics: Struct
    snapshot_create: Struct
    snapshot_load: Struct
    vm_state: Struct
    entropy: Struct
    serial: Struct
    pmem: Struct
    pmem_update: Struct
    memory_hotplug: Struct
    memory_hotplug_update: Struct
    hinting_start: Struct
    cpu_config: Struct
    vmm_config: Struct
    mmds_value: Any_


@cache
def schema(rel: Release) -> Schema:
    """The structs of ``rel``."""
    m = rel.minor
    token_bucket = Struct(
        "TokenBucketConfig",
        [Field("size", U64), _o("one_time_burst", U64), Field("refill_time", U64)],
        deny_unknown=False,
    )
    rate_limiter = Struct(
        "RateLimiterConfig", [_o("bandwidth", token_bucket), _o("ops", token_bucket)]
    )
    rl = Opt(rate_limiter)

    boot_source = Struct(
        "BootSourceConfig",
        [Field("kernel_image_path", STRING), _o("initrd_path", STRING), _o("boot_args", STRING)],
    )

    # --- machine configuration ---
    vcpu = U8 if m >= 7 else _CheckedVcpus(positioned=False)
    vcpu_update = U8 if m >= 7 else _CheckedVcpus(positioned=True)
    if m >= 4:
        cpu_template = Enum("StaticCpuTemplate", ["C3", "T2", "T2S", "None", "T2CL", "T2A"])
    else:
        variants = ["C3", "T2"] + (["T2S"] if m >= 2 else []) + ["None"]
        variants += ["T2CL", "T2A"] if m >= 3 else []
        cpu_template = Enum("CpuFeaturesTemplate", variants)
    huge_pages = Enum("HugePageConfig", ["None", "2M"])
    mc_fields = [
        Field("vcpu_count", vcpu),
        Field("mem_size_mib", USIZE),
        Field("smt", Bool(), False),
        _o("cpu_template", cpu_template),
        Field("track_dirty_pages", Bool(), False),
    ]
    mcu_fields = [
        _o("vcpu_count", vcpu_update),
        _o("mem_size_mib", USIZE),
        _o("smt", Bool()),
        _o("cpu_template", cpu_template),
        _o("track_dirty_pages", Bool()),
    ]
    if m >= 7:
        mc_fields.append(Field("huge_pages", huge_pages, "None"))
        mcu_fields.append(_o("huge_pages", huge_pages))
    machine_config = Struct("MachineConfig" if m >= 4 else "VmConfig", mc_fields)
    machine_config_update = Struct(
        "MachineConfigUpdate" if m >= 4 else "VmUpdateConfig", mcu_fields
    )

    # --- block devices ---
    cache_type = Enum("CacheType", ["Unsafe", "Writeback"])
    io_engine = Enum("FileEngineType", ["Async", "Sync"])
    if m >= 6:
        drive = Struct(
            "BlockDeviceConfig",
            [
                Field("drive_id", STRING),
                _o("partuuid", STRING),
                Field("is_root_device", Bool()),
                Field("cache_type", cache_type, "Unsafe"),
                _o("is_read_only", Bool()),
                _o("path_on_host", STRING),
                Field("rate_limiter", rl, None),
                _o("io_engine", io_engine),
                _o("socket", STRING),
            ],
        )
    else:
        drive = Struct(
            "BlockDeviceConfig",
            [
                Field("drive_id", STRING),
                Field("path_on_host", STRING),
                Field("is_root_device", Bool()),
                _o("partuuid", STRING),
                Field("is_read_only", Bool()),
                Field("cache_type", cache_type, "Unsafe"),
                Field("rate_limiter", rl, None),
                Field("io_engine", io_engine, "Sync"),
            ],
        )
    drive_update = Struct(
        "BlockDeviceUpdateConfig",
        [Field("drive_id", STRING), _o("path_on_host", STRING), Field("rate_limiter", rl, None)],
    )

    # --- network ---
    mac = Custom(_mac)
    net_fields = [Field("iface_id", STRING), Field("host_dev_name", STRING), _o("guest_mac", mac)]
    if m >= 16:
        net_fields.append(_o("mtu", U16))
    net_fields += [Field("rx_rate_limiter", rl, None), Field("tx_rate_limiter", rl, None)]
    net = Struct("NetworkInterfaceConfig", net_fields)
    net_update = Struct(
        "NetworkInterfaceUpdateConfig",
        [
            Field("iface_id", STRING),
            Field("rx_rate_limiter", rl, None),
            Field("tx_rate_limiter", rl, None),
        ],
    )

    vsock = Struct(
        "VsockDeviceConfig",
        [_o("vsock_id", STRING), Field("guest_cid", U32), Field("uds_path", STRING)],
    )

    balloon_fields = [
        Field("amount_mib", U32),
        Field("deflate_on_oom", Bool()),
        Field("stats_polling_interval_s", U16, 0),
    ]
    if m >= 14:
        balloon_fields += [
            Field("free_page_hinting", Bool(), False),
            Field("free_page_reporting", Bool(), False),
        ]
    balloon = Struct("BalloonDeviceConfig", balloon_fields)
    balloon_update = Struct("BalloonUpdateConfig", [Field("amount_mib", U32)])
    balloon_stats_update = Struct(
        "BalloonUpdateStatsConfig", [Field("stats_polling_interval_s", U16)]
    )

    mmds_fields = [
        Field("version", Enum("MmdsVersion", ["V1", "V2"]), "V1"),
        Field("network_interfaces", Vec(STRING)),
        _o("ipv4_address", Custom(_ipv4)),
    ]
    if m >= 13:
        mmds_fields.append(Field("imds_compat", Bool(), False))
    mmds_config = Struct("MmdsConfig", mmds_fields)

    if m >= 5:
        level: Custom | Enum = (
            Custom(_level_filter)
            if m >= 6
            else Enum(
                "LevelFilter",
                ["Off", "Trace", "Debug", "Info", "Warn", "Error"],
                {
                    "OFF": "Off",
                    "TRACE": "Trace",
                    "DEBUG": "Debug",
                    "INFO": "Info",
                    "WARN": "Warn",
                    "WARNING": "Warn",
                    "Warning": "Warn",
                    "ERROR": "Error",
                },
            )
        )
        logger_fields = [
            _o("log_path", PATH),
            _o("level", level),
            _o("show_level", Bool()),
            _o("show_log_origin", Bool()),
        ]
        if m >= 6:
            logger_fields.append(_o("module", STRING))
    else:
        logger_fields = [
            Field("log_path", PATH),
            Field("level", Enum("LoggerLevel", ["Error", "Warning", "Info", "Debug"]), "Warning"),
            Field("show_level", Bool(), False),
            Field("show_log_origin", Bool(), False),
        ]
    logger = Struct("LoggerConfig", logger_fields)
    metrics = Struct("MetricsConfig", [Field("metrics_path", PATH)], deny_unknown=False)

    create_fields = [
        Field("snapshot_type", Enum("SnapshotType", ["Diff", "Full"]), "Full"),
        Field("snapshot_path", PATH),
        Field("mem_file_path", PATH),
    ]
    if m < 6:
        create_fields.append(_o("version", STRING))
    snapshot_create = Struct("CreateSnapshotParams", create_fields)

    if m >= 1:
        mem_backend = Struct(
            "MemBackendConfig",
            [
                Field("backend_path", PATH),
                Field("backend_type", Enum("MemBackendType", ["File", "Uffd"])),
            ],
        )
        load_fields = [
            Field("snapshot_path", PATH),
            _o("mem_file_path", PATH),
            _o("mem_backend", mem_backend),
            Field("enable_diff_snapshots", Bool(), False),
        ]
        if m >= 13:
            load_fields.append(Field("track_dirty_pages", Bool(), False))
        load_fields.append(Field("resume_vm", Bool(), False))
        if m >= 12:
            override = Struct(
                "NetworkOverride",
                [Field("iface_id", STRING), Field("host_dev_name", STRING)],
                deny_unknown=False,
            )
            load_fields.append(Field("network_overrides", Vec(override), []))
        if m >= 16:
            load_fields.append(
                _o("vsock_override", Struct("VsockOverride", [Field("uds_path", STRING)], False))
            )
            load_fields.append(Field("clock_realtime", Bool(), False))
        snapshot_load = Struct("LoadSnapshotConfig", load_fields)
    else:
        snapshot_load = Struct(
            "LoadSnapshotParams",
            [
                Field("snapshot_path", PATH),
                Field("mem_file_path", PATH),
                Field("enable_diff_snapshots", Bool(), False),
                Field("resume_vm", Bool(), False),
            ],
        )

    vm_state = Struct("Vm", [Field("state", Enum("VmState", ["Paused", "Resumed"]))])
    entropy = Struct("EntropyDeviceConfig", [Field("rate_limiter", rl, None)])
    serial_fields = [_o("serial_out_path", PATH)]
    if m >= 16:
        serial_fields.append(_o("rate_limiter", token_bucket))
    serial = Struct("SerialConfig", serial_fields)
    pmem_fields = [
        Field("id", STRING),
        Field("path_on_host", STRING),
        Field("root_device", Bool(), False),
        Field("read_only", Bool(), False),
    ]
    if m >= 16:
        pmem_fields.append(Field("rate_limiter", rl, None))
    pmem = Struct("PmemConfig", pmem_fields)
    pmem_update = Struct(
        "PmemDeviceUpdateConfig", [Field("id", STRING), Field("rate_limiter", rl, None)]
    )
    memory_hotplug = Struct(
        "MemoryHotplugConfig",
        [
            Field("total_size_mib", USIZE),
            Field("block_size_mib", USIZE, 2),
            Field("slot_size_mib", USIZE, 128),
        ],
    )
    memory_hotplug_update = Struct("MemoryHotplugSizeUpdate", [Field("requested_size_mib", USIZE)])
    hinting_start = Struct(
        "StartHintingCmd", [Field("acknowledge_on_stop", Bool(), True)], deny_unknown=False
    )
    cpu_fields = [
        Field("cpuid_modifiers", Any_(), []),
        Field("msr_modifiers", Any_(), []),
    ]
    if m >= 8:
        cpu_fields.insert(0, Field("kvm_capabilities", Any_(), []))
    cpu_config = Struct("CustomCpuTemplate", cpu_fields)
    action = Struct(
        "ActionBody",
        [
            Field(
                "action_type",
                Enum("ActionType", ["FlushMetrics", "InstanceStart", "SendCtrlAltDel"]),
            )
        ],
    )

    vmm_fields = [
        _o("balloon", balloon),
        Field("drives", Vec(drive)),
        Field("boot-source", boot_source),
    ]
    if m >= 4:
        vmm_fields.append(_o("cpu-config", Any_() if m >= 13 else PATH))
    vmm_fields += [
        _o("logger", logger),
        _o("machine-config", machine_config),
        _o("metrics", metrics),
        _o("mmds-config", mmds_config),
        Field("network-interfaces", Vec(net), []),
        _o("vsock", vsock),
    ]
    if m >= 4:
        vmm_fields.append(_o("entropy", entropy))
    if m >= 14:
        vmm_fields.append(Field("pmem", Vec(pmem), []))
        vmm_fields.append(_o("memory-hotplug", memory_hotplug))
    vmm_config = Struct("VmmConfig", vmm_fields, deny_unknown=False)

    return Schema(
        action=action,
        boot_source=boot_source,
        machine_config=machine_config,
        machine_config_update=machine_config_update,
        drive=drive,
        drive_update=drive_update,
        net=net,
        net_update=net_update,
        vsock=vsock,
        balloon=balloon,
        balloon_update=balloon_update,
        balloon_stats_update=balloon_stats_update,
        mmds_config=mmds_config,
        logger=logger,
        metrics=metrics,
        snapshot_create=snapshot_create,
        snapshot_load=snapshot_load,
        vm_state=vm_state,
        entropy=entropy,
        serial=serial,
        pmem=pmem,
        pmem_update=pmem_update,
        memory_hotplug=memory_hotplug,
        memory_hotplug_update=memory_hotplug_update,
        hinting_start=hinting_start,
        cpu_config=cpu_config,
        vmm_config=vmm_config,
        mmds_value=Any_(),
    )
