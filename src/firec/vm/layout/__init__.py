"""Where one microVM's files are, on the host and as its Firecracker sees them.

Firecracker runs either plainly, where the paths it is given are host paths,
or under the jailer, chrooted into ``<chroot_base_dir>/<exec file name>/<id>/root``,
where it sees only what firec brings in. Every question that depends on which
of the two it is, is answered by one :class:`Layout`:
a :class:`PlainLayout` or a :class:`JailedLayout` (:class:`firec.vm.jailer.Jail`
is that same class). :func:`layout_for` is the one place that picks one; the
rest of firec asks the layout and never whether the VM is jailed.

Its verbs, one per meaning:

* :meth:`~Layout.seen`: a host path as Firecracker sees it;
  :meth:`~Layout.on_host`: the host path of a path Firecracker is given;
* :meth:`~Layout.check_bring_in` / :meth:`~Layout.bring_in`: how a file the
  user gave gets to where Firecracker opens it (as it is, a hard link, a copy
  or a device node), refused before anything is made when it cannot;
  :meth:`~Layout.opened_file`: which host file Firecracker then opens;
* :meth:`~Layout.make_dirs`, :meth:`~Layout.make_output`, :meth:`~Layout.give`:
  directories, fifos and files firec makes for Firecracker, owned by whom it runs as;
* :meth:`~Layout.api_socket`, :meth:`~Layout.own_file`, :meth:`~Layout.pidfile`,
  :meth:`~Layout.staging_dir`: where Firecracker's socket, firec's files for it,
  the jailer's pidfile and a snapshot being taken go;
* :meth:`~Layout.remove`: what goes with the VM.

Example::

    >>> from pathlib import Path
    >>> plain = PlainLayout(Path("/run/firec/vm-1"))
    >>> plain.seen("/srv/vmlinux"), plain.api_socket(None)
    ('/srv/vmlinux', '/run/firec/vm-1/firecracker.socket')
    >>> jail = JailedLayout(Path("/srv/jailer/firecracker/vm-1"), 1234, 1234)
    >>> jail.seen("/srv/vmlinux"), jail.api_socket(None)
    ('/vmlinux', '/run/firecracker.socket')
    >>> str(jail.on_host(jail.api_socket(None)))
    '/srv/jailer/firecracker/vm-1/root/run/firecracker.socket'
    >>> jail.seen(jail.own_file("config.json"))
    '/config.json'
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from firec.vm.layout._base import BringIn, JailSettings, Layout
from firec.vm.layout._jailed import JAILED_SOCKET_PATH, JailedLayout
from firec.vm.layout._plain import PlainLayout

__all__ = [
    "JAILED_SOCKET_PATH",
    "BringIn",
    "JailSettings",
    "JailedLayout",
    "Layout",
    "PlainLayout",
    "layout_for",
    "layout_from_record",
    "layout_type",
]


def layout_type(jailer: JailSettings | None) -> type[Layout]:
    """The kind of layout of a VM with these jailer settings (``None``: not jailed).

    >>> layout_type(None).__name__
    'PlainLayout'
    """
    return PlainLayout if jailer is None else JailedLayout


def layout_for(
    vm_id: str, vm_dir: Path, jailer: JailSettings | None, exec_file: Callable[[], Path]
) -> Layout:
    """The layout of VM ``vm_id``: plain, or the jail its jailer will make.

    ``exec_file`` gives the Firecracker executable (the jail is named after
    it); it is only called for a jailed VM.
    """
    return layout_type(jailer)._for(vm_id, vm_dir, jailer, exec_file)


def layout_from_record(
    vm_dir: Path, jail: str | None, jail_owner: tuple[int, int] | None
) -> Layout:
    """The layout a host record describes: the inverse of :meth:`Layout.record`.

    >>> layout_from_record(Path("/run/firec/vm-1"), None, None)
    PlainLayout(vm_dir=PosixPath('/run/firec/vm-1'))
    """
    if jail is None:
        return PlainLayout(vm_dir)
    uid, gid = jail_owner or (0, 0)
    return JailedLayout(Path(jail), uid, gid)
