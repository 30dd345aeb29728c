"""How :class:`firec.cluster.Cluster` waits for an actor's answer: :func:`ray.get`.

Written by hand, like :mod:`firec.cluster._async.io` (which awaits); the
cluster itself is written once, in ``_async/``. An error the actor raised is
raised here as itself, not wrapped in Ray's ``RayTaskError``.
"""

from __future__ import annotations

from typing import Any

from firec.cluster._errors import unwrapped

__all__ = ["get", "get_all"]


def get(ref: Any) -> Any:
    """The answer of one actor call."""
    import ray

    try:
        return ray.get(ref)
    except BaseException as exc:
        raise unwrapped(exc) from None


def get_all(refs: list[Any]) -> list[Any]:
    """The answers of several actor calls, in order; each failed one as its exception."""
    results: list[Any] = []
    for ref in refs:
        try:
            results.append(get(ref))
        except Exception as exc:
            results.append(exc)
    return results
