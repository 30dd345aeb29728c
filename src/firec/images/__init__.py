"""Images for microVMs: ext4 root filesystems and the kernels Firecracker boots.

* :func:`build_rootfs` makes an ext4 image from a directory, an OCI image
  layout or a ``docker save`` tarball, without root (``mkfs.ext4 -d``), with
  the guest agent in it if given, and records the image's defaults for
  running commands (entrypoint, cmd, env, working dir, user) inside it and
  beside it (``<image>.json``).
* :func:`read_image_defaults` reads that record back (:class:`ImageDefaults`;
  the schema is in :mod:`firec.images.defaults`).
* :func:`extract_vmlinux` turns a distribution bzImage into the ELF vmlinux
  Firecracker needs on x86-64; :mod:`firec.images.deb` reads Debian packages.

Example::

    >>> from firec.images import build_rootfs, extract_vmlinux, read_image_defaults
    >>> build_rootfs("image.tar", "rootfs.ext4", agent="firec-agent")  # doctest: +SKIP
    PosixPath('rootfs.ext4')
    >>> read_image_defaults("rootfs.ext4").init  # doctest: +SKIP
    '/.firec/firec-agent'
    >>> extract_vmlinux("/boot/vmlinuz-6.1.0-28-cloud-amd64", "vmlinux")  # doctest: +SKIP
    PosixPath('vmlinux')
"""

from firec.images.defaults import ImageDefaults, read_image_defaults
from firec.images.kernel import extract_vmlinux
from firec.images.rootfs import build_rootfs, parse_size

__all__ = ["ImageDefaults", "build_rootfs", "extract_vmlinux", "parse_size", "read_image_defaults"]
