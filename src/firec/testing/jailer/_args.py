"""The jailer's command line: its flags, their parser, ``--help``; Rust's integer parsing.

:func:`parse_args` takes the flags jailer v1.0.0 takes and refuses what its
parser refuses (:class:`ArgError`, the message it prints); :func:`parse_uint`
reads a number as Rust's ``u<bits>::from_str`` does, for the values the
jailer checks later.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = [
    "DEFAULT_CHROOT_BASE",
    "VERSION",
    "ArgError",
    "formatted_help",
    "parse_args",
    "parse_uint",
]

VERSION = "1.0.0"
"""The jailer release this emulates."""

DEFAULT_CHROOT_BASE = "/srv/jailer"
_UINT = re.compile(r"\+?[0-9]+")

# name: (takes a value, required, repeatable, default, help)
_ARGS: dict[str, tuple[bool, bool, bool, str | None, str]] = {
    "id": (True, True, False, None, "Jail ID."),
    "exec-file": (True, True, False, None, "File path to exec into."),
    "uid": (
        True,
        True,
        False,
        None,
        "The user identifier the jailer switches to after exec.",
    ),
    "gid": (
        True,
        True,
        False,
        None,
        "The group identifier the jailer switches to after exec.",
    ),
    "chroot-base-dir": (
        True,
        False,
        False,
        DEFAULT_CHROOT_BASE,
        "The base folder where chroot jails are located.",
    ),
    "netns": (
        True,
        False,
        False,
        None,
        "Path to the network namespace this microVM should join.",
    ),
    "daemonize": (
        False,
        False,
        False,
        None,
        "Daemonize the jailer before exec, by invoking setsid(), and redirecting the standard "
        "I/O file descriptors to /dev/null.",
    ),
    "new-pid-ns": (False, False, False, None, "Exec into a new PID namespace."),
    "cgroup": (
        True,
        False,
        True,
        None,
        "Cgroup and value to be set by the jailer. It must follow this format: "
        "<cgroup_file>=<value> (e.g cpu.shares=10). This argument can be used multiple times "
        "to add multiple cgroups.",
    ),
    "cgroup-version": (
        True,
        False,
        False,
        "1",
        "Select the cgroup version used by the jailer.",
    ),
    "parent-cgroup": (
        True,
        False,
        False,
        None,
        "Parent cgroup in which the cgroup of this microvm will be placed.",
    ),
    "resource-limit": (
        True,
        False,
        True,
        None,
        "Resource limit values to be set by the jailer. It must follow this format: "
        "<resource>=<value> (e.g no-file=1024). This argument can be used multiple times to "
        "add multiple resource limits. Current available resource values are:\n"
        "\t\tfsize: The maximum size in bytes for files created by the process.\n"
        "\t\tno-file: Specifies a value one greater than the maximum file descriptor number "
        "that can be opened by this process.",
    ),
    "help": (False, False, False, None, "Show the help message."),
    "version": (False, False, False, None, "Print the binary version number."),
}


class ArgError(Exception):
    """A command line the jailer's argument parser refuses."""


def formatted_help() -> str:
    """What ``--help`` prints."""

    def section(title: str, names: list[str]) -> list[str]:
        usage = {n: f"  --{n} <{n}>" if _ARGS[n][0] else f"  --{n}" for n in names}
        width = max(len(u) for u in usage.values())
        lines = [title]
        for n in names:
            text = _ARGS[n][4]
            if _ARGS[n][3] is not None:
                text += f' [default: "{_ARGS[n][3]}"]'
            lines.append(f"{usage[n]:<{width}}   {text}")
        return lines

    required = sorted(n for n, spec in _ARGS.items() if spec[1])
    optional = sorted(n for n, spec in _ARGS.items() if not spec[1])
    lines = [
        f"Jailer v{VERSION}",
        "",
        *section("required arguments:", required),
        "",
        *section("optional arguments:", optional),
        "",
        "Any arguments after the -- separator will be supplied to the jailed binary.",
        "",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str]) -> tuple[dict[str, str | list[str] | bool], list[str]]:
    """The jailer's arguments (defaults filled in) and those after ``--``; raises ArgError."""
    args = list(argv)
    extra: list[str] = []
    if "--" in args:
        cut = args.index("--")
        args, extra = args[:cut], args[cut + 1 :]
    if "--help" in args:
        return {"help": True}, extra
    if "--version" in args:
        return {"version": True}, extra
    values: dict[str, str | list[str] | bool] = {}
    words = iter(args)
    for word in words:
        if not word.startswith("--"):
            raise ArgError(
                f"Found argument '{word}' which wasn't expected, or isn't valid in this context."
            )
        name = word[2:]
        if name not in _ARGS:
            raise ArgError(
                f"Found argument '{name}' which wasn't expected, or isn't valid in this context."
            )
        takes_value, _, repeatable, _, _ = _ARGS[name]
        if name in values and not repeatable:
            raise ArgError(f"The argument '{name}' was provided more than once.")
        value: str | bool = True
        if takes_value:
            given = next(words, None)
            if given is None or given.startswith("--"):
                raise ArgError(f"The argument '{name}' requires a value, but none was supplied.")
            value = given
        if repeatable:
            previous = values.setdefault(name, [])
            assert isinstance(previous, list)
            previous.append(str(value))
            continue
        values[name] = value
    for name in sorted(_ARGS):
        if _ARGS[name][1] and name not in values:
            raise ArgError(f"Argument '{name}' required, but not found.")
    for name, (_, _, _, default, _) in _ARGS.items():
        if default is not None:
            values.setdefault(name, default)
    return values, extra


def parse_uint(text: str, bits: int) -> tuple[int | None, str]:
    """Rust's ``u<bits>::from_str``: the number, or None and the error text."""
    if not text:
        return None, "cannot parse integer from empty string"
    if not _UINT.fullmatch(text):
        return None, "invalid digit found in string"
    number = int(text)
    if number >= 1 << bits:
        return None, "number too large to fit in target type"
    return number, ""
