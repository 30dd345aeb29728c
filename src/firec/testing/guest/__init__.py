"""firec's tiny test guest: a freestanding x86-64 ELF "kernel" for Firecracker.

A full Linux guest is slow to boot and, on nested virtualization, often does
not boot at all. This guest is a few hundred bytes of C (``guest.c`` next to
this module, shipped with the package) that Firecracker boots in milliseconds.
:func:`build_test_guest` compiles it with the machine's C compiler; no binary
is shipped.

Protocol (the firec emulator imitates it too):

1. At boot the guest prints exactly ``firec-guest: booted\\n`` on the serial
   console (I/O port 0x3f8, i.e. Firecracker's stdout or its ``/serial``
   output).
2. For each kernel command-line token ``firec.echo=WORD``, in order, it prints
   ``firec-guest: echo WORD\\n``.
3. If the command line has the token ``firec.exit``, the guest resets through
   the i8042 keyboard controller (0xFE to port 0x64) and Firecracker exits with
   status 0. Otherwise the guest parks its vCPU forever (``cli; hlt``): the VM
   stays ``Running`` and can be paused, resumed, snapshotted and restored.

Tokens are separated by whitespace; every other token (``console=ttyS0``, or
those Firecracker appends itself) is ignored. The guest has no keyboard
driver and never enables interrupts, so ``SendCtrlAltDel`` has no effect on it.

Example::

    from firec.testing.guest import BOOT_LINE, build_test_guest, guest_args

    kernel = build_test_guest()
    boot_args = f"console=ttyS0 {guest_args(exit=True, echo=['hi'])}"
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import subprocess
import tempfile
from collections.abc import Sequence

from firec.errors import FirecError, ValidationError

__all__ = [
    "BOOT_LINE",
    "ECHO_PREFIX",
    "ECHO_TOKEN",
    "EXIT_TOKEN",
    "GUEST_FILENAME",
    "build_test_guest",
    "echo_line",
    "guest_args",
]

BOOT_LINE = "firec-guest: booted"
"""The first serial line of the guest (without the newline)."""

ECHO_PREFIX = "firec-guest: echo "
"""What precedes each echoed word on the serial console."""

EXIT_TOKEN = "firec.exit"
"""Command-line token that makes the guest reset (Firecracker exits 0)."""

ECHO_TOKEN = "firec.echo="

GUEST_FILENAME = "firec-test-guest.elf"
"""Name of the compiled guest inside the destination directory."""

_HERE = pathlib.Path(__file__).resolve().parent
_SOURCES = ("guest.c", "guest.ld")
_CFLAGS = (
    "-O2",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-static",
    "-nostdlib",
    "-ffreestanding",
    "-fno-pic",
    "-no-pie",
    "-mgeneral-regs-only",
    "-mno-red-zone",
    "-fno-stack-protector",
    "-fno-asynchronous-unwind-tables",
    "-Wl,--build-id=none",
    "-Wl,--no-warn-rwx-segments",
)


def echo_line(word: str) -> str:
    """The serial line (without newline) the guest prints for ``firec.echo=word``."""
    return ECHO_PREFIX + word


def guest_args(*, exit: bool = False, echo: Sequence[str] = ()) -> str:
    """Build the kernel command-line tokens that drive the guest.

    Args:
        exit: add ``firec.exit``: the guest resets after printing, and
            Firecracker exits with status 0. Without it the guest parks.
        echo: words the guest prints back, one ``firec-guest: echo WORD`` line
            each, in order.

    Returns:
        The tokens joined by spaces, to append to ``boot_args``.

    Raises:
        ValidationError: a word is empty, not a plain string, or contains
            whitespace or a non-printable/non-ASCII character.
    """
    if isinstance(echo, str):
        raise ValidationError("echo", "must be a sequence of words, not a single string")
    tokens = []
    for index, word in enumerate(echo):
        field = f"echo[{index}]"
        if not isinstance(word, str) or not word:
            raise ValidationError(field, f"must be a non-empty string, got {word!r}")
        if not all(33 <= ord(c) <= 126 for c in word):
            raise ValidationError(
                field, f"must be printable ASCII without whitespace, got {word!r}"
            )
        tokens.append(ECHO_TOKEN + word)
    if exit:
        tokens.append(EXIT_TOKEN)
    return " ".join(tokens)


def _compiler_identity(cc: str) -> tuple[str, str]:
    """Resolve ``cc`` and return its path and ``--version`` text; check it targets x86-64."""
    path = shutil.which(cc)
    if path is None:
        raise FirecError(
            f"cannot build the test guest: C compiler {cc!r} not found on PATH; "
            "install gcc (e.g. `apt-get install gcc`) or pass cc='/path/to/gcc'"
        )
    try:
        machine = _run([path, "-dumpmachine"]).strip()
        version = _run([path, "--version"])
    except OSError as exc:
        raise FirecError(f"cannot build the test guest: running {path} failed: {exc}") from exc
    if not machine.startswith("x86_64"):
        raise FirecError(
            f"cannot build the test guest: {path} targets {machine!r}; the guest needs an "
            "x86_64 compiler (pass cc='x86_64-linux-gnu-gcc' to cross-compile)"
        )
    return path, version


def _run(argv: list[str]) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise FirecError(
            f"cannot build the test guest: `{' '.join(argv)}` exited with status "
            f"{result.returncode}:\n{result.stderr.strip()}"
        )
    return result.stdout


def _cache_root() -> pathlib.Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "firec"


def build_test_guest(dest: str | os.PathLike[str] | None = None, *, cc: str = "cc") -> pathlib.Path:
    """Compile the test guest and return the path of the ELF kernel.

    Args:
        dest: directory to write ``firec-test-guest.elf`` into (created if
            missing; the guest is rebuilt each time). When ``None``, a cache
            directory under ``$XDG_CACHE_HOME/firec`` (or ``~/.cache/firec``)
            keyed by a hash of the sources, flags and compiler version is
            used, and an existing build there is reused.
        cc: the C compiler (a name on ``PATH`` or a path); gcc or clang
            targeting x86-64.

    Returns:
        The path of the compiled guest, usable as ``kernel_image_path``.

    Raises:
        FirecError: no compiler was found, it does not target x86-64, or the
            compilation failed (the message carries the compiler's stderr).
    """
    compiler, version = _compiler_identity(cc)
    sources = [_HERE / name for name in _SOURCES]
    if dest is None:
        digest = hashlib.sha256()
        parts = [s.read_bytes() for s in sources]
        parts += [text.encode() for text in (*_CFLAGS, version, compiler)]
        for part in parts:
            digest.update(part)
            digest.update(b"\0")
        directory = _cache_root() / f"guest-{digest.hexdigest()[:16]}"
        target = directory / GUEST_FILENAME
        if target.is_file():
            return target
    else:
        directory = pathlib.Path(dest)
        target = directory / GUEST_FILENAME
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FirecError(f"cannot build the test guest: cannot create {directory}: {exc}") from exc
    # Compile next to the target, then rename: concurrent builds never see half a file.
    fd, partial = tempfile.mkstemp(prefix=".firec-guest-", dir=directory)
    os.close(fd)
    try:
        _run(
            [
                compiler,
                *_CFLAGS,
                f"-Wl,-T,{_HERE / 'guest.ld'}",
                "-o",
                partial,
                str(_HERE / "guest.c"),
            ]
        )
        os.chmod(partial, 0o755)
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return target
