"""How a jail gets the files a user gives: hard link, copy, or a refusal; never a change.

Unit tests of :func:`firec.vm.jailer.may_access` and :meth:`firec.vm.jailer.Jail.bring_in`
(no VMM runs here; ``test_machine`` runs them under real jails).
"""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

import pytest

from firec.errors import ConfigError
from firec.vm.jailer import Jail, may_access

UID, GID = 1234, 1235

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="giving files away needs root")


def _file(path: Path, mode: int, owner: tuple[int, int] = (0, 0), data: bytes = b"x") -> Path:
    path.write_bytes(data)
    os.chown(path, *owner)
    path.chmod(mode)
    return path


def _state(path: Path) -> tuple[int, int, int, int]:
    st = path.stat()
    return st.st_uid, st.st_gid, st.st_mode, st.st_mtime_ns


@pytest.mark.parametrize(
    ("mode", "owner", "read", "write"),
    [
        (0o644, (0, 0), True, False),  # other may read
        (0o640, (0, 0), False, False),  # neither owner nor group
        (0o640, (0, GID), True, False),  # the jail's group may read
        (0o660, (0, GID), True, True),
        (0o600, (UID, 0), True, True),  # the jail's user owns it
        (0o066, (UID, GID), False, False),  # the owner class alone decides for the owner
        (0o606, (0, GID), False, False),  # and the group class for the group
        (0o444, (UID, GID), True, False),
    ],
)
def test_may_access_follows_the_owner_group_other_classes(
    tmp_path: Path, mode: int, owner: tuple[int, int], read: bool, write: bool
) -> None:
    path = _file(tmp_path / "f", mode, owner)
    assert may_access(path, UID, GID) is read
    assert may_access(path, UID, GID, write=True) is write
    assert may_access(path, 0, 0, write=True)  # root may do anything


def _acl(*entries: tuple[int, int, int]) -> bytes:
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *entry) for entry in entries)


def test_may_access_reads_the_posix_acl(tmp_path: Path) -> None:
    path = _file(tmp_path / "f", 0o640)
    anyone = 0xFFFFFFFF
    acl = _acl(
        (0x01, 6, anyone),  # user::rw-
        (0x02, 6, UID),  # user:1234:rw-
        (0x04, 4, anyone),  # group::r--
        (0x08, 6, 4242),  # group:4242:rw-
        (0x10, 4, anyone),  # mask::r--
        (0x20, 0, anyone),  # other::---
    )
    try:
        os.setxattr(path, "system.posix_acl_access", acl)
    except OSError as exc:
        pytest.skip(f"no POSIX ACLs on {tmp_path}: {exc.strerror}")
    assert may_access(path, UID, GID)  # named user entry
    assert not may_access(path, UID, GID, write=True)  # ...limited by the mask
    assert may_access(path, 999, 4242)  # named group entry, r under the mask
    assert not may_access(path, 999, 4242, write=True)
    assert not may_access(path, 999, 998)  # other::---


def _jail(tmp_path: Path) -> Jail:
    return Jail(tmp_path / "jail" / "firecracker" / "vm", UID, GID)


def test_readable_files_are_linked_and_others_copied_for_the_jail(tmp_path: Path) -> None:
    jail = _jail(tmp_path)
    public = _file(tmp_path / "public.img", 0o644)
    private = _file(tmp_path / "private.img", 0o600, data=b"\0" * 8192 + b"end")
    before = {p: _state(p) for p in (public, private)}
    assert jail.check_bring_in(public) == "link"
    assert jail.check_bring_in(private) == "copy"
    assert jail.bring_in(public) == "/public.img"
    assert jail.bring_in(private, at="/drives/p.img") == "/drives/p.img"
    assert (jail.root / "public.img").samefile(public)
    copy = jail.root / "drives" / "p.img"
    assert not copy.samefile(private) and copy.read_bytes() == private.read_bytes()
    assert (copy.stat().st_uid, copy.stat().st_gid, stat.S_IMODE(copy.stat().st_mode)) == (
        UID,
        GID,
        0o400,
    )
    assert {p: _state(p) for p in (public, private)} == before


def test_a_writable_file_is_linked_only_when_the_jail_may_write_it(tmp_path: Path) -> None:
    jail = _jail(tmp_path)
    theirs = _file(tmp_path / "theirs.img", 0o600, (UID, GID))
    group = _file(tmp_path / "group.img", 0o660, (0, GID))
    roots = _file(tmp_path / "roots.img", 0o644)
    for path in (theirs, group):
        assert jail.check_bring_in(path, writable=True) == "link"
        jail.bring_in(path, writable=True)
        assert (jail.root / path.name).samefile(path)
    before = _state(roots)
    with pytest.raises(ConfigError) as refused:
        jail.bring_in(roots, writable=True, field="drives[1].path_on_host (data)")
    message = str(refused.value)
    assert message.startswith("drives[1].path_on_host (data): ")
    assert f"chown {UID}:{GID} {roots}" in message and "read-only" in message
    assert "owner 0:0, mode 0644" in message
    assert not (jail.root / "roots.img").exists()
    assert _state(roots) == before


def test_a_writable_file_on_another_filesystem_is_refused(tmp_path: Path) -> None:
    elsewhere = Path("/dev/shm")
    if not elsewhere.is_dir() or elsewhere.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second filesystem to put the file on")
    path = _file(elsewhere / f"firec-test-{os.getpid()}.img", 0o600, (UID, GID))
    try:
        with pytest.raises(ConfigError, match="another filesystem"):
            _jail(tmp_path).check_bring_in(path, writable=True)
        assert _jail(tmp_path).check_bring_in(path) == "link"  # read-only: copied if need be
        _jail(tmp_path).bring_in(path)
        assert (_jail(tmp_path).root / path.name).read_bytes() == b"x"
    finally:
        path.unlink()
