"""A property-based sweep of bad input over ``Config.builder`` and ``firec run``.

For every setter of :class:`firec.vm.config.Builder` and of its sub-builders
(drives, machine, jailer), and for every option of ``firec run``, hypothesis
draws invalid values: wrong types, numbers out of range, unknown or wrongly
cased enum strings, control characters, empty, relative or missing paths.
Each one must be refused

* with a :mod:`firec.errors` error whose field names the setter's field (on
  the command line: a message naming the option and exit status 2, never a
  traceback);
* before anything is spawned: a spy stands in for Firecracker and the jailer;
* leaving nothing behind: the workdir and the registry stay empty, and no
  child process is left.

CI runs a derandomized sweep of modest size (some tens of seconds);
``FIREC_SWEEP_PROFILE=deep`` draws many more, at random.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import typer.main
import typer.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firec.api import models
from firec.cli.output import ExitCode
from firec.errors import ValidationError
from firec.vm.config import Builder, Config
from tests.support import SpyHost

_HEALTH = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large]
_PROFILES = {  # examples per setter, and per option (each one a whole `firec run`)
    "ci": (20, 12),
    "deep": (1000, 300),
}
_SETTER_EXAMPLES, _OPTION_EXAMPLES = _PROFILES[os.environ.get("FIREC_SWEEP_PROFILE", "ci")]
SWEEP = settings(
    max_examples=_SETTER_EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("FIREC_SWEEP_PROFILE", "ci") == "ci",
    database=None,
    suppress_health_check=_HEALTH,
)
SWEEP_CLI = settings(SWEEP, max_examples=_OPTION_EXAMPLES)


# -- the scratch host ---------------------------------------------------------------------------


class Scratch(SpyHost):
    """The scratch host, with a valid start for each setter."""

    def base(self, *, jailed: bool = False) -> Any:
        """A valid start: the config builder, or (``jailed``) its jailer's builder."""
        builder = Config.builder("vm-1", self.kernel).workdir(self.workdir)
        if not jailed:
            return builder.firecracker_binary(self.spy)
        return builder.jailer_cfg().exec_file(self.spy).jailer_binary(self.spy).uid(1234).gid(1234)


@pytest.fixture(scope="module", autouse=True)
def _one_command_for_all_runs() -> Iterator[None]:
    """Typer turns the app into a click command on every invoke: once is enough here."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(typer.testing, "_get_command", functools.cache(typer.main.get_command))
        yield


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Scratch:
    return Scratch.make(tmp_path_factory.mktemp("sweep"))


def assert_names(error: ValidationError, field: str) -> None:
    """``error`` is about ``field`` (or a part of it), and says so first."""
    named = error.field
    assert named == field or named.startswith((f"{field}.", f"{field}[")), (named, str(error))
    assert str(error).startswith(f"{named}: ") and error.reason


# -- strategies of bad values -------------------------------------------------------------------

TEXT = st.characters(codec="utf-8")
NOT_A_PATH = st.one_of(
    st.integers(),
    st.floats(allow_nan=True),
    st.booleans(),
    st.binary(min_size=1, max_size=8),
    st.lists(st.text(max_size=3), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.just(""),
    st.text(TEXT, max_size=8).map(lambda t: f"/tmp/{t}\x00x"),
)
RELATIVE = st.text(TEXT.filter(lambda c: c != "\x00"), min_size=1, max_size=12).filter(
    lambda t: not t.startswith("/")
)
MISSING = st.text(string.ascii_letters + string.digits, min_size=1, max_size=12).map(
    lambda t: f"/nonexistent-firec-sweep/{t}"
)
BAD_PATH = st.one_of(NOT_A_PATH, RELATIVE)
BAD_INPUT_FILE = st.one_of(BAD_PATH, MISSING)
NOT_A_BOOL = st.one_of(
    st.integers(), st.text(max_size=5), st.none(), st.floats(), st.lists(st.booleans(), max_size=1)
)
NOT_A_STR = st.one_of(st.integers(), st.floats(), st.booleans(), st.binary(max_size=4), st.none())


def not_one_of(
    values: list[str], *, none_ok: bool = False, ignore_case: bool = False
) -> st.SearchStrategy[Any]:
    """Anything but one of ``values``: other text, other case, padding, other types."""
    folded = {v.lower() for v in values}

    def invalid(text: str) -> bool:
        return text.lower() not in folded if ignore_case else text not in values

    others = [
        st.text(TEXT, max_size=12).filter(invalid),
        st.sampled_from(values).map(lambda v: f" {v}"),
        st.integers(),
        st.floats(),
        st.booleans(),
        st.lists(st.sampled_from(values), max_size=2),
    ]
    if not ignore_case:
        others.append(st.sampled_from(values).map(str.swapcase).filter(invalid))
    if not none_ok:
        others.append(st.none())
    return st.one_of(*others)


def bad_int(minimum: int, maximum: int | None = None) -> st.SearchStrategy[Any]:
    """Integers outside ``minimum``..``maximum``, and what is not an integer."""
    outside = [st.integers(max_value=minimum - 1)]
    if maximum is not None:
        outside.append(st.integers(min_value=maximum + 1))
    inside = st.integers(minimum, maximum if maximum is not None else minimum + 1000)
    return st.one_of(
        *outside,
        inside.map(float),  # 2.0 is not 2
        st.floats(),
        st.booleans(),
        st.text(string.digits, min_size=1, max_size=4),
        st.none(),
    )


def not_matching(
    pattern: str, max_size: int, alphabet: st.SearchStrategy[str] = TEXT
) -> st.SearchStrategy[str]:
    """Text of ``alphabet`` (at most ``max_size`` characters) that ``pattern`` does not match."""
    return st.text(alphabet, max_size=max_size).filter(lambda t: not re.fullmatch(pattern, t))


#: What ``vm_id``, a ``--cgroup`` and a jailer resource limit must match.
VM_ID = r"[A-Za-z0-9-]{1,64}"
CGROUP = r"[a-z_]+\.[a-zA-Z0-9_.]+=[^\x00-\x1f\x7f]+"
RESOURCE_LIMIT = r"(fsize|no-file)=[0-9]+"


def with_char(alphabet: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Printable ASCII text holding one character of ``alphabet``."""
    printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=10)
    return st.tuples(printable, alphabet, printable).map("".join)


CONTROL = st.characters(max_codepoint=0x1F) | st.just("\x7f")
NOT_PRINTABLE_ASCII = st.one_of(CONTROL, st.characters(min_codepoint=0x80, codec="utf-8"))
BAD_ID = st.one_of(
    not_matching(VM_ID, 70),
    st.from_regex(VM_ID + r"\n", fullmatch=True),
    NOT_A_STR.filter(lambda v: v is not None),
    st.lists(st.text(max_size=3), max_size=1),
)
BAD_DEVICE_ID = not_matching(r"[A-Za-z0-9_]+", 10)
NOT_A_MODEL = st.one_of(st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=2))


# -- the setters --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setter:
    """A setter of the builder, the bad values to give it, and the field its refusal names."""

    name: str
    field: str
    bad: st.SearchStrategy[Any]
    apply: Callable[[Scratch, Builder, Any], Builder]
    jailed: bool = False


def _drive(s: Scratch, b: Builder, **options: Any) -> Builder:
    drive = b.add_drive("d", s.disk)
    for name, value in options.items():
        drive = getattr(drive, name)(value)
    return drive.build()


def _machine(b: Builder, name: str, value: Any) -> Builder:
    return getattr(b.machine_cfg(), name)(value).build()


def _jailer(b: Any, name: str, *values: Any) -> Builder:
    """``b`` is a JailerBuilder (``Scratch.base(jailed=True)``): set, then back to the config."""
    return getattr(b, name)(*values).build()


def _jailer_setter(method: str, field: str, bad: st.SearchStrategy[Any]) -> Setter:
    """The jailer builder's ``method``, whose refusals name ``jailer.<field>``."""
    return Setter(
        f"jailer {method}",
        f"jailer.{field}",
        bad,
        lambda s, b, v: _jailer(b, method, v),
        jailed=True,
    )


def _plain(name: str, field: str, bad: st.SearchStrategy[Any]) -> Setter:
    return Setter(name, field, bad, lambda s, b, v: getattr(b, name)(v))


LOG_LEVELS = [level.value for level in models.LogLevel]
SETTERS: list[Setter] = [
    Setter("vm_id", "vm_id", BAD_ID, lambda s, b, v: Config.builder(v, s.kernel)),
    Setter("kernel", "kernel_image", BAD_INPUT_FILE, lambda s, b, v: Config.builder("vm-1", v)),
    _plain(
        "kernel_args",
        "kernel_args",
        st.one_of(with_char(NOT_PRINTABLE_ASCII), NOT_A_STR, st.lists(st.text(), max_size=2)),
    ),
    _plain("initrd_path", "initrd", BAD_INPUT_FILE),
    _plain("firecracker_binary", "firecracker_binary", BAD_PATH),
    _plain("workdir", "workdir", BAD_PATH),
    _plain("state_dir", "state_dir", BAD_PATH),
    _plain("socket_path", "socket_path", BAD_PATH),
    _plain("log_path", "log_path", BAD_PATH),
    _plain("log_fifo", "log_fifo", BAD_PATH),
    _plain("metrics_path", "metrics_path", BAD_PATH),
    _plain("metrics_fifo", "metrics_fifo", BAD_PATH),
    _plain("serial", "serial.serial_out_path", BAD_PATH),
    _plain("log_level", "log_level", not_one_of(LOG_LEVELS, ignore_case=True)),
    _plain("boot_method", "boot_method", not_one_of(["api", "config-file"])),
    _plain("net_ns", "net_ns", st.one_of(NOT_A_STR, st.just(""), with_char(CONTROL))),
    _plain("console", "console", NOT_A_MODEL),
    _plain("cpu_config", "cpu_config", NOT_A_MODEL),
    _plain("memory_hotplug", "memory_hotplug", NOT_A_MODEL),
    Setter("add_pmem", "pmem", NOT_A_MODEL, lambda s, b, v: b.add_pmem(v)),
    Setter(
        "add_network_interface",
        "network_interfaces",
        NOT_A_MODEL,
        lambda s, b, v: b.add_network_interface(v),
    ),
    Setter(
        "extra_args",
        "extra_args",
        st.one_of(NOT_A_STR, with_char(CONTROL)),
        lambda s, b, v: b.extra_args("--level", v),
    ),
    Setter("logger path", "log_path", BAD_PATH, lambda s, b, v: b.logger(v)),
    Setter("logger fifo", "log_fifo", BAD_PATH, lambda s, b, v: b.logger(fifo=v)),
    Setter(
        "logger level",
        "log_level",
        not_one_of(LOG_LEVELS, none_ok=True, ignore_case=True),
        lambda s, b, v: b.logger(s.root / "log", level=v),
    ),
    Setter(
        "logger show_level",
        "log_show_level",
        NOT_A_BOOL,
        lambda s, b, v: b.logger(s.root / "log", show_level=v),
    ),
    Setter(
        "logger show_log_origin",
        "log_show_origin",
        NOT_A_BOOL,
        lambda s, b, v: b.logger(s.root / "log", show_log_origin=v),
    ),
    Setter("metrics path", "metrics_path", BAD_PATH, lambda s, b, v: b.metrics(v)),
    Setter("metrics fifo", "metrics_fifo", BAD_PATH, lambda s, b, v: b.metrics(fifo=v)),
    Setter(
        "vsock guest_cid",
        "vsock.guest_cid",
        bad_int(3, 2**32 - 1),
        lambda s, b, v: b.vsock(v, "v.sock"),
    ),
    Setter("vsock uds_path", "vsock.uds_path", NOT_A_PATH, lambda s, b, v: b.vsock(3, v)),
    Setter("balloon amount", "balloon.amount_mib", bad_int(0), lambda s, b, v: b.balloon(v)),
    Setter(
        "balloon deflate_on_oom",
        "balloon.deflate_on_oom",
        NOT_A_BOOL.filter(lambda v: v is not None),
        lambda s, b, v: b.balloon(64, deflate_on_oom=v),
    ),
    Setter(
        "balloon stats interval",
        "balloon.stats_polling_interval_s",
        bad_int(0).filter(lambda v: v is not None),
        lambda s, b, v: b.balloon(64, stats_polling_interval_s=v),
    ),
    Setter(
        "entropy rate_limiter", "entropy.rate_limiter", NOT_A_MODEL, lambda s, b, v: b.entropy(v)
    ),
    Setter(
        "mmds version",
        "mmds_config.version",
        not_one_of(["V1", "V2"]),
        lambda s, b, v: b.mmds({}, version=v),
    ),
    Setter(
        "mmds network_interfaces",
        "mmds_config.network_interfaces",
        st.one_of(
            st.text(max_size=5),
            st.integers(),
            st.lists(BAD_DEVICE_ID, min_size=1, max_size=2),
            st.lists(st.from_regex(r"[A-Za-z0-9_]{1,8}", fullmatch=True), min_size=1, max_size=2),
        ),
        lambda s, b, v: b.mmds({}, network_interfaces=v),
    ),
    Setter(
        "mmds data",
        "mmds_data",
        st.one_of(
            st.integers(),
            st.lists(st.integers(), max_size=2),
            st.text(max_size=3),
            st.just({"a": float("nan")}),
            st.just({"a": object()}),
            st.just({1: {2}}),
        ),
        lambda s, b, v: b.mmds(v),
    ),
    Setter(
        "mmds ipv4_address",
        "mmds_config.ipv4_address",
        st.one_of(st.text(max_size=15), st.integers()).filter(
            lambda v: not (isinstance(v, str) and re.fullmatch(r"169\.254\.\d+\.\d+", v))
        ),
        lambda s, b, v: b.mmds({}, ipv4_address=v),
    ),
    Setter(
        "mmds imds_compat",
        "mmds_config.imds_compat",
        NOT_A_BOOL.filter(lambda v: v is not None),
        lambda s, b, v: b.mmds({}, imds_compat=v),
    ),
    # drives
    Setter(
        "add_drive id",
        "drives",
        BAD_DEVICE_ID,
        lambda s, b, v: b.add_drive(v, s.disk).build(),
    ),
    Setter("add_drive path", "drives", BAD_INPUT_FILE, lambda s, b, v: b.add_drive("d", v).build()),
    Setter(
        "drive is_read_only",
        "drives.d.is_read_only",
        NOT_A_BOOL,
        lambda s, b, v: _drive(s, b, is_read_only=v),
    ),
    Setter(
        "drive is_root_device",
        "drives.d.is_root_device",
        NOT_A_BOOL,
        lambda s, b, v: _drive(s, b, is_root_device=v),
    ),
    Setter(
        "drive part_uuid",
        "drives.d.partuuid",
        st.one_of(
            not_matching(r"[0-9A-Fa-f]+(-[0-9A-Fa-f]+)*", 12),
            NOT_A_STR,
        ),
        lambda s, b, v: _drive(s, b, part_uuid=v),
    ),
    Setter(
        "drive rate_limiter",
        "drives.d.rate_limiter",
        NOT_A_MODEL,
        lambda s, b, v: _drive(s, b, rate_limiter=v),
    ),
    Setter(
        "drive io_engine",
        "drives.d.io_engine",
        not_one_of(["Sync", "Async"]),
        lambda s, b, v: _drive(s, b, io_engine=v),
    ),
    Setter(
        "drive cache_type",
        "drives.d.cache_type",
        not_one_of(["Unsafe", "Writeback"]),
        lambda s, b, v: _drive(s, b, cache_type=v),
    ),
    # the machine
    Setter(
        "vcpu_count",
        "machine.vcpu_count",
        bad_int(1, 32),
        lambda s, b, v: _machine(b, "vcpu_count", v),
    ),
    Setter(
        "mem_size_mib",
        "machine.mem_size_mib",
        bad_int(1),
        lambda s, b, v: _machine(b, "mem_size_mib", v),
    ),
    Setter(
        "smt",
        "machine.smt",
        NOT_A_BOOL.filter(lambda v: v is not None),
        lambda s, b, v: _machine(b, "smt", v),
    ),
    Setter(
        "track_dirty_pages",
        "machine.track_dirty_pages",
        NOT_A_BOOL.filter(lambda v: v is not None),
        lambda s, b, v: _machine(b, "track_dirty_pages", v),
    ),
    Setter(
        "cpu_template",
        "machine.cpu_template",
        not_one_of([t.value for t in models.CpuTemplate], none_ok=True),
        lambda s, b, v: _machine(b, "cpu_template", v),
    ),
    Setter(
        "huge_pages",
        "machine.huge_pages",
        not_one_of([h.value for h in models.HugePages], none_ok=True),
        lambda s, b, v: _machine(b, "huge_pages", v),
    ),
]

JAILER_SETTERS: list[Setter] = [
    _jailer_setter(name, name, bad)
    for name, bad in [
        ("uid", bad_int(1, 2**32 - 2)),
        ("gid", bad_int(1, 2**32 - 2)),
        (
            "numa_node",
            st.one_of(
                st.integers(max_value=-1),
                st.integers(min_value=4096),
                st.text(max_size=2),
                st.floats(),
            ),
        ),
        ("exec_file", BAD_PATH),
        ("jailer_binary", BAD_PATH),
        ("chroot_base_dir", BAD_PATH),
        ("netns", BAD_PATH),
        ("mode", not_one_of(["attached", "daemon"])),
        ("new_pid_ns", NOT_A_BOOL),
        ("allow_root", NOT_A_BOOL),
        (
            "cgroup_version",
            st.one_of(
                st.integers().filter(lambda v: v not in (1, 2)),
                st.sampled_from([1.0, 2.0, "1", "2"]),  # equal to 1 or 2, or alike, yet not ints
                st.booleans(),
                st.text(max_size=2),
                st.floats(),
            ),
        ),
        (
            "parent_cgroup",
            st.one_of(
                NOT_A_STR.filter(lambda v: v is not None),
                st.just(""),
                st.text(string.ascii_letters, min_size=1, max_size=6).map(lambda t: f"/{t}"),
                st.text(string.ascii_letters, max_size=6).map(lambda t: f"{t}/../x"),
                with_char(CONTROL),
            ),
        ),
    ]
]
JAILER_SETTERS += [
    _jailer_setter("daemonize", "mode", NOT_A_BOOL),
    _jailer_setter("cgroup", "cgroups", st.one_of(not_matching(CGROUP, 20), NOT_A_STR)),
    _jailer_setter(
        "resource_limit", "resource_limits", st.one_of(not_matching(RESOURCE_LIMIT, 20), NOT_A_STR)
    ),
    _jailer_setter("extra_args", "extra_args", st.one_of(NOT_A_STR, with_char(CONTROL))),
]


@pytest.mark.parametrize("setter", SETTERS + JAILER_SETTERS, ids=lambda s: s.name)
def test_every_setter_refuses_bad_values_naming_the_field(scratch: Scratch, setter: Setter) -> None:
    @SWEEP
    @given(value=setter.bad)
    def check(value: Any) -> None:
        with pytest.raises(ValidationError) as info:
            setter.apply(scratch, scratch.base(jailed=setter.jailed), value).build()
        assert_names(info.value, setter.field)
        scratch.assert_nothing_made()

    check()


# Valid steps, each with the fields it sets: a bad value checked only by build() must not
# be overwritten by a good one before it, so a step never joins a setter of its own fields.
VALID_STEPS: list[tuple[frozenset[str], Callable[[Scratch, Builder], Builder]]] = [
    (frozenset({"kernel_args"}), lambda s, b: b.kernel_args("console=ttyS0 reboot=k")),
    (frozenset({"log_level"}), lambda s, b: b.log_level("Debug")),
    (frozenset({"boot_method"}), lambda s, b: b.boot_method("config-file")),
    (
        frozenset({"machine"}),
        lambda s, b: b.machine_cfg().vcpu_count(2).mem_size_mib(256).smt(False).build(),
    ),
    (frozenset({"drives"}), lambda s, b: b.add_drive("ro", s.disk).is_read_only(True).build()),
    (frozenset({"vsock"}), lambda s, b: b.vsock(3, "v.sock")),
    (frozenset({"balloon"}), lambda s, b: b.balloon(16, deflate_on_oom=True)),
    (
        frozenset({"metrics_path", "metrics_fifo"}),
        lambda s, b: b.metrics_path(s.root / "metrics.json"),
    ),
    (frozenset({"extra_args"}), lambda s, b: b.extra_args("--level", "Info")),
    (frozenset({"entropy"}), lambda s, b: b.entropy()),
]


@SWEEP
@given(
    data=st.data(),
    setter=st.sampled_from([s for s in SETTERS if s.name not in ("vm_id", "kernel")]),
)
def test_a_bad_value_among_good_ones_is_still_refused(
    scratch: Scratch, data: st.DataObject, setter: Setter
) -> None:
    mine = re.split(r"[.\[]", setter.field)[0]
    others = [step for fields, step in VALID_STEPS if mine not in fields]
    steps = data.draw(st.lists(st.sampled_from(others), max_size=5))
    at = data.draw(st.integers(0, len(steps)))
    value = data.draw(setter.bad)
    builder = scratch.base()
    with pytest.raises(ValidationError) as info:
        for step in steps[:at]:
            builder = step(scratch, builder)
        builder = setter.apply(scratch, builder, value)
        for step in steps[at:]:
            builder = step(scratch, builder)
        builder.build()
    assert_names(info.value, setter.field)
    scratch.assert_nothing_made()


# -- the command line ---------------------------------------------------------------------------


ARG = st.characters(codec="utf-8", exclude_characters="\x00")  # what argv can hold


@dataclass(frozen=True)
class Option:
    """An option of ``firec run``, bad values for it, and what it needs to be used at all."""

    name: str
    bad: st.SearchStrategy[str]
    needs: tuple[str, ...] = ()


def _not_size(text: str) -> bool:
    return not re.fullmatch(r"\s*[0-9]+\s*([kmgtKMGT]?)([iI]?[bB])?\s*", text)


def _not_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return True
    return False


def _bad_cid(text: str) -> bool:
    cid, _, _ = text.partition(":")
    return not (cid.isascii() and cid.isdigit() and 3 <= int(cid) < 2**32)


JAILED = ("--jailer", "--uid", "1234", "--gid", "1234")
ROUTED = ("--net", "routed")
OPTIONS: list[Option] = [
    Option("--id", not_matching(VM_ID, 70, ARG)),
    Option(
        "--boot-args",
        with_char(
            st.characters(codec="utf-8", exclude_characters="\x00").filter(
                lambda c: not " " <= c <= "~"
            )
        ),
    ),
    Option(
        "--memory",
        st.one_of(
            st.integers(max_value=0).map(str),
            st.from_regex(r"-[0-9]{1,4}[KMGT]?", fullmatch=True),
            st.from_regex(r"[0-9]{1,3}\.[0-9]{1,2}[MG]", fullmatch=True),
            st.integers(1, 1023).map(lambda n: f"{n}K"),
            st.text(string.ascii_letters + " .,-", min_size=1, max_size=6).filter(_not_size),
        ),
    ),
    Option(
        "--cpus",
        st.one_of(st.integers(max_value=0), st.integers(min_value=33)).map(str)
        | st.text(string.ascii_letters, min_size=1, max_size=4),
    ),
    Option(
        "--log-level",
        st.text(ARG, max_size=10).filter(
            lambda t: t.lower() not in {v.lower() for v in LOG_LEVELS}
        ),
    ),
    Option(
        "--boot-method", st.text(ARG, max_size=12).filter(lambda t: t not in ("api", "config-file"))
    ),
    Option("--vsock", st.text(ARG, max_size=12).filter(_bad_cid)),
    Option(
        "--drive",
        st.one_of(
            MISSING,
            st.text(string.ascii_lowercase, min_size=1, max_size=5).map(lambda k: f"path=/x,{k}=1"),
            st.just("id=data"),
            BAD_DEVICE_ID.filter(lambda t: "," not in t and "\x00" not in t).map(
                lambda t: f"path={{disk}},id={t}"
            ),
        ),
    ),
    *(
        Option(name, st.one_of(MISSING, st.just("{root}")))
        for name in ("--rootfs", "--initrd", "KERNEL")
    ),
    Option(
        "--net",
        st.one_of(
            st.text(ARG, max_size=10).filter(
                lambda t: t != "none" and not t.startswith(("tap:", "routed", "cni:"))
            ),
            st.text(string.ascii_letters, min_size=1, max_size=8).map(lambda t: f"routed:{t}"),
            st.just("tap:"),
            st.text("!@#% ", min_size=1, max_size=4).map(lambda t: f"tap:{t}"),
            MISSING.map(lambda t: f"cni:{t}"),
        ),
    ),
    Option(
        "--publish",
        st.one_of(
            st.text(ARG, max_size=10).filter(
                lambda t: not re.fullmatch(r"[0-9]+(:[0-9]+)?(/.*)?", t)
            ),
            st.integers(min_value=65536).map(str),
            st.just("0"),
            st.just("80:0"),
            st.text(string.ascii_lowercase, min_size=1, max_size=5)
            .filter(lambda p: p not in ("tcp", "udp"))
            .map(lambda p: f"80/{p}"),
        ),
        ROUTED,
    ),
    Option("--dns", st.text(ARG, max_size=16).filter(_not_ip), ROUTED),
    *(
        Option(
            name,
            st.one_of(st.integers(max_value=0), st.integers(min_value=2**32 - 1)).map(str),
            ("--jailer", other, "1234"),
        )
        for name, other in (("--uid", "--gid"), ("--gid", "--uid"))
    ),
    Option("--cgroup", not_matching(CGROUP, 20, ARG), JAILED),
    Option("--cgroup-version", st.integers().filter(lambda v: v not in (1, 2)).map(str), JAILED),
    Option("--chroot-base", st.just("{kernel}"), JAILED),
    Option("--jailer-bin", st.one_of(MISSING, st.just("{kernel}")), JAILED),
    Option("--firecracker-bin", st.one_of(MISSING, st.just("{kernel}"), st.just("{root}"))),
    Option("--workdir", st.just("{kernel}")),
    Option(
        "--stop-timeout",
        st.one_of(
            st.floats(max_value=-0.001).map(repr),
            st.just("nan"),
            st.text(string.ascii_letters, min_size=1, max_size=4).filter(
                lambda t: t.lower() not in ("inf", "infinity", "nan")
            ),
        ),
    ),
]


def _firec_run(
    scratch: Scratch, option: Option, value: str
) -> tuple[int, str, BaseException | None]:
    for name, path in (("root", scratch.root), ("kernel", scratch.kernel), ("disk", scratch.disk)):
        value = value.replace(f"{{{name}}}", str(path))
    if option.name == "KERNEL":
        result = scratch.firec_run(*option.needs, kernel=value)
    else:
        result = scratch.firec_run(*option.needs, f"{option.name}={value}", leave_out=option.name)
    return result.exit_code, result.stderr, result.exception


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.name)
def test_every_run_option_refuses_bad_values_cleanly(scratch: Scratch, option: Option) -> None:
    @SWEEP_CLI
    @given(value=option.bad)
    def check(value: str) -> None:
        code, stderr, exception = _firec_run(scratch, option, value)
        assert code == ExitCode.USAGE, (value, stderr)
        assert exception is None or isinstance(exception, SystemExit), repr(exception)
        assert "Traceback" not in stderr
        first = stderr.lstrip().splitlines()[0] if stderr.strip() else ""
        if first.startswith("Usage:"):  # typer's own check of the option's type or range
            assert f"Invalid value for '{option.name}'" in stderr, stderr
        else:
            assert first.startswith(f"error: {option.name}"), stderr
        scratch.assert_nothing_made()

    check()
