"""The emulated VMM's state: what is configured, and where the boot state machine stands.

Kept apart from its behaviour (:mod:`._vmm`, built from :mod:`._resources`,
:mod:`._mmds` and :mod:`._vm_config`) so that the modules that snapshot,
restore and serve it (:mod:`._snapshot`, :mod:`._vsock`) read and change it
without importing the VMM that calls them.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from firec.testing.emulator._log import Logger
from firec.testing.emulator._metrics import Metrics
from firec.testing.emulator._release import Release

__all__ = ["NOT_STARTED", "PAUSED", "RUNNING", "Agent", "Exit", "VmmState"]

NOT_STARTED, RUNNING, PAUSED = "Not started", "Running", "Paused"


class Agent(Protocol):
    """The guest's firec-agent, as the vsock device reaches it (:class:`._agent.GuestAgent`)."""

    port: int

    def connect(self) -> socket.socket | None: ...


@dataclass
class Exit:
    """Firecracker must stop: exit status and its log line.

    ``at``: when (``time.monotonic()``), for a guest that resets after
    running a while; ``None``: right after answering.
    """

    code: int
    reason: str = ""
    at: float | None = None


@dataclass
class VmmState:
    """State of one emulated Firecracker process (:class:`._vmm.Vmm` acts on it)."""

    rel: Release
    instance_id: str
    log: Logger
    metrics: Metrics
    mmds_size_limit: int
    pci_enabled: bool = False
    state: str = NOT_STARTED
    boot_path: bool = False
    machine: dict[str, Any] = field(default_factory=dict)
    boot_source: dict[str, Any] | None = None
    drives: list[dict[str, Any]] = field(default_factory=list)
    nets: list[dict[str, Any]] = field(default_factory=list)
    vsock: dict[str, Any] | None = None
    balloon: dict[str, Any] | None = None
    entropy: dict[str, Any] | None = None
    pmem: list[dict[str, Any]] = field(default_factory=list)
    memory_hotplug: dict[str, Any] | None = None
    serial_out_path: str | None = None
    mmds_data: Any = None
    mmds_version: str = "V1"
    mmds_ipv4: str | None = None
    mmds_imds_compat: bool = False
    mmds_ifaces: list[str] = field(default_factory=list)
    logger_configured: bool = False
    metrics_configured: bool = False
    exit: Exit | None = None
    vsock_socket: socket.socket | None = None
    agent: Agent | None = None  # the guest's firec-agent, a host process (._agent)
    vcpus: list[threading.Thread] = field(default_factory=list)
    vcpus_finish: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.machine = {
            "vcpu_count": 1,
            "mem_size_mib": 128,
            "smt": False,
            "cpu_template": None,
            "track_dirty_pages": False,
            "huge_pages": "None",
        }
