"""firec: the Python SDK and command line for Firecracker microVMs."""

from __future__ import annotations

__version__ = "0.1.0"
