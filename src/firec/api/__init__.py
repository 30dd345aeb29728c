"""The Firecracker HTTP API: transport, clients, operations, versions, models.

The low-level layer, one method per endpoint, as docker-py's ``APIClient``:

* :mod:`firec.api.transport`: HTTP over the API's Unix socket (httpx
  transports; replaceable);
* :class:`Client` / :class:`AsyncClient`: every endpoint of v1.0 to v1.16,
  typed, refusing what the connected version lacks (``_async/client.py``,
  the connection, and ``_async/endpoints.py``, the endpoints, are the
  sources; their ``_sync/`` twins are generated);
* :mod:`firec.api.operations`: the table of endpoints (method, path, body,
  first version);
* :mod:`firec.api.versions`: :class:`Version`, and which version has which
  operation and field (``_generated_features.py`` is generated from the specs);
* :mod:`firec.api.models`: the request and response *bodies* (the spec's
  definitions, called models as in Firecracker's Go SDK). They are values,
  not live objects: the live microVM is :class:`firec.vm.Machine`.

Errors (:mod:`firec.errors`) carry Firecracker's own ``fault_message``.

Example::

    >>> from firec.api import Version
    >>> Version.parse("1.14.2") >= Version(1, 4)
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from firec._lazy import lazy_door

if TYPE_CHECKING:
    from firec.api import models, operations, transport, versions
    from firec.api._async.client import AsyncClient
    from firec.api._sync.client import Client
    from firec.api.transport import AsyncUnixSocketTransport, UnixSocketTransport
    from firec.api.versions import Version

__all__ = [
    "AsyncClient",
    "AsyncUnixSocketTransport",
    "Client",
    "UnixSocketTransport",
    "Version",
    "models",
    "operations",
    "transport",
    "versions",
]

__getattr__, __dir__ = lazy_door(
    __name__,
    {
        "AsyncClient": "firec.api._async.client",
        "AsyncUnixSocketTransport": "firec.api.transport",
        "Client": "firec.api._sync.client",
        "UnixSocketTransport": "firec.api.transport",
        "Version": "firec.api.versions",
    },
    submodules=("models", "operations", "transport", "versions"),
)
