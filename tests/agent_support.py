"""firec-agent in the tests: run as a host process on a Unix socket, or as PID 1 in namespaces.

* :func:`agent_path`: the built agent (built here, once, if the install did not);
* :func:`run_agent`: the agent as a plain service on a Unix socket, stopped
  and checked (socket removed) at the end;
* :func:`busybox_rootfs`: the root filesystem ``firec image build`` makes of a
  ``docker save`` tarball of Debian's busybox-static (``.ci/run`` caches the
  .deb), the agent installed as init;
* :func:`run_pid1`: the agent as PID 1 of new PID, mount, UTS and network
  namespaces, chrooted into such a root, reachable on a Unix socket in it;
* :func:`peak_rss`: a process's peak resident memory;
* :func:`stream_a_gib`: a 1 GiB file up through an agent and back, in bounded memory.
"""

from __future__ import annotations

import io
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from firec.agent import Client, agent_binary, protocol
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


#: Uploads and downloads a file through an agent; prints how much its peak memory grew.
GIB_CLIENT = textwrap.dedent(
    """
    import resource, sys
    from firec.agent import Client
    socket_path, token, source, remote, back = sys.argv[1:]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with Client.unix(socket_path, token=token or None) as client:
        client.files.upload(source, remote)
        client.files.download(remote, back)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((after - before) * 1024)
    """
)


def stream_a_gib(
    socket: Path, token: str | None, agent_pid: int, directory: Path, remote: str
) -> None:
    """Upload a 1 GiB file to ``remote`` through the agent and download it back, then check.

    The file (sparse on the host, with data at both ends and in the middle)
    arrives whole both ways, while the client (a process of its own) grows by
    a few frames at most and the agent (``agent_pid``) peaks under 16 MiB:
    neither ever holds the file.
    """
    size = 1 << 30
    source, back = directory / "big.bin", directory / "back.bin"
    with open(source, "wb") as f:
        f.write(b"head")
        f.seek(size // 2)
        f.write(b"middle")
        f.seek(size - 4)
        f.write(b"tail")
    try:
        result = subprocess.run(
            [
                *(sys.executable, "-c", GIB_CLIENT, str(socket), token or ""),
                *(str(source), remote, str(back)),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        client_growth = int(result.stdout.strip())
        agent_peak = peak_rss(agent_pid)
        assert back.stat().st_size == size
        with open(back, "rb") as f:
            assert f.read(4) == b"head"
            f.seek(size // 2)
            assert f.read(6) == b"middle"
            f.seek(size - 4)
            assert f.read(4) == b"tail"
    finally:
        source.unlink(missing_ok=True)
        back.unlink(missing_ok=True)
    # a frame is 1 MiB: both ends hold a few of them, never the file
    assert protocol.MAX_FRAME == 1 << 20
    assert client_growth < 48 * 1024 * 1024, f"the client grew by {client_growth} bytes"
    assert agent_peak < 16 * 1024 * 1024, f"the agent peaked at {agent_peak} bytes"


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


#: Where ``firec image build`` installs the agent, and boots it from as init.
AGENT_IN_IMAGE = "/.firec/firec-agent"


def busybox_rootfs(binary: Path, directory: Path) -> Path:
    """A root filesystem as a guest boots it: what ``firec image build`` made of an image.

    The image is a ``docker save`` tarball of Debian's busybox-static (its
    applets linked, a ``tester`` user with a home of its own); ``firec image
    build`` (the command line, as users run it) makes an ext4 image of it with
    the agent ``binary`` as init, and the image's tree is copied out with
    ``debugfs rdump`` (owners and modes kept): the directory returned is that
    image's root, the agent at :data:`AGENT_IN_IMAGE`.
    """
    tree = directory / "tree"
    subprocess.run(["dpkg-deb", "-x", str(busybox_deb()), str(tree)], check=True)
    busybox = tree / "bin" / "busybox"
    applets = subprocess.run(
        [str(busybox), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:
        link = tree / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    for name in ("sbin", "etc", "root", "home/tester", "proc", "sys", "dev", "run", "tmp"):
        (tree / name).mkdir(parents=True, exist_ok=True)
    os.chown(tree / "home" / "tester", 1000, 1000)
    (tree / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\ntester:x:1000:1000:tester:/home/tester:/bin/sh\n"
    )
    (tree / "etc" / "group").write_text("root:x:0:\ntester:x:1000:\nextra:x:2000:tester\n")
    saved = _docker_save(tree, directory / "busybox.tar")
    image = directory / "busybox.ext4"
    built = subprocess.run(
        [
            *(sys.executable, "-m", "firec.cli", "image", "build", str(saved), str(image)),
            *("--agent", str(binary), "--size", "64M"),
        ],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    root = directory / "rootfs"
    root.mkdir()
    subprocess.run(
        ["debugfs", "-R", f"rdump / {root}", str(image)], capture_output=True, check=True
    )
    image.unlink()  # the tree is what runs; the image is no longer needed
    return root


def _docker_save(tree: Path, path: Path) -> Path:
    """``tree`` as the one layer of a ``docker save`` tarball with a busybox config."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        for entry in sorted(tree.iterdir()):
            tar.add(entry, arcname=entry.name)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["sh"], "Env": ["PATH=/bin:/sbin"], "WorkingDir": "/root"},
            "rootfs": {"type": "layers", "diff_ids": []},
        }
    ).encode()
    members = {
        "config.json": config,
        "layer/layer.tar": layer.getvalue(),
        "manifest.json": json.dumps(
            [{"Config": "config.json", "RepoTags": ["busybox:test"], "Layers": ["layer/layer.tar"]}]
        ).encode(),
    }
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


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
        f'ip tuntap add eth0 mode tap && {before} exec chroot "$0" {AGENT_IN_IMAGE} '
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
