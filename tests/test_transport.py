"""firec's Unix-socket HTTP transports: framing, keep-alive, retries, timeouts, errors.

Three kinds of peer: a scripted fake server (threads answering from a script:
split and partial writes, idle closes, slow and silent servers, malformed
replies), firec's emulator, and a real Firecracker (FIRECRACKER_BIN). Most
tests run on both transports: the blocking one and the asyncio one.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import firec
from firec import errors
from firec.api import models
from firec.api._async.connection import Connection as _AsyncConnection
from firec.api._request import timeout_extension
from firec.api.transport import (
    BASE_URL,
    AsyncUnixSocketTransport,
    RequestAbandoned,
    UnixSocketTransport,
    parse_head,
    serialize_request,
    transport_error,
)
from tests.conftest import Vmm, start_vmm

INFO = b'{"id":"x","state":"Not started","vmm_version":"1.14.2","app_name":"Firecracker"}'
HEAD_200 = b"HTTP/1.1 200 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n"
NO_CONTENT = b"HTTP/1.1 204 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n\r\n"
HTTP_LAYER_ERROR = (
    b'{ "error": "Invalid HTTP Method: Unsupported HTTP method.\n'
    b'All previous unanswered requests will be dropped." }'
)


def reply(body: bytes, status: int = 200, extra: bytes = b"") -> bytes:
    """A response the way Firecracker (micro_http) writes it."""
    return (
        b"HTTP/1.1 %d \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n%s"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (status, extra, len(body), body)
    )


# -- the scripted fake server ----------------------------------------------------


class Peer:
    """The server side of one accepted connection."""

    def __init__(self, sock: socket.socket, server: FakeServer) -> None:
        self.sock = sock
        self.sock.settimeout(10)
        self.server = server
        self.buf = b""

    def request(self) -> bytes | None:
        """One whole request (head and Content-Length body); None once the client closed."""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                return None
            rest += chunk
        self.buf = rest[length:]
        whole = head + b"\r\n\r\n" + rest[:length]
        self.server.requests.append(whole)
        return whole

    def send(self, *chunks: bytes, pause: float = 0.0) -> None:
        for chunk in chunks:
            self.sock.sendall(chunk)
            if pause:
                time.sleep(pause)

    def answer_all(self, response: bytes = b"") -> None:
        """Answer every further request with ``response`` (default: GET / info)."""
        while self.request() is not None:
            self.send(response or reply(INFO))


Serve = Callable[[Peer, int], None]


class FakeServer:
    """A Unix-socket server; connection number ``i`` is served by ``serve(peer, i)``."""

    def __init__(self, path: str, serve: Serve) -> None:
        self.path = path
        self.serve = serve
        self.connections = 0
        self.requests: list[bytes] = []
        self.closed = threading.Event()  # set when a peer saw the client close
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(path)
        self.listener.listen(16)
        self.listener.settimeout(0.02)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self.listener.accept()
            except OSError:
                continue
            peer = Peer(sock, self)
            thread = threading.Thread(target=self._run, args=(peer, self.connections), daemon=True)
            self.connections += 1
            self._threads.append(thread)
            thread.start()

    def _run(self, peer: Peer, index: int) -> None:
        try:
            self.serve(peer, index)
        except OSError:
            pass
        finally:
            peer.sock.close()

    def stop(self) -> None:
        self._stop.set()
        self._acceptor.join(timeout=5)
        self.listener.close()
        for thread in self._threads:
            thread.join(timeout=5)


@pytest.fixture
def serve(short_tmp: Path) -> Iterator[Callable[[Serve], FakeServer]]:
    """Start a fake server with a given script; stopped after the test."""
    servers: list[FakeServer] = []

    def start(script: Serve) -> FakeServer:
        server = FakeServer(str(short_tmp / f"fake{len(servers)}.sock"), script)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


class Driver:
    """One transport of either flavour, called synchronously by the tests."""

    def __init__(self, flavour: str, path: str, **kwargs: Any) -> None:
        self.flavour = flavour
        self.sync: UnixSocketTransport | None = None
        self.asynchronous: AsyncUnixSocketTransport | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        if flavour == "sync":
            self.sync = UnixSocketTransport(path, **kwargs)
        else:
            self.asynchronous = AsyncUnixSocketTransport(path, **kwargs)
            self.loop = asyncio.new_event_loop()

    def send(
        self,
        method: str = "GET",
        path: str = "/",
        *,
        timeout: httpx.Timeout | float | None = 5.0,
        body: Any = None,
    ) -> httpx.Response:
        if not isinstance(timeout, httpx.Timeout):
            timeout = httpx.Timeout(timeout)
        request = httpx.Request(
            method, BASE_URL + path, json=body, extensions={"timeout": timeout.as_dict()}
        )
        if self.sync is not None:
            return self.sync.handle_request(request)
        assert self.asynchronous is not None and self.loop is not None
        return self.loop.run_until_complete(self.asynchronous.handle_async_request(request))

    def close(self) -> None:
        if self.sync is not None:
            self.sync.close()
        if self.asynchronous is not None and self.loop is not None and not self.loop.is_closed():
            self.loop.run_until_complete(self.asynchronous.aclose())
            self.loop.close()


@pytest.fixture(params=["sync", "async"])
def flavour(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def drive(flavour: str) -> Iterator[Callable[..., Driver]]:
    """Make drivers of this test's flavour; closed after the test."""
    made: list[Driver] = []

    def make(path: str, **kwargs: Any) -> Driver:
        driver = Driver(flavour, path, **kwargs)
        made.append(driver)
        return driver

    yield make
    for driver in made:
        driver.close()


# -- serialization and parsing (no I/O) ------------------------------------------


def test_serialize_frames_the_body_itself() -> None:
    get = httpx.Request("GET", BASE_URL + "/vm/config", headers={"Accept": "application/json"})
    assert serialize_request(get, b"") == (
        b"GET /vm/config HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\r\n"
    )
    # a chunked request body is sent whole, with a Content-Length instead
    put = httpx.Request("PUT", BASE_URL + "/mmds", content=iter([b'{"a":', b"1}"]))
    assert put.headers["Transfer-Encoding"] == "chunked"
    wire = serialize_request(put, put.read())
    assert wire == b'PUT /mmds HTTP/1.1\r\nHost: localhost\r\nContent-Length: 7\r\n\r\n{"a":1}'
    # PUT/PATCH without a body still say so; a missing Host is added
    bare = httpx.Request("PATCH", BASE_URL + "/balloon/hinting/stop", stream=httpx.ByteStream(b""))
    assert serialize_request(bare, b"") == (
        b"PATCH /balloon/hinting/stop HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n"
    )


def test_docstring_examples() -> None:
    import doctest

    import firec.api._http
    import firec.api._watch
    import firec.api.transport

    for module in (firec.api.transport, firec.api._http, firec.api._watch):
        assert doctest.testmod(module).failed == 0, module.__name__


def test_serialize_refuses_header_injection() -> None:
    request = httpx.Request("GET", BASE_URL + "/", headers={"X-A": "a\r\nEvil: 1"})
    with pytest.raises(httpx.LocalProtocolError, match="X-A"):
        serialize_request(request, b"")


def test_parse_firecracker_heads() -> None:
    head = parse_head(NO_CONTENT[:-4], "PUT")
    assert (head.status, head.reason, head.length, head.keep_alive) == (204, b"", 0, True)
    assert head.headers["server"] == "Firecracker API"
    head = parse_head(reply(INFO)[: reply(INFO).index(b"\r\n\r\n")], "GET")
    assert (head.status, head.length, head.keep_alive) == (200, len(INFO), True)
    # micro_http: a keep-alive response without Content-Length has no body
    assert parse_head(b"HTTP/1.1 400 \r\nConnection: keep-alive", "GET").length == 0
    assert parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5", "HEAD").length == 0
    assert not parse_head(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0", "GET"
    ).keep_alive
    assert not parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 0", "GET").keep_alive
    assert parse_head(
        b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0", "GET"
    ).keep_alive
    assert parse_head(b"HTTP/1.1 200\r\nContent-Length: 0", "GET").reason == b""


@pytest.mark.parametrize(
    ("head", "message"),
    [
        (b"HTTP/1.1 200 \r\nTransfer-Encoding: chunked", "Transfer-Encoding: chunked"),
        (b"HTTP/1.1 200 \r\nContent-Length: 3\r\nContent-Length: 4", "Content-Length"),
        (b"HTTP/1.1 200 \r\nContent-Length: -1", "Content-Length"),
        (b"HTTP/1.1 200 \r\nContent-Type: application/json", "no Content-Length"),
        (b"HTTP/1.1 2000 \r\nContent-Length: 0", "status line"),
        (b"HTTP/2 200 \r\nContent-Length: 0", "status line"),
        (b"ICY 200 OK", "status line"),
        (b"HTTP/1.1 100 Continue", "interim"),
        (b"HTTP/1.1 200 \r\nno colon here", "header line"),
        (b"HTTP/1.1 200 \r\nContent-Length : 0", "header line"),
        (b"HTTP/1.1 200 \r\n Folded: value", "header line"),
    ],
)
def test_parse_refuses_what_it_cannot_frame(head: bytes, message: str) -> None:
    with pytest.raises(httpx.RemoteProtocolError, match=message):
        parse_head(head, "GET")


def test_transport_error_names_the_cause(short_tmp: Path) -> None:
    path = str(short_tmp / "api.sock")
    Path(path).touch()  # exists, so the cause decides
    cases: list[tuple[Exception, str]] = [
        (PermissionError(errno.EACCES, "Permission denied"), "permission denied"),
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "connection refused"),
    ]
    for cause, expected in cases:
        exc = httpx.ConnectError("x")
        exc.__cause__ = cause
        error = transport_error(exc, path)
        assert isinstance(error, errors.ConnectError) and expected in str(error)
    timeout = transport_error(httpx.ReadTimeout("timed out waiting"), path)
    assert isinstance(timeout, errors.TimeoutError) and path in str(timeout)
    broke = transport_error(httpx.RemoteProtocolError("closed mid-body"), path)
    assert "closed mid-body" in str(broke)


# -- against the fake server ---------------------------------------------------------


def test_reads_responses_and_keeps_one_connection(serve: Any, drive: Any) -> None:
    def script(peer: Peer, index: int) -> None:
        while (request := peer.request()) is not None:
            peer.send(NO_CONTENT if request.startswith(b"PUT") else reply(INFO))

    server = serve(script)
    client = drive(server.path)
    for _ in range(3):
        response = client.send()
        assert response.status_code == 200
        assert response.content == INFO and response.json()["vmm_version"] == "1.14.2"
        assert response.reason_phrase == ""
        assert response.http_version == "HTTP/1.1"
        assert response.headers["server"] == "Firecracker API"
        assert response.request.url.path == "/"
        empty = client.send("PUT", "/mmds", body={"a": 1})
        assert (empty.status_code, empty.content) == (204, b"")
    assert server.connections == 1
    assert server.requests[1].endswith(b'\r\nContent-Length: 7\r\n\r\n{"a":1}')


@pytest.mark.parametrize(
    "cut",
    [
        "every byte",
        "inside the blank line",
        "head, then body",
        "body in three parts",
    ],
)
def test_responses_split_anywhere(serve: Any, drive: Any, cut: str) -> None:
    whole = reply(INFO, extra=b"X-Padding: " + b"p" * 300 + b"\r\n")
    blank = whole.index(b"\r\n\r\n")
    chunks = {
        "every byte": [whole[i : i + 1] for i in range(len(whole))],
        "inside the blank line": [whole[: blank + 2], whole[blank + 2 :]],
        "head, then body": [whole[: blank + 4], whole[blank + 4 :]],
        "body in three parts": [whole[: blank + 10], whole[blank + 10 : -5], whole[-5:]],
    }[cut]

    def script(peer: Peer, index: int) -> None:
        while peer.request() is not None:
            peer.send(*chunks, pause=0.0005)

    server = serve(script)
    client = drive(server.path)
    for _ in range(2):
        response = client.send()
        assert response.content == INFO
        assert response.headers["x-padding"] == "p" * 300
    assert server.connections == 1


def test_large_body(serve: Any, drive: Any) -> None:
    data = {"blob": "x" * (3 << 20)}
    body = json.dumps(data, separators=(",", ":")).encode()

    def script(peer: Peer, index: int) -> None:
        while (request := peer.request()) is not None:
            # echo the request body back, in odd-sized writes
            echoed = request[request.index(b"\r\n\r\n") + 4 :]
            response = reply(echoed)
            peer.send(*(response[i : i + 70001] for i in range(0, len(response), 70001)))

    server = serve(script)
    client = drive(server.path)
    assert client.send("PUT", "/mmds", body=data).content == body
    assert client.send("PUT", "/mmds", body={"small": 1}).json() == {"small": 1}
    assert server.connections == 1


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH"])
def test_stale_kept_alive_connection_is_retried_once(serve: Any, drive: Any, method: str) -> None:
    def script(peer: Peer, index: int) -> None:
        if index == 0:
            peer.request()
            peer.send(reply(INFO))
            peer.sock.close()  # the VMM went away after answering
            peer.server.closed.set()
            return
        peer.answer_all(NO_CONTENT if method != "GET" else b"")

    server = serve(script)
    client = drive(server.path)
    assert client.send().status_code == 200
    assert server.closed.wait(5)
    response = client.send(method, "/vm" if method != "GET" else "/", body=None)
    assert response.status_code == (200 if method == "GET" else 204)
    assert server.connections == 2
    assert len(server.requests) == 2  # the stale connection got nothing


@pytest.mark.parametrize(("method", "retried"), [("GET", True), ("PUT", True), ("POST", False)])
def test_kept_alive_connection_dropped_unanswered(
    serve: Any, drive: Any, method: str, retried: bool
) -> None:
    """The server reads the request on a kept-alive connection and hangs up.

    Nothing came back, so an idempotent request is sent again, once, on a new
    connection; a POST is not (firec never sends one: Firecracker has none).
    """

    def script(peer: Peer, index: int) -> None:
        if index == 0:
            peer.request()
            peer.send(reply(INFO))
            peer.request()  # ... and hang up without answering
            return
        peer.answer_all()

    server = serve(script)
    client = drive(server.path)
    client.send()
    if retried:
        assert client.send(method, "/", body={"a": 1}).content == INFO
        assert (server.connections, len(server.requests)) == (2, 3)
    else:
        with pytest.raises(httpx.RemoteProtocolError, match="without answering"):
            client.send(method, "/", body={"a": 1})
        assert (server.connections, len(server.requests)) == (1, 2)


async def test_async_watches_an_idle_connection_whose_answer_came_at_once(
    short_tmp: Path,
) -> None:
    """A response already there when read (nothing was awaited) still leaves the socket watched."""
    client_end, server_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    client_end.setblocking(False)
    server_end.sendall(reply(INFO))  # the answer is waiting before the request is even sent
    transport = AsyncUnixSocketTransport(str(short_tmp / "unused.sock"))

    async def connect(timeout: float | None) -> Any:
        return _AsyncConnection(client_end)

    transport._connect = connect  # type: ignore[method-assign]
    request = httpx.Request("GET", BASE_URL + "/", extensions={"timeout": timeout_extension(5)})
    assert (await transport.handle_async_request(request)).content == INFO
    (idle,) = transport._idle
    server_end.close()
    deadline = time.monotonic() + 5
    while not idle.stale and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert idle.stale
    await transport.aclose()


async def test_async_notices_a_connection_closed_while_idle(serve: Any) -> None:
    """The event loop sees the idle socket close: nothing is sent on it, not even a POST."""

    def script(peer: Peer, index: int) -> None:
        peer.request()
        peer.send(reply(INFO))
        if index == 0:
            peer.sock.close()
            peer.server.closed.set()

    server = serve(script)
    transport = AsyncUnixSocketTransport(server.path)
    request = httpx.Request("GET", BASE_URL + "/", extensions={"timeout": timeout_extension(5)})
    await transport.handle_async_request(request)
    while not server.closed.is_set():
        await asyncio.sleep(0.01)
    deadline = time.monotonic() + 5  # the loop sees the socket readable, however busy the host
    while not all(conn.stale for conn in transport._idle) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    post = httpx.Request(
        "POST", BASE_URL + "/", json={"a": 1}, extensions={"timeout": timeout_extension(5)}
    )
    assert (await transport.handle_async_request(post)).content == INFO
    assert (server.connections, len(server.requests)) == (2, 2)
    await transport.aclose()


def test_fresh_connection_closed_unanswered_is_not_retried(serve: Any, drive: Any) -> None:
    def script(peer: Peer, index: int) -> None:
        peer.request()  # read it, then hang up, like an exiting VMM

    server = serve(script)
    client = drive(server.path)
    with pytest.raises(httpx.RemoteProtocolError, match="at most 10"):
        client.send()
    assert server.connections == 1


TOO_MANY = (
    b"HTTP/1.1 503\r\nServer: Firecracker API\r\nConnection: close\r\nContent-Length: 40\r\n\r\n"
    b'{ "error": "Too many open connections" }'
)


@pytest.mark.parametrize("size", [10, 4 << 20])
def test_answer_sent_before_hanging_up_is_read(serve: Any, drive: Any, size: int) -> None:
    """Firecracker refuses an 11th connection with a 503 before reading anything.

    A request bigger than the socket buffers cannot be sent whole before the
    server hangs up, so its send fails (EPIPE): what the server said is read anyway.
    """

    def script(peer: Peer, index: int) -> None:
        peer.send(TOO_MANY)

    server = serve(script)
    client = drive(server.path)
    response = client.send("PUT", "/mmds", body={"x": "y" * size})
    assert (response.status_code, response.json()) == (503, {"error": "Too many open connections"})
    assert server.connections == 1


@pytest.mark.parametrize(
    ("partial", "message"),
    [
        (b"HTTP/1.1 200 \r\nContent-Le", "middle of the response"),
        (reply(INFO)[:-10], f"{len(INFO) - 10} of {len(INFO)} body bytes"),
    ],
)
def test_closed_mid_response_is_an_error_not_a_retry(
    serve: Any, drive: Any, partial: bytes, message: str
) -> None:
    def script(peer: Peer, index: int) -> None:
        peer.request()
        peer.send(reply(INFO))
        peer.request()
        peer.send(partial)

    server = serve(script)
    client = drive(server.path)
    client.send()
    with pytest.raises(httpx.RemoteProtocolError, match=message):
        client.send()
    assert server.connections == 1  # something had arrived: never resent


def test_read_timeout_then_no_late_answer_is_mistaken(serve: Any, drive: Any) -> None:
    answered = threading.Event()

    def script(peer: Peer, index: int) -> None:
        if index == 0:
            peer.request()
            answered.wait(5)  # answer only after the client gave up
            peer.send(reply(b'{"late":true}'))
            return
        peer.answer_all(reply(b'{"fresh":true}'))

    server = serve(script)
    client = drive(server.path)
    with pytest.raises(httpx.ReadTimeout):
        client.send(timeout=httpx.Timeout(5.0, read=0.2))
    answered.set()
    assert client.send().json() == {"fresh": True}
    assert server.connections == 2


class Watch:
    """A request watch that gives up after ``after`` checks (``None``: never)."""

    interval = 0.02

    def __init__(self, after: int | None) -> None:
        self.after = after
        self.checks = 0

    def check(self) -> str | None:
        self.checks += 1
        if self.after is not None and self.checks >= self.after:
            return "the VMM exited (exit code 0)"
        return None


def test_a_watch_gives_up_a_request_that_will_never_be_answered(serve: Any, drive: Any) -> None:
    """Asked every ``interval`` while the answer is awaited; its reason ends the request."""
    release = threading.Event()

    def script(peer: Peer, index: int) -> None:
        if index == 0:
            peer.request()  # never answered
            if peer.request() is None:
                peer.server.closed.set()  # the client hung up
            return
        peer.request()
        peer.send(reply(INFO))
        peer.request()  # the next one is never answered
        release.wait(10)

    server = serve(script)
    client = drive(server.path)
    transport = client.sync or client.asynchronous
    assert transport is not None and transport.watch is None
    transport.watch = watch = Watch(after=3)
    started = time.monotonic()
    with pytest.raises(RequestAbandoned, match="gave up waiting for the answer: the VMM exited"):
        client.send(timeout=10.0)
    assert 0.04 <= time.monotonic() - started < 2
    assert watch.checks == 3
    assert server.closed.wait(5)  # its connection was closed, not kept
    error = transport_error(RequestAbandoned("gave up: x"), server.path)
    assert isinstance(error, errors.ConnectError) and "gave up: x" in str(error)
    transport.watch = quiet = Watch(after=None)  # a watch that says nothing changes nothing
    assert client.send().json()["id"] == "x"
    with pytest.raises(httpx.ReadTimeout):  # nor the read timeout
        client.send(timeout=httpx.Timeout(5.0, read=0.1))
    assert quiet.checks >= 4
    release.set()


def test_a_client_gives_its_watch_to_its_transport(serve: Any) -> None:
    server = serve(lambda peer, index: peer.answer_all())
    client = firec.Client(server.path)
    watch = Watch(after=None)
    client.give_up_when(watch)
    assert client.get_instance_info().id == "x"
    assert watch.checks == 0  # answered at once: never asked
    client.close()
    mocked = firec.Client(
        "/unused.sock", transport=httpx.MockTransport(lambda r: httpx.Response(204))
    )
    mocked.give_up_when(watch)  # other transports take no watch: ignored
    assert not hasattr(mocked._transport, "watch")


def test_write_timeout(serve: Any, drive: Any) -> None:
    release = threading.Event()

    def script(peer: Peer, index: int) -> None:
        release.wait(10)  # never reads while the client writes

    server = serve(script)
    client = drive(server.path)
    try:
        with pytest.raises(httpx.WriteTimeout):
            client.send(
                "PUT", "/mmds", body={"x": "y" * (16 << 20)}, timeout=httpx.Timeout(5, write=0.2)
            )
    finally:
        release.set()


def test_connect_timeout_when_the_backlog_is_full(short_tmp: Path, drive: Any) -> None:
    path = str(short_tmp / "full.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(0)  # and never accept
    waiting: list[socket.socket] = []
    try:
        while True:  # fill the backlog
            sock = socket.socket(socket.AF_UNIX)
            sock.setblocking(False)
            waiting.append(sock)
            try:
                sock.connect(path)
            except BlockingIOError:
                break
        client = drive(path)
        with pytest.raises(httpx.ConnectTimeout):
            client.send(timeout=httpx.Timeout(5, connect=0.2))
    finally:
        for sock in waiting:
            sock.close()
        listener.close()


def test_connect_errors_carry_the_os_error(short_tmp: Path, drive: Any) -> None:
    missing = str(short_tmp / "absent.sock")
    with pytest.raises(httpx.ConnectError) as caught:
        drive(missing).send()
    assert isinstance(caught.value.__cause__, FileNotFoundError)
    assert "does not exist" in str(transport_error(caught.value, missing))

    stale = str(short_tmp / "stale.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(stale)
    listener.close()
    with pytest.raises(httpx.ConnectError) as refused:
        drive(stale).send()
    assert isinstance(refused.value.__cause__, ConnectionRefusedError)
    assert "refused" in str(transport_error(refused.value, stale))


@pytest.mark.parametrize(
    ("body", "status", "reused"),
    [
        (HTTP_LAYER_ERROR, 400, False),  # micro_http: drop the connection
        (b'{"fault_message":"The ID cannot be empty."}', 400, True),  # API layer: keep it
        (b'{"error":"not a fault_message"}', 500, False),
    ],
)
def test_http_layer_errors_drop_the_connection(
    serve: Any, drive: Any, body: bytes, status: int, reused: bool
) -> None:
    def script(peer: Peer, index: int) -> None:
        if index == 0:
            peer.request()
            peer.send(reply(body, status))
        peer.answer_all()

    server = serve(script)
    client = drive(server.path)
    response = client.send()
    assert (response.status_code, response.content) == (status, body)
    assert client.send().content == INFO
    assert server.connections == (1 if reused else 2)


@pytest.mark.parametrize(
    "response",
    [
        reply(INFO) + b"HTTP/1.1 200 \r\n",  # bytes nobody asked for
        reply(INFO, extra=b"Connection: close\r\n").replace(b"Connection: keep-alive\r\n", b""),
    ],
)
def test_connection_dropped_after_surplus_bytes_or_close(
    serve: Any, drive: Any, response: bytes
) -> None:
    def script(peer: Peer, index: int) -> None:
        if index == 0:
            peer.request()
            peer.send(response)
        peer.answer_all()

    server = serve(script)
    client = drive(server.path)
    assert client.send().content == INFO
    assert client.send().content == INFO
    assert server.connections == 2


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (
            b"HTTP/1.1 200 \r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            "chunked",
        ),
        (b"garbage, then silence\r\n", "not an HTTP response"),
        (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{}", "no Content-Length"),
    ],
)
def test_unframed_responses_are_refused_not_waited_for(
    serve: Any, drive: Any, response: bytes, message: str
) -> None:
    def script(peer: Peer, index: int) -> None:
        if index == 0:
            peer.request()
            peer.send(response)
            peer.request()  # keeps the connection open: the client must not wait for more
        peer.answer_all()

    server = serve(script)
    client = drive(server.path)
    with pytest.raises(httpx.RemoteProtocolError, match=message):
        client.send(timeout=30)
    assert client.send().content == INFO  # a new connection, served normally
    assert server.connections == 2


def test_async_transport_outlives_its_event_loop(serve: Any) -> None:
    """Kept-alive sockets are not tied to a loop: a later asyncio.run() reuses them."""
    server = serve(lambda peer, index: peer.answer_all())
    transport = AsyncUnixSocketTransport(server.path)
    request = httpx.Request("GET", BASE_URL + "/", extensions={"timeout": timeout_extension(5)})
    for _ in range(3):
        assert asyncio.run(transport.handle_async_request(request)).content == INFO
    assert server.connections == 1
    asyncio.run(transport.aclose())


def test_close_closes_idle_connections(serve: Any, drive: Any) -> None:
    def script(peer: Peer, index: int) -> None:
        peer.answer_all()
        peer.server.closed.set()  # the client hung up

    server = serve(script)
    client = drive(server.path)
    client.send()
    client.close()
    assert server.closed.wait(5)


def test_max_connections_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_connections"):
        UnixSocketTransport("/x.sock", max_connections=0)
    with pytest.raises(ValueError, match="max_connections"):
        AsyncUnixSocketTransport("/x.sock", max_connections=0)


# -- concurrency and pool ----------------------------------------------------------


def _slow_script(started: threading.Event, release: threading.Event) -> Serve:
    def script(peer: Peer, index: int) -> None:
        while peer.request() is not None:
            started.set()
            release.wait(10)
            peer.send(reply(INFO))

    return script


def test_sync_pool_timeout_and_threads(serve: Any) -> None:
    started, release = threading.Event(), threading.Event()
    server = serve(_slow_script(started, release))
    transport = UnixSocketTransport(server.path, max_connections=1)
    request = httpx.Request("GET", BASE_URL + "/", extensions={"timeout": timeout_extension(5)})
    results: list[int] = []
    busy = threading.Thread(
        target=lambda: results.append(transport.handle_request(request).status_code)
    )
    busy.start()
    try:
        assert started.wait(5)
        waiting = httpx.Request(
            "GET", BASE_URL + "/", extensions={"timeout": httpx.Timeout(5, pool=0.1).as_dict()}
        )
        with pytest.raises(httpx.PoolTimeout, match="1 connections stayed busy"):
            transport.handle_request(waiting)
    finally:
        release.set()
        busy.join(10)
    assert results == [200]
    assert transport.handle_request(request).status_code == 200
    assert server.connections == 1
    transport.close()


async def test_async_pool_timeout(serve: Any) -> None:
    started, release = threading.Event(), threading.Event()
    server = serve(_slow_script(started, release))
    transport = AsyncUnixSocketTransport(server.path, max_connections=1)
    request = httpx.Request("GET", BASE_URL + "/", extensions={"timeout": timeout_extension(5)})
    busy = asyncio.ensure_future(transport.handle_async_request(request))
    while not started.is_set():
        await asyncio.sleep(0.01)
    waiting = httpx.Request(
        "GET", BASE_URL + "/", extensions={"timeout": httpx.Timeout(5, pool=0.1).as_dict()}
    )
    with pytest.raises(httpx.PoolTimeout):
        await transport.handle_async_request(waiting)
    release.set()
    assert (await busy).status_code == 200
    assert (await transport.handle_async_request(request)).status_code == 200
    assert server.connections == 1
    await transport.aclose()


@pytest.mark.parametrize(("limit", "calls"), [(3, 3), (2, 6)])
async def test_concurrent_async_requests_each_get_a_connection(
    serve: Any, limit: int, calls: int
) -> None:
    barrier = threading.Barrier(limit, timeout=5)

    def script(peer: Peer, index: int) -> None:
        while peer.request() is not None:
            if index < limit and len(peer.server.requests) <= limit:
                barrier.wait()  # answers only once `limit` requests are in flight together
            peer.send(reply(INFO))

    server = serve(script)
    transport = AsyncUnixSocketTransport(server.path, max_connections=limit)

    async def one() -> int:
        request = httpx.Request("GET", BASE_URL + "/", extensions={"timeout": timeout_extension(5)})
        return (await transport.handle_async_request(request)).status_code

    assert await asyncio.gather(*(one() for _ in range(calls))) == [200] * calls
    assert server.connections == limit
    await transport.aclose()


async def test_cancelled_request_frees_its_slot_and_connection(serve: Any) -> None:
    started, release = threading.Event(), threading.Event()
    slow = _slow_script(started, release)

    def script(peer: Peer, index: int) -> None:
        if index == 0:
            slow(peer, index)
        else:
            peer.answer_all()

    server = serve(script)
    transport = AsyncUnixSocketTransport(server.path, max_connections=1)
    request = httpx.Request("GET", BASE_URL + "/", extensions={"timeout": timeout_extension(5)})
    task = asyncio.ensure_future(transport.handle_async_request(request))
    while not started.is_set():
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()
    assert (await transport.handle_async_request(request)).content == INFO
    assert server.connections == 2  # the cancelled one's connection was not reused
    await transport.aclose()


# -- the clients on top ------------------------------------------------------------


class Recording(httpx.MockTransport):
    """A mock transport that remembers requests and whether it was closed."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.closed = False
        super().__init__(self._answer)

    def _answer(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/snapshot/create" or request.method != "GET":
            return httpx.Response(204)
        # a streamed body, as a transport may return: the client must read it
        return httpx.Response(200, stream=httpx.ByteStream(INFO))

    def close(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.closed = True


def test_client_timeouts_reach_the_transport() -> None:
    transport = Recording()
    client = firec.Client("/x.sock", version="1.14.2", timeout=7, transport=transport)
    assert client.get_instance_info().vmm_version == "1.14.2"
    client.get_instance_info(timeout=0.5)
    client.get_instance_info(timeout=None)
    client.create_snapshot(models.SnapshotCreateParams(snapshot_path="/s", mem_file_path="/m"))
    timeouts = [r.extensions["timeout"] for r in transport.requests]
    assert timeouts == [
        dict.fromkeys(("connect", "read", "write", "pool"), value) for value in (7, 0.5, None, 300)
    ]
    client.close()
    assert transport.closed
    with pytest.raises(firec.errors.ConnectError, match="closed"):
        client.get_instance_info()


def test_client_requests_carry_their_own_headers() -> None:
    transport = Recording()
    client = firec.Client("/x.sock", version="1.14.2", transport=transport)
    client.put_machine_config(models.MachineConfiguration(vcpu_count=2, mem_size_mib=256))
    client.stop_balloon_hinting()
    client.get_instance_info()
    put, patch, get = transport.requests
    assert put.url == httpx.URL(BASE_URL + "/machine-config")
    assert json.loads(put.content) == {"vcpu_count": 2, "mem_size_mib": 256}
    assert put.headers["content-type"] == "application/json"
    assert put.headers["content-length"] == str(len(put.content))
    assert (patch.method, patch.headers["content-length"], patch.content) == ("PATCH", "0", b"")
    assert get.headers["accept"] == "application/json" and get.headers["host"] == "localhost"
    assert "content-length" not in get.headers


async def test_async_client_over_a_streaming_mock() -> None:
    transport = Recording()
    async with firec.AsyncClient("/x.sock", version="1.14.2", transport=transport) as client:
        assert (await client.get_instance_info()).id == "x"
        assert (await client.get_instance_info(timeout=1)).id == "x"
    assert transport.closed
    assert transport.requests[1].extensions["timeout"]["read"] == 1


# -- against the emulator and a real Firecracker ------------------------------------


def test_vmm_calls_over_one_connection(vmm: Vmm, drive: Any) -> None:
    client = drive(vmm.socket_path)
    for _ in range(20):
        assert client.send().json()["state"] == "Not started"
    put = client.send("PUT", "/machine-config", body={"vcpu_count": 1, "mem_size_mib": 64})
    assert (put.status_code, put.content, put.reason_phrase) == (204, b"", "")
    patch = client.send("PATCH", "/machine-config", body={"mem_size_mib": 32})
    assert patch.status_code == 204
    assert client.send("GET", "/machine-config").json()["mem_size_mib"] == 32
    refused = client.send("PUT", "/drives/", body={})
    assert refused.json() == {"fault_message": "The ID cannot be empty."}
    transport = client.sync or client.asynchronous
    assert len(transport._idle) == 1  # every call above went over one kept-alive connection


def test_vmm_http_layer_error_does_not_poison_the_next_call(vmm: Vmm, drive: Any) -> None:
    """A POST with a body makes micro_http poison its connection; the transport drops it."""
    client = drive(vmm.socket_path)
    assert client.send().status_code == 200
    refused = client.send("POST", "/actions", body={"action_type": "FlushMetrics"})
    assert refused.status_code == 400
    assert b'"error"' in refused.content and b"Invalid HTTP Method" in refused.content
    for _ in range(3):  # on the poisoned connection each of these would get the same 400
        assert client.send().status_code == 200


def test_vmm_restarted_on_the_same_socket(vmm: Vmm, drive: Any, short_tmp: Path) -> None:
    client = drive(vmm.socket_path)
    assert client.send().json()["id"] == "firec-test"
    vmm.stop()
    os.unlink(vmm.socket_path)
    second = start_vmm(vmm.backend, short_tmp)
    try:
        response = client.send("PUT", "/machine-config", body={"vcpu_count": 1, "mem_size_mib": 64})
        assert response.status_code == 204  # over a new connection, transparently
        assert client.send("GET", "/machine-config").json()["mem_size_mib"] == 64
    finally:
        second.stop()
    with pytest.raises(httpx.ConnectError) as caught:
        client.send()
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)


def test_vmm_serves_ten_connections_and_the_client_says_so(vmm: Vmm, flavour: str) -> None:
    """Firecracker closes an 11th connection at once: the error says why."""
    others = []

    async def call_async() -> None:
        async with firec.AsyncClient(vmm.socket_path, version="1.14.2") as client:
            await client.get_instance_info()

    def call() -> None:
        if flavour == "sync":
            with firec.Client(vmm.socket_path, version="1.14.2") as client:
                client.get_instance_info()
        else:
            asyncio.run(call_async())

    try:
        for _ in range(10):
            sock = socket.socket(socket.AF_UNIX)
            sock.settimeout(5)
            sock.connect(vmm.socket_path)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")  # accepted and served
            others.append(sock)
        if vmm.backend == "firecracker":
            # Firecracker writes 503 "Too many open connections" and hangs up
            with pytest.raises(errors.APIError, match="Too many open connections") as refused:
                call()
            assert refused.value.status_code == 503
        else:  # the emulator just hangs up
            with pytest.raises(errors.ConnectError, match="at most 10") as caught:
                call()
            assert caught.value.socket_path == vmm.socket_path
    finally:
        for sock in others:
            sock.close()
    time.sleep(0.1)  # let the VMM notice the closed connections
    call()
