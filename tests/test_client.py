"""firec.Client and firec.AsyncClient against a live VMM (emulator and real Firecracker)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import firec
from firec.api import models
from firec.errors import (
    APIError,
    ConnectError,
    FirecError,
    TimeoutError,
    UnsupportedError,
    ValidationError,
)
from firec.testing.guest import BOOT_LINE
from tests.conftest import Vmm
from tests.support import Recorder


def _boot_source(kernel: Path) -> models.BootSource:
    return models.BootSource(kernel_image_path=str(kernel), boot_args="console=ttyS0")


# -- against a live VMM --------------------------------------------------------


def test_version_and_instance_info(vmm: Vmm) -> None:
    with firec.Client(vmm.socket_path) as client:
        version = client.firecracker_version()
        assert version >= firec.api.versions.Version.parse("1.0")
        assert (
            client.get_version()
            .firecracker_version.lstrip("v")
            .startswith(f"{version.major}.{version.minor}")
        )
        info = client.get_instance_info()
        assert info.id == "firec-test"
        assert info.state == models.InstanceState.NOT_STARTED
        assert info.app_name == "Firecracker"


def test_configure_boot_pause_resume(vmm: Vmm, guest_kernel: Path) -> None:
    with firec.Client(vmm.socket_path) as client:
        client.put_machine_config(models.MachineConfiguration(vcpu_count=1, mem_size_mib=64))
        client.patch_machine_config({"mem_size_mib": 32})
        config = client.get_machine_config()
        assert (config.vcpu_count, config.mem_size_mib) == (1, 32)
        client.put_boot_source(_boot_source(guest_kernel))
        client.create_action("InstanceStart")
        assert client.get_instance_info().state == models.InstanceState.RUNNING
        client.patch_vm("Paused")
        assert client.get_instance_info().state == models.InstanceState.PAUSED
        client.patch_vm(models.VmState.RESUMED)
        assert client.get_instance_info().state == models.InstanceState.RUNNING
        exported = client.get_vm_config()
        assert exported.boot_source is not None
        assert exported.boot_source.kernel_image_path == str(guest_kernel)
        assert exported.machine_config is not None
        assert exported.machine_config.mem_size_mib == 32
    vmm.read_stdout_until(BOOT_LINE)
    assert vmm.process.poll() is None


async def test_async_client_configures_and_boots(vmm: Vmm, guest_kernel: Path) -> None:
    async with firec.AsyncClient(vmm.socket_path) as client:
        await client.put_machine_config(models.MachineConfiguration(vcpu_count=1, mem_size_mib=64))
        await client.put_boot_source(_boot_source(guest_kernel))
        infos = await asyncio.gather(*(client.get_instance_info() for _ in range(5)))
        assert {info.state for info in infos} == {models.InstanceState.NOT_STARTED}
        await client.create_action(models.ActionType.INSTANCE_START)
        assert (await client.get_instance_info()).state == models.InstanceState.RUNNING
    vmm.read_stdout_until(BOOT_LINE)


def test_firecracker_refusal_is_api_error_with_its_message(vmm: Vmm, short_tmp: Path) -> None:
    missing = short_tmp / "no-such-disk.ext4"
    drive = models.Drive(
        drive_id="rootfs", path_on_host=str(missing), is_root_device=True, is_read_only=False
    )
    with firec.Client(vmm.socket_path) as client, pytest.raises(APIError) as caught:
        client.put_drive(drive)
    assert caught.value.status_code == 400
    assert caught.value.method == "PUT"
    assert caught.value.path == "/drives/rootfs"
    assert caught.value.fault_message  # Firecracker's own words, unchanged
    assert caught.value.fault_message in str(caught.value)


def test_instance_start_without_boot_source_is_refused(vmm: Vmm) -> None:
    with firec.Client(vmm.socket_path) as client, pytest.raises(APIError) as caught:
        client.create_action("InstanceStart")
    assert caught.value.status_code == 400
    assert "kernel" in caught.value.fault_message.lower()


def test_mmds_round_trip(vmm: Vmm) -> None:
    with firec.Client(vmm.socket_path) as client:
        client.put_mmds({"latest": {"meta-data": {"id": "vm-1"}}})
        client.patch_mmds({"latest": {"meta-data": {"zone": "z1"}}})
        assert client.get_mmds() == {"latest": {"meta-data": {"id": "vm-1", "zone": "z1"}}}


def test_dead_vmm_gives_connect_error_quickly(vmm: Vmm) -> None:
    client = firec.Client(vmm.socket_path)
    client.get_instance_info()
    vmm.stop()
    started = time.monotonic()
    with pytest.raises(ConnectError) as caught:
        client.get_instance_info()
    assert caught.value.socket_path == vmm.socket_path
    assert vmm.socket_path in str(caught.value)
    assert time.monotonic() - started < 5
    client.close()


# -- version awareness ---------------------------------------------------------


def test_unsupported_endpoint_refused_before_sending() -> None:
    recorder = Recorder("1.0.0")
    client = firec.Client("/nowhere.sock", transport=httpx.MockTransport(recorder))
    with pytest.raises(UnsupportedError) as caught:
        client.put_pmem(models.Pmem(id="pmem0", path_on_host="/tmp/pmem.img"))
    assert caught.value.introduced == "1.14"
    assert caught.value.connected == "1.0.0"
    assert "1.14" in str(caught.value) and "1.0.0" in str(caught.value)
    assert "/pmem" in caught.value.feature
    assert recorder.sent() == ["GET /version"]  # asked the version, sent nothing else


def test_unsupported_field_refused_before_sending() -> None:
    recorder = Recorder("1.4.1")
    client = firec.Client("/nowhere.sock", transport=httpx.MockTransport(recorder))
    config = models.MachineConfiguration(vcpu_count=1, mem_size_mib=128, huge_pages="2M")
    with pytest.raises(UnsupportedError) as caught:
        client.put_machine_config(config)
    assert "huge_pages" in caught.value.feature
    assert caught.value.introduced is not None
    assert recorder.sent() == ["GET /version"]
    # the same body goes through once huge_pages exists
    newer = Recorder("1.16.0")
    firec.Client("/x.sock", transport=httpx.MockTransport(newer)).put_machine_config(config)
    assert newer.sent() == ["GET /version", "PUT /machine-config"]


def test_version_is_asked_once_and_can_be_given() -> None:
    recorder = Recorder("1.14.2")
    client = firec.Client("/x.sock", transport=httpx.MockTransport(recorder))
    config = models.MachineConfiguration(vcpu_count=1, mem_size_mib=128)
    client.put_machine_config(config)
    client.put_machine_config(config)
    assert recorder.sent().count("GET /version") == 1
    # GET / exists in every version: sent without asking, and it tells the version
    learner = Recorder("1.0.0")
    client = firec.Client("/x.sock", transport=httpx.MockTransport(learner))
    client.get_instance_info()
    with pytest.raises(UnsupportedError):
        client.put_pmem(models.Pmem(id="p0", path_on_host="/tmp/p.img"))
    assert learner.sent() == ["GET /"]
    given = Recorder("1.14.2")
    firec.Client("/x.sock", version="1.14.2", transport=httpx.MockTransport(given)).put_serial(
        models.SerialDevice(serial_out_path="/tmp/serial.out")
    )
    assert given.sent() == ["PUT /serial"]


def test_check_version_off_sends_anything() -> None:
    recorder = Recorder("1.0.0")
    client = firec.Client("/x.sock", check_version=False, transport=httpx.MockTransport(recorder))
    client.put_pmem(models.Pmem(id="p0", path_on_host="/tmp/p.img"))
    assert recorder.sent() == ["PUT /pmem/p0"]


async def test_async_unsupported_refused_before_sending() -> None:
    recorder = Recorder("1.3.0")

    async def handler(request: httpx.Request) -> httpx.Response:
        return recorder(request)

    async with firec.AsyncClient("/x.sock", transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(UnsupportedError) as caught:
            await client.put_entropy(models.EntropyDevice())
    assert caught.value.introduced == "1.4"
    assert recorder.sent() == ["GET /version"]


# -- bad input ----------------------------------------------------------------


def test_invalid_value_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError) as caught:
        models.MachineConfiguration(vcpu_count=0, mem_size_mib=128)
    assert caught.value.field == "vcpu_count"
    assert isinstance(caught.value, FirecError)


def test_invalid_patch_field_is_refused_before_sending() -> None:
    recorder = Recorder("1.14.2")
    client = firec.Client("/x.sock", transport=httpx.MockTransport(recorder))
    with pytest.raises(ValidationError) as caught:
        client.patch_machine_config({"vcpu_count": 99})
    assert caught.value.field == "vcpu_count"
    with pytest.raises(ValidationError) as unknown:
        client.patch_machine_config({"vcpus": 2})
    assert unknown.value.field == "vcpus"
    assert "PATCH /machine-config" not in recorder.sent()


def test_patch_machine_config_sends_only_the_given_fields() -> None:
    recorder = Recorder("1.14.2")
    client = firec.Client("/x.sock", transport=httpx.MockTransport(recorder))
    client.patch_machine_config({"vcpu_count": 2})
    patch = recorder.requests[-1]
    assert patch.method == "PATCH"
    assert patch.content == b'{"vcpu_count":2}' or patch.content == b'{"vcpu_count": 2}'


# -- transport failures ----------------------------------------------------------


def test_missing_socket_is_a_clear_connect_error(short_tmp: Path) -> None:
    path = str(short_tmp / "absent.sock")
    with pytest.raises(ConnectError) as caught:
        firec.Client(path, version="1.14.2").get_instance_info()
    assert caught.value.socket_path == path
    assert "does not exist" in str(caught.value)


def test_stale_socket_is_connection_refused(short_tmp: Path) -> None:
    path = str(short_tmp / "stale.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.close()  # the file stays, nobody listens: a VMM that died uncleanly
    with pytest.raises(ConnectError) as caught:
        firec.Client(path, version="1.14.2").get_instance_info()
    assert "refused" in str(caught.value)


@pytest.fixture
def silent_server(short_tmp: Path) -> Iterator[str]:
    """A Unix socket that accepts connections and never answers."""
    path = str(short_tmp / "silent.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()


def test_silent_vmm_times_out_per_call(silent_server: str) -> None:
    client = firec.Client(silent_server, version="1.14.2", timeout=30)
    with pytest.raises(TimeoutError) as caught:
        client.get_instance_info(timeout=0.2)
    assert caught.value.socket_path == silent_server
    assert isinstance(caught.value, FirecError)


async def test_silent_vmm_times_out_per_client(silent_server: str) -> None:
    async with firec.AsyncClient(silent_server, version="1.14.2", timeout=0.2) as client:
        with pytest.raises(TimeoutError):
            await client.get_instance_info()


def test_connections_are_reused(short_tmp: Path) -> None:
    """Many calls, one connection: the client keeps it alive."""
    path = str(short_tmp / "counting.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(8)
    connections: list[int] = []
    body = b'{"id":"x","state":"Not started","vmm_version":"1.14.2","app_name":"Firecracker"}'
    reply = (
        b"HTTP/1.1 200 \r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )

    def serve() -> None:
        conn, _ = listener.accept()
        connections.append(1)
        with conn:
            buffer = b""
            while True:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                buffer += chunk
                while b"\r\n\r\n" in buffer:
                    _, buffer = buffer.split(b"\r\n\r\n", 1)
                    conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with firec.Client(path, version="1.14.2") as client:
        for _ in range(20):
            assert client.get_instance_info().vmm_version == "1.14.2"
    thread.join(timeout=5)
    listener.close()
    assert connections == [1]
    os.unlink(path)


# -- Firecracker 1.0-1.2.0's lost requests ---------------------------------------------------


BUSY_THEN_ASLEEP = """
import sys, time
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    pass
time.sleep(60)
"""


def _busy_vmm_thread(seconds: float) -> subprocess.Popen[str]:
    """A process whose main thread runs for ``seconds``, then sleeps: a VMM thread stand-in."""
    process = subprocess.Popen(
        [sys.executable, "-c", BUSY_THEN_ASLEEP, str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline() == "ready\n"
    return process


@pytest.mark.parametrize(
    ("version", "waits"),
    [("1.0.0", True), ("1.2.0", True), ("1.2.1", False), ("1.3.1", True), ("1.4.0", False)],
)
def test_booted_vm_requests_wait_for_the_vmm_thread_on_releases_that_lose_them(
    version: str, waits: bool
) -> None:
    """On 1.0-1.2.0 / 1.3.0-1.3.1 a request to a booted VM waits until the VMM thread sleeps."""
    recorder = Recorder(version)
    client = firec.Client("/x.sock", version=version, transport=httpx.MockTransport(recorder))
    vmm = _busy_vmm_thread(0.4)
    try:
        client.vmm_pid = vmm.pid
        started = time.monotonic()
        client.get_machine_config()
        elapsed = time.monotonic() - started
        assert (elapsed >= 0.3) is waits, elapsed
        started = time.monotonic()
        client.get_machine_config()  # asleep now: no wait at all
        assert time.monotonic() - started < 0.1
    finally:
        vmm.kill()
        vmm.wait()
        client.close()


def test_mmds_data_and_preboot_requests_do_not_wait() -> None:
    """The API thread answers MMDS data itself; before boot nothing can be lost."""
    recorder = Recorder("1.0.0")
    recorder.state = "Not started"
    client = firec.Client("/x.sock", version="1.0.0", transport=httpx.MockTransport(recorder))
    client.get_instance_info()  # "Not started": pre-boot from now on
    vmm = _busy_vmm_thread(5)
    try:
        client.vmm_pid = vmm.pid
        started = time.monotonic()
        client.put_mmds({"a": 1})
        client.get_mmds()
        client.put_machine_config({"vcpu_count": 1, "mem_size_mib": 64})
        client.get_machine_config()
        client.create_action("InstanceStart")
        assert time.monotonic() - started < 0.5
        started = time.monotonic()
        client.get_machine_config()  # booted: waits (for at most SETTLE_LIMIT, 1 s)
        assert time.monotonic() - started > 0.9
    finally:
        vmm.kill()
        vmm.wait()
        client.close()


async def test_async_client_waits_too_and_sends_one_at_a_time() -> None:
    recorder = Recorder("1.0.0")
    in_flight = 0
    most = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return recorder(request)

    vmm = _busy_vmm_thread(0.4)
    try:
        async with firec.AsyncClient(
            "/x.sock", version="1.0.0", transport=httpx.MockTransport(handler)
        ) as client:
            client.vmm_pid = vmm.pid
            started = time.monotonic()
            await asyncio.gather(*(client.get_machine_config() for _ in range(5)))
            assert time.monotonic() - started >= 0.3
            assert most == 1  # never two at once
            most = 0
            await asyncio.gather(*(client.get_mmds() for _ in range(5)))
            assert most > 1  # MMDS data is not the VMM thread's
    finally:
        vmm.kill()
        vmm.wait()


def test_requests_right_after_instance_start_are_answered(
    vmm_binary: Path, guest_kernel: Path, short_tmp: Path
) -> None:
    """The sequence that used to stop 1.0's API: back-to-back requests after boot.

    bench/stall_1_0.py runs it for thousands of boots.
    """
    binary = vmm_binary
    for _ in range(10):
        config = (
            firec.Config.builder(None, guest_kernel)
            .kernel_args("console=ttyS0")
            .firecracker_binary(binary)
            .workdir(short_tmp / "vms")
            .build()
        )
        with firec.Machine.create(config) as machine:
            machine.client.timeout = 5.0
            machine.start()
            for _ in range(4):
                assert machine.client.get_instance_info().state == models.InstanceState.RUNNING
                machine.client.get_machine_config()
                machine.client.patch_vm("Paused")
                machine.client.patch_vm("Resumed")
