"""The kernel's userfaultfd and the memory mappings around it, through ctypes.

What a page-fault handler and its Firecracker side need of the kernel: a
userfaultfd with its API handshake done (:func:`open_userfaultfd`), a range
registered with it for missing-page faults (:func:`register`), a page
copied (:func:`copy`) or zeroed (:func:`zeropage`) into a faulting range,
and the mappings: anonymous memory (:func:`map_anonymous`), a file read-only
(:func:`map_file`), and :func:`unmap`. The ioctl numbers and event codes are
those of ``<linux/userfaultfd.h>``.

Example::

    >>> address = map_anonymous(4096)
    >>> unmap(address, 4096)
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct

from firec.errors import FirecError

__all__ = [
    "MSG_SIZE",
    "UFFD_EVENT_PAGEFAULT",
    "UFFD_EVENT_REMOVE",
    "UFFD_EVENT_UNMAP",
    "UFFD_FEATURE_EVENT_REMOVE",
    "UffdError",
    "copy",
    "map_anonymous",
    "map_file",
    "open_userfaultfd",
    "register",
    "unmap",
    "zeropage",
]


def _iowr(nr: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (0xAA << 8) | nr


UFFD_API = 0xAA
UFFDIO_API = _iowr(0x3F, 24)
UFFDIO_REGISTER = _iowr(0x00, 32)
UFFDIO_COPY = _iowr(0x03, 40)
UFFDIO_ZEROPAGE = _iowr(0x04, 32)
UFFDIO_REGISTER_MODE_MISSING = 1
UFFD_FEATURE_EVENT_REMOVE = 1 << 3
UFFD_EVENT_PAGEFAULT = 0x12
UFFD_EVENT_REMOVE = 0x15
UFFD_EVENT_UNMAP = 0x16
#: The size of one event read from a userfaultfd (``struct uffd_msg``).
MSG_SIZE = 32
_SYS_USERFAULTFD = {"x86_64": 323, "aarch64": 282}

_PROT_READ, _PROT_WRITE = 1, 2
_MAP_PRIVATE, _MAP_ANONYMOUS, _MAP_NORESERVE = 0x02, 0x20, 0x4000
_MAP_FAILED = ctypes.c_void_p(-1).value

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.syscall.restype = ctypes.c_long


class UffdError(FirecError):
    """The page-fault handler failed: no handshake, a bad message, an ioctl refused."""


def _check(result: int, what: str) -> int:
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def _ioctl(fd: int, request: int, payload: bytes) -> bytearray:
    buffer = bytearray(payload)
    fcntl.ioctl(fd, request, buffer, True)
    return buffer


def open_userfaultfd(
    features: int = UFFD_FEATURE_EVENT_REMOVE,
    *,
    nonblocking: bool = True,
    device: str = "/dev/userfaultfd",
) -> int:
    """A new userfaultfd with the API handshake (``UFFDIO_API``) done.

    Uses the ``device`` (``/dev/userfaultfd``) where the ``userfaultfd`` system
    call is not allowed.
    """
    flags = os.O_CLOEXEC | (os.O_NONBLOCK if nonblocking else 0)
    number = _SYS_USERFAULTFD.get(os.uname().machine)
    fd = -1
    if number is not None:
        fd = int(_libc.syscall(number, flags))
    if fd < 0:
        err = ctypes.get_errno()
        try:
            opened = os.open(device, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            raise UffdError(f"cannot create a userfaultfd: {os.strerror(err)}") from None
        try:
            fd = fcntl.ioctl(opened, 0xAA00, flags)  # USERFAULTFD_IOC_NEW
        finally:
            os.close(opened)
    try:
        _ioctl(fd, UFFDIO_API, struct.pack("QQQ", UFFD_API, features, 0))
    except OSError as exc:
        os.close(fd)
        raise UffdError(f"UFFDIO_API refused features {features:#x}: {exc.strerror}") from exc
    return fd


def map_anonymous(size: int) -> int:
    """Map ``size`` bytes of private anonymous memory; return the address."""
    address = _libc.mmap(
        None, size, _PROT_READ | _PROT_WRITE, _MAP_PRIVATE | _MAP_ANONYMOUS | _MAP_NORESERVE, -1, 0
    )
    if address in (None, _MAP_FAILED):
        raise OSError(ctypes.get_errno(), "mmap of anonymous memory failed")
    return int(address)


def map_file(fd: int, size: int, what: str) -> int:
    """Map ``size`` bytes of the file ``fd`` privately, read-only; return the address."""
    address = _libc.mmap(None, size, _PROT_READ, _MAP_PRIVATE, fd, 0)
    if address in (None, _MAP_FAILED):
        raise OSError(ctypes.get_errno(), f"mmap of {what} failed")
    return int(address)


def unmap(address: int, size: int) -> None:
    """Undo :func:`map_anonymous` (or any mapping of ``size`` bytes at ``address``)."""
    _check(_libc.munmap(address, size), "munmap")


def register(uffd: int, address: int, size: int) -> None:
    """Register ``[address, address+size)`` with ``uffd`` for missing-page faults."""
    try:
        _ioctl(
            uffd,
            UFFDIO_REGISTER,
            struct.pack("QQQQ", address, size, UFFDIO_REGISTER_MODE_MISSING, 0),
        )
    except OSError as exc:
        raise UffdError(f"UFFDIO_REGISTER of {size} bytes at {address:#x}: {exc.strerror}") from exc


def copy(uffd: int, page: int, source: int, length: int) -> None:
    """``UFFDIO_COPY``: fill ``length`` bytes at ``page`` from ``source`` and wake the toucher.

    Raises:
        OSError: as the kernel refused (``EAGAIN``: try again; ``EEXIST``: the
            page is there already; ``ESRCH``: the faulting process exited).
    """
    _ioctl(uffd, UFFDIO_COPY, struct.pack("QQQQq", page, source, length, 0, 0))


def zeropage(uffd: int, page: int, length: int) -> None:
    """``UFFDIO_ZEROPAGE``: fill ``length`` bytes at ``page`` with zeros.

    Raises:
        OSError: as :func:`copy` does.
    """
    _ioctl(uffd, UFFDIO_ZEROPAGE, struct.pack("QQQq", page, length, 0, 0))
