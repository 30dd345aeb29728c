"""Rate limiting: :class:`TokenBucket` and :class:`RateLimiter`."""

from __future__ import annotations

from pydantic import Field

from firec.api.models.base import APIModel, NonNegativeInt64

__all__ = ["RateLimiter", "TokenBucket"]


class TokenBucket(APIModel):
    """A token bucket: capacity, initial burst and refill time.

    Used inside :class:`RateLimiter` and by ``PUT /serial`` (``rate_limiter``).
    The refill rate is ``size / refill_time``; consumption is unbounded in speed
    while tokens last.
    """

    size: NonNegativeInt64 = Field(description="The total number of tokens this bucket can hold.")
    refill_time: NonNegativeInt64 = Field(
        description="The amount of milliseconds it takes for the bucket to refill."
    )
    one_time_burst: NonNegativeInt64 | None = Field(
        default=None, description="The initial size of a token bucket."
    )


class RateLimiter(APIModel):
    """An IO rate limiter with independent bytes/s and ops/s token buckets.

    Used by drives, network interfaces, pmem and entropy devices
    (``PUT``/``PATCH /drives/{drive_id}``, ``/network-interfaces/{iface_id}``,
    ``/pmem/{id}``, ``PUT /entropy``).
    """

    bandwidth: TokenBucket | None = Field(
        default=None, description="Token bucket with bytes as tokens."
    )
    ops: TokenBucket | None = Field(
        default=None, description="Token bucket with operations as tokens."
    )
