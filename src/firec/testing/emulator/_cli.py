"""The emulator's process: Firecracker's command line, start-up, main loop and exits."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import NoReturn

from firec.testing.emulator import _jail, _snapshot
from firec.testing.emulator._api import dispatch
from firec.testing.emulator._http import HttpServer, Request, reply
from firec.testing.emulator._log import LEVELS, Logger
from firec.testing.emulator._metrics import FLUSH_PERIOD_S, Metrics
from firec.testing.emulator._release import Release, parse_release
from firec.testing.emulator._schema import schema
from firec.testing.emulator._serde import SerdeError, from_text
from firec.testing.emulator._vmm import ActionError, Vmm, named_thread

__all__ = ["main"]

EMULATE_FLAG = "--emulate-version"
#: The emulator's flag for a slow stop (seconds; see :class:`Process`).
SLOW_STOP_FLAG = "--emulate-slow-stop"
#: How long, by default, a stopping emulator still reads API requests (and hangs on one).
STOP_WINDOW = 0.001
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


class _ArgError(Exception):
    def __init__(self, display: str, debug: str) -> None:
        super().__init__(display)
        self.display = display
        self.debug = debug


class _Fatal(Exception):
    """Firecracker's main() returning an error: display text, Debug text, exit code."""

    def __init__(self, display: str, debug: str, code: int) -> None:
        super().__init__(display)
        self.display = display
        self.debug = debug
        self.code = code


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
    """Firecracker's ArgParser: returns user values (flags as True); raises _ArgError."""
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
            raise _ArgError(
                f"Found argument '{arg}' which wasn't expected, or isn't valid in this context.",
                f'UnexpectedArgument("{arg}")',
            )
        name = arg[2:]
        if name not in spec:
            raise _ArgError(
                f"Found argument '{name}' which wasn't expected, or isn't valid in this context.",
                f'UnexpectedArgument("{name}")',
            )
        if name in values:
            raise _ArgError(
                f"The argument '{name}' was provided more than once.",
                f'DuplicateArgument("{name}")',
            )
        if spec[name]["takes"]:
            val = next(it, None)
            if val is None or val.startswith("--"):
                raise _ArgError(
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
            raise _ArgError(
                f"Argument '{req}' required, but not found.", f'MissingArgument("{req}")'
            )
        forbid = spec[name]["forbids"]
        if forbid and f"--{forbid}" in args:
            raise _ArgError(
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


def _validate_id(instance_id: str) -> str | None:
    if not 1 <= len(instance_id) <= 64:
        return f"InvalidLen({len(instance_id)}, 1, 64)"
    for i, c in enumerate(instance_id):
        if not (c.isalnum() or c == "-"):
            return f"InvalidChar('{c}', {i})"
    return None


def _io_debug(exc: OSError) -> str:
    kinds = {
        2: "NotFound",
        13: "PermissionDenied",
        17: "AlreadyExists",
        20: "NotADirectory",
        21: "IsADirectory",
    }
    kind = kinds.get(exc.errno or 0, "Other")
    return f'Os {{ code: {exc.errno}, kind: {kind}, message: "{os.strerror(exc.errno or 0)}" }}'


class Process:
    """One emulated Firecracker process.

    Its guest's reset stops it the way Firecracker stops, down to its
    deadlock: the VMM thread logs "Vmm is stopping.", finishes and joins the
    vCPU threads and leaves its event loop; the API thread reads requests
    until it sees the kill switch. A request it reads in that window is
    handed to the VMM thread, which never answers it: the API thread waits
    for the answer and the main thread for the API thread, for good (1.0 to
    1.14). The window lasts :data:`STOP_WINDOW`; ``slow_stop`` seconds make
    both it and the vCPU threads last longer, for tests that must land in it.
    """

    def __init__(self, rel: Release, *, slow_stop: float = 0.0) -> None:
        self.rel = rel
        self.log = Logger(rel)
        self.metrics = Metrics(rel)
        self.vmm: Vmm | None = None
        self.server: HttpServer | None = None
        self.next_flush: float | None = None
        self.slow_stop = slow_stop
        self.stopping = False
        self.api_done = threading.Event()

    # --- exits ---

    def finish(self, code: int) -> NoReturn:
        if self.rel.modern:
            if code == 0:
                self.log.log("Info", "Firecracker exiting successfully. exit_code=0", force=True)
            else:
                self.log.log(
                    "Error", f"Firecracker exiting with error. exit_code={code}", force=True
                )
        sys.stdout.flush()
        os._exit(code)

    def fail(self, fatal: _Fatal) -> NoReturn:
        if self.rel.at_least(5):
            self.log.log(
                "Error", fatal.display, force=True, origin="src/firecracker/src/main.rs:112"
            )
            sys.stderr.write(f"Error: {fatal.debug}\n")
            sys.stderr.flush()
        else:
            self.log.log(
                "Error", fatal.display, force=True, origin="src/firecracker/src/main.rs:213"
            )
        self.finish(fatal.code)

    def panic(self, where: str, message: str) -> NoReturn:
        if self.rel.modern:
            text = f"Firecracker panicked at {where}:\n{message}"
        else:
            text = f"Firecracker panicked at '{message}', {where}"
        self.log.log("Error", text, force=True, origin="src/firecracker/src/main.rs:91")
        sys.stdout.flush()
        sys.stderr.flush()
        signal.signal(signal.SIGABRT, signal.SIG_DFL)
        os.abort()

    # --- start-up ---

    def run(self, argv: Sequence[str]) -> NoReturn:
        rel = self.rel
        try:
            args = parse_args(rel, argv)
        except _ArgError as err:
            sep = " \\n\\n" if rel.modern else " \n\n"
            self.fail(
                _Fatal(
                    f"Arguments parsing error: {err.display}{sep}For more information try --help.",
                    f"ParseArguments({err.debug})",
                    153,
                )
            )
        if args.get("help"):
            sys.stdout.write(f"Firecracker v{rel.version}\n\n{formatted_help(rel)}\n")
            self.finish(0)
        if args.get("version"):
            out = f"Firecracker v{rel.version}\n\n"
            if not rel.modern:
                formats = ", ".join(f"v{f}" for f in rel.supported_snapshot_formats)
                out += f"Supported snapshot data format versions: {formats}\n\n"
            sys.stdout.write(out)
            self.finish(0)
        if args.get("snapshot-version"):
            sys.stdout.write(f"v{rel.snapshot_format}\n")
            self.finish(0)
        if "describe-snapshot" in args:
            self.describe(str(args["describe-snapshot"]))
        instance_id = str(args["id"])
        problem = _validate_id(instance_id)
        if problem:
            self.panic("src/firecracker/src/main.rs:296:48", f"Invalid instance ID: {problem}")
        self.log.instance_id = instance_id
        self.configure_logger(args)
        if rel.at_least(5):
            self.log.log(
                "Info",
                f"Running Firecracker v{rel.version}",
                force=True,
                origin="src/firecracker/src/main.rs:320",
            )
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if "metrics-path" in args:
            try:
                self.metrics.configure(str(args["metrics-path"]))
            except OSError as exc:
                self.fail(
                    _Fatal(
                        "Could not initialize metrics: Cannot initialize the metrics system due "
                        f"to bad user input: {os.strerror(exc.errno or 0)} (os error {exc.errno})",
                        "MetricsInitialization(InitializationFailure("
                        f'"{os.strerror(exc.errno or 0)} '
                        f'(os error {exc.errno})"))',
                        1,
                    )
                )
        if "seccomp-filter" in args:
            path = str(args["seccomp-filter"])
            try:
                with open(_jail.host_path(path), "rb"):
                    pass
            except OSError as exc:
                self.fail(
                    _Fatal(
                        f"Seccomp error: Filter file open error: {os.strerror(exc.errno or 0)} "
                        f"(os error {exc.errno})",
                        f"SeccompFilter(FileOpen({_io_debug(exc)}))",
                        1,
                    )
                )
        config_json = self.read_file(args, "config-file", "configuration")
        metadata = self.read_file(args, "metadata", "mmds content")
        payload_limit = DEFAULT_PAYLOAD
        if "http-api-max-payload-size" in args:
            try:
                payload_limit = int(str(args["http-api-max-payload-size"]))
            except ValueError:
                self.panic(
                    "src/firecracker/src/main.rs:384:18",
                    "'http-api-max-payload-size' parameter expected to be of 'usize' type.: "
                    "ParseIntError { kind: InvalidDigit }",
                )
        mmds_limit = payload_limit
        if "mmds-size-limit" in args:
            try:
                mmds_limit = int(str(args["mmds-size-limit"]))
            except ValueError:
                self.panic(
                    "src/firecracker/src/main.rs:395:18",
                    "'mmds-size-limit' parameter expected to be of 'usize' type.: "
                    "ParseIntError { kind: InvalidDigit }",
                )
        self.vmm = Vmm(
            rel,
            instance_id,
            self.log,
            self.metrics,
            mmds_limit,
            pci_enabled=bool(args.get("enable-pci")),
        )
        if metadata is not None:
            try:
                self.vmm.mmds_data = from_text(metadata, schema(rel).mmds_value)
            except SerdeError as err:
                self.panic(
                    "src/vmm/src/rpc_interface.rs:384:49",
                    f'MMDS error: metadata provided not valid json: Error("{err.message}")',
                )
        if args.get("no-api"):
            self.boot_from_config(config_json or "", api=False)
            self.loop()
        self.serve(args, config_json, payload_limit)

    def configure_logger(self, args: dict[str, str | bool]) -> None:
        rel = self.rel
        level_text = args.get("level")
        if rel.at_least(5):
            level = None
            if isinstance(level_text, str):
                level = {
                    "off": "Off",
                    "trace": "Trace",
                    "debug": "Debug",
                    "info": "Info",
                    "warn": "Warn",
                    "warning": "Warn",
                    "error": "Error",
                }.get(level_text.lower())
                if level is None:
                    self.fail(
                        _Fatal(
                            "Invalid value for logger level: Failed to parse string to level "
                            f"filter: {level_text}.Possible values: [Error, Warning, Info, Debug]",
                            f'InvalidLogLevel(LevelFilterFromStrError("{level_text}"))',
                            152,
                        )
                    )
            try:
                self.log.update(
                    log_path=str(args["log-path"]) if "log-path" in args else None,
                    level=level,
                    show_level=True if args.get("show-level") else None,
                    show_origin=True if args.get("show-log-origin") else None,
                    module=str(args["module"]) if "module" in args else None,
                )
            except OSError as exc:
                msg = f"{os.strerror(exc.errno or 0)} (os error {exc.errno})"
                self.fail(
                    _Fatal(
                        f"Could not initialize logger: Failed to open target file: {msg}",
                        f"LoggerInitialization(LoggerUpdateError({_io_debug(exc)}))",
                        1,
                    )
                )
            return
        if "log-path" not in args:
            return
        level_name = str(level_text or "Warning")
        if level_name.lower() not in ("error", "warning", "info", "debug"):
            self.fail(
                _Fatal(
                    f"Invalid value for logger level: {level_name}.Possible values: [Error, "
                    "Warning, Info, Debug]",
                    "",
                    1,
                )
            )
        try:
            self.log.init_legacy(
                str(args["log-path"]),
                level_name.capitalize(),
                bool(args.get("show-level")),
                bool(args.get("show-log-origin")),
            )
        except OSError as exc:
            self.fail(
                _Fatal(
                    f"Could not initialize logger:: {os.strerror(exc.errno or 0)} (os error "
                    f"{exc.errno})",
                    "",
                    1,
                )
            )

    def read_file(self, args: dict[str, str | bool], name: str, what: str) -> str | None:
        if name not in args:
            return None
        try:
            with open(_jail.host_path(str(args[name])), encoding="utf-8") as f:
                return f.read()
        except (OSError, UnicodeDecodeError) as exc:
            detail = _io_debug(exc) if isinstance(exc, OSError) else "InvalidData"
            self.panic(
                "src/firecracker/src/main.rs:369:20",
                f"Unable to open or read from the {what} file: {detail}",
            )

    def describe(self, path: str) -> NoReturn:
        try:
            sys.stdout.write(_snapshot.describe(_jail.host_path(path)) + "\n")
        except _snapshot.SnapshotFileError as exc:
            self.fail(
                _Fatal(
                    f"When printing Snapshot Data format: {exc.modern}",
                    "PrintSnapshotDataFormat(SnapshotVersion)",
                    1,
                )
            )
        self.finish(0)

    # --- configuration file ---

    def boot_from_config(self, config_json: str, *, api: bool) -> None:
        vmm = self.vmm
        assert vmm is not None
        s = schema(self.rel)
        where = (
            "RunWithApiError error: Failed to build MicroVM from Json: "
            if api
            else ("RunWithoutApiError error: Failed to build MicroVM from Json: ")
        )
        debug_where = (
            "RunWithApi(BuildFromJson(" if api else "RunWithoutApiError(BuildMicroVMFromJson("
        )
        try:
            cfg = from_text(config_json, s.vmm_config)
        except SerdeError as err:
            text = "Configuration for VMM from one single json failed: Invalid JSON: " + err.render(
                config_json
            )
            self._config_failed(where, text, debug_where)
        try:
            self.apply_config(cfg)
        except ActionError as err:
            self._config_failed(
                where,
                f"Configuration for VMM from one single json failed: {err.message}",
                debug_where,
            )
        try:
            vmm.start()
        except ActionError as err:
            self._config_failed(
                where, f"Could not Start MicroVM from one single json: {err.message}", debug_where
            )
        self.log.info(
            "Successfully started microvm that was configured from one single json",
            origin="src/firecracker/src/main.rs:620",
        )
        self.next_flush = time.monotonic() + FLUSH_PERIOD_S

    def _config_failed(self, where: str, text: str, debug_where: str) -> NoReturn:
        if self.rel.modern:
            self.fail(_Fatal(where + text, debug_where + "ParseFromJson))", 1))
        self.fail(_Fatal(text, "", 152))

    def apply_config(self, cfg: dict[str, object]) -> None:
        vmm = self.vmm
        assert vmm is not None
        if cfg.get("logger"):
            vmm.configure_logger(cfg["logger"])  # type: ignore[arg-type]
        if cfg.get("metrics"):
            vmm.configure_metrics(cfg["metrics"]["metrics_path"])  # type: ignore[index]
        if cfg.get("machine-config"):
            vmm.update_machine_config(cfg["machine-config"], full=True)  # type: ignore[arg-type]
        vmm.set_boot_source(cfg["boot-source"])  # type: ignore[arg-type]
        for drive in cfg["drives"]:  # type: ignore[attr-defined]
            vmm.insert_drive(drive)
        for net in cfg.get("network-interfaces") or []:  # type: ignore[attr-defined]
            vmm.insert_net(net)
        if cfg.get("vsock"):
            vmm.set_vsock(cfg["vsock"])  # type: ignore[arg-type]
        if cfg.get("balloon"):
            vmm.set_balloon(cfg["balloon"])  # type: ignore[arg-type]
        if cfg.get("mmds-config"):
            vmm.set_mmds_config(cfg["mmds-config"])  # type: ignore[arg-type]
        if cfg.get("entropy"):
            vmm.set_entropy(cfg["entropy"])  # type: ignore[arg-type]
        for pmem in cfg.get("pmem") or []:  # type: ignore[attr-defined]
            vmm.insert_pmem(pmem)
        if cfg.get("memory-hotplug"):
            vmm.set_memory_hotplug(cfg["memory-hotplug"])  # type: ignore[arg-type]

    # --- API server and main loop ---

    def serve(
        self, args: dict[str, str | bool], config_json: str | None, payload_limit: int
    ) -> NoReturn:
        path = str(args["api-sock"])
        methods = frozenset(
            {"GET", "PUT", "PATCH"} | ({"DELETE"} if self.rel.at_least(16) else set())
        )
        try:
            self.server = HttpServer(
                _jail.host_path(path), self.handle, payload_limit=payload_limit, methods=methods
            )
        except OSError as exc:
            if exc.errno == 98:  # EADDRINUSE
                self.fail(
                    _Fatal(
                        f"RunWithApiError error: Failed to open the API socket at: {path}. Check "
                        "that it is not already used.",
                        f'RunWithApi(FailedToBindSocket("{path}"))',
                        1,
                    )
                )
            self.fail(
                _Fatal(
                    "RunWithApiError error: Failed to bind and run the HTTP server: IO error: "
                    f"{os.strerror(exc.errno or 0)} (os error {exc.errno})",
                    f"RunWithApi(FailedToBindAndRunHttpServer(IOError({_io_debug(exc)})))",
                    1,
                )
            )
        self.log.log(
            "Info",
            f'Listening on API socket ("{path}").',
            force=True,
            origin="src/firecracker/src/api_server_adapter.rs:179",
        )
        # Firecracker serves its API from a thread of that name; the emulator from its main
        # thread, but keeps one named so, as tools (and firec) look for it
        named_thread("fc_api", self.api_done.wait)
        self.log.log(
            "Info",
            "API server started.",
            thread="fc_api",
            force=True,
            origin="src/firecracker/src/api_server/mod.rs:84",
        )
        if config_json is not None:
            self.boot_from_config(config_json, api=True)
            self.check_exit()
        self.loop()

    def handle(self, request: Request) -> bytes:
        vmm = self.vmm
        assert vmm is not None
        if self.stopping:
            self.hang(request)
        was_started = vmm.started
        response = dispatch(vmm, request.method, request.uri, request.body)
        if vmm.started and not was_started:
            self.next_flush = time.monotonic() + FLUSH_PERIOD_S
        return reply(response.status, response.body, deprecated=response.deprecated)

    def check_exit(self) -> None:
        vmm = self.vmm
        assert vmm is not None
        if vmm.exit is None or (vmm.exit.at is not None and time.monotonic() < vmm.exit.at):
            return
        if vmm.exit.code == 0:
            self.log.info("Vmm is stopping.", origin="src/vmm/src/lib.rs:783")
            self.stop()
            self.log.info("Vmm is stopping.", origin="src/vmm/src/lib.rs:783")
            self.finish(0)
        if self.rel.modern:
            self.fail(
                _Fatal(
                    f"RunWithApiError error: Failed to build MicroVM: {vmm.exit.reason}.",
                    "RunWithApi(BuildMicroVmError(Restore))",
                    vmm.exit.code,
                )
            )
        self.finish(vmm.exit.code)

    def stop(self) -> None:
        """The vCPUs finish; requests read meanwhile hang the process (see the class)."""
        vmm = self.vmm
        assert vmm is not None
        self.stopping = True
        start = time.monotonic()
        if not self.slow_stop:
            vmm.stop_vcpus()
        window = max(STOP_WINDOW, self.slow_stop)
        while self.server is not None and (left := start + window - time.monotonic()) > 0:
            self.server.poll(left)  # a request read here never returns: hang()
        vmm.stop_vcpus()
        self.api_done.set()  # the kill switch: the API thread ends

    def hang(self, request: Request) -> NoReturn:
        """A request read after the VMM left its event loop: never answered, never exits."""
        self.log.log(
            "Info",
            f'The API server received a {request.method.title()} request on "{request.uri}".',
            thread="fc_api",
            origin="src/firecracker/src/api_server/parsed_request.rs:70",
        )
        assert self.vmm is not None
        self.vmm.stop_vcpus()  # the VMM thread finishes stopping, never to answer
        while True:  # the API thread waits for the answer, the main thread for it, for good
            self.api_done.wait()

    def loop(self) -> NoReturn:
        while True:
            self.check_exit()
            timeout = None
            if self.next_flush is not None:
                timeout = max(0.0, self.next_flush - time.monotonic())
            vmm = self.vmm
            if vmm is not None and vmm.exit is not None and vmm.exit.at is not None:
                until_exit = max(0.0, vmm.exit.at - time.monotonic())
                timeout = until_exit if timeout is None else min(timeout, until_exit)
            if self.server is not None:
                self.server.poll(timeout)
            else:
                time.sleep(timeout if timeout is not None else 3600)
            self.check_exit()
            if self.next_flush is not None and time.monotonic() >= self.next_flush:
                self.metrics.write()
                self.next_flush = time.monotonic() + FLUSH_PERIOD_S


def _take(args: list[str], flag: str, what: str) -> str | None:
    """Remove ``flag VALUE`` from ``args`` and return VALUE (exit 153 when it is missing)."""
    if flag not in args:
        return None
    i = args.index(flag)
    if i + 1 >= len(args):
        sys.stderr.write(f"firec-emulator: {flag} needs {what}\n")
        raise SystemExit(153)
    value = args[i + 1]
    del args[i : i + 2]
    return value


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Run the emulator with Firecracker's command line.

    Plus the emulator's own flags: ``--emulate-version``, ``--emulate-slow-stop
    SECONDS`` (a stop whose deadlock window lasts that long, see
    :class:`Process`), and the jailer emulator's ``--emulate-chroot`` and
    ``--emulate-user`` (see :mod:`._jail`).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    wanted = _take(args, EMULATE_FLAG, "a version such as 1.14")
    slow_stop_text = _take(args, SLOW_STOP_FLAG, "seconds")
    root = _take(args, _jail.CHROOT_FLAG, "a directory")
    user_text = _take(args, _jail.USER_FLAG, "UID:GID")
    try:
        rel = parse_release(wanted)
        user = _jail.parse_user(user_text) if user_text is not None else None
        slow_stop = float(slow_stop_text) if slow_stop_text is not None else 0.0
    except ValueError as exc:
        sys.stderr.write(f"firec-emulator: {exc}\n")
        raise SystemExit(153) from None
    try:
        _jail.enter(root, user)
    except OSError as exc:
        sys.stderr.write(f"firec-emulator: cannot enter the emulated jail {root}: {exc}\n")
        raise SystemExit(1) from None
    Process(rel, slow_stop=slow_stop).run(args)


_ = LEVELS
