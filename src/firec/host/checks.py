"""Is this host ready to run microVMs? The checks behind ``firec doctor``.

:func:`check_host` looks at everything firec relies on and returns one
:class:`Check` per item, each saying what was found and, when something is
missing, how to fix it::

    >>> from firec.host.checks import check_host
    >>> for check in check_host():  # doctest: +SKIP
    ...     print("ok " if check.ok else "BAD", check.name, check.detail, check.fix)
    ok  kvm /dev/kvm: KVM API version 12
    BAD firecracker not found ... run `firec install` ...

A check marked ``required`` is needed to boot any microVM (KVM, Firecracker);
the others only for some features (the jailer, networking, image building).

:func:`find_binary` is how firec finds ``firecracker`` and ``jailer``: the
``FIRECRACKER_BIN``/``JAILER_BIN`` environment variable, then ``PATH``, then
the newest release ``firec install`` put in firec's data directory. It lives
in :mod:`firec.vm.binaries` (the one lookup a microVM uses too) and is
importable from here, as :data:`BINARY_ENV` is.
"""

from __future__ import annotations

import fcntl
import grp
import os
import pwd
import re
import shutil
import stat
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from firec.host.install import PINNED_VERSION
from firec.images import e2fs
from firec.vm.binaries import BINARY_ENV, bin_dir, find_binary

__all__ = [
    "BINARY_ENV",
    "Check",
    "check_binary",
    "check_cgroups",
    "check_cni",
    "check_e2fsprogs",
    "check_host",
    "check_jailer_privileges",
    "check_kvm",
    "check_nft",
    "check_tun",
    "effective_capabilities",
    "find_binary",
    "kvm_api_version",
    "kvm_device",
]

#: ioctl(KVM_GET_API_VERSION) = _IO(KVMIO=0xAE, 0x00); stable Linux KVM answers 12.
KVM_GET_API_VERSION = 0xAE00
KVM_API_VERSION = 12

#: The environment variable naming the KVM device the checks look at (default ``/dev/kvm``).
#: For tests: firec's Firecracker emulator opens it at boot, as Firecracker opens /dev/kvm.
KVM_DEVICE_ENV = "FIREC_KVM_DEVICE"

#: The capabilities the jailer needs (it mounts, chroots, makes device nodes, joins
#: cgroups and switches user), by number (``capability.h``).
JAILER_CAPABILITIES = {
    "CAP_CHOWN": 0,
    "CAP_DAC_OVERRIDE": 1,
    "CAP_SETGID": 6,
    "CAP_SETUID": 7,
    "CAP_SYS_CHROOT": 18,
    "CAP_SYS_ADMIN": 21,
    "CAP_MKNOD": 27,
}

_DEFAULT_CNI_PATH = ("/usr/lib/cni", "/opt/cni/bin")
_VERSION_LINE = re.compile(r"^(Firecracker|Jailer) (v\S+)", re.MULTILINE)


@dataclass(frozen=True)
class Check:
    """The result of one host check.

    Attributes:
        name: what was checked (``"kvm"``, ``"firecracker"``, ``"cgroups"``...).
        ok: whether it is usable.
        detail: what was found (a path, a version), or what is wrong.
        fix: how to fix it; empty when ``ok``.
        required: whether every microVM needs it (else only some features do).
    """

    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def check_host() -> list[Check]:
    """Run every host check, in the order ``firec doctor`` shows them."""
    return [
        check_kvm(),
        check_binary("firecracker"),
        check_binary("jailer"),
        check_cgroups(),
        check_tun(),
        check_nft(),
        check_cni(),
        check_e2fsprogs(),
    ]


# -- KVM ----------------------------------------------------------------------------------


def kvm_device() -> Path:
    """The KVM device: ``$FIREC_KVM_DEVICE`` (for tests), else ``/dev/kvm``."""
    return Path(os.environ.get(KVM_DEVICE_ENV) or "/dev/kvm")


def kvm_api_version(path: str | os.PathLike[str] | None = None) -> int:
    """Ask KVM its API version (``ioctl(KVM_GET_API_VERSION)``); OSError when it cannot."""
    fd = os.open(path if path is not None else kvm_device(), os.O_RDWR | os.O_CLOEXEC)
    try:
        return fcntl.ioctl(fd, KVM_GET_API_VERSION)
    finally:
        os.close(fd)


def check_kvm(path: str | os.PathLike[str] | None = None) -> Check:
    """The KVM device exists, this user may read and write it, and it speaks KVM API 12.

    The device is ``path``, else :func:`kvm_device` (``/dev/kvm``).
    """
    dev = Path(path) if path is not None else kvm_device()
    try:
        st = dev.stat()
    except FileNotFoundError:
        return Check(
            "kvm",
            False,
            f"{dev} does not exist",
            "load KVM (modprobe kvm_intel, or kvm_amd) and enable virtualization (VT-x/AMD-V) "
            "in the firmware; in a cloud VM, use an instance with nested virtualization or a "
            "bare-metal one",
        )
    if not stat.S_ISCHR(st.st_mode):
        return Check("kvm", False, f"{dev} is not a character device", "check the host's /dev")
    if not os.access(dev, os.R_OK | os.W_OK):
        return Check(
            "kvm",
            False,
            f"{dev} is not readable and writable by {_user()} ({_owner(st)})",
            _kvm_access_fix(dev, st),
        )
    try:
        version = kvm_api_version(dev)
    except OSError as exc:
        return Check(
            "kvm", False, f"{dev}: KVM_GET_API_VERSION failed: {exc.strerror or exc}", _KVM_FIX
        )
    if version != KVM_API_VERSION:
        return Check(
            "kvm", False, f"{dev}: KVM API version {version}, expected {KVM_API_VERSION}", _KVM_FIX
        )
    return Check("kvm", True, f"{dev}: KVM API version {version}")


def _kvm_access_fix(dev: Path, st: os.stat_result) -> str:
    """Join the device's group when that gives access; never root's group."""
    user = _user()
    acl = f"sudo setfacl -m u:{user}:rw {dev}"
    group_rw = st.st_mode & (stat.S_IRGRP | stat.S_IWGRP) == stat.S_IRGRP | stat.S_IWGRP
    if st.st_gid != 0 and group_rw:
        return (
            f"add yourself to its group: sudo usermod -aG {_group_name(st.st_gid)} {user}, "
            f"then log in again (or: {acl})"
        )
    return (
        f"{dev} is for root only: give it a group of its own, mode 0660 (a udev rule: "
        'KERNEL=="kvm", GROUP="kvm", MODE="0660"), then sudo usermod -aG kvm '
        f"{user} and log in again; or, until the next boot: {acl}"
    )


_KVM_FIX = (
    "this is not a working KVM device; check the host kernel's KVM support (dmesg | grep -i kvm)"
)


# -- binaries -----------------------------------------------------------------------------


def check_binary(name: str) -> Check:
    """``firecracker`` or ``jailer`` is found, runs, and says its version."""
    env = BINARY_ENV[name]
    required = name == "firecracker"
    path, how = find_binary(name)
    install_fix = (
        f"run `firec install` (fetches Firecracker {PINNED_VERSION} with its jailer into "
        f"{bin_dir()}), or set {env}=/path/to/{name}"
    )
    if path is None:
        what = "needed to boot microVMs" if required else "needed only to run microVMs jailed"
        return Check(
            name,
            False,
            f"not found on PATH, in {bin_dir()}, nor in ${env} ({what})",
            install_fix,
            required,
        )
    if not path.is_file() or not os.access(path, os.X_OK):
        return Check(
            name,
            False,
            f"{path} (from {how}) is not an executable file",
            f"point {env} at a {name} binary, or unset it" if how.startswith("$") else install_fix,
            required,
        )
    try:
        proc = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check(
            name, False, f"{path} (from {how}) cannot be run: {exc}", install_fix, required
        )
    match = _VERSION_LINE.search(proc.stdout)
    if proc.returncode != 0 or match is None:
        said = (proc.stdout + proc.stderr).strip().splitlines()[:1]
        return Check(
            name,
            False,
            f"{path} (from {how}) did not report a version (exit {proc.returncode}: {said})",
            install_fix,
            required,
        )
    return Check(name, True, f"{match[1]} {match[2]} at {path} (from {how})", "", required)


# -- privileges ---------------------------------------------------------------------------


def effective_capabilities(status: str | os.PathLike[str] = "/proc/self/status") -> int:
    """This process's effective capabilities (``CapEff`` of ``/proc/self/status``), as bits."""
    for line in Path(status).read_text().splitlines():
        name, _, value = line.partition(":")
        if name == "CapEff":
            return int(value.strip(), 16)
    return 0


def check_jailer_privileges(status: str | os.PathLike[str] = "/proc/self/status") -> Check:
    """Whether this process may run the jailer: it needs root (or its capabilities).

    The jailer mounts, chroots, makes device nodes, joins cgroups and
    switches to its ``--uid``/``--gid``: :data:`JAILER_CAPABILITIES`.
    """
    try:
        caps = effective_capabilities(status)
    except (OSError, ValueError):
        caps = ~0 if os.geteuid() == 0 else 0
    missing = [name for name, bit in JAILER_CAPABILITIES.items() if not caps >> bit & 1]
    who = f"{_user()} (uid {os.geteuid()})"
    if not missing:
        return Check("privileges", True, f"{who} may run the jailer", "", False)
    lacks = "every capability" if len(missing) == len(JAILER_CAPABILITIES) else "some capabilities"
    return Check(
        "privileges",
        False,
        f"the jailer needs root: {who} lacks {lacks} it needs ({', '.join(missing)}) to mount, "
        "chroot, make device nodes, join cgroups and switch to its --uid/--gid",
        "run firec as root (sudo), or run the microVM without the jailer",
        False,
    )


# -- cgroups, tun, nft, CNI, e2fsprogs ---------------------------------------------------


def check_cgroups(mountinfo: str | os.PathLike[str] = "/proc/self/mountinfo") -> Check:
    """Which cgroup version is mounted: v2 (unified), v1, or both (hybrid)."""
    try:
        lines = Path(mountinfo).read_text().splitlines()
    except OSError as exc:
        return Check("cgroups", False, f"cannot read {mountinfo}: {exc.strerror}", "", False)
    v1: set[str] = set()
    v2: list[str] = []
    for line in lines:
        before, sep, after = line.partition(" - ")
        if not sep:
            continue
        mount_point = before.split()[4] if len(before.split()) > 4 else "?"
        fstype, *rest = after.split()
        if fstype == "cgroup2":
            v2.append(mount_point)
        elif fstype == "cgroup" and rest:
            for option in rest[-1].split(","):  # super options: rw,cpu,cpuacct / rw,name=systemd
                if option.startswith("name="):
                    v1.add(option.removeprefix("name="))
                elif option not in ("rw", "ro") and "=" not in option:
                    v1.add(option)
    if not v1 and not v2:
        return Check(
            "cgroups",
            False,
            "no cgroup filesystem is mounted (the jailer needs one)",
            "mount cgroup v2: sudo mount -t cgroup2 none /sys/fs/cgroup",
            False,
        )
    if v1:
        hybrid = f"; cgroup2 also at {', '.join(v2)} (hybrid)" if v2 else ""
        detail = f"cgroup v1 (controllers: {', '.join(sorted(v1))}){hybrid}"
        return Check("cgroups", True, detail, "", False)
    root = Path("/sys/fs/cgroup") if "/sys/fs/cgroup" in v2 else Path(v2[0])
    controllers_file = root / "cgroup.controllers"
    try:
        controllers = controllers_file.read_text().split()
    except OSError:
        controllers = []
    listed = ", ".join(controllers) or "none listed"
    return Check("cgroups", True, f"cgroup v2 at {root} (controllers: {listed})", "", False)


def check_tun(path: str | os.PathLike[str] = "/dev/net/tun") -> Check:
    """/dev/net/tun exists and opens read-write (taps for guest networking)."""
    dev = Path(path)
    fix = "load the tun module (sudo modprobe tun); in a container, pass --device /dev/net/tun"
    try:
        st = dev.stat()
    except FileNotFoundError:
        return Check("tun", False, f"{dev} does not exist (needed for networking)", fix, False)
    if not stat.S_ISCHR(st.st_mode):
        return Check("tun", False, f"{dev} is not a character device", fix, False)
    try:
        os.close(os.open(dev, os.O_RDWR | os.O_CLOEXEC))
    except OSError as exc:
        return Check(
            "tun",
            False,
            f"{dev} cannot be opened read-write by {_user()}: {exc.strerror} ({_owner(st)})",
            "run as root, or with CAP_NET_ADMIN, to create tap devices",
            False,
        )
    return Check("tun", True, f"{dev} opens read-write", "", False)


def check_nft() -> Check:
    """The nft command (nftables) is there, for NAT networking."""
    nft = shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")
    fix = "install nftables (Debian/Ubuntu: apt-get install nftables; Fedora: dnf install nftables)"
    if nft is None:
        return Check("nft", False, "nft not found (needed for NAT networking)", fix, False)
    try:
        proc = subprocess.run(
            [nft, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("nft", False, f"{nft} cannot be run: {exc}", fix, False)
    version = proc.stdout.strip().splitlines()[0] if proc.stdout.strip() else "version unknown"
    if proc.returncode != 0:
        return Check("nft", False, f"{nft} --version failed: {proc.stderr.strip()}", fix, False)
    return Check("nft", True, f"{version} at {nft}", "", False)


def check_cni(cni_path: Sequence[str | os.PathLike[str]] | None = None) -> Check:
    """CNI plugins are installed (``$CNI_PATH``, else /usr/lib/cni and /opt/cni/bin)."""
    if cni_path is None:
        env = os.environ.get("CNI_PATH", "")
        dirs = [Path(d) for d in env.split(os.pathsep) if d] or [Path(d) for d in _DEFAULT_CNI_PATH]
    else:
        dirs = [Path(d) for d in cni_path]
    fix = (
        "install the CNI plugins (Debian/Ubuntu: apt-get install containernetworking-plugins), "
        "or set CNI_PATH to where they are"
    )
    found: list[str] = []
    where: list[str] = []
    for directory in dirs:
        try:
            plugins = sorted(
                p.name for p in directory.iterdir() if p.is_file() and os.access(p, os.X_OK)
            )
        except OSError:
            continue
        if plugins:
            found += [p for p in plugins if p not in found]
            where.append(str(directory))
    searched = ":".join(str(d) for d in dirs)
    if not found:
        return Check(
            "cni", False, f"no CNI plugins in {searched} (needed for CNI networking)", fix, False
        )
    return Check(
        "cni", True, f"{len(found)} plugins in {', '.join(where)}: {', '.join(found)}", "", False
    )


def check_e2fsprogs() -> Check:
    """mkfs.ext4, e2fsck and debugfs are there (for ``firec image build``)."""
    fix = "install e2fsprogs (Debian/Ubuntu: apt-get install e2fsprogs)"
    tools = {name: e2fs.find_tool(name) for name in e2fs.E2FS_TOOLS}
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        return Check(
            "e2fsprogs", False, f"missing {', '.join(missing)} (needed to build images)", fix, False
        )
    mkfs = tools["mkfs.ext4"]
    assert mkfs is not None
    version = e2fs.e2fsprogs_version(mkfs)
    shown = ".".join(map(str, version)) if version else "version unknown"
    if version is not None and version < (1, 43):
        return Check(
            "e2fsprogs", False, f"e2fsprogs {shown} is too old: mkfs.ext4 -d needs 1.43", fix, False
        )
    places = ", ".join(sorted({str(p.parent) for p in tools.values() if p is not None}))
    return Check(
        "e2fsprogs", True, f"e2fsprogs {shown} ({', '.join(tools)} in {places})", "", False
    )


# -- helpers ------------------------------------------------------------------------------


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _owner(st: os.stat_result) -> str:
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    return f"{stat.filemode(st.st_mode)} {user}:{_group_name(st.st_gid)}"
