"""Where a microVM is in its life: :class:`MachineState`."""

from __future__ import annotations

import enum

from firec.api import models

__all__ = ["MachineState"]


class MachineState(enum.StrEnum):
    """Where a microVM is in its life.

    The first three are Firecracker's own (``GET /``); ``EXITED`` means the
    VMM process has ended.
    """

    NOT_STARTED = "Not started"
    RUNNING = "Running"
    PAUSED = "Paused"
    EXITED = "Exited"

    @classmethod
    def from_instance(cls, state: models.InstanceState) -> MachineState:
        """The machine state of Firecracker's instance state."""
        return cls(state.value)
