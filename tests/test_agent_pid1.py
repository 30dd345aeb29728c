"""firec-agent as PID 1: in new PID, mount, UTS and network namespaces, chrooted into a root
filesystem made of Debian's busybox-static package, as it runs as a guest's init.

The host cannot boot a Linux guest here, so this is where the init half is
tested for real: the mounts it makes, zombies it reaps (while execs still
get their own exit statuses), signals it forwards, the hostname and network
it sets from the kernel command line, and how it ends: a ``shutdown`` or a
SIGTERM ends every process, syncs, and reboots, which in a PID namespace
ends the namespace (the kernel kills its init with SIGHUP).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from firec.agent import Client, GuestIdentity
from firec.errors import AgentError
from firec.network.mac import derive_mac
from tests.agent_support import (
    AGENT_IN_IMAGE,
    TOKEN,
    Pid1,
    agent_path,
    busybox_rootfs,
    run_pid1,
    stream_a_gib,
)

pytestmark = [
    pytest.mark.needs_tool("unshare", "dpkg-deb", "ip"),
    pytest.mark.skipif(os.geteuid() != 0, reason="namespaces and chroot need root"),
]

CMDLINE = (
    "console=ttyS0 reboot=k firec.hostname=guest-one "
    f"ip=10.0.2.15::10.0.2.1:255.255.255.0::eth0:off:10.0.2.3 firec.agent_token={TOKEN}"
)


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return busybox_rootfs(agent_path(tmp_path_factory), tmp_path_factory.mktemp("pid1"))


@pytest.fixture
def init(rootfs: Path) -> Iterator[Pid1]:
    with run_pid1(rootfs, CMDLINE) as running:
        yield running


@pytest.fixture
def client(init: Pid1) -> Iterator[Client]:
    with init.client() as c:
        yield c


def _states(client: Client) -> dict[int, str]:
    """pid -> state letter of every process in the namespace."""
    out = client.exec(["sh", "-c", "cat /proc/[0-9]*/stat 2>/dev/null"]).stdout.decode()
    states = {}
    for line in out.splitlines():
        pid, rest = line.split(" ", 1)
        states[int(pid)] = rest.rsplit(")", 1)[1].split()[0]
    return states


def test_it_is_pid_1_with_its_mounts(client: Client) -> None:
    assert client.version().pid1
    init_argv = client.exec(["cat", "/proc/1/cmdline"]).stdout.split(b"\0")
    assert init_argv[0] == AGENT_IN_IMAGE.encode()
    mounts = {
        (fields[1], fields[2])
        for fields in (
            line.split() for line in client.files.read("/proc/mounts").decode().splitlines()
        )
    }
    for point, kind in (
        ("/proc", "proc"),
        ("/sys", "sysfs"),
        ("/dev", "devtmpfs"),
        ("/dev/pts", "devpts"),
        ("/dev/shm", "tmpfs"),
        ("/run", "tmpfs"),
        ("/tmp", "tmpfs"),
    ):
        assert (point, kind) in mounts, (point, mounts)


def test_hostname_and_network_from_the_kernel_command_line(client: Client) -> None:
    assert client.exec(["hostname"]).stdout == b"guest-one\n"
    addresses = client.exec(["ip", "-4", "addr", "show"]).stdout.decode()
    assert "inet 127.0.0.1/8" in addresses
    assert "inet 10.0.2.15/24" in addresses
    assert "UP" in client.exec(["ip", "link", "show", "eth0"]).stdout.decode()
    assert "default via 10.0.2.1 dev eth0" in client.exec(["ip", "route"]).stdout.decode()
    assert client.files.read("/etc/resolv.conf") == b"nameserver 10.0.2.3\n"


def test_identity_gives_a_restored_guest_its_own_hostname_mac_and_seed(client: Client) -> None:
    mac = derive_mac("guest-two", "eth0")
    identity = GuestIdentity(hostname="guest-two", macs={"eth0": mac}, seed=os.urandom(32))
    # no time: the clock is not namespaced, and this one is the host's
    assert client.set_identity(identity) == ("seed", "hostname", "mac eth0")
    assert client.exec(["hostname"]).stdout == b"guest-two\n"
    assert client.files.read("/sys/class/net/eth0/address").decode().strip() == mac
    # the interface was taken down for the change: it is up again, with its address and
    # the default route it had
    assert "UP" in client.exec(["ip", "link", "show", "eth0"]).stdout.decode()
    assert "inet 10.0.2.15/24" in client.exec(["ip", "-4", "addr", "show"]).stdout.decode()
    assert "default via 10.0.2.1 dev eth0" in client.exec(["ip", "route"]).stdout.decode()


def test_identity_names_what_it_could_not_apply_and_refuses_bad_members(client: Client) -> None:
    with pytest.raises(AgentError) as caught:
        client.set_identity(GuestIdentity(macs={"eth9": derive_mac("guest-two", "eth9")}))
    assert "eth9" in caught.value.message and "No such device" in caught.value.message
    for bad, field in (
        ({"macs": {"eth0": "01:00:5e:00:00:01"}}, "macs"),  # multicast
        ({"seed": "abc"}, "seed"),
        ({"hostname": ""}, "hostname"),
        ({"time": -1}, "time"),
    ):
        with pytest.raises(AgentError) as caught:
            client._call({"op": "identity", **bad}, op="identity", target="")
        assert caught.value.code == "bad_request" and field in caught.value.message
    assert client.exec(["hostname"]).stdout == b"guest-one\n"  # nothing applied


def test_the_kernel_argument_token_is_required(init: Pid1) -> None:
    with Client.unix(init.socket) as anonymous, pytest.raises(AgentError) as caught:
        anonymous.health()
    assert caught.value.code == "unauthorized"


def test_orphans_are_reaped_and_execs_keep_their_statuses(client: Client) -> None:
    # each exec leaves an orphan that PID 1 inherits and must reap; meanwhile
    # every exec's own status must come back to it, not to the reaper
    def one(i: int) -> int:
        script = f"(sleep 0.0{i % 10}; exit 3) & exit {i % 7}"
        return client.exec(["sh", "-c", script]).exit_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(one, range(40)))
    assert codes == [i % 7 for i in range(40)]
    time.sleep(0.3)
    states = _states(client)
    assert "Z" not in states.values(), states


def test_signals_are_forwarded_to_every_process(init: Pid1, client: Client) -> None:
    script = 'trap "echo got-hup; exit 5" HUP; echo ready; while :; do sleep 0.02; done'
    with client.spawn(["sh", "-c", script]) as proc:
        assert next(iter(proc.stdout)) == b"ready\n"
        os.kill(init.agent_pid, signal.SIGHUP)
        result = proc.wait(timeout=10)
    assert (result.exit_code, result.stdout) == (5, b"got-hup\n")
    assert client.health()["ok"] is True  # SIGHUP does not end the agent


def test_exec_pty_and_files_work_inside(client: Client, tmp_path: Path) -> None:
    assert client.exec(["id", "-u"], user="tester").stdout == b"1000\n"
    assert client.exec(["id", "-G"], user="tester").stdout.split() == [b"1000", b"2000"]
    assert client.exec(["sh", "-c", "echo $HOME"], user="tester").stdout == b"/home/tester\n"
    with client.spawn(["sh", "-c", "tty; stty size"], pty=(30, 90)) as proc:
        out = proc.wait().stdout
    assert b"/dev/pts/" in out and b"30 90" in out
    source = tmp_path / "tree"
    (source / "d").mkdir(parents=True)
    (source / "d" / "f").write_bytes(b"payload")
    client.files.upload(source, "/root/tree")
    assert client.exec(["cat", "/root/tree/d/f"]).stdout == b"payload"
    client.exec(["sh", "-c", "mkdir -p /tmp/made && echo inside > /tmp/made/x"], check=True)
    client.files.download("/tmp/made", tmp_path / "made")
    assert (tmp_path / "made" / "x").read_bytes() == b"inside\n"


def test_the_root_is_the_image_firec_built(client: Client, rootfs: Path) -> None:
    """What ``firec image build`` made of the docker save tarball is what runs."""
    record = json.loads(client.files.read("/.firec/image.json"))
    assert record["cmd"] == ["sh"] and record["working_dir"] == "/root"
    assert client.files.stat("/home/tester").uid == 1000  # the layer's owners are kept
    assert client.exec(["busybox", "true"]).exit_code == 0


def test_a_1gib_file_streams_through_pid_1_with_bounded_memory(
    init: Pid1, client: Client, rootfs: Path, tmp_path: Path
) -> None:
    try:
        stream_a_gib(init.socket, init.token, init.agent_pid, tmp_path, "/root/big.bin")
    finally:
        (rootfs / "root" / "big.bin").unlink(missing_ok=True)


def test_shutdown_ends_every_process_and_the_namespace(init: Pid1, client: Client) -> None:
    marker_script = 'trap "echo term >> /root/seen; exit 0" TERM; while :; do sleep 0.02; done'
    proc = client.spawn(["sh", "-c", marker_script])
    client.exec(["sh", "-c", "sleep 300 &"], check=True)  # an orphan, too
    client.files.write("/root/written", b"synced before the end")
    client.shutdown()
    init.process.wait(timeout=15)
    proc.close()
    # the namespace's init was ended by the kernel's reboot: SIGHUP, re-raised by unshare
    assert init.process.returncode in (-signal.SIGHUP, 128 + signal.SIGHUP)
    assert (init.root / "root" / "seen").read_text() == "term\n"
    assert (init.root / "root" / "written").read_bytes() == b"synced before the end"


def test_sigterm_to_pid_1_shuts_down(init: Pid1, client: Client) -> None:
    assert client.health()["pid1"] is True
    os.kill(init.agent_pid, signal.SIGTERM)
    init.process.wait(timeout=15)
    assert init.process.returncode in (-signal.SIGHUP, 128 + signal.SIGHUP)


FAKE_MMDS = """
import http.server, json, sys
DOCUMENT = {
    "firec": {"hostname": "from-mmds", "agent_token": "mmds-token"},
    "network": {"interfaces": {"eth0": {
        "ipv4": {"address": "10.9.0.5", "netmask": "255.255.255.0", "gateway": "10.9.0.1"},
        "nameservers": "9.9.9.9 1.0.0.1", "mtu": "1400"}}},
}
class MMDS(http.server.BaseHTTPRequestHandler):
    def do_PUT(self):
        assert self.path == "/latest/api/token" and self.headers["X-metadata-token-ttl-seconds"]
        self.answer(200, b"session-1")
    def do_GET(self):
        if self.headers.get("X-metadata-token") != "session-1":
            return self.answer(401, b"no token")
        assert self.headers["Accept"] == "application/json"
        self.answer(200, json.dumps(DOCUMENT).encode())
    def answer(self, status, body):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
server = http.server.HTTPServer(("127.0.0.1", 8169), MMDS)
open(sys.argv[1], "w").close()
server.serve_forever()
"""


def test_hostname_network_and_token_from_mmds(rootfs: Path, tmp_path: Path) -> None:
    """firec.mmds=: MMDS version 2 (a session token first), its document applied."""
    script, ready = tmp_path / "mmds.py", tmp_path / "ready"
    script.write_text(FAKE_MMDS)
    before = (
        f"ip link set lo up && {sys.executable} {script} {ready} & "
        f"while [ ! -e {ready} ]; do sleep 0.01; done;"
    )
    cmdline = "console=ttyS0 firec.mmds=127.0.0.1:8169"
    with run_pid1(rootfs, cmdline, token="mmds-token", before=before) as init:
        with Client.unix(init.socket, token=TOKEN) as wrong, pytest.raises(AgentError):
            wrong.health()
        with init.client() as client:
            assert client.exec(["hostname"]).stdout == b"from-mmds\n"
            assert "inet 10.9.0.5/24" in client.exec(["ip", "-4", "addr"]).stdout.decode()
            assert "mtu 1400" in client.exec(["ip", "link", "show", "eth0"]).stdout.decode()
            routes = client.exec(["ip", "route"]).stdout.decode()
            assert "default via 10.9.0.1 dev eth0" in routes
            resolv = client.files.read("/etc/resolv.conf")
            assert resolv == b"nameserver 9.9.9.9\nnameserver 1.0.0.1\n"


def test_words_the_kernel_hands_init_do_not_stop_it(rootfs: Path) -> None:
    """The kernel passes the command line's words it does not know to init as arguments:
    as PID 1 the agent logs them and goes on (exiting would panic the guest's kernel)."""
    with (
        run_pid1(rootfs, CMDLINE, args="ro quiet --no-such-option") as init,
        init.client() as client,
    ):
        assert client.health()["pid1"] is True
