"""The emulated VMM: its instance, its boot and vCPUs, pause, resume and snapshots.

Requests arrive already parsed and routed (see :mod:`._api`); :class:`Vmm`
applies one with real Firecracker's rules of the emulated release and returns
the response data or raises :class:`ActionError` with Firecracker's text. Its
state is :class:`._state.VmmState`; what it does is split by concept:
configuration before boot (:mod:`._resources`), the MMDS (:mod:`._mmds`), the
GET views of the configuration (:mod:`._vm_config`), and here the lifecycle.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from typing import Any

from . import _agent, _guest, _snapshot, _uffd, _vsock
from ._errors import ActionError, action_error, os_error
from ._jail import host_path
from ._mmds import Mmds
from ._resources import VmResources
from ._state import NOT_STARTED, PAUSED, RUNNING, Exit
from ._vm_config import ConfigViews

__all__ = ["ActionError", "Exit", "Vmm", "named_thread"]

KVM_DEVICE_ENV = "FIREC_KVM_DEVICE"
"""Names a KVM device the emulator opens at boot, as Firecracker opens /dev/kvm (tests only)."""


_PR_SET_NAME = 15


def named_thread(name: str, target: Any) -> threading.Thread:
    """Start a daemon thread whose kernel name (``/proc/<pid>/task/<tid>/comm``) is ``name``.

    Returns once the name is set. Firecracker's threads are ``fc_api`` and
    ``fc_vcpu N``; tools (and firec) tell a running VM from a stopping one by them.
    """
    named = threading.Event()

    def run() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)
        named.set()
        target()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    named.wait()
    return thread


class Vmm(VmResources, Mmds, ConfigViews):
    """One emulated Firecracker process: its state, and the rules that change it."""

    @property
    def started(self) -> bool:
        return self.state != NOT_STARTED

    def instance_info(self) -> dict[str, Any]:
        return {
            "id": self.instance_id,
            "state": self.state,
            "vmm_version": self.rel.version,
            "app_name": "Firecracker",
        }

    # --- lifecycle ---

    def start(self) -> None:
        """InstanceStart: validate like Firecracker, then run the simulated guest."""
        if self.boot_source is None:
            raise action_error(
                self.rel,
                "Start microvm error",
                "Cannot start microvm without kernel configuration.",
            )
        self._open_kvm()
        problem = _guest.check_kernel(host_path(self.boot_source["kernel_image_path"]))
        if problem:
            raise action_error(
                self.rel,
                "Start microvm error",
                "System configuration error: Cannot load kernel due to invalid memory "
                f"configuration or invalid kernel image: Kernel Loader: failed to load ELF kernel "
                f"image: Kernel Loader: {problem}",
                f"Cannot load kernel due to invalid memory configuration or invalid kernel "
                f"image: {problem}",
            )
        serial_fd = None
        if self.serial_out_path is not None:
            try:
                serial_fd = os.open(
                    host_path(self.serial_out_path),
                    os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NONBLOCK,
                    0o644,
                )
            except OSError as exc:
                raise ActionError(
                    "Start microvm error: Failed to create device manager: Error with EventFd: "
                    f"{os_error(exc)}"
                ) from None
        self.state = RUNNING
        self.start_vcpus()
        self.log.info("Artificially kick devices", origin="src/vmm/src/device_manager/mod.rs:280")
        self._after_boot(serial_fd)

    def _open_kvm(self) -> None:
        """Open the KVM device as Firecracker does at boot, when ``FIREC_KVM_DEVICE`` names one.

        The emulator needs no KVM; this lets a test play a host where the user
        may not use it. Firecracker 1.0 to 1.5 panic there; the emulator answers
        as 1.6 and newer do, for every release.
        """
        device = os.environ.get(KVM_DEVICE_ENV)
        if not device:
            return
        try:
            os.close(os.open(device, os.O_RDWR | os.O_CLOEXEC))
        except OSError as exc:
            raise ActionError(
                "Start microvm error: Kvm error: Error creating KVM object: "
                f"{os_error(exc)} Make sure the user launching the firecracker process is "
                "configured on the /dev/kvm file's ACL."
            ) from None

    def start_vcpus(self) -> None:
        """One thread per vCPU, named as Firecracker names them, alive until :meth:`stop_vcpus`."""
        for index in range(int(self.machine.get("vcpu_count") or 1)):
            self.vcpus.append(named_thread(f"fc_vcpu {index}", self.vcpus_finish.wait))

    def stop_vcpus(self) -> None:
        """``VcpuEvent::Finish`` to every vCPU thread, then join them (``Vmm::stop``)."""
        self.vcpus_finish.set()
        for thread in self.vcpus:
            thread.join()
        self.vcpus.clear()

    def _after_boot(self, serial_fd: int | None) -> None:
        boot_args = (self.boot_source or {}).get("boot_args") or ""
        output, wants_exit = _guest.run(boot_args)
        self.metrics.inc("uart", "write_count", len(output))
        self.metrics.inc("vcpu", "exit_io_out", len(output))
        if serial_fd is not None:
            try:
                os.write(serial_fd, output.encode())
            except OSError:  # a full disk...: the serial device drops what it cannot write
                pass
            finally:
                os.close(serial_fd)
        else:
            _guest.write_stdout(output)
            if _guest.echoes_input(boot_args):
                named_thread("fc_serial_in", _guest.echo_input)
        if wants_exit:  # the guest resets once it has printed, a little later
            self.exit = Exit(0, at=time.monotonic() + _guest.run_time(output))
        else:
            _vsock.guest_boot(self)
            _agent.start(self)
        self.metrics.write()

    def pause(self) -> None:
        self.state = PAUSED
        self.log.info(
            "'pause vm' VMM action took 40 us.", origin="src/vmm/src/rpc_interface.rs:807"
        )

    def resume(self) -> None:
        self.state = RUNNING
        self.log.info("Artificially kick devices", origin="src/vmm/src/device_manager/mod.rs:280")
        self.log.info(
            "'resume vm' VMM action took 44 us.", origin="src/vmm/src/rpc_interface.rs:820"
        )

    def create_snapshot(self, cfg: dict[str, Any]) -> None:
        if self.state != PAUSED:
            raise action_error(
                self.rel,
                "Create snapshot error",
                "Cannot save the microVM state: Operation not allowed: save/restore unavailable "
                "while running",
            )
        if cfg["snapshot_type"] == "Diff" and not self.machine["track_dirty_pages"]:
            raise action_error(
                self.rel,
                "Create snapshot error",
                "Diff snapshots are not allowed on uVMs with dirty page tracking disabled.",
            )
        try:
            _snapshot.save(
                self,
                host_path(cfg["snapshot_path"]),
                host_path(cfg["mem_file_path"]),
                diff=cfg["snapshot_type"] == "Diff",
            )
        except _snapshot.SnapshotFileError as exc:
            raise action_error(self.rel, "Create snapshot error", exc.modern, exc.legacy) from None

    def load_snapshot(self, cfg: dict[str, Any]) -> None:
        if self.boot_path:
            raise action_error(
                self.rel,
                "Load snapshot error",
                "Loading a microVM snapshot not allowed after configuring boot-specific resources.",
                "Loading a microVM snapshot not allowed after configuring boot-specific resources.",
            )
        mem_path = cfg.get("mem_file_path")
        backend = cfg.get("mem_backend")
        if backend is not None:
            mem_path = backend["backend_path"]
        uffd = backend is not None and backend["backend_type"] == "Uffd"
        try:
            load = _uffd.load if uffd else _snapshot.load
            saved = load(self.rel, host_path(cfg["snapshot_path"]), host_path(str(mem_path)))
        except _snapshot.SnapshotFileError as exc:
            self.exit = Exit(1 if self.rel.modern else 152, "Loading snapshot failed.")
            if self.rel.modern:
                raise ActionError(
                    f"Load snapshot error: Failed to restore from snapshot: {exc.modern}"
                ) from None
            raise ActionError(f"Load microVM snapshot error: {exc.legacy}") from None
        _snapshot.restore(self, saved, cfg)
        if self.vsock is not None:  # Firecracker binds the device's socket anew
            try:
                self.set_vsock(
                    {"guest_cid": self.vsock["guest_cid"], "uds_path": self.vsock["uds_path"]}
                )
            except ActionError as exc:
                self.exit = Exit(1 if self.rel.modern else 152, "Loading snapshot failed.")
                raise ActionError(
                    f"Load snapshot error: Failed to restore from snapshot: {exc}"
                ) from None
            _agent.start(self)  # a guest's agent runs on, in each clone its own
        self.start_vcpus()
        if cfg.get("resume_vm"):
            self.resume()
