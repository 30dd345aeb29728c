"""``firec doctor --kernel K``: does a guest kernel have what firec's guest agent needs?

The agent talks to the host over vsock, from a root filesystem on a virtio
block device formatted ext4, with ``/dev`` a devtmpfs, and Firecracker's
devices reach the guest over virtio-mmio (described on the kernel command
line) or, from Firecracker 1.13 on with ``--enable-pci``, over PCI. Each of
these is one :class:`~firec.host.checks.Check`:

========================  ===========================================================
check                     kernel options
========================  ===========================================================
``kernel vsock``          ``CONFIG_VSOCKETS``, ``CONFIG_VIRTIO_VSOCKETS``
``kernel virtio``         ``CONFIG_VIRTIO_MMIO`` + ``CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES``,
                          or ``CONFIG_PCI`` + ``CONFIG_VIRTIO_PCI``
``kernel virtio-blk``     ``CONFIG_VIRTIO_BLK``
``kernel ext4``           ``CONFIG_EXT4_FS``
``kernel devtmpfs``       ``CONFIG_DEVTMPFS``
========================  ===========================================================

An option built as a module (``=m``) is not enough on its own: Firecracker
boots the kernel without its modules, so the guest needs an initrd that loads
them; the check says which. The kernel's configuration is read from, in order:
``<kernel>.config``, the ``config-<version>`` beside a ``vmlinux-<version>`` or
``vmlinuz-<version>`` (or the only ``config-*`` beside it, as
``firec kernel fetch`` leaves it), a ``.config`` beside it, and the
configuration built into the kernel (``CONFIG_IKCONFIG``). With none of these
the checks cannot be made, and one check says so.

Example::

    >>> from firec.host.kernel_checks import check_kernel
    >>> [c.name for c in check_kernel("/nonexistent/vmlinux")]
    ['kernel']
"""

from __future__ import annotations

import gzip
import os
import re
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from firec.errors import FirecError
from firec.host.checks import Check
from firec.images.kernel import extract_vmlinux

__all__ = ["KernelConfig", "check_kernel", "find_kernel_config", "parse_kernel_config"]

_IKCFG_START = b"IKCFG_ST"
_IKCFG_END = b"IKCFG_ED"
_LINE = re.compile(r"^(CONFIG_\w+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_\w+) is not set$")

#: The module each option builds, for the initrd advice.
_MODULES = {
    "CONFIG_VSOCKETS": "vsock",
    "CONFIG_VIRTIO_VSOCKETS_COMMON": "vmw_vsock_virtio_transport_common",
    "CONFIG_VIRTIO_VSOCKETS": "vmw_vsock_virtio_transport",
    "CONFIG_VIRTIO": "virtio",
    "CONFIG_VIRTIO_MMIO": "virtio_mmio",
    "CONFIG_VIRTIO_PCI_LIB": "virtio_pci_modern_dev",
    "CONFIG_VIRTIO_PCI_LIB_LEGACY": "virtio_pci_legacy_dev",
    "CONFIG_VIRTIO_PCI": "virtio_pci",
    "CONFIG_VIRTIO_BLK": "virtio_blk",
    "CONFIG_EXT4_FS": "ext4",
}


@dataclass(frozen=True)
class KernelConfig:
    """A kernel's build configuration.

    Attributes:
        values: each option set, as written (``"y"``, ``"m"``, ``"6"``, ``'"string"'``);
            options ``is not set`` are absent.
        source: where it was read (a file, or ``"<kernel> (built-in IKCONFIG)"``).
    """

    values: dict[str, str]
    source: str

    def get(self, option: str) -> str:
        """The value of ``option`` (``"y"``, ``"m"``...), or ``"n"`` when it is not set.

        Example::

            >>> KernelConfig({"CONFIG_EXT4_FS": "y"}, "x").get("CONFIG_VSOCKETS")
            'n'
        """
        return self.values.get(option, "n")


def parse_kernel_config(text: str, source: str) -> KernelConfig:
    """Read a kernel ``.config``.

    Example::

        >>> parse_kernel_config("CONFIG_EXT4_FS=y\\n# CONFIG_VSOCKETS is not set\\n", "x").values
        {'CONFIG_EXT4_FS': 'y'}
    """
    values: dict[str, str] = {}
    for line in text.splitlines():
        match = _LINE.match(line.strip())
        if match is not None:
            values[match[1]] = match[2]
    return KernelConfig(values, source)


def find_kernel_config(kernel: str | os.PathLike[str]) -> KernelConfig | None:
    """The configuration of ``kernel``, from a file beside it or from inside it; ``None``: none.

    Raises:
        FirecError: ``kernel`` is missing or unreadable.
    """
    path = Path(kernel)
    if not path.is_file():
        raise FirecError(f"{path}: no such kernel file")
    for candidate in _config_files(path):
        try:
            text = candidate.read_text("utf-8", "replace")
        except OSError:
            continue
        if "CONFIG_" in text:
            return parse_kernel_config(text, str(candidate))
    built_in = _ikconfig(path)
    if built_in is not None:
        return parse_kernel_config(built_in, f"{path} (built-in IKCONFIG)")
    return None


def _config_files(kernel: Path) -> list[Path]:
    here = kernel.parent
    found = [kernel.with_name(kernel.name + ".config")]
    match = re.match(r"^(?:vmlinux|vmlinuz|bzImage)-(.+)$", kernel.name)
    if match is not None:
        found.append(here / f"config-{match[1]}")
    try:
        beside = sorted(p for p in here.iterdir() if p.name.startswith("config-"))
    except OSError:
        beside = []
    if len(beside) == 1:
        found.append(beside[0])
    found.append(here / ".config")
    return [p for p in found if p.is_file()]


def _ikconfig(kernel: Path) -> str | None:
    """The gzipped config the kernel carries (``CONFIG_IKCONFIG``), if it does."""
    try:
        data = kernel.read_bytes()
    except OSError as exc:
        raise FirecError(f"{kernel}: cannot read: {exc.strerror or exc}") from exc
    if data[:4] != b"\x7fELF":  # a bzImage: the config is inside the compressed vmlinux
        with tempfile.TemporaryDirectory(prefix="firec-kernel-") as work:
            try:
                data = extract_vmlinux(kernel, Path(work) / "vmlinux").read_bytes()
            except FirecError:
                return None
    start = data.find(_IKCFG_START)
    if start < 0:
        return None
    end = data.find(_IKCFG_END, start)
    blob = data[start + len(_IKCFG_START) : end if end > 0 else None]
    try:
        return gzip.decompress(blob).decode("utf-8", "replace")
    except (OSError, EOFError, zlib.error):
        return None


def check_kernel(kernel: str | os.PathLike[str]) -> list[Check]:
    """The checks of ``kernel`` for firec's guest agent, in the order ``firec doctor`` shows them.

    A single failed ``kernel`` check when the kernel is missing or its
    configuration cannot be read.
    """
    try:
        config = find_kernel_config(kernel)
    except FirecError as exc:
        return [Check("kernel", False, str(exc), "give the path of a guest kernel (vmlinux)")]
    if config is None:
        return [
            Check(
                "kernel",
                False,
                f"{kernel}: its configuration is not readable (no config-* or .config beside "
                "it, no built-in IKCONFIG), so what it supports is unknown",
                f"put its build config beside it as {Path(kernel).name}.config",
            )
        ]
    checks = [Check("kernel", True, f"configuration from {config.source}", "", True)]
    checks.append(_all_of(config, "kernel vsock", ["CONFIG_VSOCKETS", "CONFIG_VIRTIO_VSOCKETS"]))
    checks.append(_transport(config))
    checks.append(_all_of(config, "kernel virtio-blk", ["CONFIG_VIRTIO_BLK"]))
    checks.append(_all_of(config, "kernel ext4", ["CONFIG_EXT4_FS"]))
    checks.append(_all_of(config, "kernel devtmpfs", ["CONFIG_DEVTMPFS"]))
    return checks


def _modules(config: KernelConfig, options: list[str]) -> list[str]:
    """The modules an initrd must load for ``options`` (dependencies included)."""
    wanted = list(options)
    if any(o.startswith("CONFIG_VIRTIO_") for o in options):
        wanted.insert(0, "CONFIG_VIRTIO")
    if "CONFIG_VIRTIO_PCI" in options:
        at = wanted.index("CONFIG_VIRTIO_PCI")
        wanted[at:at] = ["CONFIG_VIRTIO_PCI_LIB", "CONFIG_VIRTIO_PCI_LIB_LEGACY"]
    if "CONFIG_VIRTIO_VSOCKETS" in options:
        wanted.insert(wanted.index("CONFIG_VIRTIO_VSOCKETS"), "CONFIG_VIRTIO_VSOCKETS_COMMON")
    names = [_MODULES.get(o, o.removeprefix("CONFIG_").lower()) for o in wanted]
    return [n for o, n in zip(wanted, names, strict=True) if config.get(o) == "m"]


def _all_of(config: KernelConfig, name: str, options: list[str]) -> Check:
    missing = [o for o in options if config.get(o) not in ("y", "m")]
    if missing:
        return Check(
            name,
            False,
            f"not built: {', '.join(o + ' is not set' for o in missing)}",
            f"use a kernel built with {', '.join(o + '=y' for o in missing)}",
        )
    modular = [o for o in options if config.get(o) == "m"]
    if modular:
        modules = _modules(config, options)
        return Check(
            name,
            False,
            f"built as a module ({', '.join(o + '=m' for o in modular)}): the guest needs an "
            f"initrd that loads {', '.join(modules)}",
            f"boot it with an initrd that loads {', '.join(modules)}, or use a kernel built "
            f"with {', '.join(o + '=y' for o in modular)}",
        )
    return Check(name, True, ", ".join(f"{o}=y" for o in options))


def _transport(config: KernelConfig) -> Check:
    """virtio-mmio with command-line devices (any Firecracker), or virtio-pci (1.13+, pci)."""
    mmio = ["CONFIG_VIRTIO_MMIO", "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES"]
    pci = ["CONFIG_PCI", "CONFIG_VIRTIO_PCI"]
    state = {o: config.get(o) for o in (*mmio, *pci, "CONFIG_VIRTIO")}
    built_in = {o for o, v in state.items() if v == "y"}
    name = "kernel virtio"
    if set(mmio) <= built_in and "CONFIG_VIRTIO" in built_in:
        return Check(name, True, "virtio-mmio with command-line devices (every Firecracker)")
    if set(pci) <= built_in and "CONFIG_VIRTIO" in built_in:
        return Check(
            name,
            True,
            "virtio-pci only (CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES is not set): Firecracker 1.13 "
            "or newer, started with --enable-pci",
        )
    facts: list[str] = []
    fixes: list[str] = []
    if state["CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES"] != "y":
        facts.append(
            "virtio-mmio: CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES is not set, so the kernel cannot "
            "find Firecracker's devices (described on its command line)"
        )
    else:
        modules = _modules(config, ["CONFIG_VIRTIO_MMIO"])
        facts.append(f"virtio-mmio: built as modules ({', '.join(modules)})")
        fixes.append(f"an initrd that loads {', '.join(modules)}")
    if state["CONFIG_PCI"] != "y" or state["CONFIG_VIRTIO_PCI"] not in ("y", "m"):
        facts.append("virtio-pci: not built (CONFIG_PCI and CONFIG_VIRTIO_PCI)")
    else:
        modules = _modules(config, ["CONFIG_VIRTIO_PCI"])
        facts.append(f"virtio-pci: built as modules ({', '.join(modules)})")
        fixes.append(
            f"Firecracker 1.13 or newer with --enable-pci and an initrd that loads "
            f"{', '.join(modules)}"
        )
    fixes.append(
        "a kernel built with CONFIG_VIRTIO_MMIO=y and CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y "
        "(e.g. Firecracker's guest kernel configs)"
    )
    return Check(name, False, "; ".join(facts), "; or ".join(fixes))
