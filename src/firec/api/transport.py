"""The Unix-socket HTTP transport the clients talk through, and its errors.

Firecracker serves its API as HTTP/1.1 on a Unix domain socket, with a fixed
dialect (micro_http): every response is framed by ``Content-Length`` (or has
no body), connections are kept alive, and the server serves at most 10
connections at a time (an 11th gets a 503 and is closed). :class:`UnixSocketTransport` and
:class:`AsyncUnixSocketTransport` speak just that dialect, straight from bytes
to :class:`httpx.Response`, as httpx transports. Any other
:class:`httpx.BaseTransport` (or :class:`httpx.AsyncBaseTransport`) can be
passed to the clients instead, for example :class:`httpx.MockTransport` in a
unit test::

    import httpx, firec

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"firecracker_version": "1.14.2"})

    client = firec.Client("/unused.sock", transport=httpx.MockTransport(handler))
    assert client.get_version().firecracker_version == "1.14.2"

What the transports do, and refuse:

* Timeouts come from ``request.extensions["timeout"]`` (httpx's
  ``connect``/``read``/``write``/``pool`` dict, seconds or ``None``) and raise
  :class:`httpx.ConnectTimeout`, :class:`httpx.ReadTimeout`,
  :class:`httpx.WriteTimeout` or :class:`httpx.PoolTimeout`.
* A socket that cannot be reached raises :class:`httpx.ConnectError` whose
  ``__cause__`` is the :class:`OSError` (:class:`FileNotFoundError`,
  :class:`ConnectionRefusedError`, :class:`PermissionError`...).
* A connection the server closes before answering raises
  :class:`httpx.RemoteProtocolError` (unless it said something first, like
  Firecracker's 503 ``Too many open connections``: that is the response); but a
  kept-alive connection found closed before anything was received is retried
  once on a new connection (every method Firecracker's API has, GET, PUT and
  PATCH, is idempotent). The asyncio transport also notices idle connections
  the server closes, and never uses them.
* A response the transport cannot frame exactly (``Transfer-Encoding``, a bad
  status line, a missing or contradictory ``Content-Length``, a head over
  64 KiB) raises :class:`httpx.RemoteProtocolError`; nothing is guessed.
* A connection is dropped, not reused, after such an error, after bytes
  arriving that no request asked for, and after an error response that is not
  an API-layer ``{"fault_message": ...}``: micro_http's own ``{ "error": ... }``
  replies mean the server may have lost track of the connection's requests.
* With a :attr:`~UnixSocketTransport.watch` (a :class:`RequestWatch`, which
  :class:`firec.Machine` sets to its VMM's :class:`~firec.vm.process.ExitWatch`),
  a request whose answer is slow to come asks it every ``watch.interval``
  seconds whether to give up, and raises :class:`RequestAbandoned` (closing
  the connection) when it says why: the VMM exited, or it hangs as it stops.

Where it lives: this module is the door. The HTTP framing, the same for both
transports and free of I/O, is ``_http.py``, and when to give up waiting is
``_watch.py``; the pool and request loop are written once, for asyncio, in
``_async/transport.py``, and ``_sync/transport.py`` is generated from it by
``scripts/unasync.py``; the sockets and waits, which differ (blocking socket
timeouts and a thread condition, or the event loop), are ``_sync/connection.py``
and ``_async/connection.py``.
"""

from __future__ import annotations

import os

import httpx

from firec.api._async.transport import AsyncUnixSocketTransport, async_unix_transport
from firec.api._http import BASE_URL, MAX_CONNECTIONS
from firec.api._http import parse_head as parse_head
from firec.api._http import serialize_request as serialize_request
from firec.api._sync.transport import UnixSocketTransport, unix_transport
from firec.api._watch import RequestAbandoned, RequestWatch
from firec.errors import ConnectError, TimeoutError, TransportError

__all__ = [
    "BASE_URL",
    "MAX_CONNECTIONS",
    "AsyncUnixSocketTransport",
    "RequestAbandoned",
    "RequestWatch",
    "UnixSocketTransport",
    "async_unix_transport",
    "transport_error",
    "unix_transport",
]


def transport_error(exc: httpx.TransportError, socket_path: str) -> TransportError:
    """Translate an httpx failure into firec's error, naming the socket."""
    if isinstance(exc, RequestAbandoned):
        return ConnectError(f"Firecracker API socket {socket_path}: {exc}", socket_path=socket_path)
    if isinstance(exc, httpx.TimeoutException):
        detail = str(exc) or type(exc).__name__
        return TimeoutError(
            f"Firecracker API socket {socket_path} did not answer in time ({detail})",
            socket_path=socket_path,
        )
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, FileNotFoundError) or not os.path.exists(socket_path):
        reason = "the socket does not exist (is Firecracker running, with --api-sock there?)"
    elif isinstance(cause, ConnectionRefusedError):
        reason = "connection refused (the VMM has exited or is not serving its API)"
    elif isinstance(cause, PermissionError):
        reason = "permission denied (run as the socket's owner, or as root)"
    elif isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        reason = f"the connection broke ({exc}); the VMM may have died"
    else:
        reason = str(exc) or type(exc).__name__
    return ConnectError(
        f"cannot talk to Firecracker API socket {socket_path}: {reason}", socket_path=socket_path
    )
