"""The machine shape: :class:`MachineConfiguration` and :class:`HugePages`."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from firec.api.models.base import U64_MAX, APIModel, EnumText, StrictBool, StrictInt
from firec.api.models.cpu import CpuTemplate

__all__ = ["HugePages", "MachineConfiguration"]


class HugePages(StrEnum):
    """Huge pages backing the guest memory (``MachineConfiguration.huge_pages``, 1.7+)."""

    NONE = "None"
    HUGE_2M = "2M"


class MachineConfiguration(APIModel):
    """vCPUs, memory size, SMT, dirty page tracking, huge pages and static CPU template.

    Endpoints: ``PUT``/``PATCH /machine-config`` (before boot; ``PATCH`` sends
    only the fields to change) and ``GET /machine-config``.
    """

    vcpu_count: StrictInt = Field(
        ge=1, le=32, description="Number of vCPUs (either 1 or an even number)."
    )
    mem_size_mib: StrictInt = Field(ge=1, le=U64_MAX, description="Memory size of VM, in MiB.")
    smt: StrictBool | None = Field(
        default=None,
        description=(
            "Flag for enabling/disabling simultaneous multithreading. Can be enabled only on x86."
        ),
    )
    track_dirty_pages: StrictBool | None = Field(
        default=None,
        description=(
            "Enable dirty page tracking. If this is enabled, then incremental guest memory "
            "snapshots (diff snapshots) can be created."
        ),
    )
    cpu_template: Annotated[CpuTemplate, EnumText] | None = Field(
        default=None,
        description="Static CPU template (deprecated by Firecracker; prefer PUT /cpu-config).",
    )
    huge_pages: Annotated[HugePages, EnumText] | None = Field(
        default=None,
        description=(
            "Which huge pages configuration (if any) should be used to back guest memory "
            "(Firecracker 1.7+)."
        ),
    )
