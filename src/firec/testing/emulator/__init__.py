"""A Firecracker emulator for tests: no KVM, same command line, same HTTP API.

Run it as ``python -m firec.testing.emulator`` or ``firec-emulator`` with real
Firecracker's flags, plus ``--emulate-version 1.14`` (or the environment variable
``FIREC_EMULATOR_VERSION``; default 1.16) to pick the release it imitates. It
serves the API of that release on the Unix socket, with its status codes, error
messages and pre-/post-boot rules, and at ``InstanceStart`` plays firec's tiny
test guest (:mod:`firec.testing.guest`) on the serial console. It needs no
KVM; to play a host without it, set ``FIREC_KVM_DEVICE`` to a path the
emulator then opens at ``InstanceStart``, failing as Firecracker fails to
open ``/dev/kvm`` (firec's host checks look at the same path).

From Python, :class:`firec.testing.Emulator` spawns it on a temporary socket.

Where each part is (every module is private; each holds one concept):

The process

* :mod:`._cli`: :func:`main`, the entry point (``__main__`` runs it): the
  emulator's own flags off the command line, then Firecracker's;
* :mod:`._args`: Firecracker's command line per release: flags, parser, ``--help``;
* :mod:`._process`: the start-up, in Firecracker's order (logger, metrics,
  seccomp filter, config file, metadata, the VMM), then serving;
* :mod:`._config_file`: booting from ``--config-file`` (with or without ``--no-api``);
* :mod:`._main_loop`: the API server, the main loop, the stop and its deadlock;
* :mod:`._exits`: how the process ends (exit status, fatal error, panic);
* :mod:`._jail`: ``--emulate-chroot`` and ``--emulate-user``, for the jailer
  emulator (:mod:`firec.testing.jailer`);
* :mod:`._spawn`: :class:`firec.testing.Emulator`, the emulator as a child process.

The API: a request goes :mod:`._http` (HTTP on the Unix socket, micro_http's
behaviour), :mod:`._api` (``dispatch``: logged, routed, performed, counted),
:mod:`._routes` (method, path and body to a VMM action, or a refusal), and
:mod:`._actions` (what the VM's state allows, then the action). So
``PUT /drives/{id}`` is routed to ``InsertBlockDevice`` in :mod:`._routes` (its
body parsed as the ``drive`` struct of :mod:`._schema`), let through before boot
(or as a hotplug, 1.16) in :mod:`._actions`, and done by
``Vmm.insert_drive`` in :mod:`._resources`; ``PATCH /drives/{id}`` is done in
:mod:`._actions` itself.

* :mod:`._schema`: the Rust structs each release parses request bodies into,
  made of the Rust types of :mod:`._serde`, read by serde_json's reader
  (:mod:`._json_reader`), with serde's error messages and positions.

The VMM: :class:`._vmm.Vmm`, its state in :mod:`._state`

* :mod:`._vmm`: the instance, boot, vCPU threads, pause, resume, snapshots;
* :mod:`._resources`: the configuration before boot (``PUT /boot-source``,
  ``/machine-config``, ``/drives``, ``/network-interfaces``, ``/vsock``,
  ``/balloon``, ``/entropy``, ``/pmem``, ``/hotplug/memory``, ``/logger``, ``/metrics``);
* :mod:`._mmds`: ``PUT /mmds/config`` and the MMDS data store (``/mmds``);
* :mod:`._vm_config`: the configuration as the GET endpoints show it;
* :mod:`._errors`: the errors actions answer with, and Rust's OS error texts.

Around it

* :mod:`._guest`: the simulated test guest (serial output, reset; with
  ``firec.echo-input`` it echoes its serial input, which the real one never reads);
* :mod:`._vsock`: the vsock device's host side, and a guest that uses it;
* :mod:`._agent`: the guest's firec-agent, the real one as a host process, when
  the kernel command line names it (``init=.../firec-agent``, or the agent's
  ``firec.agent_token=`` / ``firec.agent_port=``), reached through the vsock device;
* :mod:`._snapshot`: snapshot state and memory files; :mod:`._uffd`: the
  ``Uffd`` memory backend;
* :mod:`._log` and :mod:`._metrics`: Firecracker's logger and metrics;
* :mod:`._release`: which release is emulated, and what it has.
"""

from __future__ import annotations

from typing import NoReturn

__all__ = ["main"]


def main() -> NoReturn:
    """Console entry point (``firec-emulator``)."""
    from firec.testing.emulator._cli import main as run

    run()
