"""machine.exec, spawn, files and wait_ready, end to end through the vsock device.

The emulator's guest runs the real ``firec-agent`` as a host process when its
command line names the agent (``firec.testing.emulator._agent``), and forwards
each ``CONNECT <agent port>`` to it: the host side is the same code as with
real Firecracker (the machine's client, ``firec.vm.vsock``'s handshake, the
agent protocol). Real Firecracker's test guest has no vsock driver: there the
tests check the errors name the VM and the port.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import firec
from firec.agent import DEFAULT_PORT, Client
from firec.errors import (
    AgentConnectionError,
    AgentError,
    CommandError,
    CommandTimeoutError,
    MachineError,
)
from firec.network import Interface
from firec.network.mac import derive_mac
from firec.testing import emulator_binary
from firec.vm import vsock
from firec.vm.config import Builder
from tests.support import console_text, emulator_wrapper, guest_builder, in_jail, jailer_wrapper


def agents_of(emulator_pid: int) -> list[int]:
    """The live (not zombie) firec-agent processes the emulator ``emulator_pid`` started."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if f"firec-emulator-agent-{emulator_pid}-".encode() in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def assert_agents_end(emulator_pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while agents_of(emulator_pid):
        assert time.monotonic() < deadline, f"agents left running: {agents_of(emulator_pid)}"
        time.sleep(0.05)


@pytest.fixture
def builder(guest_kernel: Path, short_tmp: Path) -> Builder:
    """The test guest on the emulator, with a vsock device and the agent (a random token)."""
    return (
        guest_builder(None, emulator_binary(), guest_kernel, short_tmp)
        .vsock(3, short_tmp / "v.sock")
        .agent()
    )


@pytest.fixture
def machine(builder: Builder) -> Iterator[firec.Machine]:
    with firec.Machine.create(builder.build()) as vm:
        vm.start()
        vm.wait_ready(timeout=10)
        yield vm


def test_exec_codes_output_and_stdin(machine: firec.Machine) -> None:
    result = machine.exec(["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert (result.exit_code, result.stdout, result.stderr) == (7, b"out\n", b"err\n")
    assert machine.exec(["tr", "a-z", "A-Z"], stdin=b"hello").stdout == b"HELLO"
    assert machine.exec(["/bin/true"]).exit_code == 0
    env = machine.exec(["sh", "-c", "echo $GREETING; pwd"], env={"GREETING": "hi"}, cwd="/tmp")
    assert env.stdout == b"hi\n/tmp\n"
    killed = machine.exec(["sh", "-c", "kill -TERM $$"])
    assert killed.signal == 15


def test_exec_errors_name_the_command(machine: firec.Machine) -> None:
    with pytest.raises(CommandTimeoutError, match=r"sleep 5.*timed out after 0\.3s") as timeout:
        machine.exec(["sleep", "5"], timeout=0.3)
    assert timeout.value.command == ["sleep", "5"]
    with pytest.raises(CommandError, match="false") as failed:
        machine.exec(["false"], check=True)
    assert failed.value.result.exit_code == 1
    with pytest.raises(CommandError, match="no-such-program"):
        machine.exec(["no-such-program"])


def test_files_round_trip(machine: firec.Machine, tmp_path: Path) -> None:
    guest = tmp_path / "guest"  # the emulated guest's files are the host's
    machine.files.write(guest / "a.txt", b"alpha", parents=True)
    assert machine.files.read(guest / "a.txt") == b"alpha"
    assert machine.files.stat(guest / "a.txt").size == 5
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "b.bin").write_bytes(os.urandom(3 << 20))
    (tree / "c.txt").write_text("gamma")
    machine.files.upload(tree, guest / "tree")
    assert sorted(i.name for i in machine.files.list(guest / "tree")) == ["c.txt", "sub"]
    machine.files.download(guest / "tree", tmp_path / "back")
    assert (tmp_path / "back" / "sub" / "b.bin").read_bytes() == (
        tree / "sub" / "b.bin"
    ).read_bytes()
    assert (tmp_path / "back" / "c.txt").read_text() == "gamma"
    machine.files.remove(guest / "tree", recursive=True)
    assert not (guest / "tree").exists()


def test_spawn_streams_as_it_comes(machine: firec.Machine) -> None:
    script = "echo one; read line; echo got $line; echo two >&2"
    with machine.spawn(["sh", "-c", script]) as proc:
        first = next(iter(proc.stdout))
        assert first == b"one\n"  # before stdin was written: it streams
        proc.write_stdin(b"ping\n")
        proc.close_stdin()
        rest = b"".join(proc.stdout)
        assert b"".join(proc.stderr) == b"two\n"
        assert proc.wait().exit_code == 0
    assert rest == b"got ping\n"


async def test_async_machine_exec_files_and_spawn(builder: Builder, tmp_path: Path) -> None:
    async with await firec.AsyncMachine.create(builder.build()) as machine:
        await machine.start()
        info = await machine.wait_ready(timeout=10)
        assert info.protocol == 1
        results = await asyncio.gather(
            *(machine.exec(["sh", "-c", f"echo {i}; exit {i}"]) for i in range(10))
        )
        assert [(r.exit_code, r.stdout) for r in results] == [
            (i, f"{i}\n".encode()) for i in range(10)
        ]
        with pytest.raises(CommandTimeoutError, match="sleep 5"):
            await machine.exec(["sleep", "5"], timeout=0.2)
        await machine.files.write(tmp_path / "x", "text")
        assert await machine.files.read(tmp_path / "x") == b"text"
        proc = await machine.spawn(["sh", "-c", "echo a; sleep 0.1; echo b"], stdin=False)
        chunks = [chunk async for chunk in proc.stdout]
        assert b"".join(chunks) == b"a\nb\n"
        assert (await proc.wait()).exit_code == 0
        emulator = machine.pid
        assert emulator is not None and agents_of(emulator)
    assert_agents_end(emulator)


def test_restore_and_three_clones_each_answer_on_their_own(
    builder: Builder, short_tmp: Path
) -> None:
    with firec.Machine.create(builder.build()) as original:
        original.start()
        original.wait_ready(timeout=10)
        first_agent = original.exec(["sh", "-c", "echo $PPID"]).stdout
        snap = original.snapshot(short_tmp / "snap", resume=True)
        assert original.exec(["echo", "after"]).stdout == b"after\n"  # its pooled connection
        token = original._agent_endpoint()[1]
    with firec.Machine.restore(snap) as restored:
        assert restored._agent_endpoint() == (DEFAULT_PORT, token)  # the snapshot's guest's
        restored.wait_ready(timeout=10)
        assert restored.exec(["echo", "restored"], check=True).stdout == b"restored\n"
        restored_agent = restored.exec(["sh", "-c", "echo $PPID"]).stdout
        emulator = restored.pid
        assert emulator is not None
    assert_agents_end(emulator)
    clones = firec.Machine.clone(snap, 3, vsock_override=str(short_tmp / "c{i}.sock"))
    try:
        agents = set()
        for i, clone in enumerate(clones):
            clone.wait_ready(timeout=10)
            assert clone.exec(["echo", str(i)]).stdout == f"{i}\n".encode()
            agents.add(clone.exec(["sh", "-c", "echo $PPID"]).stdout)
        assert len(agents | {first_agent, restored_agent}) == 5  # each its own agent
    finally:
        pids = [c.pid for c in clones]
        for clone in clones:
            clone.delete()
    for pid in pids:
        assert pid is not None
        assert_agents_end(pid)


def assert_own_identity(machines: list[firec.Machine]) -> None:
    """Each machine's guest agent was given its own hostname (its id), MAC and seed."""
    macs = set()
    for machine in machines:
        mac = machine.config.network_interfaces[0].guest_mac
        assert mac == derive_mac(machine.vm_id, "eth0")
        macs.add(mac)
        # the emulator's agent is a service: it logs what a guest's init would apply
        said = f"hostname {machine.vm_id}, eth0 {mac}, seed of 32 bytes, the time"
        assert said in console_text(machine, said)
    assert len(macs) == len(machines)


def test_clones_and_pooled_vms_each_get_their_own_identity(
    builder: Builder, short_tmp: Path
) -> None:
    config = builder.add_network_interface(Interface("eth0", "tap-ident")).build()
    with firec.Machine.create(config) as original:
        original.start()
        original.wait_ready(timeout=10)
        snap = original.snapshot(short_tmp / "snap")
    assert snap.boot_args is not None and "firec.agent_token=" in snap.boot_args
    clones = firec.Machine.clone(snap, 2, vsock_override=str(short_tmp / "c{i}.sock"))
    try:
        assert_own_identity(clones)
        assert clones[0].exec(["echo", "ok"]).stdout == b"ok\n"
    finally:
        for clone in clones:
            clone.delete()
    pool_config = config.replace(vm_id="ident-pool")
    with firec.Pool(
        snap, size=2, config=pool_config, vsock_override=str(short_tmp / "p{i}.sock")
    ) as pool:
        one, two = pool.acquire(), pool.acquire()
        try:
            assert_own_identity([one, two])
        finally:
            one.delete()
            two.delete()
    with firec.Machine.restore(snap) as restored:  # one restore keeps the snapshot's identity
        assert restored.config.network_interfaces[0].guest_mac == snap.vm_config[
            "network-interfaces"
        ][0].get("guest_mac")


def test_the_token_is_required_and_not_shown(builder: Builder, short_tmp: Path) -> None:
    config = builder.agent(token="s3cret-token").build()
    assert "s3cret-token" not in repr(config)
    with firec.Machine.create(config) as machine:
        machine.start()
        machine.wait_ready(timeout=10)
        uds = machine.vsock_path
        assert uds is not None
        intruder = Client(lambda: vsock.connect(uds, DEFAULT_PORT))
        with intruder, pytest.raises(AgentError) as refused:
            intruder.exec(["true"])
        assert refused.value.code == "unauthorized"
        assert machine.exec(["true"]).exit_code == 0
        seen = "".join(machine.last_lines(1000))
    assert "s3cret-token" not in seen


def test_a_machine_without_vsock_says_to_add_one(guest_kernel: Path, short_tmp: Path) -> None:
    config = guest_builder(None, emulator_binary(), guest_kernel, short_tmp).build()
    with firec.Machine.create(config) as machine:
        machine.start()
        with pytest.raises(MachineError, match=r"no vsock device.*Builder\.vsock"):
            machine.exec(["true"])
        with pytest.raises(MachineError, match="no vsock device"):
            machine.files.read("/etc/hostname")


def test_an_agentless_guest_times_out_naming_the_vm_and_port(
    vmm_binary: Path, guest_kernel: Path, short_tmp: Path
) -> None:
    """The tiny test guest runs no agent (on real Firecracker it has no vsock driver)."""
    config = (
        guest_builder("no-agent", vmm_binary, guest_kernel, short_tmp)
        .vsock(3, short_tmp / "v.sock")
        .build()
    )
    with firec.Machine.create(config) as machine:
        machine.start()
        pattern = rf"no-agent.*vsock port {DEFAULT_PORT} within 0\.5s"
        started = time.monotonic()
        with pytest.raises(AgentConnectionError, match=pattern):
            machine.wait_ready(timeout=0.5)
        assert time.monotonic() - started < 2.0  # the timeout holds, whatever the guest does
        with pytest.raises(AgentConnectionError, match=rf"no-agent.*vsock port {DEFAULT_PORT}"):
            machine.exec(["true"])


def test_a_machine_connected_by_its_id_reaches_its_agent(machine: firec.Machine) -> None:
    """The host record gives the connected machine the VM's config: its agent, its vsock."""
    connected = firec.Machine.connect(machine.vm_id)
    try:
        assert connected.config.agent == machine.config.agent  # the token too
        assert connected.vsock_path == machine.vsock_path
        assert connected.exec(["echo", "from", "afar"]).stdout == b"from afar\n"
        connected.files.write("/tmp/from-afar.txt", b"written by the connected machine")
        assert machine.files.read("/tmp/from-afar.txt") == b"written by the connected machine"
    finally:
        connected.close_agent()
        connected.client.close()
    assert machine.exec(["true"]).exit_code == 0  # the maker's machine is as it was
    # by its socket, a machine knows only the API: the error says what to do
    bare = firec.Machine.connect(machine.socket_path)
    try:
        with pytest.raises(MachineError, match="no vsock device"):
            bare.exec(["true"])
    finally:
        bare.client.close()


async def test_an_async_machine_connected_by_its_id_reaches_its_agent(
    machine: firec.Machine,
) -> None:
    connected = await firec.AsyncMachine.connect(machine.vm_id)
    try:
        assert (await connected.exec(["echo", "async"])).stdout == b"async\n"
    finally:
        await connected.close_agent()
        await connected.client.aclose()


def test_exec_in_a_jailed_vm(guest_kernel: Path, short_tmp: Path) -> None:
    emulator = emulator_wrapper(short_tmp)
    builder = (
        guest_builder("exec-jailed", emulator, guest_kernel, short_tmp).vsock(3, "/v.sock").agent()
    )
    config = in_jail(builder, jailer_wrapper(short_tmp), emulator, short_tmp).build().build()
    jail = config.jail
    assert jail is not None
    with firec.Machine.create(config) as machine:
        machine.start()
        machine.wait_ready(timeout=10)
        assert machine.vsock_path == jail.root / "v.sock"
        assert machine.exec(["id", "-u"]).stdout == b"1234\n"  # the jail's user runs it
        connected = firec.Machine.connect(config.vm_id)  # by its id: the jail is known
        try:
            assert connected.vsock_path == jail.root / "v.sock"
            assert connected.exec(["echo", "jailed"]).stdout == b"jailed\n"
        finally:
            connected.close_agent()
            connected.client.close()
    assert not jail.base.exists()


def test_the_guest_layer_examples_run(guest_kernel: Path, tmp_path: Path) -> None:
    from firec.vm._async import guest as async_guest
    from firec.vm._sync import guest as sync_guest

    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
    for module in (async_guest, sync_guest):
        assert module.__doc__ is not None
        block = module.__doc__.split("::\n", 1)[1]
        code = "\n".join(line[4:] for line in block.splitlines())
        import subprocess
        import sys

        ran = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
        )
        assert ran.returncode == 0, ran.stderr
        assert re.findall(r"b'.*'", ran.stdout) == ["b'hello\\n'", "b'hi'"], module.__name__


def test_agent_settings_checked_and_kept_as_data(guest_kernel: Path) -> None:
    import doctest

    from firec.errors import ConfigError
    from firec.vm import guest_agent

    assert doctest.testmod(guest_agent).failed == 0
    builder = firec.Config.builder("vm-1", guest_kernel)
    with pytest.raises(ConfigError, match=r"agent\.port: 0 is not a vsock port"):
        builder.agent(port=0)
    with pytest.raises(ConfigError, match=r"agent\.token: must be 1 to 128 letters"):
        builder.agent(token="two words")
    config = builder.kernel_args("console=ttyS0").agent(port=5000).build()
    assert config.agent is not None and config.agent.port == 5000
    assert config.agent.token is not None and len(config.agent.token) == 32
    assert builder.agent().build().agent != config.agent  # a token of its own per config
    assert builder.agent(token=False).build().agent == guest_agent.AgentSettings()
    assert firec.Config.from_dict(config.to_dict()) == config
    boot = guest_agent.boot_args(config.kernel_args, config.agent)
    assert boot == f"console=ttyS0 firec.agent_port=5000 firec.agent_token={config.agent.token}"
    assert guest_agent.agent_endpoint(boot) == (5000, config.agent.token)
