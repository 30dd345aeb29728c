"""Images for microVMs: ext4 root filesystems and the kernels Firecracker boots.

* :func:`build_rootfs` makes an ext4 image from a directory, an OCI image
  layout or a ``docker save`` tarball, without root (``mkfs.ext4 -d``).
* :func:`extract_vmlinux` turns a distribution bzImage into the ELF vmlinux
  Firecracker needs on x86-64.

Example::

    >>> from firec.images import build_rootfs, extract_vmlinux
    >>> build_rootfs("image.tar", "rootfs.ext4")  # doctest: +SKIP
    PosixPath('rootfs.ext4')
    >>> extract_vmlinux("/boot/vmlinuz-6.1.0-28-cloud-amd64", "vmlinux")  # doctest: +SKIP
    PosixPath('vmlinux')
"""

from firec.images.kernel import extract_vmlinux
from firec.images.rootfs import build_rootfs, parse_size

__all__ = ["build_rootfs", "extract_vmlinux", "parse_size"]
