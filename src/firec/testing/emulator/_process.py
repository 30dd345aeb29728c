"""One emulated Firecracker process: its start-up, from the command line to serving.

:meth:`Process.run` does what Firecracker's ``main()`` does before serving, in
its order: parse the command line (:mod:`._args`; ``--help``, ``--version``,
``--snapshot-version`` and ``--describe-snapshot`` answer and exit), check the
id, set up the logger and metrics, read the seccomp filter, config file and
metadata, then create the VMM and boot from the config file (``--no-api``) or
serve the API (:class:`._main_loop.MainLoop`).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

from . import _jail, _snapshot
from ._args import DEFAULT_PAYLOAD, ArgError, formatted_help, parse_args, validate_id
from ._errors import os_error
from ._exits import Fatal, io_debug
from ._log import LEVEL_NAMES
from ._main_loop import MainLoop
from ._schema import schema
from ._serde import SerdeError, from_text
from ._vmm import Vmm

__all__ = ["Process"]


class Process(MainLoop):
    """One emulated Firecracker process (``Process(rel).run(argv)`` never returns)."""

    def run(self, argv: Sequence[str]) -> NoReturn:
        rel = self.rel
        try:
            args = parse_args(rel, argv)
        except ArgError as err:
            sep = " \\n\\n" if rel.modern else " \n\n"
            self.fail(
                Fatal(
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
        problem = validate_id(instance_id)
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
                    Fatal(
                        "Could not initialize metrics: Cannot initialize the metrics system due "
                        f"to bad user input: {os_error(exc)}",
                        f'MetricsInitialization(InitializationFailure("{os_error(exc)}"))',
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
                    Fatal(
                        f"Seccomp error: Filter file open error: {os_error(exc)}",
                        f"SeccompFilter(FileOpen({io_debug(exc)}))",
                        1,
                    )
                )
        config_json = self.read_file(args, "config-file", "configuration")
        metadata = self.read_file(args, "metadata", "mmds content")
        payload_limit = self.size_arg(
            args, "http-api-max-payload-size", DEFAULT_PAYLOAD, "src/firecracker/src/main.rs:384:18"
        )
        mmds_limit = self.size_arg(
            args, "mmds-size-limit", payload_limit, "src/firecracker/src/main.rs:395:18"
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
                level = LEVEL_NAMES.get(level_text.lower())
                if level is None:
                    self.fail(
                        Fatal(
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
                self.fail(
                    Fatal(
                        f"Could not initialize logger: Failed to open target file: {os_error(exc)}",
                        f"LoggerInitialization(LoggerUpdateError({io_debug(exc)}))",
                        1,
                    )
                )
            return
        if "log-path" not in args:
            return
        level_name = str(level_text or "Warning")
        if level_name.lower() not in ("error", "warning", "info", "debug"):
            self.fail(
                Fatal(
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
                Fatal(
                    f"Could not initialize logger:: {os_error(exc)}",
                    "",
                    1,
                )
            )

    def size_arg(self, args: dict[str, str | bool], name: str, default: int, where: str) -> int:
        """A size flag's value (``default`` when not given); one that is no number panics."""
        if name not in args:
            return default
        try:
            return int(str(args[name]))
        except ValueError:
            self.panic(
                where,
                f"'{name}' parameter expected to be of 'usize' type.: "
                "ParseIntError { kind: InvalidDigit }",
            )

    def read_file(self, args: dict[str, str | bool], name: str, what: str) -> str | None:
        if name not in args:
            return None
        try:
            with open(_jail.host_path(str(args[name])), encoding="utf-8") as f:
                return f.read()
        except (OSError, UnicodeDecodeError) as exc:
            detail = io_debug(exc) if isinstance(exc, OSError) else "InvalidData"
            self.panic(
                "src/firecracker/src/main.rs:369:20",
                f"Unable to open or read from the {what} file: {detail}",
            )

    def describe(self, path: str) -> NoReturn:
        try:
            sys.stdout.write(_snapshot.describe(_jail.host_path(path)) + "\n")
        except _snapshot.SnapshotFileError as exc:
            self.fail(
                Fatal(
                    f"When printing Snapshot Data format: {exc.modern}",
                    "PrintSnapshotDataFormat(SnapshotVersion)",
                    1,
                )
            )
        self.finish(0)
