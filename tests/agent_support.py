"""firec-agent in the tests: run as a host process on a Unix socket, or as PID 1 in namespaces.

* :func:`agent_path`: the built agent (built here, once, if the install did not);
* :func:`run_agent`: the agent as a plain service on a Unix socket, stopped
  and checked (socket removed) at the end;
* :func:`busybox_rootfs`: a root filesystem made of Debian's busybox-static
  package (``.ci/run`` caches the .deb) plus the agent;
* :func:`run_pid1`: the agent as PID 1 of new PID, mount, UTS and network
  namespaces, chrooted into such a root, reachable on a Unix socket in it;
* :func:`peak_rss`: a process's peak resident memory.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from firec.agent import Client, agent_binary
from firec.errors import FirecError

ROOT = Path(__file__).resolve().parents[1]
DEB_CACHE = Path(
    os.environ.get("FIREC_TEST_DEB_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "firec" / "debs"
)
TOKEN = "t0ken-for-tests"


def agent_path(tmp_factory: pytest.TempPathFactory) -> Path:
    """The agent binary: the installed one, or one built now from ``agent/``."""
    try:
        return agent_binary()
    except FirecError:
        from firec.agent._build import build_agent

        return build_agent(ROOT / "agent", tmp_factory.mktemp("agent-build") / "firec-agent")


def _wait_listening(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Until the agent says it listens (after listen(): a connection is accepted from then on)."""
    assert process.stderr is not None
    said = b""
    deadline = time.monotonic() + timeout
    while b"listening on" not in said:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"the agent did not listen within {timeout}s: {said.decode()}")
        if select.select([process.stderr], [], [], left)[0]:
            chunk = os.read(process.stderr.fileno(), 4096)
            if not chunk:
                process.wait(5)
                raise AssertionError(
                    f"the agent exited ({process.returncode}) before listening: {said.decode()}"
                )
            said += chunk


@dataclass
class RunningAgent:
    """An agent process and its socket."""

    socket: Path
    process: subprocess.Popen[bytes]
    token: str | None = None

    def client(self, **options: object) -> Client:
        options.setdefault("token", self.token)
        return Client.unix(self.socket, **options)  # type: ignore[arg-type]


def stop(process: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """SIGTERM, then SIGKILL; the exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for stream in (process.stdout, process.stderr):
        if stream:
            stream.close()
    return process.returncode


@contextmanager
def run_agent(
    binary: Path, directory: Path, *args: str, token: str | None = None
) -> Iterator[RunningAgent]:
    """The agent as a service on ``directory/agent.sock``; stopped, its socket gone, at the end."""
    sock = directory / "agent.sock"
    command = [str(binary), "--service", "--listen", f"unix:{sock}", *args]
    if token is not None:
        token_file = directory / "token"
        token_file.write_text(token + "\n")
        command += ["--token-file", str(token_file)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE)
    try:
        _wait_listening(process)
        yield RunningAgent(sock, process, token)
    finally:
        stop(process)
    assert not sock.exists(), "the agent left its socket behind"


def peak_rss(pid: int) -> int:
    """The peak resident set of process ``pid``, in bytes (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for pid {pid}")


def busybox_deb() -> Path:
    """Debian's busybox-static package, as ``.ci/run`` caches it (fetched here if it did not)."""
    found = sorted(DEB_CACHE.glob("busybox-static_*.deb"))
    if not found and shutil.which("apt-get"):
        DEB_CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["apt-get", "download", "-qq", "busybox-static"],
            cwd=DEB_CACHE,
            capture_output=True,
            check=False,
        )
        found = sorted(DEB_CACHE.glob("busybox-static_*.deb"))
    if not found:
        pytest.skip(
            f"no busybox-static .deb in {DEB_CACHE} and apt-get download failed: .ci/run "
            "caches it (apt-get download busybox-static)"
        )
    return found[-1]


def busybox_rootfs(binary: Path, directory: Path) -> Path:
    """A root filesystem: busybox-static unpacked, its applets linked, the agent in /sbin."""
    root = directory / "rootfs"
    subprocess.run(["dpkg-deb", "-x", str(busybox_deb()), str(root)], check=True)
    busybox = root / "bin" / "busybox"
    applets = subprocess.run(
        [str(busybox), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:
        link = root / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    for name in ("sbin", "etc", "root", "home/tester", "proc", "sys", "dev", "run", "tmp"):
        (root / name).mkdir(parents=True, exist_ok=True)
    os.chown(root / "home" / "tester", 1000, 1000)
    shutil.copy2(binary, root / "sbin" / "firec-agent")
    (root / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\ntester:x:1000:1000:tester:/home/tester:/bin/sh\n"
    )
    (root / "etc" / "group").write_text("root:x:0:\ntester:x:1000:\nextra:x:2000:tester\n")
    return root


@dataclass
class Pid1:
    """The agent as PID 1 in its namespaces."""

    root: Path
    socket: Path
    #: ``unshare --fork``: its child is the namespaces' PID 1 (the agent).
    process: subprocess.Popen[bytes]
    token: str | None

    @property
    def agent_pid(self) -> int:
        """The agent's pid as the host sees it."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text()
        return int(children.split()[0])

    def client(self, **options: object) -> Client:
        options.setdefault("token", self.token)
        return Client.unix(self.socket, **options)  # type: ignore[arg-type]


def mounts_under(path: Path) -> list[str]:
    """The host's mount points at or below ``path``."""
    prefix = str(path.resolve())
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [p for p in points if p == prefix or p.startswith(prefix + "/")]


@contextmanager
def run_pid1(
    root: Path, cmdline: str, *, token: str | None = TOKEN, before: str = "", args: str = ""
) -> Iterator[Pid1]:
    """The agent as PID 1: new PID, mount, UTS and network namespaces, chrooted into ``root``.

    Its kernel command line is ``cmdline`` (read from /cmdline in the root);
    ``before`` is shell run in the namespaces first (ending in ``;`` or ``&&``),
    ``args`` more arguments for the agent.
    An ``eth0`` (a tap, as a guest has a virtio-net device) is made in the
    network namespace first. At the end the namespace is ended (SIGKILL if it
    still runs), and nothing is left: no process, no mount, no socket.
    """
    (root / "cmdline").write_text(cmdline + "\n")
    sock = root / "agent.sock"
    sock.unlink(missing_ok=True)
    inner = (
        f'ip tuntap add eth0 mode tap && {before} exec chroot "$0" /sbin/firec-agent '
        f"--listen unix:/agent.sock --cmdline /cmdline --grace 1 {args}"
    )
    process = subprocess.Popen(
        [
            "unshare",
            "--pid",
            "--fork",
            "--mount",
            "--uts",
            "--net",
            "--kill-child",
            "sh",
            "-c",
            inner,
            str(root),
        ],
        stderr=subprocess.PIPE,
    )
    try:
        _wait_listening(process)
        yield Pid1(root, sock, process, token)
    finally:
        if process.poll() is None:
            process.kill()  # --kill-child: the namespace goes with it
        process.wait(10)
        if process.stderr:
            process.stderr.close()
        sock.unlink(missing_ok=True)
    assert mounts_under(root) == [], "mounts of the agent's namespace were left behind"
