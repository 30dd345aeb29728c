"""The Unix-socket HTTP transport the clients talk through, and its errors.

Firecracker serves its API as HTTP/1.1 on a Unix domain socket. firec uses
httpx over that socket; any other :class:`httpx.BaseTransport` (or
:class:`httpx.AsyncBaseTransport`) can be passed to the clients instead, for
example :class:`httpx.MockTransport` in a unit test::

    import httpx, firec

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"firecracker_version": "1.14.2"})

    client = firec.Client("/unused.sock", transport=httpx.MockTransport(handler))
    assert client.get_version().firecracker_version == "1.14.2"
"""

from __future__ import annotations

import os

import httpx

from .errors import ConnectError, TimeoutError, TransportError

__all__ = ["async_unix_transport", "transport_error", "unix_transport"]

#: Firecracker's API ignores the host; httpx needs one.
BASE_URL = "http://localhost"


def unix_transport(socket_path: str | os.PathLike[str]) -> httpx.HTTPTransport:
    """A pooled, keep-alive httpx transport to the API socket at ``socket_path``."""
    return httpx.HTTPTransport(uds=os.fspath(socket_path))


def async_unix_transport(socket_path: str | os.PathLike[str]) -> httpx.AsyncHTTPTransport:
    """The asyncio twin of :func:`unix_transport`."""
    return httpx.AsyncHTTPTransport(uds=os.fspath(socket_path))


def transport_error(exc: httpx.TransportError, socket_path: str) -> TransportError:
    """Translate an httpx failure into firec's error, naming the socket."""
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
