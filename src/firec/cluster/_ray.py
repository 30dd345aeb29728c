"""firec's actors in Ray: starting, finding and ending them. Everything here is Ray's own API.

* one host actor per alive node (:func:`host_actors`): named
  ``firec-host-<node id>`` in the cluster's namespace, detached (it
  outlives the driver that started it: other drivers use it too), pinned to
  its node with a hard node-affinity strategy, ``num_cpus=0``;
* the book (:func:`book`): one detached actor, on the head node (it must
  outlive any KVM host's node, whose VMs it lists when that node dies);
* a link per driver (:func:`new_link`): not detached, so Ray ends it with
  its driver, which is how hosts learn a driver is gone.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

from firec.cluster._host import BOOK_NAME, Book, Host, Link

__all__ = ["book", "end", "host_actors", "join", "new_link"]

_log = logging.getLogger("firec.cluster")

#: The Ray namespace firec's actors live in, unless the caller names another.
NAMESPACE = "firec"
#: An async actor's concurrent calls: enough for hundreds of VMs per host.
MAX_CONCURRENCY = 1000
#: Attempts at joining through Ray Client (``ray://``): its server on the head fails to start
#: a client's session now and then (a fork race in Ray's proxier, ray-project/ray#63202).
CLIENT_ATTEMPTS = 3
_CLIENT_START_FAILED = "Starting Ray client server failed"
#: Every firec actor: no CPU of Ray's (VMs are counted by the host), never restarted.
_ALWAYS: dict[str, Any] = {"num_cpus": 0, "max_restarts": 0}


@functools.cache
def _actor_classes() -> tuple[Any, Any, Any]:
    import ray

    return ray.remote(Host), ray.remote(Book), ray.remote(Link)


def join(address: str | None, namespace: str) -> bool:
    """Join the Ray cluster at ``address`` (``None``: ``$RAY_ADDRESS``, else a new local one).

    Returns whether this call started Ray in this process (then
    :func:`ray.shutdown` is this process's to call). A process already
    connected is left as it is.
    """
    import ray

    if ray.is_initialized():
        return False
    through_client = (address or os.environ.get("RAY_ADDRESS", "")).startswith("ray://")
    attempt = 1
    while True:
        try:
            ray.init(
                address=address,
                namespace=namespace,
                log_to_driver=False,
                logging_level=logging.WARNING,
            )
            return True
        except ConnectionAbortedError as exc:
            if not through_client or _CLIENT_START_FAILED not in str(exc):
                raise
            if attempt == CLIENT_ATTEMPTS:
                exc.add_note(
                    f"firec tried {CLIENT_ATTEMPTS} times: Ray Client's server on the head "
                    "failed to start a session each time (ray-project/ray#63202)"
                )
                raise
            _log.warning("Ray Client's server failed to start a session; trying again")
            ray.shutdown()
            attempt += 1


def alive_nodes() -> list[dict[str, Any]]:
    """Ray's description of every alive node."""
    import ray

    return [node for node in ray.nodes() if node.get("Alive")]  # type: ignore[no-untyped-call]


def host_name(node_id: str) -> str:
    """The actor name of the host of node ``node_id``."""
    return f"firec-host-{node_id}"


def host_actors(namespace: str) -> dict[str, Any]:
    """A host actor for each alive node (started where there is none): node id -> handle."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    host_class = _actor_classes()[0]
    actors = {}
    for node in alive_nodes():
        node_id = node["NodeID"]
        actors[node_id] = host_class.options(
            name=host_name(node_id),
            namespace=namespace,
            lifetime="detached",
            get_if_exists=True,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
            max_concurrency=MAX_CONCURRENCY,
            **_ALWAYS,
        ).remote(node_id, namespace)
    return actors


def book(namespace: str) -> Any:
    """The cluster's book (started on the head node where there is none)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    book_class = _actor_classes()[1]
    head = [n["NodeID"] for n in alive_nodes() if "node:__internal_head__" in n["Resources"]]
    options: dict[str, Any] = {}
    if head:
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(head[0], soft=False)
    return book_class.options(
        name=BOOK_NAME,
        namespace=namespace,
        lifetime="detached",
        get_if_exists=True,
        **options,
        **_ALWAYS,
    ).remote()


def new_link() -> tuple[str, Any]:
    """A link actor for this driver: (its id, its handle)."""
    link = _actor_classes()[2].options(**_ALWAYS).remote()
    return link._actor_id.hex(), link


def end(actor: Any) -> None:
    """End ``actor`` now (a detached actor only ends so)."""
    import ray

    ray.kill(actor, no_restart=True)
