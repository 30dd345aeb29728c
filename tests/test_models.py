"""The typed models: constraints, API names, firec errors naming fields, round trips."""

from __future__ import annotations

import enum
import os
import pathlib
from typing import Any

import pydantic
import pytest

from firec.api import _generated_features as _features
from firec.api import models as m
from firec.api.versions import Version, check_body, has_field
from firec.errors import FirecError, UnsupportedError, ValidationError
from model_samples import enum_types, full_samples, minimal_samples
from spec_schema import MINORS, NO_SPECS, REQUIRED_BEYOND_SPEC, SPEC_FILES, required, spec


def refused(model: type[m.APIModel], **data: Any) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        model(**data)
    return caught.value


# --- coverage of the specification -------------------------------------------------------


def test_every_definition_of_every_version_has_a_model() -> None:
    names = set(_features.DEFINITIONS)
    assert names == set(m.MODELS) | {"CpuTemplate"}
    for name, cls in m.MODELS.items():
        assert cls.__name__ == name == cls.api_name
        assert getattr(m, name) is cls
    assert issubclass(m.CpuTemplate, enum.StrEnum)


def _api_keys(cls: type[m.APIModel]) -> set[str]:
    keys = set()
    for name, field in cls.model_fields.items():
        keys.add(field.serialization_alias or field.alias or name)
        choices = field.validation_alias
        if isinstance(choices, pydantic.AliasChoices):
            keys.update(c for c in choices.choices if isinstance(c, str))
    return keys


@pytest.mark.parametrize("name", sorted(m.MODELS))
def test_model_fields_are_the_union_of_every_version(name: str) -> None:
    """Every property any version ever had is a field (old FullVmConfiguration names as aliases)."""
    spec_keys = set(_features.PROPERTIES[name])
    assert spec_keys <= _api_keys(m.MODELS[name])
    fields = {f.serialization_alias or f.alias or n for n, f in m.MODELS[name].model_fields.items()}
    assert fields <= spec_keys


def _model_required(cls: type[m.APIModel]) -> set[str]:
    return {
        field.serialization_alias or field.alias or key
        for key, field in cls.model_fields.items()
        if field.is_required()
    }


@pytest.mark.parametrize("name", sorted(m.MODELS))
def test_required_fields_are_those_of_the_newest_version(name: str) -> None:
    """What the newest specification requires, and what real Firecracker requires beyond it."""
    beyond = set(REQUIRED_BEYOND_SPEC.get(name, {}))
    assert _model_required(m.MODELS[name]) == set(_features.REQUIRED[name][-1][1]) | beyond


def _leave_out(name: str, samples: list[dict[str, Any]], field: str, version: Version) -> Any:
    """A body that ``version`` takes (keeping only what it knows), with ``field`` left out."""
    for sample in samples:
        body = {k: v for k, v in sample.items() if has_field(name, k, version)}
        if field not in body:
            continue
        try:
            check_body(name, body, version)
        except (ValidationError, UnsupportedError):
            continue
        del body[field]
        return body
    raise AssertionError(f"{name}: no sample that {version} takes with {field} in it")


@pytest.mark.skipif(not SPEC_FILES, reason=NO_SPECS)
@pytest.mark.parametrize("name", sorted(m.MODELS))
def test_required_fields_audit_against_every_version(name: str) -> None:
    """Every model against the ``required`` list of every specification that has it.

    A request model may leave a field optional that an older version requires
    (the models follow the newest version) only if firec then refuses, for
    that version, a body that leaves it out. A response model requires nothing
    that some version may leave out of what it sends.
    """
    cls = m.MODELS[name]
    model_required = _model_required(cls)
    samples = [s.to_api() for s in full_samples() + minimal_samples() if s.api_name == name]
    problems: list[str] = []
    for minor in MINORS:
        if name not in spec(minor)["definitions"]:
            continue
        wanted = required(minor, name)
        if issubclass(cls, m.ResponseModel):
            if model_required - wanted:
                problems.append(f"{minor} may leave out {sorted(model_required - wanted)}")
            continue
        version = Version.parse(_features.SPEC_VERSIONS[minor])
        for field in sorted(wanted - model_required):
            body = _leave_out(name, samples, field, version)
            try:
                check_body(name, body, version)
            except (ValidationError, UnsupportedError) as exc:
                assert field in str(exc), exc
            else:
                problems.append(f"{minor} requires {field}, which firec lets be left out")
    assert not problems, f"{name}: " + "; ".join(problems)


def _enum_of(cls: type[m.APIModel], field: str) -> type[enum.Enum]:
    enums = enum_types(cls.model_fields[field].annotation)
    if not enums:
        raise AssertionError(f"{cls.__name__}.{field} is not an enum field")
    return enums[0]


def test_enum_fields_have_every_value_of_every_version() -> None:
    for definition, by_field in _features.ENUMS.items():
        for field, values in by_field.items():
            members = {e.value for e in _enum_of(m.MODELS[definition], field)}
            assert members == set(values), f"{definition}.{field}"
    assert {e.value for e in m.CpuTemplate} == set(_features.ENUM_DEFINITIONS["CpuTemplate"])
    assert _enum_of(m.MachineConfiguration, "cpu_template") is m.CpuTemplate


def test_response_models_ignore_unknown_keys_request_models_refuse_them() -> None:
    responses: tuple[type[m.APIModel], ...] = (
        m.InstanceInfo,
        m.FirecrackerVersion,
        m.BalloonStats,
        m.BalloonHintingStatus,
        m.MemoryHotplugStatus,
        m.FullVmConfiguration,
        m.Error,
    )
    for cls in responses:
        assert issubclass(cls, m.ResponseModel)
    info = m.InstanceInfo.model_validate(
        {"app_name": "Firecracker", "id": "a", "state": "Running", "vmm_version": "9.0.0", "x": 1}
    )
    assert info.state is m.InstanceState.RUNNING
    error = refused(m.BootSource, kernel_image_path="/k", kernel_path="/k")
    assert (error.field, error.reason) == ("kernel_path", "is not a known field")


# --- constraints ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "data", "field", "reason"),
    [
        (
            m.MachineConfiguration,
            {"vcpu_count": 33, "mem_size_mib": 1},
            "vcpu_count",
            "must be at most 32",
        ),
        (
            m.MachineConfiguration,
            {"vcpu_count": 0, "mem_size_mib": 1},
            "vcpu_count",
            "must be at least 1",
        ),
        (
            m.MachineConfiguration,
            {"vcpu_count": "2", "mem_size_mib": 1},
            "vcpu_count",
            "must be an integer",
        ),
        (
            m.MachineConfiguration,
            {"vcpu_count": 2.0, "mem_size_mib": 1},
            "vcpu_count",
            "must be an integer",
        ),
        (
            m.MachineConfiguration,
            {"vcpu_count": True, "mem_size_mib": 1},
            "vcpu_count",
            "must be an integer",
        ),
        (
            m.MachineConfiguration,
            {"vcpu_count": 1, "mem_size_mib": 0},
            "mem_size_mib",
            "must be at least 1",
        ),
        (m.MachineConfiguration, {"vcpu_count": 1}, "mem_size_mib", "is required"),
        (
            m.MachineConfiguration,
            {"vcpu_count": 1, "mem_size_mib": 1, "smt": 1},
            "smt",
            "must be true or false",
        ),
        (
            m.MachineConfiguration,
            {"vcpu_count": 1, "mem_size_mib": 1, "huge_pages": "1G"},
            "huge_pages",
            "must be 'None' or '2M'",
        ),
        (
            m.MachineConfiguration,
            {"vcpu_count": 1, "mem_size_mib": 1, "cpu_template": "T3"},
            "cpu_template",
            "must be 'C3', 'T2', 'T2S', 'T2CL', 'T2A', 'V1N1' or 'None'",
        ),
        (m.TokenBucket, {"size": -1, "refill_time": 1}, "size", "must be at least 0"),
        (m.TokenBucket, {"size": 1, "refill_time": -5}, "refill_time", "must be at least 0"),
        (
            m.TokenBucket,
            {"size": 1, "refill_time": 1, "one_time_burst": -1},
            "one_time_burst",
            "must be at least 0",
        ),
        (m.Vsock, {"guest_cid": 2, "uds_path": "/v"}, "guest_cid", "must be at least 3"),
        (
            m.NetworkInterface,
            {"iface_id": "e", "host_dev_name": "t", "mtu": 67},
            "mtu",
            "must be at least 68",
        ),
        (
            m.NetworkInterface,
            {"iface_id": "e", "host_dev_name": "t", "mtu": 65536},
            "mtu",
            "must be at most 65535",
        ),
        (
            m.NetworkInterface,
            {"iface_id": "e", "host_dev_name": "t", "guest_mac": "06:00:00:00:00"},
            "guest_mac",
            "must be a MAC address such as 06:00:AC:10:00:02",
        ),
        (
            m.MemoryHotplugConfig,
            {"total_size_mib": 1, "slot_size_mib": 64},
            "slot_size_mib",
            "must be at least 128",
        ),
        (
            m.MemoryHotplugConfig,
            {"total_size_mib": 1, "block_size_mib": 1},
            "block_size_mib",
            "must be at least 2",
        ),
        (m.Balloon, {"amount_mib": -1, "deflate_on_oom": True}, "amount_mib", "must be at least 0"),
        (
            m.Drive,
            {"drive_id": "root-fs", "is_root_device": True},
            "drive_id",
            "may only contain ASCII letters, digits and _ (and not be empty)",
        ),
        (
            m.Drive,
            {"drive_id": "été", "is_root_device": True},
            "drive_id",
            "may only contain ASCII letters, digits and _ (and not be empty)",
        ),
        (
            m.Drive,
            {"drive_id": "", "is_root_device": True},
            "drive_id",
            "may only contain ASCII letters, digits and _ (and not be empty)",
        ),
        (
            m.Drive,
            {"drive_id": "r", "is_root_device": True, "io_engine": "sync"},
            "io_engine",
            "must be 'Sync' or 'Async'",
        ),
        (
            m.Drive,
            {"drive_id": "r", "is_root_device": True, "path_on_host": 3},
            "path_on_host",
            "must be a string",
        ),
        (
            m.Pmem,
            {"id": "p/0", "path_on_host": "/p"},
            "id",
            "may only contain ASCII letters, digits and _ (and not be empty)",
        ),
        (
            m.MmdsConfig,
            {"network_interfaces": ["eth0"], "ipv4_address": "169.254.0.1"},
            "ipv4_address",
            "must be a link-local IPv4 address 169.254.x.y (x from 1 to 254)",
        ),
        (m.MmdsConfig, {"network_interfaces": "eth0"}, "network_interfaces", "must be a list"),
        (
            m.MmdsConfig,
            {"network_interfaces": ["eth0"], "version": "V3"},
            "version",
            "must be 'V1' or 'V2'",
        ),
        (m.Vm, {"state": "Running"}, "state", "must be 'Paused' or 'Resumed'"),
        (
            m.InstanceActionInfo,
            {"action_type": "Reboot"},
            "action_type",
            "must be 'FlushMetrics', 'InstanceStart' or 'SendCtrlAltDel'",
        ),
        (
            m.SnapshotCreateParams,
            {"snapshot_path": "/s", "mem_file_path": "/m", "snapshot_type": "Incremental"},
            "snapshot_type",
            "must be 'Full' or 'Diff'",
        ),
        (
            m.MemoryBackend,
            {"backend_type": "Disk", "backend_path": "/m"},
            "backend_type",
            "must be 'File' or 'Uffd'",
        ),
        (
            m.CpuidRegisterModifier,
            {"register": "eax", "bitmap": "0b" + "1" * 33},
            "bitmap",
            "must have at most 32 bit characters, not 33",
        ),
        (
            m.CpuidRegisterModifier,
            {"register": "rax", "bitmap": "0b1"},
            "register",
            "must be 'eax', 'ebx', 'ecx' or 'edx'",
        ),
        (m.MsrModifier, {"addr": "0x10a", "bitmap": "1010"}, "bitmap", 'must start with "0b"'),
        (
            m.ArmRegisterModifier,
            {"addr": "zz", "bitmap": "0b1"},
            "addr",
            'must be a hex, binary or decimal number as a string ("0x1f", "0b101", "31")',
        ),
        (
            m.VcpuFeatures,
            {"index": 0, "bitmap": "0b12"},
            "bitmap",
            'must be "0b" followed by the characters 0, 1 or x',
        ),
        (
            m.CpuConfig,
            {"kvm_capabilities": ["+1"]},
            "kvm_capabilities[0]",
            'must be a KVM capability number, "!" first to remove it ("121", "!121")',
        ),
    ],
)
def test_constraints_refuse_bad_values_naming_the_field(
    model: type[m.APIModel], data: dict[str, Any], field: str, reason: str
) -> None:
    error = refused(model, **data)
    assert (error.field, error.reason) == (field, reason)
    assert str(error).startswith(f"{field}: ")


def test_the_error_is_firecs_not_pydantics() -> None:
    error = refused(m.MachineConfiguration, vcpu_count=64, mem_size_mib=128)
    assert isinstance(error, FirecError)
    assert not isinstance(error, pydantic.ValidationError)
    assert error.__cause__ is None and error.__suppress_context__


def test_nested_errors_name_the_dotted_path_and_every_problem_is_listed() -> None:
    error = refused(
        m.Drive,
        drive_id="root",
        is_root_device=True,
        rate_limiter={"bandwidth": {"size": -1, "refill_time": 1}, "ops": {"size": 1}},
    )
    assert error.field == "rate_limiter.bandwidth.size"
    assert set(error.errors) == {
        ("rate_limiter.bandwidth.size", "must be at least 0"),
        ("rate_limiter.ops.refill_time", "is required"),
    }
    error = refused(
        m.CpuConfig,
        cpuid_modifiers=[
            {"leaf": "1", "subleaf": "0", "flags": 0, "modifiers": []},
            {"leaf": "1", "subleaf": "0", "flags": 0, "modifiers": [{"register": "e"}]},
        ],
    )
    assert error.errors[0] == (
        "cpuid_modifiers[1].modifiers[0].register",
        "must be 'eax', 'ebx', 'ecx' or 'edx'",
    )
    assert ("cpuid_modifiers[1].modifiers[0].bitmap", "is required") in error.errors


def test_model_level_rule_names_its_field() -> None:
    error = refused(m.SnapshotLoadParams, snapshot_path="/s")
    assert (error.field, error.reason) == (
        "mem_backend",
        "exactly one of mem_backend and mem_file_path must be set",
    )
    error = refused(
        m.SnapshotLoadParams,
        snapshot_path="/s",
        mem_file_path="/m",
        mem_backend={"backend_type": "File", "backend_path": "/m"},
    )
    assert error.field == "mem_backend"


def test_assignment_is_validated_too() -> None:
    machine = m.MachineConfiguration(vcpu_count=2, mem_size_mib=128)
    with pytest.raises(ValidationError) as caught:
        machine.vcpu_count = 40
    assert (caught.value.field, caught.value.reason) == ("vcpu_count", "must be at most 32")
    assert machine.vcpu_count == 2
    machine.huge_pages = "2M"  # type: ignore[assignment]
    assert machine.huge_pages is m.HugePages.HUGE_2M


def test_model_validate_and_json_raise_firec_errors() -> None:
    with pytest.raises(ValidationError) as caught:
        m.Vsock.model_validate({"guest_cid": 1, "uds_path": "/v"})
    assert caught.value.field == "guest_cid"
    with pytest.raises(ValidationError) as caught:
        m.Vsock.model_validate_json('{"guest_cid": 3}')
    assert (caught.value.field, caught.value.reason) == ("uds_path", "is required")


# --- enums and plain strings -------------------------------------------------------------


def test_enum_fields_take_members_or_plain_strings() -> None:
    by_string = m.Drive(drive_id="d", is_root_device=False, io_engine="Async", cache_type="Unsafe")
    by_member = m.Drive(
        drive_id="d",
        is_root_device=False,
        io_engine=m.IoEngine.ASYNC,
        cache_type=m.CacheType.UNSAFE,
    )
    assert by_string == by_member
    assert by_string.io_engine is m.IoEngine.ASYNC
    assert isinstance(by_string.io_engine, str)
    assert by_string.io_engine.value == "Async"
    assert by_string.to_api()["io_engine"] == "Async"


def test_log_level_is_case_insensitive_and_sent_canonical() -> None:
    assert m.Logger(level="trace").to_api() == {"level": "Trace"}
    assert m.Logger(level="WARNING").level is m.LogLevel.WARNING
    assert refused(m.Logger, level="loud").field == "level"


def test_enum_names() -> None:
    assert m.InstanceState("Not started") is m.InstanceState.NOT_STARTED
    assert m.HugePages("None") is m.HugePages.NONE
    assert m.CpuTemplate("None") is m.CpuTemplate.NONE
    assert m.ActionType("SendCtrlAltDel") is m.ActionType.SEND_CTRL_ALT_DEL
    assert str(m.SnapshotType.DIFF) == "Diff"


# --- JSON names, None omission, paths ------------------------------------------------------


def test_to_api_omits_unset_fields_and_uses_api_values() -> None:
    drive = m.Drive(drive_id="root", is_root_device=True, partuuid=None, is_read_only=False)
    assert drive.to_api() == {"drive_id": "root", "is_root_device": True, "is_read_only": False}
    assert m.BalloonStartCmd().to_api() == {}


def test_host_paths_accept_pathlike() -> None:
    boot = m.BootSource(kernel_image_path=pathlib.Path("/srv/vmlinux"))
    assert boot.kernel_image_path == "/srv/vmlinux"
    assert boot.to_api() == {"kernel_image_path": "/srv/vmlinux"}
    assert (
        os.fspath(pathlib.PurePosixPath("/a"))
        == m.Metrics(metrics_path=pathlib.Path("/a")).metrics_path
    )


def test_full_vm_configuration_uses_hyphenated_keys() -> None:
    data = {
        "boot-source": {"kernel_image_path": "/k"},
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 128},
        "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap0"}],
        "mmds-config": {"network_interfaces": ["eth0"]},
        "cpu-config": {"kvm_capabilities": ["1"]},
        "memory-hotplug": {"total_size_mib": 512},
        "drives": [{"drive_id": "root", "is_root_device": True}],
        "pmem": [{"id": "p", "path_on_host": "/p"}],
        "balloon": {"amount_mib": 0, "deflate_on_oom": False},
        "vsock": {"guest_cid": 3, "uds_path": "/v"},
        "entropy": {},
        "logger": {"level": "Info"},
        "metrics": {"metrics_path": "/m"},
    }
    config = m.FullVmConfiguration.from_api(data)
    assert config.boot_source == m.BootSource(kernel_image_path="/k")
    assert config.machine_config is not None and config.machine_config.vcpu_count == 1
    assert config.network_interfaces is not None and config.network_interfaces[0].iface_id == "eth0"
    assert config.to_api() == data
    by_name = m.FullVmConfiguration(boot_source={"kernel_image_path": "/k"})
    assert by_name.to_api() == {"boot-source": {"kernel_image_path": "/k"}}


def test_full_vm_configuration_reads_the_pre_1_1_spec_names() -> None:
    config = m.FullVmConfiguration.from_api(
        {
            "boot_source": {"kernel_image_path": "/k"},
            "machine_config": {"vcpu_count": 1, "mem_size_mib": 128},
            "block_devices": [{"drive_id": "root", "is_root_device": True}],
            "net_devices": [],
            "balloon_device": None,
            "vsock_device": {"guest_cid": 3, "uds_path": "/v"},
            "mmds_config": None,
        }
    )
    assert config.to_api() == {
        "boot-source": {"kernel_image_path": "/k"},
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 128},
        "drives": [{"drive_id": "root", "is_root_device": True}],
        "network-interfaces": [],
        "vsock": {"guest_cid": 3, "uds_path": "/v"},
    }


def test_full_vm_configuration_as_firecracker_1_14_exports_it() -> None:
    """The body a real Firecracker 1.14.2 answered to GET /vm/config (nulls and all)."""
    answer = {
        "balloon": {
            "amount_mib": 0,
            "deflate_on_oom": False,
            "stats_polling_interval_s": 0,
            "free_page_hinting": False,
            "free_page_reporting": False,
        },
        "drives": [
            {
                "drive_id": "ab",
                "partuuid": None,
                "is_root_device": False,
                "cache_type": "Unsafe",
                "is_read_only": True,
                "path_on_host": "/p",
                "rate_limiter": None,
                "io_engine": "Sync",
                "socket": None,
            }
        ],
        "boot-source": {"kernel_image_path": "", "initrd_path": None, "boot_args": "x"},
        "cpu-config": None,
        "logger": None,
        "machine-config": {
            "vcpu_count": 1,
            "mem_size_mib": 128,
            "smt": False,
            "track_dirty_pages": True,
            "huge_pages": "None",
        },
        "metrics": None,
        "mmds-config": None,
        "network-interfaces": [
            {
                "iface_id": "eth0",
                "host_dev_name": "tap0",
                "guest_mac": "06:00:00:00:00:01",
                "rx_rate_limiter": None,
                "tx_rate_limiter": None,
            }
        ],
        "vsock": None,
        "entropy": None,
        "pmem": [],
        "memory-hotplug": None,
    }
    config = m.FullVmConfiguration.from_api(answer)
    assert config.drives is not None and config.drives[0].io_engine is m.IoEngine.SYNC
    assert config.machine_config is not None
    assert config.machine_config.huge_pages is m.HugePages.NONE
    assert config.pmem == []


# --- from_api ---------------------------------------------------------------------------


def test_from_api_ignores_keys_of_newer_firecrackers_at_any_depth() -> None:
    drive = m.Drive.from_api(
        {
            "drive_id": "root",
            "is_root_device": True,
            "future_flag": True,
            "rate_limiter": {"bandwidth": {"size": 1, "refill_time": 1, "new": 0}},
        }
    )
    assert drive.to_api() == {
        "drive_id": "root",
        "is_root_device": True,
        "rate_limiter": {"bandwidth": {"size": 1, "refill_time": 1}},
    }


def test_from_api_strict_refuses_unknown_keys() -> None:
    with pytest.raises(ValidationError) as caught:
        m.Drive.from_api(
            {"drive_id": "root", "is_root_device": True, "rate_limiter": {"x": 1}}, strict=True
        )
    assert (caught.value.field, caught.value.reason) == ("rate_limiter.x", "is not a known field")


def test_from_api_of_a_bad_body_raises_firec_validation_error() -> None:
    with pytest.raises(ValidationError) as caught:
        m.InstanceInfo.from_api({"app_name": "Firecracker", "id": "x", "state": "Exploded"})
    assert caught.value.field == "state"
    assert ("vmm_version", "is required") in caught.value.errors
    with pytest.raises(ValidationError) as caught:
        m.FirecrackerVersion.from_api(["1.14.2"])
    assert caught.value.field == ""
    assert "must be a JSON object" in caught.value.reason
    with pytest.raises(ValidationError) as caught:
        m.BalloonStats.from_api(
            {"target_pages": 1, "actual_pages": "2", "target_mib": 0, "actual_mib": 0}
        )
    assert (caught.value.field, caught.value.reason) == ("actual_pages", "must be an integer")


def test_mmds_contents_keep_arbitrary_keys_and_nulls() -> None:
    data = {"latest": {"meta-data": {"ami-id": "ami-1", "empty": None}}, "list": [1, None]}
    contents = m.MmdsContentsObject.from_api(data)
    assert contents.to_api() == data
    assert contents.contents == data
    assert m.MmdsContentsObject(a=1).to_api() == {"a": 1}


# --- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sample", full_samples() + minimal_samples(), ids=lambda s: type(s).__name__
)
def test_round_trip_through_the_api_form(sample: m.APIModel) -> None:
    body = sample.to_api()
    assert None not in _leaves(body) or isinstance(sample, m.MmdsContentsObject)
    again = type(sample).from_api(body, strict=True)
    assert again == sample
    assert again.to_api() == body


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    if isinstance(value, list):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


def test_model_for() -> None:
    assert m.model_for("Drive") is m.Drive
    with pytest.raises(KeyError, match="Drivez"):
        m.model_for("Drivez")


def test_the_documented_examples_run() -> None:
    import doctest

    import firec.api.models

    result = doctest.testmod(firec.api.models)
    assert result.attempted > 0
    assert result.failed == 0
