"""Network namespaces: create, delete, and run code or processes inside one.

A VM gets its own named network namespace (``/var/run/netns/<name>``, the
same place ``ip netns`` uses), created and removed with :mod:`pyroute2.netns`.
Its tap device lives inside it, so every VM can use the same tap name
(``tap0``) and nothing of it is visible in the host's namespace.

* The jailer takes the namespace as a path: ``--netns`` :func:`netns_path`.
* Plain firecracker is started inside it with ``preexec_fn=``
  :func:`netns_preexec`, or by starting it from :func:`run_in_netns`.
* Any callable can run inside it with :func:`run_in_netns` (it runs in a
  short-lived thread that joined the namespace, so the calling thread and the
  rest of the process stay where they are).

Example::

    >>> from firec.network import netns
    >>> netns.create_netns("fc-demo")                          # doctest: +SKIP
    PosixPath('/var/run/netns/fc-demo')
    >>> netns.run_in_netns("fc-demo", socket.if_nameindex)     # doctest: +SKIP
    [(1, 'lo')]
    >>> subprocess.run(["/opt/fc/firecracker", "--api-sock", sock],
    ...                preexec_fn=netns.netns_preexec("fc-demo"))  # doctest: +SKIP
    >>> netns.delete_netns("fc-demo")                          # doctest: +SKIP
    True
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from firec.errors import ConfigError, NetworkError

__all__ = [
    "NETNS_DIR",
    "create_netns",
    "delete_netns",
    "list_netns",
    "netns_exists",
    "netns_path",
    "netns_preexec",
    "run_in_netns",
    "validate_netns_name",
]

NETNS_DIR = Path("/var/run/netns")
"""Where named network namespaces are bind-mounted (shared with ``ip netns``)."""

_CLONE_NEWNET = 0x40000000
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

_P = ParamSpec("_P")
_T = TypeVar("_T")

_libc = ctypes.CDLL(None, use_errno=True)
_setns_call = _libc.setns
_setns_call.argtypes = (ctypes.c_int, ctypes.c_int)
_setns_call.restype = ctypes.c_int


def validate_netns_name(name: str, field: str = "netns") -> str:
    """Return ``name`` if it is a usable namespace name, else raise :class:`ConfigError`.

    Letters, digits, ``_``, ``.`` and ``-``, starting with a letter or digit,
    at most 128 characters (the name is a file name in :data:`NETNS_DIR`).

    >>> validate_netns_name("fc-vm1")
    'fc-vm1'
    >>> validate_netns_name("../etc")
    Traceback (most recent call last):
    ...
    firec.errors.ConfigError: netns: '../etc' is not a valid network namespace name ...
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(
            field,
            f"{name!r} is not a valid network namespace name (letters, digits, '_', '.', '-', "
            "starting with a letter or digit, at most 128 characters)",
        )
    return name


def netns_path(name: str) -> Path:
    """The path of the named namespace: what the jailer's ``--netns`` takes.

    >>> netns_path("fc-vm1")
    PosixPath('/var/run/netns/fc-vm1')
    """
    return NETNS_DIR / validate_netns_name(name)


def netns_exists(name: str) -> bool:
    """Whether the named namespace exists (its bind mount is in place)."""
    return os.path.ismount(netns_path(name))


def _pyroute2_netns() -> Any:
    """:mod:`pyroute2.netns`, imported on first use (pyroute2 takes ~80 ms to load)."""
    from pyroute2 import netns

    return netns


def list_netns() -> list[str]:
    """The names of every named namespace on the host, sorted."""
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir() if os.path.ismount(p))
    except FileNotFoundError:
        return []


def create_netns(name: str) -> Path:
    """Create the named namespace (loopback up) and return its path.

    Raises:
        NetworkError: it already exists, or the kernel refused.
    """
    path = netns_path(name)
    if path.exists():
        raise NetworkError(
            f"network namespace {name!r} already exists ({path}); delete it first "
            f"(`ip netns delete {name}`) if nothing uses it"
        )
    try:
        _pyroute2_netns().create(name)
    except Exception as exc:
        _remove_quietly(name)
        raise NetworkError(f"could not create network namespace {name!r}: {exc}") from exc
    try:
        run_in_netns(name, _loopback_up)
    except Exception as exc:
        _remove_quietly(name)
        raise NetworkError(f"could not bring up loopback in namespace {name!r}: {exc}") from exc
    return path


def delete_netns(name: str) -> bool:
    """Delete the named namespace; return whether it existed.

    Links inside it go with it, once no process runs in it any more. Deleting a
    namespace that does not exist is not an error (teardown is idempotent).
    """
    path = netns_path(name)
    if not path.exists():
        return False
    try:
        _pyroute2_netns().remove(name)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise NetworkError(f"could not delete network namespace {name!r}: {exc}") from exc
    return True


def _remove_quietly(name: str) -> None:
    try:
        if netns_path(name).exists():
            _pyroute2_netns().remove(name)
    except OSError:
        pass


def _loopback_up() -> None:
    from firec.network._netlink import netlink

    with netlink() as ipr:
        ipr.set_up("lo")


def _enter(fd: int) -> None:
    if _setns_call(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def run_in_netns(
    name: str | None, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
) -> _T:
    """Call ``fn(*args, **kwargs)`` inside the named namespace and return its result.

    It runs in a new thread that joined the namespace (a namespace is a
    per-thread property), so sockets it opens, links it creates and processes
    it starts belong to that namespace; the caller is never moved. Exceptions
    propagate. With ``name=None`` it simply calls ``fn`` here.

    >>> import socket
    >>> run_in_netns(None, socket.if_nameindex)[0]
    (1, 'lo')
    """
    if name is None:
        return fn(*args, **kwargs)
    try:
        fd = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetworkError(f"network namespace {name!r} does not exist") from None
    outcome: dict[str, Any] = {}

    def body() -> None:
        try:
            _enter(fd)
            outcome["value"] = fn(*args, **kwargs)
        except BaseException as exc:
            outcome["error"] = exc

    try:
        thread = threading.Thread(target=body, name=f"netns:{name}", daemon=True)
        thread.start()
        thread.join()
    finally:
        os.close(fd)
    if "error" in outcome:
        raise outcome["error"]
    value: _T = outcome["value"]
    return value


def netns_preexec(name: str) -> Callable[[], None]:
    """A ``preexec_fn`` that moves a child process into the named namespace.

    The namespace file is opened now, in the parent; the returned function only
    calls ``setns(2)`` on it in the child. Pass it to :class:`subprocess.Popen`
    (or :func:`asyncio.create_subprocess_exec`) to start a plain firecracker in
    the VM's namespace. Where ``preexec_fn`` is unwelcome (threads), start the
    process from :func:`run_in_netns` instead: a child inherits the namespace of
    the thread that forked it.

    The descriptor stays open as long as the returned function lives (it is
    close-on-exec, so the child does not inherit it).
    """
    holder = _NetnsHandle(name)
    return holder.enter


class _NetnsHandle:
    """An open namespace descriptor whose ``enter`` is safe to call after fork."""

    def __init__(self, name: str) -> None:
        try:
            self.fd = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NetworkError(f"network namespace {name!r} does not exist") from None
        self.name = name

    def enter(self) -> None:
        _enter(self.fd)

    def __del__(self) -> None:
        fd = getattr(self, "fd", -1)
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
