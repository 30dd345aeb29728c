"""firec: the Python SDK and command line for Firecracker microVMs.

The low-level clients speak every endpoint of the Firecracker API, typed,
and refuse what the connected Firecracker version lacks::

    import firec
    from firec.models import MachineConfiguration

    with firec.Client("/run/firecracker.socket") as client:
        client.put_machine_config(MachineConfiguration(vcpu_count=2, mem_size_mib=512))

:class:`AsyncClient` is the asyncio twin. Errors: :mod:`firec.errors`.
Models of every API body: :mod:`firec.models`. Versions: :mod:`firec.versions`.
"""

from __future__ import annotations

from firec import errors, models, versions
from firec.async_client import AsyncClient
from firec.client import Client
from firec.errors import APIError, FirecError
from firec.versions import Version

__version__ = "0.1.0"

__all__ = [
    "APIError",
    "AsyncClient",
    "Client",
    "FirecError",
    "Version",
    "__version__",
    "errors",
    "models",
    "versions",
]
