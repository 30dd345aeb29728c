"""The one exception hierarchy of firec.

Every error firec raises derives from :class:`FirecError`, so one ``except``
catches them all::

    try:
        client.put_drive(drive)
    except firec.errors.APIError as exc:
        print(exc.status_code, exc.fault_message)
    except firec.errors.FirecError as exc:
        print("firec failed:", exc)

* :class:`APIError`: Firecracker answered, and refused (carries its own
  ``fault_message`` intact).
* :class:`ConnectError` / :class:`TimeoutError`: the socket could not be
  reached or did not answer in time (both name the socket path).
* :class:`ValidationError`: a value was refused before anything was sent
  (names the field and the reason).
* :class:`UnsupportedError`: the connected Firecracker version lacks a feature
  (names the feature, the version that introduced it, and the connected one).
* :class:`MachineError`: the VMM process or its set-up failed (see
  :mod:`firec.vm`).
* :class:`NetworkError`: host networking could not be set up or torn down
  (netlink, nft, CNI plugin, lease store; see :mod:`firec.network`).
* :class:`SnapshotError`: a snapshot cannot be taken or restored as asked
  (missing or truncated files, a Firecracker version that cannot load it; see
  :mod:`firec.snapshots.snapshot`).
* :class:`InUseError`: a microVM id is already taken on this host (a
  :class:`MachineError`); nothing was touched.
* :class:`StateError`: a state file of firec's (VM or network record, lease)
  cannot be written or read (names the file and the reason).
* :class:`AgentError`: firec's guest agent refused or failed an operation
  (carries the agent's own ``code`` and ``message``; see :mod:`firec.agent`);
  :class:`AgentConnectionError`: the agent could not be reached, or the
  connection to it broke; :class:`CommandError`: a command run through the
  agent failed with ``check=True`` (names the command, carries its result);
  :class:`CommandTimeoutError`: it outlived its timeout and was killed.
* :class:`PoolError`: a pool of microVMs could not hand one out;
  :class:`PoolEmptyError`: none was ready, and the caller chose not to
  restore one now (see :mod:`firec.pool`).
* :class:`ClusterError`: a cluster of hosts (:mod:`firec.cluster`) failed;
  :class:`NoFitError`: no host can take a VM (says what was asked for and
  what each host has free, or which rule refused it); :class:`HostLostError`:
  the host of a VM died (its actor or its node), the VM is lost.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Sequence
from typing import Any

__all__ = [
    "APIError",
    "AgentConnectionError",
    "AgentError",
    "ClusterError",
    "CommandError",
    "CommandTimeoutError",
    "ConfigError",
    "ConnectError",
    "FirecError",
    "HostLostError",
    "InUseError",
    "MachineError",
    "NetworkError",
    "NoFitError",
    "PoolEmptyError",
    "PoolError",
    "SnapshotError",
    "StateError",
    "TimeoutError",
    "TransportError",
    "UnsupportedError",
    "ValidationError",
]


class FirecError(Exception):
    """Base class of every error raised by firec.

    Every one pickles with its attributes (across processes: Ray, multiprocessing)::

        >>> import pickle
        >>> error = pickle.loads(pickle.dumps(InUseError("vm1", "pid 7")))
        >>> error.vm_id, str(error) == str(InUseError("vm1", "pid 7"))
        ('vm1', True)
    """

    def __reduce__(self) -> tuple[Any, ...]:
        # rebuilt from its message and attributes, not by calling __init__
        # again (whose parameters differ from the message it passed on)
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[FirecError], args: tuple[Any, ...], state: dict[str, Any]) -> FirecError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class TransportError(FirecError):
    """The API socket could not be used: unreachable, closed, or too slow."""

    def __init__(self, message: str, *, socket_path: str) -> None:
        super().__init__(message)
        self.socket_path = socket_path


class ConnectError(TransportError):
    """Nothing answered on the API socket (missing socket, dead VMM)."""


class TimeoutError(TransportError, builtins.TimeoutError):
    """The VMM did not answer within the timeout."""


class APIError(FirecError):
    """Firecracker refused a request.

    Attributes:
        status_code: the HTTP status Firecracker answered with.
        fault_message: Firecracker's own explanation, unchanged.
        method: the HTTP method of the refused request.
        path: the URL path of the refused request.
    """

    def __init__(self, status_code: int, fault_message: str, *, method: str, path: str) -> None:
        super().__init__(f"{method} {path} failed with HTTP {status_code}: {fault_message}")
        self.status_code = status_code
        self.fault_message = fault_message
        self.method = method
        self.path = path


class ValidationError(FirecError, ValueError):
    """A value was refused before it was sent.

    Attributes:
        field: dotted path of the offending field (``"drives[0].path_on_host"``),
            or ``""`` when the whole value is at fault.
        reason: why it was refused.
        errors: every ``(field, reason)`` pair found, the first one repeated in
            :attr:`field` and :attr:`reason`.
    """

    def __init__(self, field: str, reason: str, *, errors: Sequence[tuple[str, str]] = ()) -> None:
        self.field = field
        self.reason = reason
        self.errors: tuple[tuple[str, str], ...] = tuple(errors) or ((field, reason),)
        lines = [f"{f}: {r}" if f else r for f, r in self.errors]
        super().__init__("; ".join(lines))


class ConfigError(ValidationError):
    """A microVM configuration is inconsistent as a whole (duplicate ids, missing files...)."""


class UnsupportedError(FirecError):
    """The connected Firecracker version lacks a feature.

    Attributes:
        feature: what was asked for (an endpoint, a field, or a value).
        introduced: the first Firecracker version that has it (``"1.14"``),
            or ``None`` when no version has it any more.
        removed: the first version that no longer has it, if any.
        connected: the version of the Firecracker in front of us.
    """

    def __init__(
        self,
        feature: str,
        *,
        connected: str,
        introduced: str | None = None,
        removed: str | None = None,
    ) -> None:
        self.feature = feature
        self.introduced = introduced
        self.removed = removed
        self.connected = connected
        if removed is not None:
            need = f"was removed in Firecracker {removed}"
            if introduced is not None:
                need = f"needs Firecracker {introduced} up to before {removed}"
        elif introduced is not None:
            need = f"needs Firecracker {introduced} or newer"
        else:
            need = "is not supported by any known Firecracker version"
        super().__init__(f"{feature} {need}; the connected Firecracker is {connected}")


class MachineError(FirecError):
    """The VMM process, or the preparation around it, failed.

    Attributes:
        log_tail: Firecracker's last log/console lines, when there are any.
        exit_code: the VMM's exit status, when it has exited.
    """

    def __init__(
        self, message: str, *, log_tail: Sequence[str] = (), exit_code: int | None = None
    ) -> None:
        self.log_tail = tuple(log_tail)
        self.exit_code = exit_code
        text = message
        if self.log_tail:
            text += "\nlast lines from Firecracker:\n  " + "\n  ".join(self.log_tail)
        super().__init__(text)


class InUseError(MachineError):
    """A microVM id is taken: another VM with this id runs, or is being started, on this host.

    Raised before anything is made or touched; the VM that holds the id is
    left exactly as it was.

    Attributes:
        vm_id: the id asked for.
        holder: who holds it, for people (its VMM's or controller's pid).
    """

    def __init__(self, vm_id: str, holder: str) -> None:
        self.vm_id = vm_id
        self.holder = holder
        super().__init__(
            f"microVM id {vm_id!r} is in use: {holder}; choose another id, or stop and "
            f"remove that VM first (firec rm -f {vm_id})"
        )


class StateError(FirecError):
    """One of firec's state files (VM records, network records, leases) cannot be used.

    Attributes:
        path: the file.
        reason: why (the operating system's words: "No space left on device"...).
    """

    def __init__(self, path: str | os.PathLike[str], reason: str | OSError) -> None:
        self.path = os.fspath(path)
        if isinstance(reason, OSError):
            reason = reason.strerror or str(reason)
        self.reason = reason
        super().__init__(f"cannot write or read firec's state file {self.path}: {reason}")


class NetworkError(FirecError):
    """Host networking failed: a tap, namespace, nft rule, CNI plugin or lease.

    The message names the object (link, namespace, table, subnet) and what to
    do about it. Invalid values are refused earlier with :class:`ConfigError`.
    """


class SnapshotError(FirecError):
    """A snapshot cannot be taken or restored as asked.

    Raised before any VMM is spawned for a restore: a missing or truncated
    memory file, a snapshot from a Firecracker that the target cannot load,
    a directory that already holds a snapshot.

    Attributes:
        path: the snapshot file or directory at fault, when one is.
        snapshot_version: the Firecracker version the snapshot was taken with, when relevant.
        target_version: the Firecracker version asked to load it, when relevant.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        snapshot_version: str | None = None,
        target_version: str | None = None,
    ) -> None:
        super().__init__(message)
        self.path = path
        self.snapshot_version = snapshot_version
        self.target_version = target_version


class AgentError(FirecError):
    """firec's guest agent refused or failed an operation (see :mod:`firec.agent`).

    Attributes:
        code: the agent's error code (``"not_found"``, ``"permission"``,
            ``"outside_root"``, ``"unauthorized"``, ``"bad_request"``...), or
            ``"protocol"`` when the agent's answer itself was wrong.
        message: the agent's own explanation, unchanged.
        op: the operation asked for (``"exec"``, ``"write"``...).
        target: what it was about (a path, or the command), when there is one.
    """

    def __init__(self, code: str, message: str, *, op: str = "", target: str = "") -> None:
        self.code = code
        self.message = message
        self.op = op
        self.target = target
        where = f"{op} {target}".strip()
        super().__init__(f"{where}: {message}" if where else message)


class AgentConnectionError(AgentError):
    """The agent could not be reached, or the connection to it broke mid-operation.

    ``message`` says which: nothing listening, a refused connection, the
    guest gone. Waiting for the agent (``wait_ready``) retries these.
    """

    def __init__(self, message: str, *, op: str = "", target: str = "") -> None:
        super().__init__("connection", message, op=op, target=target)


class CommandError(AgentError):
    """A command run through the agent failed (``check=True``), or did not start.

    Attributes:
        command: the command, as the argv list given.
        result: its :class:`firec.agent.ExecResult` (exit code, stdout, stderr),
            when it ran.
    """

    def __init__(
        self,
        command: Sequence[str],
        message: str,
        *,
        result: Any = None,
        code: str = "command_failed",
    ) -> None:
        self.command = list(command)
        self.result = result
        super().__init__(code, message, op="exec", target=_shown(command))


class CommandTimeoutError(CommandError, builtins.TimeoutError):
    """A command run through the agent outlived its timeout.

    Attributes:
        timeout: the timeout, in seconds.
        killed: the agent killed it (an exec's own timeout); false when only
            the wait for it gave up (``Process.wait(timeout)``): it still runs.
    """

    def __init__(
        self, command: Sequence[str], timeout: float, *, result: Any = None, killed: bool = True
    ) -> None:
        self.timeout = timeout
        self.killed = killed
        if killed:
            message = f"timed out after {timeout:g}s and was killed (SIGKILL)"
        else:
            message = f"still running after {timeout:g}s"
        super().__init__(command, message, result=result)
        self.code = "timeout"


def _shown(command: Sequence[str]) -> str:
    """A command as one line, for messages: ``['sh', '-c', 'exit 1']`` -> ``sh -c 'exit 1'``."""
    import shlex

    text = shlex.join(command)
    return text if len(text) <= 200 else text[:197] + "..."


class PoolError(FirecError):
    """A pool of microVMs (:class:`firec.Pool`) could not hand one out."""


class PoolEmptyError(PoolError):
    """No VM was ready and the caller chose not to restore one now (``when_empty="fail"``),
    or none became ready within the acquire's timeout (``"wait"``)."""


class ClusterError(FirecError):
    """A cluster of hosts (:mod:`firec.cluster`) could not do what was asked."""


class NoFitError(ClusterError):
    """No host can take a VM: all are full, unusable, or refused by a rule.

    Attributes:
        asked: what was asked for, for people.
        hosts: each host's name, and why it was not chosen (with what it has free).
    """

    def __init__(self, asked: str, hosts: dict[str, str]) -> None:
        lines = "".join(f"\n  {name}: {why}" for name, why in sorted(hosts.items()))
        super().__init__(f"no host can take {asked}:" + (lines or " the cluster has no host"))
        self.asked = asked
        self.hosts = hosts


class HostLostError(ClusterError):
    """The host of a VM died (its host actor or its whole node): the VM is lost.

    Attributes:
        host: the host's name.
        vm_id: the VM, when one was being asked about.
    """

    def __init__(self, host: str, vm_id: str = "", cause: str = "") -> None:
        what = f"microVM {vm_id} is lost: its host {host} died" if vm_id else f"host {host} died"
        super().__init__(what + (f" ({cause})" if cause else ""))
        self.host = host
        self.vm_id = vm_id
