"""Host-side networking for Firecracker VMs: taps, namespaces, leases, NAT, CNI.

The pieces, each usable on its own:

* :mod:`~firec.network.interface`: what a VM's interface asks for
  (:class:`Interface` and its plan: routed, bridged, CNI, or an existing tap);
* :mod:`~firec.network.tap`: where a tap is made (owner, namespace, bridge or
  address), and interface names checked;
* :mod:`~firec.network.netns`: one network namespace per VM, and running code
  or processes inside it;
* :mod:`~firec.network.mac`: deterministic guest MACs;
* :mod:`~firec.network.leases`: IPv4 leases from a subnet, persisted and locked;
* :mod:`~firec.network.guest_ip`: the guest's ``ip=`` boot argument and MMDS document;
* :mod:`~firec.network.nat`: masquerade, port forwards and egress allow-lists
  in firec's own nftables table;
* :mod:`~firec.network.cni`: running CNI plugins for a VM's namespace;
* :mod:`~firec.network.names`: the names of a VM's namespace and links (``fc-<vm_id>``...).

All of it for one VM, in order:

* :mod:`~firec.network.setup`: :func:`setup_network`, the steps with rollback
  (what it will make is planned and checked against the host first, in
  ``_plan.py``; links, routes and addresses go through ``_netlink.py``);
* :mod:`~firec.network.record`: each step written down before it is taken;
* :mod:`~firec.network.teardown`: :func:`teardown_network` undoes the recorded
  steps, even after a crash; :func:`reclaim_leases` frees what a crash leased.

Example::

    >>> import firec.network as fn
    >>> nic = fn.Interface("eth0", "tap0", network=fn.RoutedNetwork(
    ...     subnet="172.30.0.0/16", nameservers=("1.1.1.1",),
    ...     port_forwards=(fn.PortForward(2222, 22),)))
    >>> net = fn.setup_network("vm1", [nic], state_dir="/var/lib/firec")   # doctest: +SKIP
    >>> net.netns_path, net.kernel_ip_arg()                                # doctest: +SKIP
    (PosixPath('/var/run/netns/fc-vm1'), 'ip=172.30.0.2::172.30.0.1:255.255.0.0::eth0:off:1.1.1.1')
    >>> net.teardown()                                                     # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from firec.network.cni import CNIConfList, CNIResult
    from firec.network.guest_ip import GuestIPConfig
    from firec.network.interface import (
        BridgedNetwork,
        CNINetwork,
        Interface,
        NetworkPlan,
        RoutedNetwork,
    )
    from firec.network.leases import Lease, LeaseStore
    from firec.network.mac import derive_mac
    from firec.network.nat import PortForward
    from firec.network.setup import AttachedInterface, VMNetwork, setup_network
    from firec.network.teardown import reclaim_leases, teardown_network

# Imported on first use: describing an Interface must not load netlink.
_HOMES = {
    "AttachedInterface": "setup",
    "BridgedNetwork": "interface",
    "CNIConfList": "cni",
    "CNINetwork": "interface",
    "CNIResult": "cni",
    "GuestIPConfig": "guest_ip",
    "Interface": "interface",
    "Lease": "leases",
    "LeaseStore": "leases",
    "NetworkPlan": "interface",
    "PortForward": "nat",
    "RoutedNetwork": "interface",
    "VMNetwork": "setup",
    "derive_mac": "mac",
    "reclaim_leases": "teardown",
    "setup_network": "setup",
    "teardown_network": "teardown",
}

__all__ = [
    "AttachedInterface",
    "BridgedNetwork",
    "CNIConfList",
    "CNINetwork",
    "CNIResult",
    "GuestIPConfig",
    "Interface",
    "Lease",
    "LeaseStore",
    "NetworkPlan",
    "PortForward",
    "RoutedNetwork",
    "VMNetwork",
    "derive_mac",
    "reclaim_leases",
    "setup_network",
    "teardown_network",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'firec.network' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"firec.network.{home}"), name)
    globals()[name] = value
    return value
