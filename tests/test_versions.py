"""Versions and the per-version feature checks, with real examples from the API specs."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

import firec
import pre_1_0_firecracker
from firec.api import _generated_features as _features
from firec.api import models as m
from firec.api.versions import (
    KNOWN_VERSIONS,
    LATEST,
    OLDEST,
    Version,
    body_definition,
    check_body,
    check_operation,
    has_field,
    has_operation,
)
from firec.errors import UnsupportedError, ValidationError

V = Version.parse


def unsupported(call: object, *args: object, **kwargs: object) -> UnsupportedError:
    assert callable(call)
    with pytest.raises(UnsupportedError) as caught:
        call(*args, **kwargs)
    return caught.value


# --- Version --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.14.2", Version(1, 14, 2)),
        ("v1.14.2", Version(1, 14, 2)),
        ("1.16", Version(1, 16, 0)),
        ("v1.0.0-44-gc73a27cb-dirty", Version(1, 0, 0)),
        ("1.7.0-dev", Version(1, 7, 0)),
        (" 1.2.3\n", Version(1, 2, 3)),
    ],
)
def test_parse(text: str, expected: Version) -> None:
    assert Version.parse(text) == expected


@pytest.mark.parametrize("text", ["", "1", "one.two", "1.x.3", "version 1.2.3", "1.2.3.4"])
def test_parse_refuses_what_is_not_a_version(text: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Version.parse(text)
    assert caught.value.field == "version"
    assert repr(text) in caught.value.reason


def test_order_hash_str_minor_key() -> None:
    assert V("1.0.0") < V("1.0.2") < V("1.4") < V("1.10.0") < V("1.14.2") < V("2.0")
    assert sorted([V("1.10"), V("1.9.1"), V("1.2")]) == [V("1.2"), V("1.9.1"), V("1.10")]
    assert len({V("1.14.2"), V("v1.14.2"), Version(1, 14, 2)}) == 1
    assert str(V("v1.14.2-dirty")) == "1.14.2"
    assert str(V("1.16")) == "1.16.0"
    assert V("1.14.2").minor_key == "1.14"


def test_known_versions() -> None:
    assert [v.minor_key for v in KNOWN_VERSIONS] == list(_features.MINORS)
    assert tuple(sorted(KNOWN_VERSIONS)) == KNOWN_VERSIONS
    assert KNOWN_VERSIONS[-1] == LATEST
    assert LATEST.minor_key == "1.16"
    assert Version(1, 0, 0) == OLDEST


# --- operations ---------------------------------------------------------------------------


def test_pmem_refused_on_1_13_accepted_on_1_14() -> None:
    error = unsupported(check_operation, "PUT", "/pmem/{id}", V("1.13.2"))
    assert error.feature == "PUT /pmem/{id} (pmem devices)"
    assert (error.introduced, error.removed, error.connected) == ("1.14", None, "1.13.2")
    assert "needs Firecracker 1.14 or newer" in str(error)
    check_operation("PUT", "/pmem/{id}", V("1.14.0"))
    check_operation("put", "/pmem/{id}", V("1.14.2"))
    assert has_operation("PUT", "/pmem/{id}", V("1.14.0"))
    assert not has_operation("PUT", "/pmem/{id}", V("1.13.2"))


def test_patch_pmem_arrived_after_put_pmem() -> None:
    error = unsupported(check_operation, "PATCH", "/pmem/{id}", V("1.15.1"))
    assert error.introduced == "1.16"
    check_operation("PATCH", "/pmem/{id}", V("1.16.0"))


def test_operations_of_every_version_are_accepted() -> None:
    for version in KNOWN_VERSIONS:
        check_operation("PUT", "/drives/{drive_id}", version)
        check_operation("GET", "/", version)
        check_operation("PATCH", "/vm", version)
    for op in [("PUT", "/cpu-config"), ("PUT", "/entropy")]:
        assert unsupported(check_operation, *op, V("1.3.3")).introduced == "1.4"
        check_operation(*op, V("1.4.0"))


def test_newer_versions_are_treated_as_the_latest() -> None:
    check_operation("PATCH", "/pmem/{id}", V("1.17.0"))
    check_operation("PATCH", "/pmem/{id}", V("2.0.0"))
    check_body(
        "MachineConfiguration", {"vcpu_count": 1, "mem_size_mib": 8, "huge_pages": "2M"}, V("3.1")
    )
    error = unsupported(
        check_body,
        "SnapshotCreateParams",
        {"snapshot_path": "/s", "mem_file_path": "/m", "version": "1"},
        V("1.17.0"),
    )
    assert error.removed == "1.6"
    assert error.connected == "1.17.0"


def test_versions_before_1_0_are_refused() -> None:
    error = unsupported(check_operation, "GET", "/", V("0.25.2"))
    assert error.introduced == "1.0"
    assert error.connected == "0.25.2"
    assert "1.0 or newer" in str(error)
    unsupported(check_body, "Vm", {"state": "Paused"}, V("0.24.4"))


def test_unknown_operation_is_refused_naming_it() -> None:
    error = unsupported(check_operation, "DELETE", "/drives/{drive_id}", V("1.14.2"))
    assert error.feature == "DELETE /drives/{drive_id}"
    assert error.introduced is None
    assert "not supported by any known Firecracker version" in str(error)


def test_body_definition() -> None:
    assert body_definition("PUT", "/drives/{drive_id}", V("1.0.0")) == "Drive"
    assert body_definition("PATCH", "/drives/{drive_id}", V("1.14.2")) == "PartialDrive"
    assert body_definition("PATCH", "/machine-config", V("1.5.1")) == "MachineConfiguration"
    assert body_definition("PATCH", "/balloon/hinting/start", V("1.14.0")) == "BalloonStartCmd"
    assert body_definition("PATCH", "/balloon/hinting/stop", V("1.14.0")) is None
    assert body_definition("PUT", "/pmem/{id}", V("1.13.0")) is None
    assert body_definition("PUT", "/pmem/{id}", V("1.14.0")) == "Pmem"
    assert body_definition("GET", "/", V("1.14.0")) is None
    assert body_definition("GET", "/nowhere", V("1.14.0")) is None


# --- bodies -----------------------------------------------------------------------------------


def test_huge_pages_needs_1_7() -> None:
    body = m.MachineConfiguration(vcpu_count=2, mem_size_mib=256, huge_pages="2M").to_api()
    error = unsupported(
        check_body, "MachineConfiguration", body, V("1.6.0"), where="machine-config"
    )
    assert error.feature == "field machine-config huge_pages (MachineConfiguration.huge_pages)"
    assert (error.introduced, error.removed, error.connected) == ("1.7", None, "1.6.0")
    check_body("MachineConfiguration", body, V("1.7.0"), where="machine-config")
    assert not has_field("MachineConfiguration", "huge_pages", V("1.6.0"))
    assert has_field("MachineConfiguration", "huge_pages", V("1.7.0"))


def test_an_enum_value_newer_than_its_field() -> None:
    body = m.Logger(log_path="/l", level="Trace").to_api()
    error = unsupported(check_body, "Logger", body, V("1.4.1"), where="logger")
    assert error.feature == "value 'Trace' of field logger level (Logger.level)"
    assert error.introduced == "1.5"
    check_body("Logger", body, V("1.5.0"))
    check_body("Logger", m.Logger(log_path="/l", level="Debug").to_api(), V("1.0.0"))


def test_cpu_template_values_follow_their_version() -> None:
    body = {"vcpu_count": 1, "mem_size_mib": 128, "cpu_template": "T2S"}
    error = unsupported(check_body, "MachineConfiguration", body, V("1.0.0"))
    assert error.feature == "value 'T2S' of field cpu_template (MachineConfiguration.cpu_template)"
    assert error.introduced == "1.1"
    check_body("MachineConfiguration", {**body, "cpu_template": "T2"}, V("1.0.0"))
    assert (
        unsupported(
            check_body, "MachineConfiguration", {**body, "cpu_template": "None"}, V("1.0.2")
        ).introduced
        == "1.1"
    )
    assert (
        unsupported(
            check_body, "MachineConfiguration", {**body, "cpu_template": "V1N1"}, V("1.3.3")
        ).introduced
        == "1.4"
    )


def test_a_removed_field() -> None:
    body = m.SnapshotCreateParams(snapshot_path="/s", mem_file_path="/m", version="1.0.0").to_api()
    check_body("SnapshotCreateParams", body, V("1.5.1"))
    error = unsupported(check_body, "SnapshotCreateParams", body, V("1.6.0"))
    assert error.feature == "field version (SnapshotCreateParams.version)"
    assert (error.introduced, error.removed) == ("1.0", "1.6")
    assert "1.0 up to before 1.6" in str(error)


def test_deprecated_mem_file_path_is_still_in_1_16() -> None:
    """The 1.16 spec still lists SnapshotLoadParams.mem_file_path (deprecated, not removed)."""
    assert _features.PROPERTIES["SnapshotLoadParams"]["mem_file_path"][:2] == ("1.0", None)
    body = m.SnapshotLoadParams(snapshot_path="/s", mem_file_path="/m").to_api()
    for version in KNOWN_VERSIONS:
        check_body("SnapshotLoadParams", body, version)


def test_mem_backend_needs_1_1_and_1_0_needs_mem_file_path() -> None:
    body = m.SnapshotLoadParams(
        snapshot_path="/s", mem_backend={"backend_type": "File", "backend_path": "/m"}
    ).to_api()
    error = unsupported(check_body, "SnapshotLoadParams", body, V("1.0.0"))
    assert error.feature == "field mem_backend (SnapshotLoadParams.mem_backend)"
    assert error.introduced == "1.1"
    check_body("SnapshotLoadParams", body, V("1.1.0"))


def test_a_field_required_by_older_versions() -> None:
    vhost = m.Drive(drive_id="blk", is_root_device=False, socket="/run/blk.sock").to_api()
    error = unsupported(check_body, "Drive", vhost, V("1.5.1"), where="drives/blk")
    assert error.feature == "field drives/blk socket (Drive.socket)"
    assert error.introduced == "1.6"
    bare = m.Drive(drive_id="blk", is_root_device=False, path_on_host="/x").to_api()
    error = unsupported(check_body, "Drive", bare, V("1.5.1"))
    assert error.feature == "leaving out field is_read_only (Drive.is_read_only)"
    assert error.introduced == "1.6"
    check_body("Drive", bare, V("1.6.0"))
    error = unsupported(check_body, "Logger", m.Logger(level="Info").to_api(), V("1.5.1"))
    assert error.feature == "leaving out field log_path (Logger.log_path)"


def test_partial_bodies_may_leave_out_required_fields() -> None:
    with pytest.raises(ValidationError) as caught:
        check_body("MachineConfiguration", {"vcpu_count": 2}, V("1.14.2"))
    assert caught.value.field == "mem_size_mib"
    check_body("MachineConfiguration", {"vcpu_count": 2}, V("1.14.2"), partial=True)
    error = unsupported(
        check_body, "MachineConfiguration", {"huge_pages": "2M"}, V("1.6.0"), partial=True
    )
    assert error.introduced == "1.7"


def test_nested_definitions_are_followed() -> None:
    body = m.Pmem(
        id="p", path_on_host="/p", rate_limiter={"ops": {"size": 1, "refill_time": 1}}
    ).to_api()
    error = unsupported(check_body, "Pmem", body, V("1.15.1"), where="pmem/p")
    assert error.feature == "field pmem/p rate_limiter (Pmem.rate_limiter)"
    assert error.introduced == "1.16"
    check_body("Pmem", body, V("1.16.0"))
    load = {
        "snapshot_path": "/s",
        "mem_backend": {"backend_type": "File", "backend_path": "/m"},
        "network_overrides": [{"iface_id": "eth0", "host_dev_name": "tap1", "extra": 1}],
    }
    assert unsupported(check_body, "SnapshotLoadParams", load, V("1.11.0")).introduced == "1.12"
    error = unsupported(check_body, "SnapshotLoadParams", load, V("1.12.1"))
    assert error.feature == "field network_overrides[0].extra (NetworkOverride.extra)"
    assert error.introduced is None
    limiter = {
        "iface_id": "eth0",
        "rx_rate_limiter": {"bandwidth": {"size": 1, "refill_time": 1, "burst": 1}},
    }
    error = unsupported(check_body, "PartialNetworkInterface", limiter, V("1.14.2"))
    assert error.feature == "field rx_rate_limiter.bandwidth.burst (TokenBucket.burst)"


def test_nested_enum_value() -> None:
    cpu = {
        "cpuid_modifiers": [
            {
                "leaf": "1",
                "subleaf": "0",
                "flags": 0,
                "modifiers": [{"register": "rax", "bitmap": "0b1"}],
            }
        ]
    }
    error = unsupported(check_body, "CpuConfig", cpu, V("1.14.2"), where="cpu-config")
    assert error.feature == (
        "value 'rax' of field cpu-config cpuid_modifiers[0].modifiers[0].register "
        "(CpuidRegisterModifier.register)"
    )


def test_custom_cpu_templates_before_the_spec_described_them() -> None:
    """1.4 to 1.13 specs call these properties bare objects; Firecracker 1.4.0 takes the
    arrays the 1.14 spec describes (checked against the real binary), so they pass."""
    cpu = m.CpuConfig(
        cpuid_modifiers=[
            {
                "leaf": "0x1",
                "subleaf": "0x0",
                "flags": 0,
                "modifiers": [{"register": "eax", "bitmap": "0b1"}],
            }
        ],
        msr_modifiers=[{"addr": "0x10a", "bitmap": "0b1"}],
    ).to_api()
    check_body("CpuConfig", cpu, V("1.4.0"))
    error = unsupported(check_body, "CpuConfig", {"kvm_capabilities": ["1"]}, V("1.10.1"))
    assert error.introduced == "1.11"
    error = unsupported(check_body, "CpuConfig", cpu, V("1.3.3"))
    assert error.feature == "CpuConfig request body"
    assert error.introduced == "1.4"


def test_list_bodies_and_free_form_bodies() -> None:
    check_body("MmdsContentsObject", {"anything": {"goes": [1, None]}}, V("1.0.0"))
    check_body("NetworkInterface", [{"iface_id": "a", "host_dev_name": "t"}], V("1.0.0"))
    error = unsupported(
        check_body,
        "NetworkInterface",
        [
            {"iface_id": "a", "host_dev_name": "t"},
            {"iface_id": "b", "host_dev_name": "t", "mtu": 1500},
        ],
        V("1.15.1"),
    )
    assert error.feature == "field [1].mtu (NetworkInterface.mtu)"
    assert error.introduced == "1.16"


def test_always_required_field_missing_is_a_validation_error() -> None:
    with pytest.raises(ValidationError) as caught:
        check_body("Vsock", {"uds_path": "/v"}, V("1.14.2"), where="vsock")
    assert caught.value.field == "guest_cid"
    assert caught.value.reason == "is required by Firecracker 1.14.2"


def test_the_documented_examples_run() -> None:
    import doctest

    import firec.api.versions

    result = doctest.testmod(firec.api.versions)
    assert result.attempted > 0
    assert result.failed == 0


# -- Firecracker before 1.0 --------------------------------------------------------------


def _old_firecracker_binary(directory: Path) -> Path:
    script = Path(__file__).with_name("pre_1_0_firecracker.py")
    wrapper = directory / "firecracker-v0.24"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} {script} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def test_client_says_firecracker_before_1_0_is_unsupported(short_tmp: Path) -> None:
    """GET /version answers 400 there: firec says it needs 1.0, not "GET /version failed"."""
    socket_path = str(short_tmp / "old.sock")
    server = pre_1_0_firecracker.serve(socket_path)
    try:
        for call in (
            lambda c: c.firecracker_version(),
            lambda c: c.put_machine_config({"vcpu_count": 1, "mem_size_mib": 128}),
            lambda c: c.get_machine_config(),
        ):
            with firec.Client(socket_path) as client, pytest.raises(UnsupportedError) as caught:
                call(client)
            assert caught.value.connected == "0.24.4"
            assert caught.value.introduced == "1.0"
            assert "needs Firecracker 1.0 or newer" in str(caught.value)
            assert "0.24.4" in str(caught.value)
    finally:
        server.shutdown()
        server.server_close()


async def test_async_client_says_firecracker_before_1_0_is_unsupported(short_tmp: Path) -> None:
    socket_path = str(short_tmp / "old.sock")
    server = pre_1_0_firecracker.serve(socket_path)
    try:
        async with firec.AsyncClient(socket_path) as client:
            with pytest.raises(UnsupportedError) as caught:
                await client.firecracker_version()
        assert caught.value.connected == "0.24.4"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_machine_says_firecracker_before_1_0_is_unsupported(
    short_tmp: Path, guest_kernel: Path, flavour: str
) -> None:
    """Machine.create refuses it once it answers, and leaves nothing behind."""
    binary = _old_firecracker_binary(short_tmp)
    config = (
        firec.Config.builder("old-vm", guest_kernel)
        .firecracker_binary(binary)
        .workdir(short_tmp / "vms")
        .build()
    )
    with pytest.raises(UnsupportedError) as caught:
        if flavour == "sync":
            firec.Machine.create(config)
        else:
            asyncio.run(firec.AsyncMachine.create(config))
    assert "needs Firecracker 1.0 or newer" in str(caught.value)
    assert caught.value.connected == "0.24.4"
    assert not (short_tmp / "vms" / "old-vm").exists()
    assert not [p for p in Path("/proc").glob("[0-9]*") if _runs(p, str(binary))]


def _runs(proc: Path, binary: str) -> bool:
    try:
        return binary.encode() in (proc / "cmdline").read_bytes()
    except OSError:
        return False


def test_restore_onto_firecracker_before_1_0_is_unsupported(
    short_tmp: Path, guest_kernel: Path
) -> None:
    """Refused before anything is spawned, naming 1.0 and the binary's version."""
    directory = short_tmp / "snap"
    directory.mkdir()
    (directory / "vmstate").write_bytes(b"state")
    with open(directory / "memory", "wb") as memory:
        memory.truncate(64 << 20)
    snapshot = firec.Snapshot(
        directory=directory,
        state_file=directory / "vmstate",
        memory_file=directory / "memory",
        type=m.SnapshotType.FULL,
        firecracker_version=V("1.14.2"),
        snapshot_format=V("8.0.0"),
        vm_id="old-vm",
        vm_config_json='{"machine-config": {"vcpu_count": 1, "mem_size_mib": 64}}',
        host_paths_json="{}",
    )
    config = (
        firec.Config.builder("old-restore", guest_kernel)
        .firecracker_binary(_old_firecracker_binary(short_tmp))
        .workdir(short_tmp / "vms")
        .build()
    )
    with pytest.raises(UnsupportedError) as caught:
        firec.Machine.restore(snapshot, config)
    assert "needs Firecracker 1.0 or newer" in str(caught.value)
    assert caught.value.connected == "0.24.4"
    assert not (short_tmp / "vms" / "old-restore").exists()
