"""Ray's errors, as the cluster raises them: an actor's own error unwrapped; a dead actor named."""

from __future__ import annotations

__all__ = ["actor_died", "unwrapped"]


def unwrapped(exc: BaseException) -> BaseException:
    """The error an actor raised, out of Ray's ``RayTaskError``; any other error as it is."""
    from ray.exceptions import RayTaskError

    if isinstance(exc, RayTaskError) and isinstance(exc.cause, BaseException):
        return exc.cause
    return exc


def actor_died(exc: BaseException) -> bool:
    """Whether ``exc`` says the actor called (or its node) is gone."""
    from ray.exceptions import RayActorError

    return isinstance(exc, RayActorError)
