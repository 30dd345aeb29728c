"""The memory balloon: configuration, updates, statistics and free page hinting."""

from __future__ import annotations

from pydantic import Field

from firec.api.models.base import APIModel, ResponseModel, StrictBool, StrictInt, UInt

__all__ = [
    "Balloon",
    "BalloonHintingStatus",
    "BalloonStartCmd",
    "BalloonStats",
    "BalloonStatsUpdate",
    "BalloonUpdate",
]


class Balloon(APIModel):
    """The balloon device.

    Endpoints: ``PUT /balloon`` (before boot), ``GET /balloon``.
    """

    amount_mib: UInt = Field(description="Target balloon size in MiB.")
    deflate_on_oom: StrictBool = Field(
        description="Whether the balloon should deflate when the guest has memory pressure."
    )
    stats_polling_interval_s: UInt | None = Field(
        default=None,
        description=(
            "Interval in seconds between refreshing statistics. A non-zero value will enable "
            "the statistics. Defaults to 0."
        ),
    )
    free_page_hinting: StrictBool | None = Field(
        default=None,
        description="Whether the free page hinting feature is enabled (Firecracker 1.14+).",
    )
    free_page_reporting: StrictBool | None = Field(
        default=None,
        description="Whether the free page reporting feature is enabled (Firecracker 1.14+).",
    )


class BalloonUpdate(APIModel):
    """A new balloon target size.

    Endpoint: ``PATCH /balloon`` (after boot).
    """

    amount_mib: UInt = Field(description="Target balloon size in MiB.")


class BalloonStatsUpdate(APIModel):
    """A new statistics polling interval (statistics cannot be turned on/off after boot).

    Endpoint: ``PATCH /balloon/statistics``.
    """

    stats_polling_interval_s: UInt = Field(
        description="Interval in seconds between refreshing statistics."
    )


class BalloonStartCmd(APIModel):
    """Starts a free page hinting run.

    Endpoint: ``PATCH /balloon/hinting/start`` (Firecracker 1.14+).
    """

    acknowledge_on_stop: StrictBool | None = Field(
        default=None,
        description=(
            "If Firecracker should automatically acknowledge when the guest submits a done cmd."
        ),
    )


class BalloonStats(ResponseModel):
    """The balloon device statistics.

    Endpoint: ``GET /balloon/statistics``.
    """

    target_pages: StrictInt = Field(description="Target number of pages the device aims to hold.")
    actual_pages: StrictInt = Field(description="Actual number of pages the device is holding.")
    target_mib: StrictInt = Field(
        description="Target amount of memory (in MiB) the device aims to hold."
    )
    actual_mib: StrictInt = Field(
        description="Actual amount of memory (in MiB) the device is holding."
    )
    swap_in: StrictInt | None = Field(
        default=None, description="The amount of memory that has been swapped in (in bytes)."
    )
    swap_out: StrictInt | None = Field(
        default=None,
        description="The amount of memory that has been swapped out to disk (in bytes).",
    )
    major_faults: StrictInt | None = Field(
        default=None, description="The number of major page faults that have occurred."
    )
    minor_faults: StrictInt | None = Field(
        default=None, description="The number of minor page faults that have occurred."
    )
    free_memory: StrictInt | None = Field(
        default=None,
        description="The amount of memory not being used for any purpose (in bytes).",
    )
    total_memory: StrictInt | None = Field(
        default=None, description="The total amount of memory available (in bytes)."
    )
    available_memory: StrictInt | None = Field(
        default=None,
        description=(
            "An estimate of how much memory is available (in bytes) for starting new "
            "applications, without pushing the system to swap."
        ),
    )
    disk_caches: StrictInt | None = Field(
        default=None,
        description=(
            "The amount of memory, in bytes, that can be quickly reclaimed without additional "
            "I/O. Typically these pages are used for caching files from disk."
        ),
    )
    hugetlb_allocations: StrictInt | None = Field(
        default=None,
        description="The number of successful hugetlb page allocations in the guest.",
    )
    hugetlb_failures: StrictInt | None = Field(
        default=None, description="The number of failed hugetlb page allocations in the guest."
    )
    oom_kill: StrictInt | None = Field(
        default=None,
        description="OOM killer invocations, indicating critical memory pressure (1.14+).",
    )
    alloc_stall: StrictInt | None = Field(
        default=None,
        description="Times an allocation entered the slow path to gain more memory (1.14+).",
    )
    async_scan: StrictInt | None = Field(
        default=None, description="Amount of memory scanned asynchronously (1.14+)."
    )
    direct_scan: StrictInt | None = Field(
        default=None, description="Amount of memory scanned directly (1.14+)."
    )
    async_reclaim: StrictInt | None = Field(
        default=None, description="Amount of memory reclaimed asynchronously (1.14+)."
    )
    direct_reclaim: StrictInt | None = Field(
        default=None, description="Amount of memory reclaimed directly (1.14+)."
    )


class BalloonHintingStatus(ResponseModel):
    """The free page hinting status.

    Endpoint: ``GET /balloon/hinting/status`` (Firecracker 1.14+).
    """

    host_cmd: StrictInt = Field(description="The last command issued by the host.")
    guest_cmd: StrictInt | None = Field(
        default=None, description="The last command provided by the guest."
    )
