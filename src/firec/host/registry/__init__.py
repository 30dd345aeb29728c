"""Host state: the microVMs firec started on this host, and everything each one holds.

``firec run -d`` starts a microVM and exits; ``firec ls``, ``stop``, ``rm`` and
``gc``, run later from any process of the same user, find it again here. SDK
programs record their VMs too (:class:`Registration`, used by
:meth:`firec.Machine.create` and :meth:`~firec.Machine.restore` unless
``Config.host_record`` is off). Each VM has one JSON record, written before
anything is made for it (the record claims the id: :meth:`Registry.claim`)
and updated as things are made, so that a controller that crashes half-way
leaves enough behind for :func:`reap` to remove it all:

* the VMM process (pid, with its start time and the boot id, so that a reused
  pid is never mistaken for the VMM);
* the controller: the process that started the VM (a foreground ``firec run``
  owns its VM; a detached VM has no owner once ``firec run -d`` exited);
* the API socket, firec's VM directory, the jail and its cgroups, fifos;
* console, log and metrics files;
* the network (taps, namespace, nft chain, leases: see :mod:`firec.network`);
* the whole :class:`~firec.vm.config.Config`, so the VM can be inspected and
  cleaned up without the command line that made it.

Where the state lives (:func:`state_dir`): ``$FIREC_STATE_DIR`` if set, else
``/run/firec/state`` for root, else ``$XDG_STATE_HOME/firec`` or
``~/.local/state/firec``. Inside it, ``vms/<id>.json`` and its lock
``vms/<id>.lock``, and, when the directory is given explicitly, ``network/``
(:attr:`Registry.network_dir`: network records and leases, the ``state_dir``
given to :func:`firec.network.setup_network`; otherwise that is
``Config.state_dir``, by default ``/var/lib/firec`` for root:
:func:`network_state_dir`).

This is the registry's door; its code is four modules of the ``vm`` room, in
``firec/vm/_registry/`` (a machine claims its id there before it makes
anything, and ``vm`` may not import ``host``: docs/architecture.md), all
importable from here:

* ``records``: what one record holds (:class:`VmRecord`, :class:`Phase`,
  :class:`NetworkInfo`);
* ``claim``: the records of a directory, each id claimed under its lock
  (:class:`Registry`), and the record of a VM this process runs
  (:class:`Registration`);
* ``reaping``: removing a VM and all it had (:func:`reap`, :func:`kill_vmm`), and
  every VM ``firec gc`` would (:func:`reap_abandoned`);
* ``unrecorded``: finding a VMM whose pid was never recorded
  (:func:`find_unrecorded_vmm`).

Example::

    from firec.host.registry import Registry, reap

    registry = Registry()
    for record in registry.records():
        print(record.vm_id, record.vmm_alive(), record.abandoned())
        if record.stale():
            reap(registry, record)  # the VMM is gone: remove what it left
"""

from __future__ import annotations

from firec._proc import ProcessRef, boot_id
from firec._statedirs import registry_dir as state_dir
from firec.vm._registry.claim import Registration, Registry, network_state_dir
from firec.vm._registry.reaping import Reaped, kill_vmm, reap, reap_abandoned, reap_reason
from firec.vm._registry.records import RECORD_FORMAT, NetworkInfo, Phase, VmRecord
from firec.vm._registry.unrecorded import find_unrecorded_vmm

__all__ = [
    "RECORD_FORMAT",
    "NetworkInfo",
    "Phase",
    "ProcessRef",
    "Reaped",
    "Registration",
    "Registry",
    "VmRecord",
    "boot_id",
    "find_unrecorded_vmm",
    "kill_vmm",
    "network_state_dir",
    "reap",
    "reap_abandoned",
    "reap_reason",
    "state_dir",
]
