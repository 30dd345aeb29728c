"""Work inside a running microVM through firec's guest agent: exec, spawn, files, wait_ready.

The layer of :class:`firec.AsyncMachine` (see :mod:`firec.vm._async.machine`)
that reaches into the guest, on top of its lifecycle
(:mod:`firec.vm._async.lifecycle`). The machine makes one agent client
(:class:`firec.agent.AsyncClient`, on ``machine.agent``) from its vsock
device, the socket as the host sees it (in the jail for a jailed VM: the
VM's layout says where), and the agent's port and token as the guest was
booted with them (:mod:`firec.vm.guest_agent`): its config's, or, for a VM
restored from a snapshot or a clone, the snapshot's. A restored VM is a new
machine with a new client, so it never reuses a connection the restore
reset; a connection that died under a client is replaced on its next use.

Example (runs as is: firec's emulator runs the agent as a host process
standing in for the guest, because the kernel command line names it)::

    import asyncio, firec
    from firec.testing import emulator_binary
    from firec.testing.guest import build_test_guest

    async def main() -> None:
        config = (
            firec.Config.builder(None, build_test_guest())
            .firecracker_binary(emulator_binary())
            .vsock(3, f"/tmp/firec-doc-{id(main)}.sock")
            .agent()  # a random token, on the kernel command line and to the client
            .build()
        )
        async with await firec.AsyncMachine.create(config) as machine:
            await machine.start()
            await machine.wait_ready(timeout=10)
            result = await machine.exec(["echo", "hello"], check=True)
            print(result.stdout)  # b'hello\\n'
            await machine.files.write("/tmp/firec-doc.txt", "hi")
            print(await machine.files.read("/tmp/firec-doc.txt"))  # b'hi'
            await machine.files.remove("/tmp/firec-doc.txt")

    asyncio.run(main())
"""

# This file is the one source of both flavours: guest.py (under the synchronous
# firec.Machine) is generated from it. Edit here, then run scripts/unasync.py.

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence

from firec.agent._async.client import AsyncClient as AgentClient
from firec.agent._async.files import Data, Files
from firec.agent._async.process import Process
from firec.agent.identity import GuestIdentity, is_hostname
from firec.agent.results import AgentInfo, ExecResult
from firec.errors import AgentConnectionError, MachineError, TransportError
from firec.vm._async import io
from firec.vm._async.lifecycle import MachineLifecycle
from firec.vm.guest_agent import agent_endpoint, boot_args, runs_agent

__all__ = ["MachineGuest"]

#: Seconds between two looks at the VMM while waiting for the agent (has it exited?).
READY_LOOK = 0.5
#: Seconds between two attempts, when one failed at once (nothing listens yet).
READY_RETRY = 0.02


class MachineGuest(MachineLifecycle):
    """A booted microVM's guest, through firec's agent: a layer of :class:`firec.AsyncMachine`."""

    _agent_client: AgentClient | None = None  # made on first use

    @property
    def agent(self) -> AgentClient:
        """The client of the guest agent (made on first use; :meth:`delete` closes it).

        Raises:
            MachineError: the VM has no vsock device, through which the agent is reached.
        """
        client = self._agent_client
        if client is None:
            uds = self._launch.vsock_path
            if uds is None:
                raise MachineError(
                    f"microVM {self.vm_id} has no vsock device, and firec's guest agent is "
                    "reached through one: add one to its config "
                    "(Builder.vsock(guest_cid, uds_path)); a machine from Machine.connect "
                    "knows no devices: use firec.agent.Client with firec.vm.vsock.connect"
                )
            port, token = self._agent_endpoint()
            connector = io.agent_connector(uds, port, self.vm_id)
            client = self._agent_client = AgentClient(connector, token=token)
        return client

    @property
    def agent_port(self) -> int:
        """The guest's vsock port the agent listens on (as the guest was booted)."""
        return self._agent_endpoint()[0]

    @property
    def runs_agent(self) -> bool:
        """Whether the guest was booted to run firec's agent (its command line says so)."""
        return runs_agent(self._guest_cmdline())

    def _agent_endpoint(self) -> tuple[int, str | None]:
        """The agent's port and token on the command line the guest booted with."""
        return agent_endpoint(self._guest_cmdline())

    def _guest_cmdline(self) -> str | None:
        """The kernel command line the guest booted with: the snapshot's it was restored from
        (or one taken of this very guest), else its config's."""
        snapshot = self._snapshot_base
        if snapshot is not None and snapshot.boot_args is not None:
            return snapshot.boot_args
        return boot_args(self.config.kernel_args, self.config.agent)

    async def renew_identity(self, hostname: str | None = None) -> tuple[str, ...]:
        """Make the guest a machine of its own: the clock now, a fresh random seed, a hostname
        and its config's MACs, through the agent (:class:`~firec.agent.GuestIdentity`).

        A VM restored from a snapshot shares the snapshot's clock, kernel
        random state, hostname and MACs with every other VM restored from it;
        clones, forks and pooled VMs whose guest runs the agent are renewed so
        as they start. The hostname is ``hostname``, else the VM's id (when it
        is a valid hostname); the guest's ``eth<i>`` gets the ``guest_mac`` of
        the config's i-th network interface (Firecracker adds them to the
        guest in that order). Returns what the agent applied: everything as
        the guest's init, nothing as a service (firec's emulator).

        Raises:
            AgentError: the agent could not apply a member (its message says which).
            AgentConnectionError: the agent did not answer.
            MachineError: the VM has no vsock device.
        """
        macs = {
            f"eth{i}": interface.guest_mac
            for i, interface in enumerate(self.config.network_interfaces)
            if interface.guest_mac
        }
        if not hostname and is_hostname(self.vm_id):
            hostname = self.vm_id
        return await self.agent.set_identity(GuestIdentity.fresh(hostname, macs))

    async def exec(
        self,
        argv: Sequence[str] | str,
        *,
        env: Mapping[str, str | None] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        user: str | int | None = None,
        stdin: Data | None = None,
        timeout: float | None = None,
        check: bool = False,
        shell: bool = False,
        env_clear: bool = False,
    ) -> ExecResult:
        """Run a command in the guest to its end: its exit code, stdout and stderr.

        No shell unless ``shell=True`` (then ``argv`` may be one string).
        ``env`` is set over the agent's environment, ``user`` is a name, a uid
        or ``"uid:gid"``, ``stdin`` bytes, text, a binary file or chunks.

        Raises:
            CommandTimeoutError: ``timeout`` passed (the command was killed);
                it names the command and carries what it wrote.
            CommandError: ``check`` and the command failed, or it could not start.
            AgentConnectionError: the agent could not be reached (the
                message names the VM, the vsock port and socket).
            MachineError: the VM has no vsock device.
        """
        return await self.agent.exec(
            argv,
            env=env,
            cwd=cwd,
            user=user,
            stdin=stdin,
            timeout=timeout,
            check=check,
            shell=shell,
            env_clear=env_clear,
        )

    async def spawn(
        self,
        argv: Sequence[str] | str,
        *,
        env: Mapping[str, str | None] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        user: str | int | None = None,
        stdin: bool = True,
        pty: bool | tuple[int, int] = False,
        timeout: float | None = None,
        shell: bool = False,
        env_clear: bool = False,
    ) -> Process:
        """Start a command in the guest and return at once: a process to stream and steer.

        Its ``stdout``, ``stderr`` and ``output()`` iterate as it writes;
        ``write_stdin``, ``close_stdin``, ``signal``, ``kill``, ``resize``
        (with ``pty``) and ``wait`` steer it. Arguments as for :meth:`exec`.
        """
        return await self.agent.spawn(
            argv,
            env=env,
            cwd=cwd,
            user=user,
            stdin=stdin,
            pty=pty,
            timeout=timeout,
            shell=shell,
            env_clear=env_clear,
        )

    @property
    def files(self) -> Files:
        """The guest's files: ``write``, ``read``, ``upload``, ``download`` (directories
        too), ``list``, ``stat``, ``exists``, ``mkdir``, ``remove``, ``chmod``."""
        return self.agent.files

    async def wait_ready(self, timeout: float = 30.0) -> AgentInfo:
        """Wait until the guest agent answers (the guest is booting); what it says of itself.

        Raises:
            AgentConnectionError: no answer within ``timeout`` seconds; it
                names the VM, the port and what the last attempt met.
            AgentError: the agent refused (a wrong token).
            MachineError: the VMM exited first, or the VM has no vsock device.
        """
        agent = self.agent
        uds, port = self._launch.vsock_path, self.agent_port
        assert uds is not None  # the agent client was made
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                # a guest that does not answer CONNECT at all (still booting) is given
                # at most what is left, and the VMM is looked at every READY_LOOK s
                await io.vsock_probe(uds, port, max(0.001, min(left, READY_LOOK)))
                return await agent.wait_ready(max(0.001, left))
            except (AgentConnectionError, TransportError) as exc:
                message = exc.message if isinstance(exc, AgentConnectionError) else str(exc)
                status = self.exit_status
                if status is not None:
                    raise self._failure(
                        f"the VMM exited before the guest agent answered on vsock port {port}",
                        status,
                    ) from exc
                if time.monotonic() >= deadline:
                    raise AgentConnectionError(
                        f"microVM {self.vm_id}: the guest agent did not answer on vsock port "
                        f"{port} within {timeout:g}s: {message}",
                        op="wait_ready",
                    ) from exc
                await io.sleep(min(READY_RETRY, max(0.0, deadline - time.monotonic())))

    async def close_agent(self) -> None:
        """Close the agent client and its connections; the next use makes a new one.

        The VM runs on: this is for a program done with the guest (``firec
        exec``), and what :meth:`delete` does first.
        """
        client, self._agent_client = self._agent_client, None
        if client is not None:
            await client.aclose()

    async def delete(self) -> None:
        """Close the agent client, then stop the VMM and remove everything (see the lifecycle)."""
        await self.close_agent()
        await super().delete()
