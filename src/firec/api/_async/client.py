"""The low-level asyncio client: one coroutine per Firecracker API operation.

Example (against firec's emulator; the same works against a real Firecracker)::

    import asyncio, firec
    from firec.api.models import BootSource, MachineConfiguration
    from firec.testing import Emulator

    async def main() -> None:
        with Emulator() as emu:
            async with firec.AsyncClient(emu.socket_path) as client:
                await client.put_machine_config(
                    MachineConfiguration(vcpu_count=2, mem_size_mib=256)
                )
                config = await client.get_machine_config()
                print(config.vcpu_count)  # 2

    asyncio.run(main())
"""

# This file is the one source of both clients: client.py (the synchronous
# firec.Client) is generated from it. Edit here, then run scripts/unasync.py.

from __future__ import annotations

import asyncio
import os
import time
from types import TracebackType
from typing import Any, Self

import httpx

from firec._proc import VmmThreadWatch, socket_peer_pid
from firec.api import models
from firec.api._async.endpoints import Endpoints
from firec.api._request import (
    API_THREAD_PATHS,
    DEFAULT,
    LEAVES_PREBOOT,
    SETTLE_BLIND,
    SETTLE_LIMIT,
    SETTLE_POLL,
    TimeoutArg,
    build_request,
    check_max_payload,
    check_request,
    check_socket_path,
    check_timeout,
    check_version_arg,
    decode,
    encode_body,
    loses_requests,
    needs_version,
)
from firec.api.operations import DEFAULT_MAX_PAYLOAD_SIZE, OPERATIONS_BY_ID, Operation
from firec.api.transport import RequestWatch, async_unix_transport, transport_error
from firec.api.versions import Version, check_supported
from firec.errors import APIError, ConnectError, ValidationError

__all__ = ["AsyncClient"]

#: Seconds a call may take before :class:`firec.errors.TimeoutError`.
DEFAULT_TIMEOUT = 10.0
#: Seconds a snapshot create/load may take.
DEFAULT_SLOW_TIMEOUT = 300.0
#: Operations whose answer tells the version: sent without asking it first.
_TELLS_VERSION = frozenset({"describeInstance", "getFirecrackerVersion"})


class AsyncClient(Endpoints):
    """Talks to one Firecracker over its API socket, asynchronously.

    Args:
        socket_path: the VMM's ``--api-sock``.
        timeout: seconds any call may take (``None``: no limit); each method also
            takes ``timeout=`` for that call alone.
        slow_timeout: seconds a snapshot create or load may take.
        version: the Firecracker version, when known; otherwise it is asked once
            (``GET /version``) before the first call (unless that call is
            ``GET /``, whose answer tells it) and cached. A Firecracker older
            than 1.0 is refused (:class:`firec.errors.UnsupportedError`).
        check_version: refuse, before sending, endpoints, fields and values that
            the connected version lacks (:class:`firec.errors.UnsupportedError`).
        transport: an httpx transport to use instead of the Unix socket.
        max_payload_size: the largest request body, in bytes, the VMM takes: its
            ``--http-api-max-payload-size``, Firecracker's default 51200 unless
            given (a :class:`~firec.Machine` tells its client). A larger body is
            refused before sending (:class:`firec.errors.ValidationError` naming
            the size, the limit and the flag); ``None`` sends any size.

    Each method takes its request body as a model (``models.Drive(...)``) or a
    mapping of the model's fields (``{"drive_id": "rootfs", ...}``), validated
    the same way; a few also take a shortcut (``create_action("InstanceStart")``,
    ``patch_vm("Paused")``).

    Connections are kept alive and reused. On Firecracker releases that can
    lose a request sent right after another's answer (1.0 to 1.2.0, 1.3.0 and
    1.3.1: the whole API then hangs), requests to a booted VM go one at a time,
    each once Firecracker's VMM thread is done with the previous one.

    Errors: :class:`firec.errors.APIError`
    when Firecracker refuses (with its ``fault_message``),
    :class:`firec.errors.ConnectError` / :class:`firec.errors.TimeoutError` naming
    the socket, :class:`firec.errors.ValidationError` for bad values (naming the
    field, before anything is sent).
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        slow_timeout: float | None = DEFAULT_SLOW_TIMEOUT,
        version: str | Version | None = None,
        check_version: bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
        max_payload_size: int | None = DEFAULT_MAX_PAYLOAD_SIZE,
    ) -> None:
        self.socket_path = check_socket_path(socket_path)
        self.max_payload_size = check_max_payload(max_payload_size)
        check_timeout(timeout)
        check_timeout(slow_timeout, "slow_timeout")
        if transport is not None and not isinstance(transport, httpx.AsyncBaseTransport):
            raise ValidationError(
                "transport", f"must be an httpx.AsyncBaseTransport, not {type(transport).__name__}"
            )
        self.timeout = timeout
        self.slow_timeout = slow_timeout
        self.check_version = check_version
        #: The VMM's pid, when known (a Machine sets it); otherwise found from the
        #: socket when needed (only for releases that can lose requests).
        self.vmm_pid: int | None = None
        self._version: Version | None = None
        self._loses_requests = False
        self._preboot = False  # seen "Not started", and not started since
        self._watch: VmmThreadWatch | None = None
        self._watched = False
        self._one_at_a_time = asyncio.Lock()
        given = check_version_arg(version)
        if given is not None:
            self._learn(given)
        self._transport = transport or async_unix_transport(self.socket_path)
        self._closed = False
        self._urls: dict[str, httpx.URL] = {}

    @property
    def known_version(self) -> Version | None:
        """The connected Firecracker's version, once known (given, or told by an answer)."""
        return self._version

    def _learn(self, version: Version) -> None:
        """Remember the connected version (refusing one before 1.0)."""
        check_supported(version)
        self._version = version
        self._loses_requests = loses_requests(version)

    def give_up_when(self, watch: RequestWatch | None) -> None:
        """Have every request ask ``watch`` whether its answer will ever come.

        While an answer is awaited, ``watch.check()`` is called every
        ``watch.interval`` seconds; when it gives a reason, the request fails
        at once with :class:`~firec.errors.ConnectError` saying it, instead
        of waiting for its timeout. :class:`firec.Machine` sets its VMM's
        :class:`~firec.vm.process.ExitWatch` here: a request then ends as soon as
        the VMM exits, and never keeps a stopping Firecracker from exiting.
        Only firec's own Unix socket transports take a watch; ``None`` removes it.
        """
        if hasattr(self._transport, "watch"):
            self._transport.watch = watch

    async def aclose(self) -> None:
        """Close the pooled connections."""
        if not self._closed:
            self._closed = True
            if self._watch is not None:
                self._watch.close()
            await self._transport.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} socket_path={self.socket_path!r}>"

    async def firecracker_version(self) -> Version:
        """The connected Firecracker's version, asked once and cached.

        Raises:
            firec.errors.UnsupportedError: it is older than 1.0, which firec
                does not support (those answer ``GET /version`` with 400).
        """
        if self._version is None:
            try:
                answer = await self.get_version()
            except APIError as exc:
                if exc.status_code != 400:
                    raise
                # Before 1.0 there was no GET /version; GET / names the version
                # (and get_instance_info refuses one before 1.0).
                await self.get_instance_info()
                if self._version is None:  # pragma: no cover - get_instance_info sets it
                    raise
            self._learn(Version.parse(answer.firecracker_version))
        assert self._version is not None
        return self._version

    async def _call(
        self,
        operation_id: str,
        body: Any = None,
        *,
        timeout: TimeoutArg,
        **params: str,
    ) -> Any:
        if self._closed:
            raise ConnectError(
                f"{self!r} is closed: make a new client", socket_path=self.socket_path
            )
        op: Operation = OPERATIONS_BY_ID[operation_id]
        check_timeout(timeout)
        data = encode_body(body)
        if self.check_version:
            version = self._version
            if version is None and operation_id not in _TELLS_VERSION:
                version = await self.firecracker_version()
            if version is not None and needs_version(op, data):
                check_request(op, data, version)
        if timeout is DEFAULT:
            timeout = self.slow_timeout if op.slow else self.timeout
        request = build_request(
            op.method,
            op.url(**params) if params else op.path,
            data,
            timeout,
            self._urls,
            self.max_payload_size,
        )
        if not self._loses_requests or op.path in API_THREAD_PATHS:
            return decode(op, await self._exchange(request))
        # A release that can lose a request sent right after another one's answer
        # (see loses_requests): one at a time, once its VMM thread sleeps again.
        async with self._one_at_a_time:
            if not self._preboot:
                await self._vmm_thread_settled()
            if operation_id in LEAVES_PREBOOT:
                self._preboot = False
            return decode(op, await self._exchange(request))

    async def _exchange(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await self._transport.handle_async_request(request)
            response.request = request
            await response.aread()
        except httpx.TransportError as exc:
            raise transport_error(exc, self.socket_path) from exc
        return response

    def _vmm_thread(self) -> VmmThreadWatch | None:
        """The watch on the VMM thread: of :attr:`vmm_pid`, or of the socket's server."""
        pid, watch = self.vmm_pid, self._watch
        if watch is not None and (pid is None or watch.pid == pid):
            return watch
        if pid is None:
            if self._watched:
                return None  # the socket did not tell
            self._watched = True
            pid = socket_peer_pid(self.socket_path)
            if pid is None:
                return None
        if watch is not None:
            watch.close()
        try:
            self._watch = VmmThreadWatch(pid)
        except OSError:  # gone, or not ours to look at
            self._watch = None
        return self._watch

    async def _vmm_thread_settled(self) -> None:
        """Wait until the VMM thread is asleep: done with the answer it last sent."""
        watch = self._vmm_thread()
        deadline = 0.0
        while True:
            asleep = watch.asleep() if watch is not None else None
            if asleep is None:  # cannot see it: give it time instead
                await asyncio.sleep(SETTLE_BLIND)
                return
            if asleep:
                return
            now = time.monotonic()
            if not deadline:
                deadline = now + SETTLE_LIMIT
            elif now > deadline:
                return  # busy all along: its answer is long done
            await asyncio.sleep(SETTLE_POLL)

    # -- instance ------------------------------------------------------------

    async def get_instance_info(self, *, timeout: TimeoutArg = DEFAULT) -> models.InstanceInfo:
        """``GET /``: the instance's id, state and VMM version (remembered for checks)."""
        result: models.InstanceInfo = await self._call("describeInstance", timeout=timeout)
        if self._version is None:
            self._learn(Version.parse(result.vmm_version))  # refuses one before 1.0
        self._preboot = result.state is models.InstanceState.NOT_STARTED
        return result

    async def get_version(self, *, timeout: TimeoutArg = DEFAULT) -> models.FirecrackerVersion:
        """``GET /version``: the Firecracker version."""
        result: models.FirecrackerVersion = await self._call(
            "getFirecrackerVersion", timeout=timeout
        )
        return result
