"""Whether a given uid and gid may read (and write) a file: :func:`may_access`.

The kernel's own decision, made from the file's owner, mode and POSIX access
ACL, for a process of that uid and gid with no supplementary group: what a
jailed Firecracker is (the jailer leaves it none). :class:`~firec.vm.layout.JailedLayout`
asks it to decide whether a user's file can be hard-linked into the jail as
it is, or must be copied for the jail's user.

Example::

    >>> import os, tempfile
    >>> with tempfile.NamedTemporaryFile() as f:
    ...     os.chmod(f.name, 0o600)
    ...     may_access(f.name, 0, 0), may_access(f.name, 54321, 54321)
    (True, False)
"""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

__all__ = ["may_access"]

# tags of POSIX ACL entries (system.posix_acl_access, after a 4-byte version header)
_ACL_USER = 0x02
_ACL_GROUP_OBJ = 0x04
_ACL_GROUP = 0x08
_ACL_MASK = 0x10
_ACL_OTHER = 0x20
_ACL_HEADER = struct.Struct("<I")
_ACL_ENTRY = struct.Struct("<HHI")


def _acl_entries(path: Path) -> list[tuple[int, int, int]] | None:
    """The file's POSIX access ACL as ``(tag, perm, id)`` entries, or ``None`` without one."""
    try:
        raw = os.getxattr(path, "system.posix_acl_access")
    except OSError:
        return None  # none set, or a filesystem without ACLs
    if len(raw) < _ACL_HEADER.size or (len(raw) - _ACL_HEADER.size) % _ACL_ENTRY.size:
        return None
    return [
        _ACL_ENTRY.unpack_from(raw, offset)
        for offset in range(_ACL_HEADER.size, len(raw), _ACL_ENTRY.size)
    ]


def may_access(path: str | os.PathLike[str], uid: int, gid: int, *, write: bool = False) -> bool:
    """Whether a process of ``uid``:``gid`` (no other group) may read (and write) ``path``.

    Decided by the file's own owner, mode and POSIX ACL, as the kernel
    decides for the jailed Firecracker (the jailer leaves it no
    supplementary group). The directories above the file are not looked at:
    a hard link in the jail does not go through them. uid 0 may do anything.
    """
    if uid == 0:
        return True
    st = os.stat(path)
    want = 0o6 if write else 0o4
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid == uid:
        return (mode >> 6) & want == want
    entries = _acl_entries(Path(path))
    if entries is None:
        bits = (mode >> 3) if st.st_gid == gid else mode
        return bits & want == want
    mask = next((perm for tag, perm, _ in entries if tag == _ACL_MASK), 0o7)
    for tag, perm, ident in entries:
        if tag == _ACL_USER and ident == uid:
            return perm & mask & want == want
    groups = [
        perm
        for tag, perm, ident in entries
        if (tag == _ACL_GROUP_OBJ and st.st_gid == gid) or (tag == _ACL_GROUP and ident == gid)
    ]
    if groups:
        return any(perm & mask & want == want for perm in groups)
    other = next((perm for tag, perm, _ in entries if tag == _ACL_OTHER), mode)
    return other & want == want
