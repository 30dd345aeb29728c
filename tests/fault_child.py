"""A controller process for the fault tests: starts one microVM, and may die on the way.

Run as ``python -m tests.fault_child SPEC`` with a JSON spec (see
:func:`config_of`). With ``"kill_after": STEP`` it kills itself with SIGKILL
right after that step of ``Machine.create``/``start`` returned, as a crash
or an OOM kill would; without, it prints ``ready`` once the VM runs and holds
it until its standard input closes, then deletes it.

Steps, in the order a create takes them:

* ``claim``: the VM's id was claimed with its host record;
* ``netns``, ``tap``, ``nft``: the network namespace / a tap / the nft rules
  were made (routed VMs);
* ``spawn``: the VMM was spawned, its pid not yet recorded;
* ``recorded``: its pid was recorded;
* ``start``: the VM booted.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import firec
import firec.host.registry
import firec.network.nat
import firec.network.netns
import firec.network.tap
import firec.vm._sync.vmm
from firec.network import Interface, RoutedNetwork
from firec.network.setup import vm_key

#: step -> (object, attribute) to die right after.
STEPS: dict[str, tuple[Any, str]] = {
    "claim": (firec.host.registry.Registry, "claim"),
    "netns": (firec.network.netns, "create_netns"),
    "tap": (firec.network.tap, "create_tap"),
    "nft": (firec.network.nat.NatTable, "add"),
    "spawn": (firec.vm._sync.vmm, "spawn"),
    "recorded": (firec.host.registry.Registration, "spawned"),
    "start": (firec.Machine, "start"),
}


def die_after(step: str) -> None:
    """Make the process kill itself (SIGKILL) right after ``step`` returns."""
    owner, name = STEPS[step]
    original: Callable[..., Any] = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(owner, name, wrapper)


def config_of(spec: dict[str, Any]) -> firec.Config:
    """The VM's config from the spec's keys (vm_id, kernel, binary, workdir, jailer, routed).

    ``"sdk_network_state": true`` leaves the network state where the SDK keeps
    it by default (not in ``<state_dir>/network``); ``"host_record": false``
    keeps no host record.
    """
    builder = (
        firec.Config.builder(spec["vm_id"], spec["kernel"])
        .kernel_args("console=ttyS0")
        .workdir(spec["workdir"])
    )
    if not spec.get("sdk_network_state"):
        builder = builder.state_dir(Path(spec["state_dir"]) / "network")
    jailer = spec.get("jailer")
    if jailer is not None:
        builder = (
            builder.jailer_cfg()
            .jailer_binary(jailer["binary"])
            .exec_file(spec["binary"])
            .chroot_base_dir(jailer["chroot_base"])
            .uid(jailer.get("uid", 1234))
            .gid(jailer.get("gid", 1235))
            .build()
        )
    else:
        builder = builder.firecracker_binary(spec["binary"])
    if spec.get("routed"):
        tap = f"fct{vm_key(spec['vm_id'])}0"
        nic = Interface("eth0", tap, network=RoutedNetwork(subnet=spec["routed"], masquerade=False))
        builder = builder.add_network_interface(nic)
    return builder.build().replace(host_record=spec.get("host_record", True))


def main() -> None:
    spec = json.loads(sys.argv[1])
    if spec.get("kill_after"):
        die_after(spec["kill_after"])
    machine = firec.Machine.create(config_of(spec))
    machine.start()
    print("ready", machine.pid, flush=True)
    sys.stdin.read()  # hold the VM until the test closes our stdin
    machine.delete()


if __name__ == "__main__":
    main()
