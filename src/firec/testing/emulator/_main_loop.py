"""The process after start-up: the API server, the main loop, and the stop.

:class:`MainLoop` serves the API socket (:mod:`._http`, each request answered
by :mod:`._api`), flushes the metrics every minute once the VM runs, and
stops the process when the VM asks to: its guest resets or a snapshot fails
to load. The stop keeps Firecracker's deadlock (see :class:`MainLoop`).
"""

from __future__ import annotations

import threading
import time
from typing import NoReturn

from ._api import dispatch
from ._config_file import boot_from_config
from ._errors import os_error
from ._exits import Exits, Fatal, io_debug
from ._http import HttpServer, Request, reply
from ._jail import host_path
from ._log import Logger
from ._metrics import FLUSH_PERIOD_S, Metrics
from ._release import Release
from ._vmm import Vmm, named_thread

__all__ = ["STOP_WINDOW", "MainLoop"]

#: How long, by default, a stopping emulator still reads API requests (and hangs on one).
STOP_WINDOW = 0.001


class MainLoop(Exits):
    """The API server and main loop of one emulated Firecracker process.

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

    def boot_from_config(self, config_json: str, *, api: bool) -> None:
        """Boot from ``--config-file`` (:mod:`._config_file`); a failure ends the process."""
        vmm = self.vmm
        assert vmm is not None
        try:
            boot_from_config(vmm, config_json, api=api)
        except Fatal as fatal:
            self.fail(fatal)
        self.next_flush = time.monotonic() + FLUSH_PERIOD_S

    def serve(
        self, args: dict[str, str | bool], config_json: str | None, payload_limit: int
    ) -> NoReturn:
        path = str(args["api-sock"])
        methods = frozenset(
            {"GET", "PUT", "PATCH"} | ({"DELETE"} if self.rel.at_least(16) else set())
        )
        try:
            self.server = HttpServer(
                host_path(path), self.handle, payload_limit=payload_limit, methods=methods
            )
        except OSError as exc:
            if exc.errno == 98:  # EADDRINUSE
                self.fail(
                    Fatal(
                        f"RunWithApiError error: Failed to open the API socket at: {path}. Check "
                        "that it is not already used.",
                        f'RunWithApi(FailedToBindSocket("{path}"))',
                        1,
                    )
                )
            self.fail(
                Fatal(
                    "RunWithApiError error: Failed to bind and run the HTTP server: IO error: "
                    f"{os_error(exc)}",
                    f"RunWithApi(FailedToBindAndRunHttpServer(IOError({io_debug(exc)})))",
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
                Fatal(
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
