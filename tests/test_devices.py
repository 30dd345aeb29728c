"""Every device through a Machine: configured before boot, updated after, refused when too new.

Each test boots firec's tiny test guest on the emulator and, with
``FIRECRACKER_BIN``, on real Firecracker (skipping, with the reason, the
devices that Firecracker version lacks). The guest has no virtio drivers, so
updates that need the guest's side of a device (balloon inflation, hinting,
memory plugging) reach Firecracker and are refused by it as "not activated";
the tests check exactly that answer. The version checks run against a
recorded transport (nothing is sent) and against the emulator playing older
releases.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import firec
from firec.api import models
from firec.api.versions import Version
from firec.errors import APIError, ConfigError, UnsupportedError
from firec.testing.guest import BOOT_LINE
from firec.vm.config import BootMethod, Builder, Config
from tests.support import binary_version, emulator_wrapper, guest_builder, in_jail


def require(binary: Path, minor: int, device: str) -> Version:
    """Skip unless ``binary`` is Firecracker 1.``minor`` or newer."""
    version = binary_version(binary)
    if version < Version(1, minor):
        pytest.skip(f"Firecracker {version} has no {device} (it came in 1.{minor})")
    return version


@pytest.fixture
def builder(vmm_binary: Path, guest_kernel: Path, short_tmp: Path) -> Builder:
    """A config builder for the parked test guest, firec's files under a temp dir."""
    return guest_builder(None, vmm_binary, guest_kernel, short_tmp).kernel_args("console=ttyS0")


@pytest.fixture
def tap_name() -> Iterator[str]:
    """A tap name nobody uses; Firecracker (as root) creates the tap and it goes with it."""
    name = f"fcdev{os.getpid() % 100000}"
    yield name
    assert not Path(f"/sys/class/net/{name}").exists(), f"tap {name} outlived the VM"


def _boots(machine: firec.Machine) -> None:
    machine.start()
    assert machine.state() is firec.MachineState.RUNNING


def _not_activated(exc: APIError) -> bool:
    """Firecracker's answer when the guest has no driver for the device (all versions)."""
    return re.search(r"(?i)not ?activ|inactive", exc.fault_message) is not None


RATE = models.RateLimiter(
    bandwidth=models.TokenBucket(size=1_000_000, refill_time=100),
    ops=models.TokenBucket(size=100, refill_time=1000, one_time_burst=10),
)


# -- balloon ---------------------------------------------------------------------------


def test_balloon_config_statistics_and_updates(builder: Builder, vmm_binary: Path) -> None:
    version = binary_version(vmm_binary)
    hinting = version >= Version(1, 14)
    balloon = models.Balloon(
        amount_mib=8,
        deflate_on_oom=True,
        stats_polling_interval_s=1,
        free_page_hinting=True if hinting else None,
    )
    with firec.Machine.create(builder.build().replace(balloon=balloon)) as machine:
        _boots(machine)
        client = machine.client
        assert client.get_balloon().amount_mib == 8
        stats = client.get_balloon_stats()
        assert (stats.target_mib, stats.target_pages, stats.actual_mib) == (8, 8 * 256, 0)
        with pytest.raises(APIError) as caught:
            client.patch_balloon(models.BalloonUpdate(amount_mib=16))
        assert _not_activated(caught.value), caught.value
        if version >= Version(1, 14):
            # 1.0.0 and 1.4.0 panic on this with a guest that has no balloon driver
            client.patch_balloon_stats(models.BalloonStatsUpdate(stats_polling_interval_s=5))
            assert client.get_balloon().stats_polling_interval_s == 5
            with pytest.raises(APIError, match="cannot be enabled/disabled"):
                client.patch_balloon_stats(models.BalloonStatsUpdate(stats_polling_interval_s=0))
        if hinting:
            status = client.get_balloon_hinting()
            assert (status.host_cmd, status.guest_cmd) == (0, None)
            calls: list[Callable[[], None]] = [
                lambda: client.start_balloon_hinting(
                    models.BalloonStartCmd(acknowledge_on_stop=True)
                ),
                client.stop_balloon_hinting,
            ]
            for call in calls:
                with pytest.raises(APIError) as refused:
                    call()
                assert _not_activated(refused.value), refused.value
        assert machine.state() is firec.MachineState.RUNNING


def test_balloon_without_statistics_says_so(builder: Builder, vmm_binary: Path) -> None:
    with firec.Machine.create(builder.balloon(4).build()) as machine:
        _boots(machine)
        with pytest.raises(APIError, match=r"[Ss]tat"):
            machine.client.get_balloon_stats()


# -- MMDS ------------------------------------------------------------------------------


@pytest.mark.parametrize("mmds_version", ["V1", "V2"])
def test_mmds_config_and_data(
    builder: Builder, vmm_binary: Path, tap_name: str, mmds_version: str
) -> None:
    version = binary_version(vmm_binary)
    imds = True if mmds_version == "V2" and version >= Version(1, 13) else None
    data = {"latest": {"meta-data": {"instance-id": "i-1"}}}
    iface = models.NetworkInterface(iface_id="eth0", host_dev_name=tap_name)
    config = (
        builder.add_network_interface(iface)
        .mmds(data, version=mmds_version, network_interfaces=["eth0"], imds_compat=imds)
        .build()
    )
    with firec.Machine.create(config) as machine:
        _boots(machine)
        client = machine.client
        assert client.get_mmds() == data
        exported = client.get_vm_config().mmds_config
        assert exported is not None
        assert exported.version == models.MmdsVersion(mmds_version)
        assert exported.network_interfaces == ["eth0"]
        if imds:
            assert exported.imds_compat is True
        client.patch_mmds({"latest": {"meta-data": {"hostname": "vm1", "instance-id": None}}})
        assert client.get_mmds() == {"latest": {"meta-data": {"hostname": "vm1"}}}
        client.put_mmds({"fresh": [1, 2]})
        assert client.get_mmds() == {"fresh": [1, 2]}
        with pytest.raises(APIError, match="not supported after starting"):
            client.put_mmds_config(config.mmds_config)  # type: ignore[arg-type]


# -- entropy, serial, pmem, memory hotplug ---------------------------------------------


def test_entropy_with_rate_limiter(builder: Builder, vmm_binary: Path) -> None:
    require(vmm_binary, 4, "entropy device")
    with firec.Machine.create(builder.entropy(RATE).build()) as machine:
        _boots(machine)
        exported = machine.client.get_vm_config().entropy
        assert exported is not None and exported.rate_limiter is not None
        assert exported.rate_limiter.bandwidth == RATE.bandwidth
        assert exported.rate_limiter.ops == RATE.ops
        with pytest.raises(APIError, match="not supported after starting"):
            machine.client.put_entropy(models.EntropyDevice())


def test_serial_output_path(builder: Builder, vmm_binary: Path, short_tmp: Path) -> None:
    require(vmm_binary, 14, "serial device")
    serial = short_tmp / "serial.out"
    with firec.Machine.create(builder.serial(serial).build()) as machine:
        _boots(machine)
        deadline = time.monotonic() + 10  # the guest prints asynchronously
        while not (serial.exists() and BOOT_LINE in serial.read_text()):
            assert time.monotonic() < deadline, "the boot line never reached the serial file"
            time.sleep(0.01)
        console = machine.console_path
        assert console is not None
        assert BOOT_LINE not in console.read_text()  # it went to the serial file instead


def test_pmem_device(builder: Builder, vmm_binary: Path, short_tmp: Path) -> None:
    require(vmm_binary, 14, "pmem devices")
    backing = short_tmp / "pmem.img"
    backing.write_bytes(b"\0" * (2 << 20))
    pmem = models.Pmem(id="pm0", path_on_host=str(backing), read_only=True)
    with firec.Machine.create(builder.add_pmem(pmem).build()) as machine:
        _boots(machine)
        exported = machine.client.get_vm_config().pmem
        assert exported is not None
        assert [(p.id, p.path_on_host, p.read_only) for p in exported] == [
            ("pm0", str(backing), True)
        ]


def test_memory_hotplug(builder: Builder, vmm_binary: Path) -> None:
    require(vmm_binary, 14, "memory hotplug")
    hotplug = models.MemoryHotplugConfig(total_size_mib=256)
    with firec.Machine.create(builder.memory_hotplug(hotplug).build()) as machine:
        _boots(machine)
        status = machine.client.get_memory_hotplug()
        assert (status.total_size_mib, status.slot_size_mib, status.block_size_mib) == (256, 128, 2)
        assert status.plugged_size_mib == 0
        with pytest.raises(APIError, match="not active"):
            machine.client.patch_memory_hotplug(
                models.MemoryHotplugSizeUpdate(requested_size_mib=128)
            )


def test_memory_hotplug_in_a_config_file_boot(builder: Builder, vmm_binary: Path) -> None:
    require(vmm_binary, 14, "memory hotplug")
    hotplug = models.MemoryHotplugConfig(total_size_mib=256)
    config = builder.memory_hotplug(hotplug).boot_method(BootMethod.CONFIG_FILE).build()
    with firec.Machine.create(config) as machine:
        machine.start()
        assert machine.client.get_memory_hotplug().total_size_mib == 256


# -- drives and network interfaces: rate limiters and hot swaps -------------------------


def test_drive_rate_limiter_and_backing_file_swap(
    builder: Builder, vmm_binary: Path, short_tmp: Path
) -> None:
    first, second = short_tmp / "first.img", short_tmp / "second.img"
    first.write_bytes(b"\0" * (1 << 20))
    second.write_bytes(b"\1" * (1 << 20))
    config = builder.add_drive("data", first).rate_limiter(RATE).build().build()
    with firec.Machine.create(config) as machine:
        _boots(machine)

        def drive() -> models.Drive:
            return next(d for d in machine.client.get_vm_config().drives or [])

        assert drive().rate_limiter == RATE
        machine.update_drive("data", path=second)
        assert drive().path_on_host == str(second)
        limit = models.RateLimiter(ops=models.TokenBucket(size=0, refill_time=10))
        machine.update_drive("data", rate_limiter=limit)
        assert drive().rate_limiter == models.RateLimiter(bandwidth=RATE.bandwidth)
        with pytest.raises(ConfigError) as missing:
            machine.update_drive("data", path=short_tmp / "nowhere.img")
        assert missing.value.field == "drives.data.path_on_host"
        assert drive().path_on_host == str(second)
        with pytest.raises(APIError):
            machine.update_drive("nope", path=first)


def test_network_interface_rate_limiters_and_their_patch(
    builder: Builder, vmm_binary: Path, tap_name: str
) -> None:
    iface = models.NetworkInterface(iface_id="eth0", host_dev_name=tap_name, rx_rate_limiter=RATE)
    with firec.Machine.create(builder.add_network_interface(iface).build()) as machine:
        _boots(machine)
        tx = models.RateLimiter(ops=models.TokenBucket(size=3, refill_time=30))
        machine.client.patch_network_interface(
            models.PartialNetworkInterface(iface_id="eth0", tx_rate_limiter=tx)
        )
        exported = (machine.client.get_vm_config().network_interfaces or [])[0]
        assert exported.rx_rate_limiter == RATE
        assert exported.tx_rate_limiter == tx
        with pytest.raises(APIError, match=r"be found|not found|find the device"):
            machine.client.patch_network_interface(
                models.PartialNetworkInterface(iface_id="nope", tx_rate_limiter=tx)
            )


# -- refused, before sending, by versions that lack them --------------------------------


class Recorder:
    """An httpx mock transport playing one Firecracker version, recording what is sent."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.sent: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(f"{request.method} {request.url.path}")
        if request.url.path == "/version":
            return httpx.Response(200, json={"firecracker_version": self.version})
        return httpx.Response(204)


Call = Callable[[firec.Client], Any]

TOO_NEW: list[tuple[str, str, str, Call]] = [
    ("entropy", "1.3.0", "1.4", lambda c: c.put_entropy(models.EntropyDevice(rate_limiter=RATE))),
    (
        "serial",
        "1.13.0",
        "1.14",
        lambda c: c.put_serial(models.SerialDevice(serial_out_path="/tmp/s")),
    ),
    (
        "serial rate limit",
        "1.15.0",
        "1.16",
        lambda c: c.put_serial(
            models.SerialDevice(rate_limiter=models.TokenBucket(size=1, refill_time=1))
        ),
    ),
    ("pmem", "1.13.0", "1.14", lambda c: c.put_pmem(models.Pmem(id="p", path_on_host="/x"))),
    (
        "pmem update",
        "1.15.0",
        "1.16",
        lambda c: c.patch_pmem(models.PartialPmem(id="p", rate_limiter=RATE)),
    ),
    (
        "memory hotplug",
        "1.13.0",
        "1.14",
        lambda c: c.put_memory_hotplug(models.MemoryHotplugConfig(total_size_mib=256)),
    ),
    (
        "memory hotplug resize",
        "1.13.0",
        "1.14",
        lambda c: c.patch_memory_hotplug(models.MemoryHotplugSizeUpdate(requested_size_mib=1)),
    ),
    (
        "balloon free page hinting",
        "1.13.0",
        "1.14",
        lambda c: c.put_balloon(
            models.Balloon(amount_mib=1, deflate_on_oom=False, free_page_hinting=True)
        ),
    ),
    ("balloon hinting start", "1.13.0", "1.14", lambda c: c.start_balloon_hinting()),
    ("balloon hinting status", "1.13.0", "1.14", lambda c: c.get_balloon_hinting()),
    (
        "mmds imds_compat",
        "1.12.0",
        "1.13",
        lambda c: c.put_mmds_config(
            models.MmdsConfig(version="V2", network_interfaces=["eth0"], imds_compat=True)
        ),
    ),
]


@pytest.mark.parametrize(
    ("lacking", "introduced", "call"),
    [pytest.param(v, i, c, id=name) for name, v, i, c in TOO_NEW],
)
def test_device_refused_before_sending(lacking: str, introduced: str, call: Call) -> None:
    recorder = Recorder(lacking)
    client = firec.Client("/nowhere.sock", transport=httpx.MockTransport(recorder))
    with client, pytest.raises(UnsupportedError) as caught:
        call(client)
    assert caught.value.introduced == introduced
    assert caught.value.connected.startswith(lacking)
    assert recorder.sent == ["GET /version"]  # asked the version, sent nothing else


@pytest.mark.parametrize(
    ("version", "call"),
    [pytest.param(i + ".0", c, id=name) for name, _, i, c in TOO_NEW],
)
def test_device_sent_to_versions_that_have_it(version: str, call: Call) -> None:
    recorder = Recorder(version)
    with firec.Client("/nowhere.sock", transport=httpx.MockTransport(recorder)) as client:
        call(client)
    assert len(recorder.sent) == 2 and recorder.sent[0] == "GET /version"


MACHINE_TOO_NEW: list[tuple[str, str, Callable[[Builder, Path], Builder | Config]]] = [
    ("entropy", "1.3", lambda b, d: b.entropy()),
    ("serial", "1.13", lambda b, d: b.serial(d / "serial.out")),
    (
        "memory hotplug",
        "1.13",
        lambda b, d: b.memory_hotplug(models.MemoryHotplugConfig(total_size_mib=1024)),
    ),
    (
        "balloon hinting",
        "1.13",
        lambda b, d: (
            b.balloon(4)
            .build()
            .replace(
                balloon=models.Balloon(amount_mib=4, deflate_on_oom=False, free_page_hinting=True)
            )
        ),
    ),
]


@pytest.mark.parametrize(
    ("version", "configure"), [pytest.param(v, f, id=n) for n, v, f in MACHINE_TOO_NEW]
)
def test_machine_start_refuses_a_device_the_vmm_lacks(
    version: str,
    configure: Callable[[Builder, Path], Builder | Config],
    guest_kernel: Path,
    short_tmp: Path,
) -> None:
    built = configure(
        Config.builder(None, guest_kernel)
        .firecracker_binary(emulator_wrapper(short_tmp, version))
        .workdir(short_tmp / "vms"),
        short_tmp,
    )
    config = built if isinstance(built, Config) else built.build()
    machine = firec.Machine.create(config)
    try:
        with pytest.raises(UnsupportedError) as caught:
            machine.start()
        assert caught.value.connected.startswith(version)
        assert machine.exit_status is not None, "the VMM was left running"
    finally:
        machine.delete()
    assert not machine.launch.vm_dir.exists()
    assert not machine.socket_path.exists()


# -- in a jail ---------------------------------------------------------------------------


def test_jailed_drive_swap_brings_the_new_file_into_the_jail(
    jailer_binary: Path, vmm_binary: Path, guest_kernel: Path, short_tmp: Path
) -> None:
    first, second = short_tmp / "first.img", short_tmp / "second.img"
    first.write_bytes(b"\0" * 4096)
    second.write_bytes(b"\1" * 4096)
    for disk in (first, second):  # writable drives: the jail's user must own them
        os.chown(disk, 1234, 1235)
    builder = (
        Config.builder("drive-swap", guest_kernel)
        .kernel_args("console=ttyS0")
        .workdir(short_tmp / "vms")
        .add_drive("data", first)
        .build()
    )
    config = in_jail(builder, jailer_binary, vmm_binary, short_tmp).build().build()
    jail = config.jail
    assert jail is not None
    with firec.Machine.create(config) as machine:
        _boots(machine)
        machine.update_drive("data", path=second)
        inside = jail.root / "second.img"
        assert inside.samefile(second)  # hard-linked, not copied
        assert (inside.stat().st_uid, inside.stat().st_gid) == (1234, 1235)
        theirs = short_tmp / "theirs.img"  # root's, 0644: the jail's user may not write it
        theirs.write_bytes(b"\2" * 4096)
        with pytest.raises(ConfigError, match=r"chown 1234:1235 .*theirs\.img"):
            machine.update_drive("data", path=theirs)
        assert not (jail.root / "theirs.img").exists()
        assert (theirs.stat().st_uid, stat.S_IMODE(theirs.stat().st_mode)) == (0, 0o644)
        drives = machine.client.get_vm_config().drives or []
        assert [d.path_on_host for d in drives] == ["/second.img"]
    assert not jail.base.exists()
