"""How :class:`firec.cluster.AsyncCluster` waits for an actor's answer: it awaits it.

Written by hand, like :mod:`firec.cluster._sync.io` (which calls
:func:`ray.get`); the cluster itself is written once, in ``_async/``. An
error the actor raised is raised here as itself (a :class:`~firec.errors.FirecError`
with firec's own message), not wrapped in Ray's ``RayTaskError``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from firec.cluster._errors import unwrapped

__all__ = ["get", "get_all"]


async def get(ref: Any) -> Any:
    """The answer of one actor call."""
    try:
        return await ref
    except BaseException as exc:
        raise unwrapped(exc) from None


async def get_all(refs: list[Any]) -> list[Any]:
    """The answers of several actor calls, in order; each failed one as its exception."""
    results = await asyncio.gather(*(get(ref) for ref in refs), return_exceptions=True)
    return list(results)
