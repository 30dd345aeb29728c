"""Faults: two controllers racing for one id, controllers killed mid-create, a full disk.

Each test runs its controllers as real processes (``tests/fault_child.py``),
on the emulator and, where ``FIRECRACKER_BIN`` (and ``JAILER_BIN``) name
them, on real Firecracker; after each one a census (``tests/census.py``)
checks the host for anything left: processes, files, jails, cgroups, links,
namespaces, nft chains, leases and records.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import firec
from firec import _statedirs
from firec.errors import InUseError, StateError
from firec.host.registry import Registry
from tests import census
from tests.support import jailer_wrapper, require_jailer

ROOT = Path(__file__).resolve().parent.parent
#: ids, namespaces, taps and routes are host-wide: each run of the suite takes its own
RUN = secrets.token_hex(2)
ROUTED_SUBNET = f"172.31.{200 + secrets.randbelow(50)}.0/24"


def vm(name: str) -> str:
    """A VM id of this run of the suite (another run on the same host has other ids)."""
    return f"{name}-{RUN}"


@dataclass
class World:
    """One private host state for a test: its registry, workdir, jails."""

    backend: str
    binary: Path
    kernel: Path
    root: Path
    jailer: Path | None = None

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def workdir(self) -> Path:
        return self.root / "run"

    @property
    def registry(self) -> Registry:
        return Registry(self.state_dir)

    @property
    def chroot_base(self) -> Path:
        return self.root / "jail"

    @property
    def env(self) -> dict[str, str]:
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        return {**os.environ, "FIREC_STATE_DIR": str(self.state_dir), "PYTHONPATH": path}

    def spec(self, vm_id: str, **extra: Any) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "vm_id": vm_id,
            "kernel": str(self.kernel),
            "binary": str(self.binary),
            "workdir": str(self.workdir),
            "state_dir": str(self.state_dir),
            **extra,
        }
        if self.jailer is not None:
            spec["jailer"] = {"binary": str(self.jailer), "chroot_base": str(self.chroot_base)}
        return spec

    def config(self, vm_id: str, **extra: Any) -> firec.Config:
        from tests.fault_child import config_of

        return config_of(self.spec(vm_id, **extra))

    def controller(self, vm_id: str, **extra: Any) -> subprocess.Popen[str]:
        """A controller process for ``vm_id`` (see tests/fault_child.py)."""
        return subprocess.Popen(
            [sys.executable, "-m", "tests.fault_child", json.dumps(self.spec(vm_id, **extra))],
            env=self.env,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def firec(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "firec.cli", *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def leftovers(self, *vm_ids: str) -> list[str]:
        return census.leftovers(
            vm_ids,
            state_dir=self.state_dir,
            workdir=self.workdir,
            chroot_base=self.chroot_base,
        )


@pytest.fixture(params=["plain", "jailed"])
def world(
    request: pytest.FixtureRequest,
    backend: str,
    vmm_binary: Path,
    guest_kernel: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[World]:
    root = Path(f"/tmp/ff-{os.getpid()}-{time.monotonic_ns() % 10**8}")
    root.mkdir()
    monkeypatch.setenv("FIREC_STATE_DIR", str(root / "state"))  # this process's machines too
    jailer = None
    if request.param == "jailed":
        jailer = require_jailer() if backend == "firecracker" else jailer_wrapper(root)
    world = World(backend, vmm_binary, guest_kernel, root, jailer)
    try:
        yield world
    finally:
        world.firec("gc")
        shutil.rmtree(root, ignore_errors=True)


def wait_ready(controller: subprocess.Popen[str]) -> None:
    assert controller.stdout is not None
    line = controller.stdout.readline()
    if not line.startswith("ready"):
        controller.kill()
        _, err = controller.communicate(timeout=30)
        pytest.fail(f"the controller did not start its VM: {line!r} {err}")


def release(controller: subprocess.Popen[str]) -> None:
    """Let a holding controller delete its VM and exit."""
    _, err = controller.communicate(input="", timeout=60)
    assert controller.returncode == 0, err


# -- one id, two controllers -------------------------------------------------------------------


def test_a_second_machine_with_a_running_vms_id_is_refused_and_harms_nothing(
    world: World,
) -> None:
    holder = world.controller(vm("vm-a"))
    try:
        wait_ready(holder)
        record = Registry(world.state_dir).load(vm("vm-a"))
        assert record is not None and record.socket is not None
        socket, vm_dir = Path(record.socket), Path(record.vm_dir or "")
        before = sorted(p.name for p in vm_dir.iterdir())
        with pytest.raises(InUseError, match=rf"'{vm('vm-a')}' is in use: its VMM runs \(pid \d+"):
            firec.Machine.create(world.config(vm("vm-a")))
        # the first VM is untouched: socket, files, record, state
        assert socket.is_socket()
        assert sorted(p.name for p in vm_dir.iterdir()) == before
        assert Registry(world.state_dir).load(vm("vm-a")) == record
        with firec.Client(socket, timeout=5) as client:
            assert client.get_instance_info().state.value == "Running"
        # the command line says so, with its documented code, and harms nothing either
        result = world.firec(
            *("run", "--id", vm("vm-a"), "--test-guest", "-d"),
            *("--firecracker-bin", str(world.binary), "--workdir", str(world.workdir)),
        )
        assert result.returncode == 5, result
        assert f"'{vm('vm-a')}' is in use" in result.stderr
        assert socket.is_socket()
        with firec.Client(socket, timeout=5) as client:
            assert client.get_instance_info().state.value == "Running"
    finally:
        release(holder)
    assert world.leftovers(vm("vm-a")) == []


def test_an_id_is_claimed_in_the_same_process_too(world: World) -> None:
    with firec.Machine.create(world.config(vm("vm-b"))) as first:
        first.start()
        with pytest.raises(InUseError, match=f"'{vm('vm-b')}' is in use"):
            firec.Machine.create(world.config(vm("vm-b")))
        assert first.state() is firec.MachineState.RUNNING
        assert first.socket_path.is_socket()
    assert world.leftovers(vm("vm-b")) == []
    # once it is gone the id is free again
    with firec.Machine.create(world.config(vm("vm-b"))) as again:
        again.start()
    assert world.leftovers(vm("vm-b")) == []


def test_two_controllers_racing_for_one_id_leave_one_vm(world: World) -> None:
    controllers = [world.controller(vm("vm-r")) for _ in range(2)]
    outcomes = []
    for controller in controllers:
        assert controller.stdout is not None
        outcomes.append(controller.stdout.readline())
    winners = [c for c, line in zip(controllers, outcomes, strict=True) if line.startswith("ready")]
    assert len(winners) == 1, outcomes
    loser = next(c for c in controllers if c not in winners)
    _, err = loser.communicate(timeout=30)
    assert loser.returncode != 0 and "InUseError" in err and f"'{vm('vm-r')}' is in use" in err
    record = Registry(world.state_dir).load(vm("vm-r"))
    assert record is not None and record.socket is not None
    with firec.Client(record.socket, timeout=5) as client:
        assert client.get_instance_info().state.value == "Running"
    release(winners[0])
    assert world.leftovers(vm("vm-r")) == []


def test_an_sdk_vm_is_listed_and_a_dead_records_id_is_free_again(world: World) -> None:
    holder = world.controller(vm("vm-l"))
    wait_ready(holder)
    listed = json.loads(world.firec("ls", "--json").stdout)
    assert [(v["id"], v["state"], v["mode"]) for v in listed] == [
        (vm("vm-l"), "running", "foreground")
    ]
    holder.kill()  # its program dies: its VMM runs on, orphaned
    holder.communicate(timeout=30)
    listed = json.loads(world.firec("ls", "--json").stdout)
    assert [(v["id"], v["mode"]) for v in listed] == [(vm("vm-l"), "orphaned")]
    # the orphan still holds its id ...
    with pytest.raises(InUseError, match="its VMM runs"):
        firec.Machine.create(world.config(vm("vm-l")))
    # ... until gc reaps it
    result = world.firec("gc")
    assert result.returncode == 0, result
    assert world.leftovers(vm("vm-l")) == []


def test_sdk_vms_can_opt_out_of_the_host_record(world: World) -> None:
    with firec.Machine.create(world.config(vm("vm-o")).replace(host_record=False)) as machine:
        machine.start()
        assert Registry(world.state_dir).records() == []
        # the API socket still guards the id
        with pytest.raises(InUseError, match="already answers on its API socket"):
            firec.Machine.create(world.config(vm("vm-o")))
        assert machine.state() is firec.MachineState.RUNNING
    assert world.leftovers(vm("vm-o")) == []


# -- a controller killed at each step of create, then gc -----------------------------------------

PLAIN_STEPS = ["claim", "spawn", "recorded", "start"]


@pytest.mark.parametrize("step", PLAIN_STEPS)
def test_a_controller_killed_mid_create_leaves_nothing_after_gc(world: World, step: str) -> None:
    vm_id = vm(f"vm-k-{step}")
    controller = world.controller(vm_id, kill_after=step)
    _, err = controller.communicate(timeout=60)
    assert controller.returncode == -9, err  # it died where it was told to
    result = world.firec("gc")
    assert result.returncode == 0, result
    assert world.leftovers(vm_id) == []
    # and the id is free again
    with firec.Machine.create(world.config(vm_id)) as machine:
        machine.start()
    assert world.leftovers(vm_id) == []


def _require_network() -> None:
    if os.geteuid() != 0:
        pytest.skip("routed networking needs root")
    if shutil.which("nft") is None:
        pytest.skip("routed networking needs nft (apt-get install nftables)")


@pytest.mark.parametrize("step", ["claim", "netns", "tap", "nft", "spawn", "recorded", "start"])
def test_a_routed_controller_killed_mid_create_leaves_nothing_after_gc(
    world: World, step: str
) -> None:
    _require_network()
    vm_id = vm(f"vm-n-{step}")
    controller = world.controller(vm_id, kill_after=step, routed=ROUTED_SUBNET)
    _, err = controller.communicate(timeout=60)
    assert controller.returncode == -9, err
    result = world.firec("gc")
    assert result.returncode == 0, result
    assert world.leftovers(vm_id) == []


def test_gc_leaves_the_network_of_a_live_program_alone(world: World) -> None:
    """A VM without a host record whose network lives in the registry's folder (defect 5)."""
    _require_network()
    config = world.config(vm("vm-g"), routed=ROUTED_SUBNET).replace(host_record=False)
    with firec.Machine.create(config) as machine:
        machine.start()
        netns = machine.config.net_ns
        assert netns is not None and Path("/var/run/netns", netns).exists()
        result = world.firec("gc")
        assert result.returncode == 0, result
        assert Path("/var/run/netns", netns).exists()
        assert (world.state_dir / "network" / "networks" / f"{vm('vm-g')}.json").exists()
        assert machine.state() is firec.MachineState.RUNNING
    assert world.leftovers(vm("vm-g")) == []


def test_gc_removes_an_orphan_network_where_the_sdk_keeps_it(world: World) -> None:
    """A program without a host record killed after its network was set up (default state dir)."""
    _require_network()
    vm_id = vm("vm-sdk")
    controller = world.controller(
        vm_id, kill_after="nft", routed=ROUTED_SUBNET, host_record=False, sdk_network_state=True
    )
    _, err = controller.communicate(timeout=60)
    assert controller.returncode == -9, err
    network_state = _statedirs.network_dir()  # /var/lib/firec for root
    assert (network_state / "networks" / f"{vm_id}.json").exists()
    assert world.registry.records() == []  # an orphan: no VM record names it
    result = world.firec("gc", "--json")
    assert result.returncode == 0, result
    assert {
        "id": vm_id,
        "reason": "a network without a microVM",
        "done": ["tore its network down"],
    } in json.loads(result.stdout)
    assert census.leftovers([vm_id], state_dir=world.state_dir, network_state=network_state) == []


# -- a full disk -----------------------------------------------------------------------------------


@pytest.fixture
def full_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on a tiny tmpfs (fill it with :func:`fill`)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "full"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(mount: Path) -> Path:
    """Fill the filesystem at ``mount`` to the last byte; the file that does it."""
    filler = mount / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        while True:
            os.write(fd, b"x" * 1024)
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


@pytest.mark.parametrize("backend", ["emulator"], indirect=True)
def test_a_full_state_directory_is_said_and_leaves_nothing(world: World, full_dir: Path) -> None:
    registry = Registry(full_dir / "state")
    registry.vms_dir.mkdir(parents=True)
    filler = fill(full_dir)
    with pytest.raises(StateError, match=rf"vms/{vm('vm-f')}\.json.*No space left on device"):
        firec.Machine.create(world.config(vm("vm-f")), registry=registry)
    assert list(registry.vms_dir.iterdir()) == []
    assert world.leftovers(vm("vm-f")) == []
    # with room again, the same id works
    filler.unlink()
    with firec.Machine.create(world.config(vm("vm-f")), registry=registry) as machine:
        machine.start()
    assert registry.records() == []
    assert world.leftovers(vm("vm-f")) == []


@pytest.mark.parametrize("backend", ["emulator"], indirect=True)
def test_a_full_network_state_directory_is_said_and_does_not_poison_the_id(
    world: World, full_dir: Path
) -> None:
    _require_network()
    state = full_dir / "net"
    (state / "networks").mkdir(parents=True)
    (state / "leases").mkdir(parents=True)
    filler = fill(full_dir)
    config = world.config(vm("vm-s"), routed=ROUTED_SUBNET).replace(state_dir=state)
    with pytest.raises(StateError, match=r"No space left on device") as raised:
        firec.Machine.create(config)
    assert str(state) in str(raised.value)
    assert list((state / "networks").iterdir()) == []
    assert census.leftovers([vm("vm-s")], state_dir=world.state_dir, network_state=state) == []
    filler.unlink()
    with firec.Machine.create(config) as machine:  # no "already set up": the id is clean
        machine.start()
    assert census.leftovers([vm("vm-s")], state_dir=world.state_dir, network_state=state) == []
