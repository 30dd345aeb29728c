"""firec's jailer emulator, side by side with the real jailer.

Every test runs on the emulator (``[emulator]``: :mod:`firec.testing.jailer`
with firec's Firecracker emulator as the exec file) and, when ``JAILER_BIN``
and ``FIRECRACKER_BIN`` name a real jailer and Firecracker (v1.0.0),
on those (``[real]``): both must refuse the same command lines with the same
messages, build the same jail and cgroups, and run the VMM the same way.
Every test removes what the jailer leaves (it cleans up nothing itself).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from firec.testing.binaries import emulator_binary, jailer_emulator_binary
from firec.testing.guest import BOOT_LINE, echo_line, guest_args
from firec.testing.jailer import formatted_help
from firec.vm.jailer import remove_cgroups
from tests import host_tools

UID, GID = 1234, 1235
CGROUP_V1 = Path("/sys/fs/cgroup")
NOTE = "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the jailer needs root")


def panic(message: str, where: str = "src/jailer/src/main.rs:435:27") -> str:
    """What the jailer prints on stderr when it panics with ``message``."""
    return f"thread 'main' panicked at '{message}', {where}\n{NOTE}"


def jailer_error(message: str) -> str:
    return panic(f"Jailer error: {message}")


def unwrap(error: str, path: str, code: int, kind: str, where: str) -> str:
    debug = f'Os {{ code: {code}, kind: {kind}, message: "{os.strerror(code)}" }}'
    return panic(f'called `Result::unwrap()` on an `Err` value: {error}("{path}", {debug})', where)


def arg_error(message: str) -> str:
    """What the jailer prints on stdout for a command line it cannot parse."""
    return f"Arguments parsing error: {message} \n\nFor more information try --help.\n"


@dataclass
class Running:
    """A VMM the jailer started, and where it lives."""

    jailer: subprocess.Popen[bytes]
    pid: int
    root: Path
    stdout: Path
    stopped: bool = False

    @property
    def socket(self) -> Path:
        return self.root / "run" / "firecracker.socket"

    def api(self) -> httpx.Client:
        return httpx.Client(
            transport=httpx.HTTPTransport(uds=str(self.socket)), base_url="http://localhost"
        )

    def status(self) -> dict[str, str]:
        lines = Path(f"/proc/{self.pid}/status").read_text().splitlines()
        return dict(line.split(":\t", 1) for line in lines if ":\t" in line)

    def output(self, want: str) -> str:
        """The VMM's stdout once ``want`` is in it (or after 10 s)."""
        deadline = time.monotonic() + 10
        while want not in (text := self.stdout.read_text()) and time.monotonic() < deadline:
            time.sleep(0.01)
        return text


@dataclass
class Jailer:
    """One backend: a jailer command and the Firecracker it jails, with a jail base dir."""

    backend: str
    command: list[str]
    exec_file: Path
    base: Path
    workdir: Path
    used: list[tuple[str, str]] = field(default_factory=list)  # (cgroup parent, vm id)
    running: list[Running] = field(default_factory=list)

    @property
    def exec_name(self) -> str:
        return self.exec_file.name

    def root(self, vm_id: str) -> Path:
        return self.base / self.exec_name / vm_id / "root"

    def argv(self, vm_id: str, *flags: str, exec_file: Path | None = None) -> list[str]:
        """The jailer command line; ``flags`` may replace ``--id``, ``--uid``... too."""
        exec_file = exec_file or self.exec_file
        values = {
            "--id": vm_id,
            "--exec-file": str(exec_file),
            "--uid": str(UID),
            "--gid": str(GID),
            "--chroot-base-dir": str(self.base),
        }
        rest = list(flags)
        for flag in values:
            if flag in rest:
                i = rest.index(flag)
                values[flag] = rest[i + 1]
                del rest[i : i + 2]
        parent = rest[rest.index("--parent-cgroup") + 1] if "--parent-cgroup" in rest else None
        self.used.append((parent or exec_file.name, vm_id))
        return [*self.command, *(word for pair in values.items() for word in pair), *rest]

    def run(self, args: list[str], **popen: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # type: ignore[call-overload, no-any-return]
            args, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30, **popen
        )

    def start(
        self, vm_id: str, *flags: str, fc_args: tuple[str, ...] = (), **popen: object
    ) -> Running:
        """Run the jailer; return once the VMM's API socket answers."""
        stdout = self.workdir / f"{vm_id}.stdout"
        stderr = self.workdir / f"{vm_id}.stderr"
        with open(stdout, "wb") as out, open(stderr, "wb") as err:
            jailer = subprocess.Popen(  # type: ignore[call-overload]
                [*self.argv(vm_id, *flags), "--", *fc_args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                **popen,
            )
        assert isinstance(jailer, subprocess.Popen)
        root = self.root(vm_id)
        pid = jailer.pid
        if "--new-pid-ns" in flags:
            assert jailer.wait(timeout=10) == 0, stderr.read_text()
            pid = int((root / f"{self.exec_name}.pid").read_text())
        running = Running(jailer, pid, root, stdout)
        self.running.append(running)
        deadline = time.monotonic() + 10
        while not _answers(running.socket):
            alive = Path(f"/proc/{pid}").exists() and not _zombie(pid)
            if not alive or time.monotonic() > deadline:
                pytest.fail(f"the jailed VMM did not come up: {stderr.read_text()}")
            time.sleep(0.01)
        return running

    def stop(self, running: Running) -> None:
        """Kill the VMM and wait until it is gone."""
        if running.stopped:
            return
        running.stopped = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(running.pid, signal.SIGKILL)
        if running.jailer.pid == running.pid:
            running.jailer.wait(timeout=10)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{running.pid}").exists() and not _zombie(running.pid):
            assert time.monotonic() < deadline, f"process {running.pid} survived SIGKILL"
            time.sleep(0.01)

    def cleanup(self) -> None:
        for running in self.running:
            self.stop(running)
            if running.jailer.poll() is None:
                running.jailer.kill()
                running.jailer.wait(timeout=10)
        shutil.rmtree(self.base, ignore_errors=True)
        # firec's own removal: it waits while a cgroup is busy (a VMM killed as pid 1 of its
        # PID namespace is in it until reaped), then removes the parent if no VM uses it
        remove_cgroups(
            controller / parent / vm_id
            for parent, vm_id in self.used
            for controller in CGROUP_V1.iterdir()
        )
        assert not _left_behind(self), "cgroups left behind"


def _left_behind(jailer: Jailer) -> list[Path]:
    return [
        controller / parent / vm_id
        for parent, vm_id in jailer.used
        for controller in CGROUP_V1.iterdir()
        if (controller / parent / vm_id).exists()
    ]


def _cgroup2_controllers() -> list[str]:
    """The controllers of the (first) cgroup2 mount: ``--cgroup-version 2`` uses it."""
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] == "cgroup2":
            return (Path(fields[1]) / "cgroup.controllers").read_text().split()
    return []


def _answers(socket_path: Path) -> bool:
    if not socket_path.exists():
        return False
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path))) as client:
            return client.get("http://localhost/", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, IndexError):
        return True


@pytest.fixture(params=["emulator", "real"])
def jailer(request: pytest.FixtureRequest, short_tmp: Path) -> Iterator[Jailer]:
    """A jailer backend with an empty jail base directory; everything removed after."""
    if request.param == "emulator":
        command, exec_file = [str(jailer_emulator_binary())], emulator_binary()
    else:
        real_jailer, real_fc = os.environ.get("JAILER_BIN"), os.environ.get("FIRECRACKER_BIN")
        if not real_jailer or not real_fc:
            pytest.skip("JAILER_BIN and FIRECRACKER_BIN are not both set: no real jailer")
        command, exec_file = [real_jailer], Path(real_fc)
    base = short_tmp / "jail"
    base.mkdir()
    backend = Jailer(request.param, command, exec_file, base, short_tmp)
    try:
        yield backend
    finally:
        backend.cleanup()


def vm_id() -> str:
    return f"jt-{uuid.uuid4().hex[:12]}"


def contents(directory: Path) -> set[str]:
    """Every path under ``directory``, relative to it."""
    return {str(p.relative_to(directory)) for p in directory.rglob("*")}


# -- the command line -----------------------------------------------------------------------


def test_help_and_version(jailer: Jailer) -> None:
    shown = jailer.run([*jailer.command, "--help"])
    assert shown.returncode == 0
    assert shown.stdout.split("\n", 1)[1] == formatted_help().split("\n", 1)[1]
    version = jailer.run([*jailer.command, "--version", "--id", "ignored"])
    assert version.returncode == 0
    assert re.fullmatch(r"Jailer v1\.0\.0\S*\n\n", version.stdout)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "Argument 'exec-file' required, but not found."),
        (
            ["--id", "a", "--exec-file", "x", "--uid", "1"],
            "Argument 'gid' required, but not found.",
        ),
        (
            ["--bogus"],
            "Found argument 'bogus' which wasn't expected, or isn't valid in this context.",
        ),
        (
            ["bogus"],
            "Found argument 'bogus' which wasn't expected, or isn't valid in this context.",
        ),
        (["--id", "a", "--id", "b"], "The argument 'id' was provided more than once."),
        (["--id", "a", "--id"], "The argument 'id' was provided more than once."),
        (
            ["--parent-cgroup"],
            "The argument 'parent-cgroup' requires a value, but none was supplied.",
        ),
        (
            ["--netns", "--daemonize"],
            "The argument 'netns' requires a value, but none was supplied.",
        ),
        (["--daemonize", "--daemonize"], "The argument 'daemonize' was provided more than once."),
    ],
)
def test_argument_errors(jailer: Jailer, args: list[str], message: str) -> None:
    done = jailer.run([*jailer.command, *args, "--", "--bogus-fc-flag"])
    assert (done.returncode, done.stdout, done.stderr) == (1, arg_error(message), "")
    assert contents(jailer.base) == set()


@dataclass(frozen=True)
class Refusal:
    """A jailer command line that makes the jailer panic, and what it leaves behind."""

    flags: tuple[str, ...]
    stderr: str
    leaves_jail: bool = False  # <base>/<exec name>/<id>/root/<exec name>
    leaves_cgroups: tuple[str, ...] = ()  # controllers


PARENT = "firec-jt"  # placeholder replaced by a unique parent cgroup in the test

REFUSALS = {
    "bad-id-char": Refusal(
        ("--id", "a_b"), jailer_error("Invalid instance ID: invalid char (_) at position 1")
    ),
    "long-id": Refusal(
        ("--id", "x" * 65),
        jailer_error("Invalid instance ID: invalid len (65);  the length must be between 1 and 64"),
    ),
    "missing-exec-file": Refusal(
        ("--exec-file", "/nonexistent/fc"),
        jailer_error(
            "Failed to canonicalize path /nonexistent/fc: No such file or directory (os error 2)"
        ),
    ),
    "missing-base": Refusal(
        ("--chroot-base-dir", "/nonexistent"),
        jailer_error(
            "Failed to canonicalize path /nonexistent: No such file or directory (os error 2)"
        ),
    ),
    "bad-uid": Refusal(("--uid", "x"), jailer_error("Invalid uid: x")),
    "big-gid": Refusal(("--gid", "4294967296"), jailer_error("Invalid gid: 4294967296")),
    "parent-escapes": Refusal(
        ("--parent-cgroup", "../up", "--cgroup", "cpu.shares=10"),
        jailer_error(
            "Parent cgroup path is invalid. Path should not be absolute or contain '..' or '.'"
        ),
    ),
    "cgroup-version": Refusal(
        ("--cgroup-version", "x"), jailer_error("x is an invalid cgroup version specifier")
    ),
    "cgroup-version-3": Refusal(
        ("--cgroup-version", "3", "--cgroup", "cpu.shares=10"),
        jailer_error("3 is an invalid cgroup version specifier"),
    ),
    "cgroup-no-value": Refusal(
        ("--cgroup", "cpu.shares="), jailer_error("Invalid format for cgroups: cpu.shares=")
    ),
    "cgroup-two-values": Refusal(
        ("--cgroup", "cpu.shares=1=2"), jailer_error("Invalid format for cgroups: cpu.shares=1=2")
    ),
    "cgroup-no-controller": Refusal(
        ("--cgroup", "cpushares=1"), jailer_error("Cgroup invalid file: cpushares")
    ),
    "cgroup-file-escapes": Refusal(
        ("--cgroup", "../cpu.shares=1"), jailer_error("Cgroup invalid file: ../cpu.shares=1")
    ),
    "cgroup-unknown-controller": Refusal(
        ("--cgroup", "nosuch.file=1"), jailer_error("Controller nosuch is unavailable")
    ),
    "cgroup-v2-controller": Refusal(
        ("--cgroup-version", "2", "--cgroup", "cpu.max=max"),
        jailer_error("Controller cpu is unavailable"),
    ),
    "limit-format": Refusal(
        ("--resource-limit", "no-file"),
        jailer_error("Invalid format for resources limits: no-file"),
    ),
    "limit-value": Refusal(
        ("--resource-limit", "nproc=x"),
        jailer_error("Invalid limit value for resource: x: invalid digit found in string"),
    ),
    "limit-empty": Refusal(
        ("--resource-limit", "no-file="),
        jailer_error("Invalid limit value for resource: : cannot parse integer from empty string"),
    ),
    "limit-resource": Refusal(
        ("--resource-limit", "nproc=5"), jailer_error("Invalid resource argument: nproc")
    ),
    "limit-too-high": Refusal(
        ("--resource-limit", f"no-file={int(Path('/proc/sys/fs/nr_open').read_text()) + 1}"),
        jailer_error("Failed to set limit for resource: number of file descriptors"),
        leaves_jail=True,
    ),
    "missing-netns": Refusal(
        ("--netns", "/nonexistent/ns", "--cgroup", "cpu.shares=10"),
        jailer_error("Failed to open file /nonexistent/ns: No such file or directory (os error 2)"),
        leaves_jail=True,
    ),
    "netns-not-a-namespace": Refusal(
        ("--netns", "/proc/self/status"),
        jailer_error("Failed to join network namespace: netns: Invalid argument (os error 22)"),
        leaves_jail=True,
    ),
    "cgroup-bad-value": Refusal(
        ("--parent-cgroup", PARENT, "--cgroup", "cpu.shares=abc"),
        unwrap(
            "Write",
            f"/sys/fs/cgroup/cpu/{PARENT}/ID/cpu.shares",
            22,
            "InvalidInput",
            "src/jailer/src/env.rs:520:34",
        ),
        leaves_jail=True,
        leaves_cgroups=("cpu",),
    ),
    "cgroup-unknown-file": Refusal(
        ("--parent-cgroup", PARENT, "--cgroup", "cpu.nosuch=1"),
        unwrap(
            "ReadToString",
            f"/sys/fs/cgroup/cpu/{PARENT}/cpu.nosuch",
            2,
            "NotFound",
            "src/jailer/src/env.rs:520:34",
        ),
        leaves_jail=True,
        leaves_cgroups=("cpu",),
    ),
    "cpuset-without-mems": Refusal(
        ("--parent-cgroup", PARENT, "--cgroup", "cpuset.cpus=0"),
        unwrap(
            "Write",
            f"/sys/fs/cgroup/cpuset/{PARENT}/ID/tasks",
            28,
            "Other",
            "src/jailer/src/env.rs:525:33",
        ),
        leaves_jail=True,
        leaves_cgroups=("cpuset",),
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusals(jailer: Jailer, case: str) -> None:
    refusal = REFUSALS[case]
    if case == "cgroup-v2-controller" and "cpu" in _cgroup2_controllers():
        pytest.skip("this host's cgroup2 hierarchy has the cpu controller")
    if refusal.leaves_cgroups and not (CGROUP_V1 / "cpuset" / "cpuset.mems").exists():
        pytest.skip("this host has no cgroup v1 cpu and cpuset controllers")
    parent = f"firec-jt-{uuid.uuid4().hex[:8]}"
    name = vm_id()
    flags = [parent if flag == PARENT else flag for flag in refusal.flags]
    done = jailer.run(jailer.argv(name, *flags, "--", "--bogus-fc-flag"))
    expected = refusal.stderr.replace(PARENT, parent).replace("/ID/", f"/{name}/")
    assert (done.returncode, done.stdout, done.stderr) == (-signal.SIGABRT, "", expected)
    exec_name = jailer.exec_name
    left = {exec_name, f"{exec_name}/{name}", f"{exec_name}/{name}/root"}
    left.add(f"{exec_name}/{name}/root/{exec_name}")
    assert contents(jailer.base) == (left if refusal.leaves_jail else set())
    for controller in ("cpu", "cpuset"):
        for cgroup_parent in (parent, exec_name):
            made = (CGROUP_V1 / controller / cgroup_parent / name).is_dir()
            assert made == (controller in refusal.leaves_cgroups and cgroup_parent == parent)


def test_exec_file_that_cannot_run(jailer: Jailer) -> None:
    not_executable = jailer.workdir / "fc-not-executable"
    not_executable.write_bytes(b"\x7fELF")
    not_executable.chmod(0o644)
    name = vm_id()
    done = jailer.run(jailer.argv(name, exec_file=not_executable))
    assert done.returncode == -signal.SIGABRT
    assert done.stderr == jailer_error(
        "Failed to exec into Firecracker: Permission denied (os error 13)"
    )
    root = jailer.base / not_executable.name / name / "root"
    assert stat.S_IMODE((root / not_executable.name).stat().st_mode) == 0o644  # a copy, mode kept


def test_daemonize_needs_a_process_that_is_not_a_session_leader(jailer: Jailer) -> None:
    # firec starts the jailer with start_new_session=True: --daemonize then fails this way
    done = jailer.run(jailer.argv(vm_id(), "--daemonize"), start_new_session=True)
    assert done.returncode == -signal.SIGABRT
    assert done.stderr == jailer_error(
        "Failed to daemonize: setsid: Operation not permitted (os error 1)"
    )


def test_a_used_jail_is_refused(jailer: Jailer) -> None:
    name = vm_id()
    jailer.stop(jailer.start(name))
    done = jailer.run(jailer.argv(name))
    assert done.returncode == -signal.SIGABRT
    assert done.stderr == jailer_error(
        "Failed to create /dev/net/tun\x00 via mknod inside the jail: File exists (os error 17)"
    )


# -- the jail and the process -------------------------------------------------------------------


def test_jail_layout_user_and_arguments(jailer: Jailer, guest_kernel: Path) -> None:
    name = vm_id()
    root = jailer.root(name)
    root.mkdir(parents=True)  # as firec does: files brought in beforehand are kept
    shutil.copyfile(guest_kernel, root / "guest.elf")  # a link would share the owner
    os.chown(root / "guest.elf", UID, GID)
    vmm = jailer.start(name, fc_args=("--boot-timer",))
    for inside in ("", "dev", "dev/net", "run"):
        info = (root / inside).stat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (UID, GID, 0o700), inside
    copy = root / jailer.exec_name
    assert copy.read_bytes() == jailer.exec_file.read_bytes()
    assert (copy.stat().st_uid, copy.stat().st_gid) == (0, 0)
    assert (root / "guest.elf").stat().st_uid == UID
    assert vmm.socket.is_socket()
    assert (vmm.socket.stat().st_uid, vmm.socket.stat().st_gid) == (UID, GID)
    status = vmm.status()
    assert status["Uid"].split() == [str(UID)] * 4
    assert status["Gid"].split() == [str(GID)] * 4
    assert status["Groups"].strip() == ""
    assert vmm.pid == vmm.jailer.pid  # no --new-pid-ns: the jailer execs in place
    argv = Path(f"/proc/{vmm.pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    tail = argv[argv.index("--id") :]
    assert tail[:2] == ["--id", name]
    assert [tail[2], tail[4], tail[6]] == [
        "--start-time-us",
        "--start-time-cpu-us",
        "--parent-cpu-time-us",
    ]
    assert all(tail[i].isdigit() for i in (3, 5, 7))
    assert tail[7] == "0"
    assert tail[8:] == ["--boot-timer"]
    with vmm.api() as api:
        assert api.get("/").json()["id"] == name


def test_paths_are_resolved_inside_the_jail(jailer: Jailer, guest_kernel: Path) -> None:
    name = vm_id()
    root = jailer.root(name)
    root.mkdir(parents=True)
    for inside, source in (("guest.elf", guest_kernel), ("fc.log", None)):
        if source is None:
            (root / inside).touch()
        else:  # a copy: chowning a link would change the session's shared kernel
            shutil.copyfile(source, root / inside)
        os.chown(root / inside, UID, GID)
    vmm = jailer.start(name, fc_args=("--log-path", "/fc.log", "--level", "Info"))
    with vmm.api() as api:
        refused = api.put("/boot-source", json={"kernel_image_path": str(guest_kernel)})
        assert refused.status_code == 400
        assert (
            "The kernel file cannot be opened: No such file or directory (os error 2)"
            in (refused.json()["fault_message"])
        )
        for seen in ("guest.elf", "/../../guest.elf"):  # relative to /, and .. stops at /
            boot = {"kernel_image_path": seen, "boot_args": f"console=ttyS0 {guest_args()}"}
            assert api.put("/boot-source", json=boot).status_code == 204, seen
        boot = {
            "kernel_image_path": "/guest.elf",
            "boot_args": f"console=ttyS0 {guest_args(echo=['jailed'])}",
        }
        assert api.put("/boot-source", json=boot).status_code == 204
        config = {"vcpu_count": 1, "mem_size_mib": 32}
        assert api.put("/machine-config", json=config).status_code == 204
        started = api.put("/actions", json={"action_type": "InstanceStart"})
        assert started.status_code == 204, started.text
    text = vmm.output(echo_line("jailed"))
    assert BOOT_LINE in text
    assert echo_line("jailed") in text
    assert "Running Firecracker v1." in (root / "fc.log").read_text()


def test_cgroups_v1(jailer: Jailer) -> None:
    if not (CGROUP_V1 / "cpuset" / "cpuset.mems").exists():
        pytest.skip("this host has no cgroup v1 cpu and cpuset controllers")
    name, parent = vm_id(), f"firec-jt-{uuid.uuid4().hex[:8]}"
    vmm = jailer.start(
        name,
        *("--parent-cgroup", parent, "--cgroup", "cpu.shares=100"),
        *("--cgroup", "cpuset.cpus=0", "--cgroup", "cpuset.mems=0"),
    )
    cpu, cpuset = CGROUP_V1 / "cpu" / parent / name, CGROUP_V1 / "cpuset" / parent / name
    assert (cpu / "cpu.shares").read_text() == "100\n"
    assert (cpuset / "cpuset.cpus").read_text() == "0\n"
    assert (cpuset / "cpuset.mems").read_text() == "0\n"
    # the parent got the values of the files named, copied from its own parent
    for file in ("cpuset.cpus", "cpuset.mems"):
        top = (CGROUP_V1 / "cpuset" / file).read_text()
        assert (CGROUP_V1 / "cpuset" / parent / file).read_text() == top
    for directory in (cpu, cpuset):
        assert str(vmm.pid) in (directory / "tasks").read_text().split()
    memberships = Path(f"/proc/{vmm.pid}/cgroup").read_text()
    assert f":cpu:/{parent}/{name}\n" in memberships
    assert f":cpuset:/{parent}/{name}\n" in memberships
    assert not (CGROUP_V1 / "pids" / parent).exists()  # only the controllers named


def test_cgroup_parent_defaults_to_the_exec_file_name(jailer: Jailer) -> None:
    if not (CGROUP_V1 / "cpu" / "cpu.shares").exists():
        pytest.skip("this host has no cgroup v1 cpu controller")
    name = vm_id()
    vmm = jailer.start(name, "--cgroup", "cpu.shares=50")
    directory = CGROUP_V1 / "cpu" / jailer.exec_name / name
    assert (directory / "cpu.shares").read_text() == "50\n"
    assert f":cpu:/{jailer.exec_name}/{name}\n" in Path(f"/proc/{vmm.pid}/cgroup").read_text()


def test_new_pid_namespace(jailer: Jailer) -> None:
    name = vm_id()
    vmm = jailer.start(name, "--new-pid-ns", "--cgroup", "cpu.shares=20")
    assert vmm.jailer.returncode == 0
    assert vmm.pid != vmm.jailer.pid
    pidfile = vmm.root / f"{jailer.exec_name}.pid"
    assert pidfile.read_text() == str(vmm.pid)  # digits, no newline
    info = pidfile.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, 0, 0o644)
    status = vmm.status()
    assert status["NSpid"].split() == [str(vmm.pid), "1"]
    assert status["Uid"].split()[0] == str(UID)
    cgroup = CGROUP_V1 / "cpu" / jailer.exec_name / name
    assert str(vmm.pid) in (cgroup / "tasks").read_text().split()
    # pid 1 of its namespace: SIGTERM from outside is dropped (no handler), SIGKILL is not
    os.kill(vmm.pid, signal.SIGTERM)
    with vmm.api() as api:
        assert api.get("/").status_code == 200
    jailer.stop(vmm)


def test_daemonize(jailer: Jailer) -> None:
    vmm = jailer.start(vm_id(), "--daemonize")
    assert vmm.pid == vmm.jailer.pid  # no fork
    fields = Path(f"/proc/{vmm.pid}/stat").read_text().rsplit(")", 1)[1].split()
    assert int(fields[3]) == vmm.pid  # session id: setsid() made it a session leader
    for fd in (0, 1, 2):
        assert os.readlink(f"/proc/{vmm.pid}/fd/{fd}") == "/dev/null"


def test_resource_limits(jailer: Jailer) -> None:
    defaults = jailer.start(vm_id())
    limits = Path(f"/proc/{defaults.pid}/limits").read_text()
    assert re.search(r"Max open files\s+2048\s+2048\s", limits)
    assert re.search(r"Max file size\s+unlimited\s+unlimited\s", limits)
    given = jailer.start(
        vm_id(), "--resource-limit", "no-file=1024", "--resource-limit", "fsize=100000000"
    )
    limits = Path(f"/proc/{given.pid}/limits").read_text()
    assert re.search(r"Max open files\s+1024\s+1024\s", limits)
    assert re.search(r"Max file size\s+100000000\s+100000000\s", limits)


@pytest.fixture
def netns() -> Iterator[Path]:
    host_tools.require("ip")
    name = f"firec-jt-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield Path("/var/run/netns") / name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=True)


def test_network_namespace(jailer: Jailer, netns: Path) -> None:
    vmm = jailer.start(vm_id(), "--netns", str(netns))
    assert os.stat(f"/proc/{vmm.pid}/ns/net").st_ino == netns.stat().st_ino


def test_environment_and_descriptors_are_not_inherited(jailer: Jailer) -> None:
    read_end, write_end = os.pipe()
    try:
        vmm = jailer.start(
            vm_id(),
            env={**os.environ, "FIREC_JT_MARKER": "1"},
            pass_fds=(write_end,),
        )
        environ = Path(f"/proc/{vmm.pid}/environ").read_bytes().split(b"\0")
        names = {entry.split(b"=", 1)[0].decode() for entry in environ if entry}
        assert "FIREC_JT_MARKER" not in names
        # the real jailer clears everything; the emulator keeps what Python needs to start
        # (and the emulator's /bin/sh wrapper sets PWD)
        kept = ("FIREC_EMULATOR_VERSION", "LD_LIBRARY_PATH", "PWD")
        assert all(n.startswith("PYTHON") or n in kept for n in names), names
        pipe = f"pipe:[{os.fstat(write_end).st_ino}]"
        fds = Path(f"/proc/{vmm.pid}/fd")
        assert pipe not in {os.readlink(fd) for fd in fds.iterdir()}
    finally:
        os.close(read_end)
        os.close(write_end)
