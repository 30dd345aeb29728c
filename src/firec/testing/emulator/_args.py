"""Firecracker's command line: its flags per release, their parser and ``--help``.

:func:`parse_args` is Firecracker's own ``ArgParser`` (not clap): the same
flags for the emulated release, the same refusals (:class:`ArgError`, with the
Display and Debug texts Firecracker prints) and defaults;
:func:`formatted_help` is what ``--help`` prints; :func:`validate_id` checks
``--id``. The emulator's own flags (``--emulate-version``...) are taken off
the command line before, by :mod:`._cli`.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._release import Release

__all__ = [
    "DEFAULT_PAYLOAD",
    "DEFAULT_SOCKET",
    "ArgError",
    "formatted_help",
    "parse_args",
    "validate_id",
]

DEFAULT_SOCKET = "/run/firecracker.socket"
DEFAULT_PAYLOAD = 51200

# (name, takes_value, help, default, requires, forbids, first minor having it)
_ARGS: list[tuple[str, bool, str, str | None, str | None, str | None, int]] = [
    (
        "api-sock",
        True,
        "Path to unix domain socket used by the API.",
        DEFAULT_SOCKET,
        None,
        None,
        0,
    ),
    ("id", True, "MicroVM unique identifier.", "anonymous-instance", None, None, 0),
    (
        "seccomp-filter",
        True,
        "Optional parameter which allows specifying the path to a custom seccomp filter. For "
        "advanced users.",
        None,
        None,
        "no-seccomp",
        0,
    ),
    (
        "no-seccomp",
        False,
        "Optional parameter which allows starting and using a microVM without seccomp "
        "filtering. Not recommended.",
        None,
        None,
        "seccomp-filter",
        0,
    ),
    (
        "start-time-us",
        True,
        "Process start time (wall clock, microseconds). This parameter is optional.",
        None,
        None,
        None,
        0,
    ),
    (
        "start-time-cpu-us",
        True,
        "Process start CPU time (wall clock, microseconds). This parameter is optional.",
        None,
        None,
        None,
        0,
    ),
    (
        "parent-cpu-time-us",
        True,
        "Parent process CPU time (wall clock, microseconds). This parameter is optional.",
        None,
        None,
        None,
        0,
    ),
    (
        "config-file",
        True,
        "Path to a file that contains the microVM configuration in JSON format.",
        None,
        None,
        None,
        0,
    ),
    (
        "metadata",
        True,
        "Path to a file that contains metadata in JSON format to add to the mmds.",
        None,
        None,
        None,
        0,
    ),
    (
        "no-api",
        False,
        "Optional parameter which allows starting and using a microVM without an active API "
        "socket.",
        None,
        "config-file",
        None,
        0,
    ),
    (
        "log-path",
        True,
        "Path to a fifo or a file used for configuring the logger on startup.",
        None,
        None,
        None,
        0,
    ),
    ("level", True, "Set the logger level.", None, None, None, 0),
    ("module", True, "Set the logger module filter.", None, None, None, 6),
    ("show-level", False, "Whether or not to output the level in the logs.", None, None, None, 0),
    (
        "show-log-origin",
        False,
        "Whether or not to include the file path and line number of the log's origin.",
        None,
        None,
        None,
        0,
    ),
    (
        "metrics-path",
        True,
        "Path to a fifo or a file used for configuring the metrics on startup.",
        None,
        None,
        None,
        2,
    ),
    (
        "boot-timer",
        False,
        "Whether or not to load boot timer device for logging elapsed time since InstanceStart "
        "command.",
        None,
        None,
        None,
        0,
    ),
    ("version", False, "Print the binary version number.", None, None, None, 0),
    ("snapshot-version", False, "Print the supported data format version.", None, None, None, 7),
    (
        "describe-snapshot",
        True,
        "Print the data format version of the provided snapshot state file.",
        None,
        None,
        None,
        0,
    ),
    (
        "http-api-max-payload-size",
        True,
        "Http API request payload max size, in bytes.",
        str(DEFAULT_PAYLOAD),
        None,
        None,
        0,
    ),
    ("mmds-size-limit", True, "Mmds data store limit, in bytes.", None, None, None, 1),
    ("enable-pci", False, "Enables PCIe support.", None, None, None, 13),
]


class ArgError(Exception):
    """A command line Firecracker's parser refuses: Display and Debug texts."""

    def __init__(self, display: str, debug: str) -> None:
        super().__init__(display)
        self.display = display
        self.debug = debug


def _spec(rel: Release) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for name, takes, help_text, default, requires, forbids, since in _ARGS:
        if rel.minor < since:
            continue
        if not rel.at_least(5) and name in ("level", "show-level", "show-log-origin"):
            requires = "log-path"
        if name == "level" and not rel.at_least(5):
            default = "Warning"
        if name == "version" and not rel.at_least(6):
            help_text = (
                "Print the binary version number and a list of supported snapshot data format "
                "versions."
            )
        if name == "http-api-max-payload-size" and not rel.at_least(6):
            help_text, default = "Http API request payload max size.", None
        out[name] = {
            "takes": takes,
            "help": help_text,
            "default": default,
            "requires": requires,
            "forbids": forbids,
        }
    return out


def parse_args(rel: Release, argv: Sequence[str]) -> dict[str, str | bool]:
    """Firecracker's ArgParser: returns user values (flags as True); raises ArgError."""
    spec = _spec(rel)
    args = list(argv)
    if "--" in args:
        args = args[: args.index("--")]
    if "--help" in args or "-h" in args:
        return {"help": True}
    if "--version" in args:
        return {"version": True}
    values: dict[str, str | bool] = {}
    it = iter(args)
    for arg in it:
        if not arg.startswith("--"):
            raise ArgError(
                f"Found argument '{arg}' which wasn't expected, or isn't valid in this context.",
                f'UnexpectedArgument("{arg}")',
            )
        name = arg[2:]
        if name not in spec:
            raise ArgError(
                f"Found argument '{name}' which wasn't expected, or isn't valid in this context.",
                f'UnexpectedArgument("{name}")',
            )
        if name in values:
            raise ArgError(
                f"The argument '{name}' was provided more than once.",
                f'DuplicateArgument("{name}")',
            )
        if spec[name]["takes"]:
            val = next(it, None)
            if val is None or val.startswith("--"):
                raise ArgError(
                    f"The argument '{name}' requires a value, but none was supplied.",
                    f'MissingValue("{name}")',
                )
            values[name] = val
        else:
            values[name] = True
    for name in sorted(spec):
        if name not in values:
            continue
        req = spec[name]["requires"]
        if req and f"--{req}" not in args:
            raise ArgError(
                f"Argument '{req}' required, but not found.", f'MissingArgument("{req}")'
            )
        forbid = spec[name]["forbids"]
        if forbid and f"--{forbid}" in args:
            raise ArgError(
                f"Argument '{forbid}' cannot be used together with argument '{name}'.",
                f'ForbiddenArgument("{name}", "{forbid}")',
            )
    for name, s in spec.items():
        if name not in values and s["default"] is not None:
            values[name] = str(s["default"])
    return values


def formatted_help(rel: Release) -> str:
    spec = _spec(rel)
    entries = dict(spec)
    entries["help"] = {"takes": False, "help": "Show the help message.", "default": None}
    names = {n: (f"  --{n} <{n}>" if e["takes"] else f"  --{n}") for n, e in entries.items()}
    width = max(len(v) for v in names.values())
    lines = ["optional arguments:"]
    for n in sorted(entries):
        e = entries[n]
        text = str(e["help"])
        if e["default"] is not None:
            text += f' [default: "{e["default"]}"]'
        lines.append(f"{names[n]:<{width}}   {text}")
    return "\n".join(lines)


def validate_id(instance_id: str) -> str | None:
    if not 1 <= len(instance_id) <= 64:
        return f"InvalidLen({len(instance_id)}, 1, 64)"
    for i, c in enumerate(instance_id):
        if not (c.isalnum() or c == "-"):
            return f"InvalidChar('{c}', {i})"
    return None
