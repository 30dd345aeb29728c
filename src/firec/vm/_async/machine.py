"""A microVM's whole life, with asyncio: spawn, configure, boot, pause, stop, clean up.

Example (runs as is: firec's emulator and its tiny test guest stand in for
Firecracker and a kernel)::

    import asyncio, firec
    from firec.testing import emulator_binary
    from firec.testing.guest import build_test_guest

    async def main() -> None:
        config = (
            firec.Config.builder(None, build_test_guest())
            .firecracker_binary(emulator_binary())
            .build()
        )
        machine = await firec.AsyncMachine.create(config)
        async with machine:
            await machine.start()
            print(await machine.state())  # MachineState.RUNNING
            await machine.pause()
            await machine.resume()
        # leaving the block shut the VM down and removed everything it made

    asyncio.run(main())
"""

# This file is the one source of both machines: machine.py (the synchronous
# firec.Machine) is generated from it. Edit here, then run scripts/unasync.py.

from __future__ import annotations

# The machine is built in layers, each a module of its own: vmm.py (the VMM
# process, its spawn and its facts), lifecycle.py (create, connect, boot, stop,
# delete), guest.py (exec, spawn, files, identity through the guest agent) on
# it, snapshots.py (snapshot, restore, clone, fork: clones get their identity
# from the guest layer) on that, and devices.py (vsock, drives and metrics at
# runtime). The tunables stay importable from here.
from firec.vm._async.devices import MachineDevices
from firec.vm._async.snapshots import MachineSnapshots
from firec.vm._async.vmm import EXIT_GRACE as EXIT_GRACE
from firec.vm._async.vmm import QUICK_RETRIES as QUICK_RETRIES
from firec.vm._async.vmm import READY_TIMEOUT as READY_TIMEOUT
from firec.vm._async.vmm import SHUTDOWN_TIMEOUT as SHUTDOWN_TIMEOUT
from firec.vm._async.vmm import SPACE_LOOK as SPACE_LOOK
from firec.vm._async.vmm import TAIL_LINES as TAIL_LINES
from firec.vm._async.vmm import TERM_TIMEOUT as TERM_TIMEOUT
from firec.vm._async.vmm import WAIT_LOOK as WAIT_LOOK

__all__ = ["AsyncMachine"]


class AsyncMachine(MachineSnapshots, MachineDevices):
    """One microVM and its VMM process.

    Make one with :meth:`create` (spawn a new VMM) or :meth:`connect` (attach
    to a running one). As an async context manager it always cleans up:
    leaving the block stops the VMM and removes everything firec made.

    Attributes:
        config: the configuration it was made from.
        client: the low-level API client of its socket.
    """
