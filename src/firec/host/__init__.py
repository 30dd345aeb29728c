"""The host a microVM runs on: its checks, Firecracker's install, firec's state.

* ``checks.py``: ``firec doctor``'s checks (KVM, binaries, jailer
  privileges, cgroups, tun, nft, CNI, e2fsprogs), each a :class:`Check` that
  says what is wrong and how to fix it;
* :mod:`firec.host.kernel_checks`: ``firec doctor --kernel``: what a guest
  kernel lacks for firec's agent, from its config;
* :mod:`firec.host.install`: downloading and verifying Firecracker releases
  (``firec install``);
* :mod:`firec.host.kernels`: guest kernels (``firec kernel fetch``): Debian's
  cloud kernel found through :mod:`firec.host.debian` (the archive's signed
  Release and Packages index), or any kernel by URL and SHA-256; both
  downloads go through ``_download.py``;
* :mod:`firec.host.registry`: the host's record of every microVM firec
  runs (``firec ls``, ``firec gc``): claiming an id, reaping what a dead
  program left.

The checks are importable from here, as before (``firec.host.check_kvm``).

Example::

    >>> from firec.host import check_tun
    >>> check_tun("/nonexistent/tun").ok
    False
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from firec._lazy import lazy_door
from firec.host.checks import (
    BINARY_ENV,
    Check,
    check_binary,
    check_cgroups,
    check_cni,
    check_e2fsprogs,
    check_host,
    check_jailer_privileges,
    check_kvm,
    check_nft,
    check_tun,
    effective_capabilities,
    find_binary,
    kvm_api_version,
    kvm_device,
)

if TYPE_CHECKING:
    from firec.host import install, registry

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
    "install",
    "kvm_api_version",
    "kvm_device",
    "registry",
]

__getattr__, __dir__ = lazy_door(__name__, {}, submodules=("install", "registry"))
