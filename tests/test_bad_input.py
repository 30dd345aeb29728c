"""Bad input is refused before anything is made or spawned, naming the field and what it takes.

Each case of issue 10's "Bad input" list, through the SDK (the builder's
setter, and ``Machine.create`` of a config that skipped the builder) and
through ``firec run``: a :mod:`firec.errors` error (exit status 2 on the
command line, never a traceback), no process spawned, nothing left behind.
The property-based sweep over every setter and option is in
``test_input_sweep.py``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

import firec
from firec.cli import app
from firec.cli.output import ExitCode
from firec.errors import ConfigError
from firec.vm.config import Builder, Config
from tests.support import SpyHost

runner = CliRunner()


# -- helpers --------------------------------------------------------------------------------


class Host(SpyHost):
    """The scratch host, with a config builder for its kernel and spy."""

    def builder(self, vm_id: str = "vm-1") -> Builder:
        return (
            Config.builder(vm_id, self.kernel)
            .firecracker_binary(self.spy)
            .workdir(self.workdir)
            .kernel_args("console=ttyS0")
        )


@pytest.fixture
def host(short_tmp: Path) -> Host:
    return Host.make(short_tmp)


def refused(call: Callable[[], object], field: str, *phrases: str) -> ConfigError:
    """``call()`` raises a ConfigError for ``field`` whose message holds every phrase."""
    with pytest.raises(ConfigError) as info:
        call()
    error = info.value
    assert error.field == field, str(error)
    text = str(error)
    assert text.startswith(f"{field}: ")
    for phrase in phrases:
        assert phrase in text, text
    return error


# -- the SDK: each case from the setter, and from Machine.create ------------------------------


SETTER_CASES: list[tuple[str, Callable[[Host], object], str, tuple[str, ...]]] = [
    (
        "id with a trailing newline",
        lambda h: h.builder("vm-1\n"),
        "vm_id",
        ("'vm-1\\n'", "1 to 64 ASCII letters, digits and hyphens"),
    ),
    (
        "empty id",
        lambda h: h.builder(""),
        "vm_id",
        ("1 to 64 ASCII letters",),
    ),
    (
        "newline in kernel args",
        lambda h: h.builder().kernel_args("console=ttyS0\ninit=/bin/sh"),
        "kernel_args",
        ("a newline at 13", "one line of printable ASCII"),
    ),
    (
        "NUL in kernel args",
        lambda h: h.builder().kernel_args("console=ttyS0\x00"),
        "kernel_args",
        ("a NUL byte at 13", "printable ASCII"),
    ),
    (
        "log level Verbose",
        lambda h: h.builder().log_level("Verbose"),
        "log_level",
        ("'Error', 'Warning', 'Info', 'Debug', 'Trace' or 'Off'", "not 'Verbose'"),
    ),
    (
        "logger level Verbose",
        lambda h: h.builder().logger(h.root / "log", level="Verbose"),
        "log_level",
        ("'Error', 'Warning'",),
    ),
    (
        "boot method foo",
        lambda h: h.builder().boot_method("foo"),
        "boot_method",
        ("'api' or 'config-file'", "not 'foo'"),
    ),
    (
        "MMDS version V3",
        lambda h: h.builder().mmds({"a": 1}, version="V3"),
        "mmds_config.version",
        ("'V1' or 'V2'", "not 'V3'"),
    ),
    (
        "relative workdir",
        lambda h: h.builder().workdir("vms").build(),
        "workdir",
        ("'vms' is a relative path", "absolute"),
    ),
    (
        "negative memory",
        lambda h: h.builder().machine_cfg().mem_size_mib(-5).build(),
        "machine.mem_size_mib",
        ("at least 1",),
    ),
    (
        "jailer uid 0",
        lambda h: h.builder().jailer_cfg().exec_file(h.spy).gid(1234).build().build(),
        "jailer.uid",
        ("uid 0 is root", "unprivileged", "allow_root()"),
    ),
    (
        "jailer gid 0",
        lambda h: h.builder().jailer_cfg().exec_file(h.spy).uid(1234).gid(0).build().build(),
        "jailer.gid",
        ("gid 0 is root's group", "unprivileged"),
    ),
    (
        "one writable file as two drives",
        lambda h: (
            h.builder()
            .add_drive("a", h.disk)
            .build()
            .add_drive("b", h.root / ".." / h.root.name / "disk.img")
            .is_read_only(True)
            .build()
            .build()
        ),
        "drives[1].path_on_host (b)",
        ("is also drives[0].path_on_host (a)", "writable", "read-only"),
    ),
]


@pytest.mark.parametrize(
    ("make", "field", "phrases"),
    [pytest.param(*case[1:], id=case[0]) for case in SETTER_CASES],
)
def test_the_builder_refuses(
    host: Host, make: Callable[[Host], object], field: str, phrases: tuple[str, ...]
) -> None:
    refused(lambda: make(host), field, *phrases)
    host.assert_nothing_made()


def test_a_hard_link_is_the_same_file(host: Host) -> None:
    """Two paths, one inode: still one file behind two writable drives."""
    other = host.root / "other.img"
    os.link(host.disk, other)
    builder = host.builder().add_drive("a", host.disk).build().add_drive("b", other).build()
    refused(builder.build, "drives[1].path_on_host (b)", "is also drives[0].path_on_host (a)")
    # without looking at files, only equal paths are known to be one file
    assert builder.build(check_files=False).drives[1].path_on_host == str(other)


def test_read_only_drives_may_share_a_file(host: Host) -> None:
    config = (
        host.builder()
        .add_drive("a", host.disk)
        .is_read_only(True)
        .build()
        .add_drive("b", host.disk)
        .is_read_only(True)
        .build()
        .build()
    )
    assert [d.drive_id for d in config.drives] == ["a", "b"]


def test_root_in_the_jail_only_when_allowed(host: Host) -> None:
    config = (
        host.builder().jailer_cfg().exec_file(host.spy).uid(0).gid(0).allow_root().build().build()
    )
    assert config.jailer is not None and config.jailer.uid == 0 and config.jailer.allow_root


def test_valid_values_still_pass(host: Host) -> None:
    config = (
        host.builder("vm-1")
        .kernel_args("console=ttyS0 reboot=k panic=1 pci=off")
        .log_level("Debug")
        .boot_method("config-file")
        .mmds({"a": 1}, version="V1")
        .machine_cfg()
        .mem_size_mib(64)
        .build()
        .jailer_cfg()
        .exec_file(host.spy)
        .uid(1234)
        .gid(1234)
        .build()
        .build(check_files=False)
    )
    assert config.log_level == "Debug" and config.boot_method == "config-file"
    assert config.mmds_config is not None and config.mmds_config.version == "V1"


# A config made without the builder (or changed with replace) reaches Machine.create unchecked.
DIRECT_CASES: list[tuple[str, dict[str, object], str]] = [
    ("id with a trailing newline", {"vm_id": "vm-1\n"}, "vm_id"),
    ("newline in kernel args", {"kernel_args": "console=ttyS0\ninit=/bin/sh"}, "kernel_args"),
    ("NUL in kernel args", {"kernel_args": "console=ttyS0\x00"}, "kernel_args"),
    ("log level Verbose", {"log_level": "Verbose"}, "log_level"),
    ("boot method foo", {"boot_method": "foo"}, "boot_method"),
    ("relative workdir", {"workdir": Path("vms")}, "workdir"),
    ("relative kernel", {"kernel_image": Path("vmlinux")}, "kernel_image"),
]


@pytest.mark.parametrize(
    ("changes", "field"), [pytest.param(*case[1:], id=case[0]) for case in DIRECT_CASES]
)
def test_machine_create_refuses_before_spawning(
    host: Host, monkeypatch: pytest.MonkeyPatch, changes: dict[str, object], field: str
) -> None:
    monkeypatch.chdir(host.root)  # where a relative workdir would be made
    before = sorted(p.name for p in host.root.iterdir())
    config = host.builder().build().replace(**changes)
    refused(lambda: firec.Machine.create(config), field)
    host.assert_nothing_made()
    assert sorted(p.name for p in host.root.iterdir()) == before


def test_machine_create_refuses_two_writable_drives_on_one_file(host: Host) -> None:
    base = host.builder().add_drive("a", host.disk).build().build()
    config = base.replace(
        drives=(*base.drives, base.drives[0].model_copy(update={"drive_id": "b"}))
    )
    refused(lambda: firec.Machine.create(config), "drives[1].path_on_host (b)", "writable")
    host.assert_nothing_made()


def test_machine_create_refuses_root_in_the_jail(host: Host) -> None:
    from firec.vm.jailer import JailerConfig

    config = host.builder().build().replace(jailer=JailerConfig(exec_file=host.spy, gid=1234))
    refused(lambda: firec.Machine.create(config), "jailer.uid", "uid 0 is root")
    host.assert_nothing_made()


# -- the command line ---------------------------------------------------------------------------


CLI_CASES: list[tuple[str, list[str], str]] = [
    ("empty id", ["--id", ""], "--id: '' is not a valid id: use 1 to 64 ASCII letters"),
    ("id with a trailing newline", ["--id", "vm-1\n"], "--id: 'vm-1\\n' is not a valid id"),
    (
        "newline in boot args",
        ["--boot-args", "console=ttyS0\ninit=/bin/sh"],
        "--boot-args: a newline at 13: the kernel command line is one line of printable ASCII",
    ),
    (
        "log level Verbose",
        ["--log-level", "Verbose"],
        "--log-level: must be 'Error', 'Warning', 'Info', 'Debug', 'Trace' or 'Off', not 'Verbose'",
    ),
    ("boot method foo", ["--boot-method", "foo"], "'foo' is not one of 'api', 'config-file'"),
    ("negative memory", ["--memory", "-5"], "--memory: '-5' is negative: give MiB (e.g. 512)"),
    ("no memory", ["--memory", "0"], "--memory: '0' is less than 1 MiB"),
    ("unreadable memory", ["--memory", "lots"], "--memory: cannot read 'lots': give MiB"),
    (
        "one writable file as two drives",
        ["--drive", "{disk}", "--drive", "path={disk},ro"],
        "--drive (drives[1].path_on_host (drive2)): {disk} is also drives[0]",
    ),
    (
        "jailer uid 0",
        ["--jailer", "--uid", "0", "--gid", "1234"],
        "--uid: 0 is root: Firecracker would run as root inside the jail",
    ),
    (
        "jailer gid 0",
        ["--jailer", "--uid", "1234", "--gid", "0"],
        "--gid: 0 is root",
    ),
    ("jailer without a uid", ["--jailer"], "--uid: --jailer needs --uid and --gid"),
]


@pytest.mark.parametrize(
    ("args", "message"), [pytest.param(*case[1:], id=case[0]) for case in CLI_CASES]
)
def test_firec_run_refuses(host: Host, args: list[str], message: str) -> None:
    result = host.firec_run(*(a.replace("{disk}", str(host.disk)) for a in args))
    text = " ".join(result.stderr.split())
    assert result.exit_code == ExitCode.USAGE, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert message.replace("{disk}", str(host.disk)) in text
    host.assert_nothing_made()


def test_no_input_gives_a_traceback(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    """A defect of firec itself (here: a setter that blows up) is one line, exit 1."""
    monkeypatch.setenv("FIREC_STATE_DIR", str(host.state))

    def broken(self: Builder, level: object) -> Builder:
        raise KeyError("oops")

    monkeypatch.setattr(Builder, "log_level", broken)
    args = ["run", str(host.kernel), "--firecracker-bin", str(host.spy), "--log-level", "Info"]
    result = runner.invoke(app, args)
    assert result.exit_code == ExitCode.ERROR
    assert "internal error (a defect of firec): KeyError: 'oops'" in result.stderr
    assert "FIREC_DEBUG=1" in result.stderr and "Traceback" not in result.output
    monkeypatch.setenv("FIREC_DEBUG", "1")
    result = runner.invoke(app, args)
    assert isinstance(result.exception, KeyError)  # the traceback, when asked for
    host.assert_nothing_made()
