"""Where a VM's files are: the plain and the jailed layout, and the one binary lookup.

Unit tests of :mod:`firec.vm.layout` (what Firecracker sees for a host path,
the host path of what it sees, how a file gets in, what is made for whom) and
of :mod:`firec.vm.binaries`; no VMM runs here.
"""

from __future__ import annotations

import ast
import dataclasses
import datetime
import doctest
import importlib
import os
import stat
import sys
from pathlib import Path

import pytest

import firec.host
import firec.host.checks
import firec.host.install
from firec.errors import ConfigError
from firec.vm import binaries
from firec.vm._launch import plan
from firec.vm.config import Config
from firec.vm.jailer import Jail, JailerConfig
from firec.vm.layout import (
    JAILED_SOCKET_PATH,
    JailedLayout,
    PlainLayout,
    layout_for,
    layout_from_record,
    layout_type,
)

UID, GID = 1234, 1235
SRC = Path(__file__).resolve().parents[1] / "src" / "firec"

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="giving files away needs root")


def _file(path: Path, mode: int = 0o644, owner: tuple[int, int] = (0, 0)) -> Path:
    path.write_bytes(b"data")
    if os.geteuid() == 0:
        os.chown(path, *owner)
    path.chmod(mode)
    return path


def _jail(tmp_path: Path) -> JailedLayout:
    return JailedLayout(tmp_path / "jails" / "firecracker" / "vm-1", UID, GID)


# -- plain -------------------------------------------------------------------------------------


def test_plain_firecracker_sees_host_paths_as_they_are(tmp_path: Path) -> None:
    layout = PlainLayout(tmp_path / "vm")
    assert layout.seen("/srv/vmlinux") == "/srv/vmlinux"
    assert layout.seen(Path("/srv/disk.img")) == "/srv/disk.img"
    assert layout.on_host("/srv/vmlinux") == Path("/srv/vmlinux")
    assert layout.on_host("v.sock") == tmp_path / "vm" / "v.sock"  # it runs in its directory
    assert layout.api_socket(None) == str(tmp_path / "vm" / "firecracker.socket")
    assert layout.api_socket(Path("/run/my.sock")) == "/run/my.sock"
    assert layout.own_file("config.json") == tmp_path / "vm" / "config.json"
    assert (layout.owner, layout.vmm_uid, layout.log_timezone) == (None, os.geteuid(), None)
    assert layout.pidfile() is None
    assert not layout.jailed and not layout.holds(tmp_path / "vm" / "x")


def test_plain_brings_nothing_in_and_changes_nothing(tmp_path: Path) -> None:
    layout = PlainLayout(tmp_path / "vm")
    disk = _file(tmp_path / "disk.img", 0o600)
    before = disk.stat()
    assert layout.check_bring_in(disk, writable=True) == "as-is"
    assert layout.bring_in(disk, writable=True) == str(disk)
    assert layout.bring_in(disk, at="/recorded/disk.img") == "/recorded/disk.img"
    assert layout.opened_file(disk) == disk
    assert layout.opened_file(disk, "/recorded/disk.img") == Path("/recorded/disk.img")
    assert disk.stat() == before
    assert not (tmp_path / "vm").exists()
    assert layout.staging_dir(tmp_path / "snap") == tmp_path / "snap"
    assert layout.remove() == []


def test_plain_makes_directories_only_in_its_own_tree_when_asked_to(tmp_path: Path) -> None:
    layout = PlainLayout(tmp_path / "vm")
    layout.make_own_dirs(tmp_path / "elsewhere")  # the caller's to make
    assert not (tmp_path / "elsewhere").exists()
    layout.make_own_dirs("sub")
    assert (tmp_path / "vm" / "sub").is_dir()
    assert layout.make_dirs(tmp_path / "asked") == tmp_path / "asked"
    assert (tmp_path / "asked").is_dir()


# -- jailed ------------------------------------------------------------------------------------


def test_jailed_firecracker_sees_the_chroot(tmp_path: Path) -> None:
    jail = _jail(tmp_path)
    root = jail.root
    assert root == tmp_path / "jails" / "firecracker" / "vm-1" / "root"
    assert jail.seen("/srv/images/vmlinux") == "/vmlinux"  # where bring_in puts it
    assert jail.seen(root / "run" / "firecracker.socket") == "/run/firecracker.socket"
    assert jail.seen(root) == "/"
    assert jail.on_host("/run/firecracker.socket") == root / "run" / "firecracker.socket"
    assert jail.on_host("logs/fc.log") == root / "logs" / "fc.log"  # from the jail's top
    assert jail.on_host(jail.seen(root / "config.json")) == root / "config.json"
    assert jail.on_host(jail.seen("/srv/x/v.sock")) == root / "v.sock"  # made in the jail
    with pytest.raises(ConfigError, match="escapes the jail"):
        jail.on_host("/../../etc/passwd")
    assert jail.api_socket(None) == JAILED_SOCKET_PATH
    assert jail.api_socket("/fc.sock") == "/fc.sock"
    assert jail.own_file("config.json") == root / "config.json"
    assert jail.seen(jail.own_file("config.json")) == "/config.json"
    assert jail.owner == (UID, GID) and jail.vmm_uid == UID
    assert jail.log_timezone is datetime.UTC
    assert jail.pidfile() == root / "firecracker.pid"
    assert jail.pidfile(Path("/usr/bin/fc-1.14")) == root / "fc-1.14.pid"
    assert jail.jailed and jail.holds(root / "x") and not jail.holds(tmp_path / "x")
    assert jail.inside("/srv/images/vmlinux") == "/vmlinux"  # the older name
    assert jail.chroot_base == tmp_path / "jails"  # the jailer's --chroot-base-dir
    assert Jail is JailedLayout


def test_runtime_paths_are_host_paths_plainly_and_jail_paths_jailed() -> None:
    with pytest.raises(ConfigError, match="log_path"):
        layout_type(None).check_runtime_path("log_path", "fc.log")
    layout_type(None).check_runtime_path("log_path", "/var/log/fc.log")
    layout_type(JailerConfig(uid=UID, gid=GID)).check_runtime_path("log_path", "fc.log")


def test_the_config_asks_its_layout_which_directories_and_file_names_fit(short_tmp: Path) -> None:
    jailer = JailerConfig(uid=UID, gid=GID, chroot_base_dir=short_tmp / "base")
    assert layout_type(None).config_directories(None) == []
    assert layout_type(jailer).config_directories(jailer) == [
        ("jailer.chroot_base_dir", short_tmp / "base")
    ]
    taken: dict[str, str] = {}
    for field, path in [("kernel_image", Path("/a/vmlinux")), ("initrd", Path("/b/vmlinux"))]:
        layout_type(None).check_input_name(field, path, taken)  # plainly, any name fits
    taken = {}
    JailedLayout.check_input_name("kernel_image", Path("/a/vmlinux"), taken)
    JailedLayout.check_input_name("kernel_image", Path("/a/vmlinux"), taken)  # the same field
    with pytest.raises(ConfigError, match=r"also the file name of kernel_image.*both would be"):
        JailedLayout.check_input_name("initrd", Path("/b/vmlinux"), taken)
    # and Config's file checks ask them
    for name in ("a", "b"):
        (short_tmp / name).mkdir()
        _file(short_tmp / name / "vmlinux")
    binary = _file(short_tmp / "firecracker", 0o755)
    jailer = dataclasses.replace(jailer, exec_file=binary, jailer_binary=binary)
    config = Config(vm_id="vm-1", kernel_image=short_tmp / "a" / "vmlinux", jailer=jailer)
    config.validate()
    with pytest.raises(ConfigError, match="initrd: vmlinux is also the file name"):
        config.replace(initrd=short_tmp / "b" / "vmlinux").validate()
    config.replace(initrd=short_tmp / "b" / "vmlinux", jailer=None).validate()
    (short_tmp / "base").write_text("a file")
    with pytest.raises(ConfigError, match=r"jailer\.chroot_base_dir: .*base is not a directory"):
        config.validate()


@root_only
def test_jailed_bring_in_links_what_the_jail_may_read_and_copies_the_rest(
    tmp_path: Path,
) -> None:
    jail = _jail(tmp_path)
    public = _file(tmp_path / "public.img", 0o644)
    private = _file(tmp_path / "private.img", 0o600)
    before = private.stat()
    assert jail.check_bring_in(public) == "link"
    assert jail.check_bring_in(private) == "copy"
    assert not jail.base.exists()  # deciding makes nothing
    jail.make_root()
    assert jail.bring_in(public) == "/public.img"
    assert (jail.root / "public.img").samefile(public)
    assert jail.bring_in(private, at="/drives/p.img") == "/drives/p.img"
    copy = (jail.root / "drives" / "p.img").stat()
    assert (copy.st_uid, copy.st_gid, stat.S_IMODE(copy.st_mode)) == (UID, GID, 0o400)
    assert private.stat() == before
    assert jail.opened_file(private, "/drives/p.img") == private


@root_only
def test_jailed_writable_files_are_linked_or_refused_before_anything_is_made(
    tmp_path: Path,
) -> None:
    jail = _jail(tmp_path)
    theirs = _file(tmp_path / "theirs.img", 0o600, (UID, GID))
    assert jail.check_bring_in(theirs, writable=True) == "link"
    roots = _file(tmp_path / "roots.img", 0o644)
    with pytest.raises(ConfigError, match=r"drives\[1\].*may not read and write"):
        jail.check_bring_in(roots, writable=True, field="drives[1].path_on_host")
    assert not jail.base.exists()


@root_only
def test_jailed_makes_what_firecracker_uses_for_its_user(tmp_path: Path) -> None:
    jail = _jail(tmp_path)
    run = jail.make_dirs("/run")
    assert (run.stat().st_uid, run.stat().st_gid) == (UID, GID)
    fifo = jail.make_fifo("/logs/fc.fifo")
    assert stat.S_ISFIFO(fifo.stat().st_mode) and fifo.stat().st_uid == UID
    config = jail.own_file("config.json")
    jail.write_file(config, "{}")
    assert config.stat().st_uid == UID
    staging = jail.staging_dir(tmp_path / "snap")
    assert jail.holds(staging) and staging.stat().st_uid == UID
    assert jail.remove() == []
    assert not jail.base.exists() and not jail.base.parent.exists()


def test_a_host_record_gives_back_the_same_layout(tmp_path: Path) -> None:
    jail = _jail(tmp_path)
    plain = PlainLayout(tmp_path / "vm")
    assert layout_from_record(tmp_path / "vm", **jail.record()) == jail
    assert layout_from_record(tmp_path / "vm", **plain.record()) == plain


# -- the config and the launch ask the layout --------------------------------------------------


def test_layout_for_finds_the_binary_only_for_a_jail(tmp_path: Path) -> None:
    def no_binary() -> Path:
        raise AssertionError("a plain layout needs no binary")

    assert layout_for("vm-1", tmp_path, None, no_binary) == PlainLayout(tmp_path)
    jailer = JailerConfig(uid=UID, gid=GID, chroot_base_dir=tmp_path)
    jail = layout_for("vm-1", tmp_path, jailer, lambda: Path("/usr/bin/fc"))
    assert jail == JailedLayout(tmp_path / "fc" / "vm-1", UID, GID)


def _config(tmp_path: Path, *, jailed: bool) -> Config:
    builder = Config.builder("vm-1", "/srv/images/vmlinux").workdir(tmp_path / "work")
    builder = builder.initrd_path("/srv/images/initrd").firecracker_binary(sys.executable)
    builder = builder.add_drive("root", "/srv/images/root.ext4").build()
    builder = builder.vsock(3, "/srv/v.sock").logger(fifo="/logs/fc.fifo" if jailed else None)
    if jailed:
        builder = (
            builder.jailer_cfg()
            .jailer_binary(sys.executable)
            .exec_file(sys.executable)
            .uid(UID)
            .gid(GID)
            .chroot_base_dir(tmp_path / "jails")
            .build()
        )
    return builder.boot_method("config-file").build(check_files=False)


def test_a_plain_launch_uses_host_paths(short_tmp: Path) -> None:
    config = _config(short_tmp, jailed=False)
    launch = plan(config)
    vm_dir = short_tmp / "work" / "vm-1"
    assert launch.layout == config.layout == PlainLayout(vm_dir) and launch.jail is None
    assert config.kernel_image_path == "/srv/images/vmlinux"
    assert config.host_socket_path == launch.socket_path == vm_dir / "firecracker.socket"
    argv = [sys.executable, "--api-sock", str(launch.socket_path), "--id", "vm-1"]
    assert launch.argv[:5] == argv
    assert launch.config_file_path == vm_dir / "config.json"
    assert launch.vsock_path == Path("/srv/v.sock")
    assert launch.firec_files() == [Path("/srv/v.sock")]  # the rest is in vm_dir
    assert launch.enter_netns is None and launch.new_session


def test_a_jailed_launch_translates_every_path(short_tmp: Path) -> None:
    config = _config(short_tmp, jailed=True)
    launch = plan(config)
    jail = launch.layout
    assert isinstance(jail, JailedLayout) and launch.jail is jail and config.jail == jail
    root = short_tmp / "jails" / Path(sys.executable).name / "vm-1" / "root"
    assert jail.root == root
    assert config.kernel_image_path == "/vmlinux" and config.initrd_path == "/initrd"
    assert config.api_socket_path == JAILED_SOCKET_PATH
    assert launch.socket_path == root / "run" / "firecracker.socket"
    assert launch.log_path == root / "logs" / "fc.fifo" and launch.log_is_fifo
    assert launch.config_file_path == root / "config.json"
    assert launch.vsock_path == root / "v.sock"
    assert launch.firec_files() == []  # everything goes with the jail
    after = launch.argv[launch.argv.index("--") + 1 :]
    assert after[:2] == ["--api-sock", JAILED_SOCKET_PATH]
    assert after[after.index("--log-path") + 1] == "/logs/fc.fifo"
    assert after[after.index("--config-file") + 1] == "/config.json"


# -- finding the binaries ----------------------------------------------------------------------


def test_one_lookup_of_the_binaries_everywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert firec.host.find_binary is firec.host.checks.find_binary is binaries.find_binary
    assert firec.host.BINARY_ENV is binaries.BINARY_ENV
    assert firec.host.install.bin_dir is binaries.bin_dir
    assert firec.host.install.installed_releases is binaries.installed_releases
    monkeypatch.setenv("FIRECRACKER_BIN", str(tmp_path / "nowhere"))
    assert binaries.find_binary("firecracker") == (tmp_path / "nowhere", "$FIRECRACKER_BIN")
    with pytest.raises(ConfigError, match="is not an executable file"):
        binaries.resolve_binary(None, "firecracker")
    assert binaries.resolve_binary(Path(sys.executable), "firecracker") == Path(sys.executable)
    monkeypatch.delenv("JAILER_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    with pytest.raises(ConfigError, match="set JAILER_BIN, put jailer on PATH, or run `firec"):
        binaries.resolve_binary(None, "jailer")


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


LOOKUP_AND_LAYOUT = [
    "vm/binaries.py",
    "vm/config.py",
    "vm/jailer.py",
    "vm/_launch.py",
    *(f"vm/layout/{p.name}" for p in sorted((SRC / "vm" / "layout").glob("*.py"))),
]


@pytest.mark.parametrize("module", LOOKUP_AND_LAYOUT)
def test_the_lookup_and_the_layout_need_nothing_of_firec_host(module: str) -> None:
    assert not {n for n in _imported(SRC / module) if n.startswith("firec.host")}


@pytest.mark.parametrize(
    "name",
    [
        "firec.vm.layout",
        "firec.vm.layout._base",
        "firec.vm.layout._plain",
        "firec.vm.layout._jailed",
        "firec.vm.binaries",
        "firec.vm._access",
        "firec.vm._config_checks",
        "firec.vm._config_builder",
        "firec.vm.guest_agent",
    ],
)
def test_the_examples_run(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
