"""The names a VM's network gets on the host: its id, key, namespace and links.

Every object firec makes for a VM's network is named after the VM's id, so
that a new process (``firec gc``, a teardown after a crash) finds it again:

* the VM's namespace is ``fc-<vm_id>`` (:func:`netns_name`);
* links and nft chains carry the VM's short key (:func:`vm_key`), since
  Linux link names hold at most 15 characters: the host end of the veth
  pair is ``fc<key>`` (:func:`host_link_name`), its end inside the VM's
  namespace :data:`NS_UPLINK`.

Example::

    >>> netns_name("vm1"), host_link_name("vm1") == "fc" + vm_key("vm1")
    ('fc-vm1', True)
"""

from __future__ import annotations

import hashlib
import re

from firec.errors import ConfigError

__all__ = ["NS_UPLINK", "host_link_name", "netns_name", "validate_vm_id", "vm_key"]

NS_UPLINK = "fchost"
"""The VM namespace's end of the veth pair to the host."""
_VM_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")


def validate_vm_id(vm_id: str) -> str:
    """Return ``vm_id`` if usable (letters, digits, ``-``; at most 64: the jailer's ``--id``).

    >>> validate_vm_id("vm-1")
    'vm-1'
    """
    if not isinstance(vm_id, str) or not _VM_ID.fullmatch(vm_id):
        raise ConfigError(
            "vm_id",
            f"{vm_id!r} is not a VM id (letters, digits and '-', starting with a letter or "
            "digit, at most 64 characters)",
        )
    return vm_id


def vm_key(vm_id: str) -> str:
    """The VM's short key in link and chain names: 10 hex digits of SHA-256 of its id.

    >>> len(vm_key("vm1"))
    10
    """
    return hashlib.sha256(vm_id.encode()).hexdigest()[:10]


def netns_name(vm_id: str) -> str:
    """The name of the VM's network namespace: ``fc-<vm_id>``.

    >>> netns_name("vm1")
    'fc-vm1'
    """
    return f"fc-{validate_vm_id(vm_id)}"


def host_link_name(vm_id: str) -> str:
    """The host end of the VM's veth pair: ``fc<key>`` (12 characters)."""
    return f"fc{vm_key(vm_id)}"
