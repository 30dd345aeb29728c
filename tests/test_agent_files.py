"""Files through firec-agent, run as a host process on a Unix socket."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from firec.agent import Client
from firec.errors import AgentError
from tests.agent_support import RunningAgent, run_agent, stream_a_gib


def _tree(root: Path) -> dict[str, object]:
    """A directory as {relative path: content, link target or 'dir'} with modes."""
    out: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        mode = path.lstat().st_mode & 0o7777
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            out[rel] = ("dir", mode)
        else:
            out[rel] = ("file", mode, path.read_bytes())
    return out


def test_write_read_stat_list_mkdir_chmod_remove(client: Client, tmp_path: Path) -> None:
    base = tmp_path / "guest"
    files = client.files
    files.mkdir(base / "a" / "b", parents=True)
    files.mkdir(base / "a", exist_ok=True)
    assert files.write(base / "a" / "b" / "f.txt", "hello\n", mode=0o600) == 6
    assert (base / "a" / "b" / "f.txt").read_bytes() == b"hello\n"
    assert files.read(base / "a" / "b" / "f.txt") == b"hello\n"
    assert files.read(base / "a" / "b" / "f.txt", offset=1, length=3) == b"ell"
    info = files.stat(base / "a" / "b" / "f.txt")
    assert (info.name, info.type, info.size, info.mode) == ("f.txt", "file", 6, 0o600)
    assert info.filemode == "-rw-------"
    assert files.write(base / "a" / "b" / "f.txt", b"more", append=True) == 4
    assert files.read(base / "a" / "b" / "f.txt") == b"hello\nmore"
    os.symlink("b/f.txt", base / "a" / "link")
    listing = files.list(base / "a")
    assert [(e.name, e.type, e.target) for e in listing] == [
        ("b", "directory", None),
        ("link", "symlink", "b/f.txt"),
    ]
    assert files.stat(base / "a" / "link").type == "file"
    assert files.stat(base / "a" / "link", follow=False).type == "symlink"
    files.chmod(base / "a" / "b" / "f.txt", 0o751)
    assert (base / "a" / "b" / "f.txt").stat().st_mode & 0o777 == 0o751
    assert files.exists(base / "a") and not files.exists(base / "nope")
    with pytest.raises(AgentError) as caught:
        files.remove(base / "a")
    assert caught.value.code == "exists"
    files.remove(base / "a", recursive=True)
    assert not (base / "a").exists()
    files.remove(base / "a", missing_ok=True)


def test_errors_carry_the_agents_code_and_message(client: Client, tmp_path: Path) -> None:
    with pytest.raises(AgentError) as caught:
        client.files.read(tmp_path / "missing")
    assert caught.value.code == "not_found"
    assert str(caught.value) == (
        f"read {tmp_path}/missing: cannot read '{tmp_path}/missing': No such file or directory"
    )
    with pytest.raises(AgentError, match="it is a directory") as caught:
        client.files.read(tmp_path)
    assert caught.value.code == "is_a_directory"
    with pytest.raises(AgentError) as caught:
        client.files.write(tmp_path / "no" / "dir" / "f", b"x")
    assert caught.value.code == "not_found"
    assert not (tmp_path / "no").exists()
    with pytest.raises(AgentError) as caught:
        client.files.mkdir(tmp_path)
    assert caught.value.code == "exists"


def test_a_broken_write_leaves_nothing(client: Client, tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("old")

    def failing() -> Iterator[bytes]:
        yield b"x" * 100_000
        raise OSError("the local disk failed")

    with pytest.raises(OSError, match="the local disk failed"):
        client.files.write(tmp_path / "keep.txt", failing())
    assert (tmp_path / "keep.txt").read_text() == "old"
    # the agent removes its temporary file once it sees the connection end
    client.exec(["true"])
    assert sorted(p.name for p in tmp_path.iterdir() if "firec" in p.name) == []


def test_directories_as_tar_both_ways(client: Client, tmp_path: Path) -> None:
    source = tmp_path / "source"
    (source / "sub" / "deeper").mkdir(parents=True)
    (source / "sub" / "deeper" / "data.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 1))
    (source / "empty").write_bytes(b"")
    long_name = "n" * 150 + ".txt"
    long_dir = source / ("d" * 120)
    long_dir.mkdir()
    (long_dir / long_name).write_text("long")
    (source / "script.sh").write_text("#!/bin/sh\n")
    (source / "script.sh").chmod(0o750)
    os.symlink("sub/deeper/data.bin", source / "link")
    (source / "emptydir").mkdir(mode=0o700)
    (source / "emptydir").chmod(0o700)

    client.files.upload(source, tmp_path / "in-guest")
    assert _tree(tmp_path / "in-guest") == _tree(source)
    client.files.download(tmp_path / "in-guest", tmp_path / "back")
    assert _tree(tmp_path / "back") == _tree(source)
    # into an existing directory: merged
    client.files.upload(source / "sub", tmp_path / "back")
    assert (tmp_path / "back" / "deeper" / "data.bin").exists()
    # one file each way
    client.files.upload(source / "script.sh", tmp_path / "one.sh")
    assert (tmp_path / "one.sh").stat().st_mode & 0o777 == 0o750
    client.files.download(tmp_path / "one.sh", tmp_path / "one-back.sh")
    assert (tmp_path / "one-back.sh").read_text() == "#!/bin/sh\n"


def test_the_agents_tar_matches_python_tarfile(client: Client, tmp_path: Path) -> None:
    """An archive made by Python's tarfile extracts in the guest; the guest's one reads back."""
    blob = io.BytesIO()
    with tarfile.open(fileobj=blob, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in (("x/" + "y" * 200, b"gnu long name"), ("plain", b"p")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    reply = client._call(
        {"op": "write_tar", "path": str(tmp_path / "gnu")},
        op="write_tar",
        target="",
        send=[blob.getvalue()],
    )
    assert reply["entries"] == 2
    assert (tmp_path / "gnu" / "x" / ("y" * 200)).read_bytes() == b"gnu long name"
    pieces: list[bytes] = []
    client._call(
        {"op": "read_tar", "path": str(tmp_path / "gnu")},
        op="read_tar",
        target="",
        receive=pieces.append,
    )
    with tarfile.open(fileobj=io.BytesIO(b"".join(pieces))) as tar:
        names = sorted(tar.getnames())
        assert names == ["plain", "x", "x/" + "y" * 200]
        member = tar.extractfile("x/" + "y" * 200)
        assert member is not None and member.read() == b"gnu long name"


def test_a_name_that_is_not_utf8_travels_both_ways(client: Client, tmp_path: Path) -> None:
    raw = b"caf\xe9-\xff.bin"  # latin-1, not UTF-8
    (tmp_path / "names").mkdir()
    (tmp_path / "names" / os.fsdecode(raw)).write_bytes(b"bytes")
    [entry] = client.files.list(tmp_path / "names")
    assert os.fsencode(entry.name) == raw
    assert client.files.read(tmp_path / "names" / entry.name) == b"bytes"
    client.files.write(tmp_path / "names" / os.fsdecode(b"\xfe"), b"back")
    assert (tmp_path / "names" / os.fsdecode(b"\xfe")).read_bytes() == b"back"


@pytest.fixture
def rooted(agent_bin: Path, tmp_path: Path) -> Iterator[tuple[Client, Path]]:
    root = tmp_path / "root"
    (root / "inside").mkdir(parents=True)
    (tmp_path / "outside.txt").write_text("secret")
    os.symlink(tmp_path / "outside.txt", root / "escape")
    state = tmp_path / "state"
    state.mkdir()
    with run_agent(agent_bin, state, "--root", str(root)) as running, running.client() as c:
        yield c, root


def test_a_root_confines_file_operations(rooted: tuple[Client, Path], tmp_path: Path) -> None:
    client, root = rooted
    client.files.write("inside/ok.txt", "fine")  # relative: from the root
    assert (root / "inside" / "ok.txt").read_text() == "fine"
    assert client.files.read(root / "inside" / "ok.txt") == b"fine"
    for refused in (
        lambda: client.files.read(tmp_path / "outside.txt"),
        lambda: client.files.read("../outside.txt"),
        lambda: client.files.read(root / "escape"),  # a symlink out
        lambda: client.files.write(root / "escape", "overwrite"),
        lambda: client.files.list("/"),
        lambda: client.files.download(tmp_path, tmp_path / "copy"),
    ):
        with pytest.raises(AgentError) as caught:
            refused()
        assert caught.value.code == "outside_root", caught.value
        assert f"outside the agent's root {root}" in caught.value.message
    assert (tmp_path / "outside.txt").read_text() == "secret"
    client.files.remove(root / "escape")  # the link itself is inside
    assert (tmp_path / "outside.txt").exists()


def test_a_tar_cannot_leave_its_directory(rooted: tuple[Client, Path], tmp_path: Path) -> None:
    client, root = rooted
    for name in ("../evil", "a/../../evil", "/../evil"):
        blob = io.BytesIO()
        with tarfile.open(fileobj=blob, mode="w") as tar:
            info = tarfile.TarInfo(name)
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
        with pytest.raises(AgentError, match="would leave the directory"):
            client._call(
                {"op": "write_tar", "path": str(root / "inside")},
                op="write_tar",
                target="",
                send=[blob.getvalue()],
            )
    # a symlink in the archive, then a file through it: never followed
    blob = io.BytesIO()
    with tarfile.open(fileobj=blob, mode="w") as tar:
        link = tarfile.TarInfo("sneaky")
        link.type, link.linkname = tarfile.SYMTYPE, str(tmp_path)
        tar.addfile(link)
        info = tarfile.TarInfo("sneaky/evil")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    with pytest.raises(AgentError, match="a parent is a symlink"):
        client._call(
            {"op": "write_tar", "path": str(root / "fresh")},
            op="write_tar",
            target="",
            send=[blob.getvalue()],
        )
    assert not (tmp_path / "evil").exists()
    assert not (root / "fresh").exists(), "a failed extraction into a new directory left it"
    assert sorted(p.name for p in root.iterdir()) == ["escape", "inside"]


def test_a_token_is_required_when_set(agent_bin: Path, tmp_path: Path) -> None:
    with run_agent(agent_bin, tmp_path, token="s3cret") as running:
        for token, word in ((None, "missing"), ("wrong", "wrong")):
            with Client.unix(running.socket, token=token) as c, pytest.raises(AgentError) as caught:
                c.exec(["true"])
            assert caught.value.code == "unauthorized"
            assert f"{word} token: this agent was started with a token" in str(caught.value)
        with Client.unix(running.socket, token="s3cret") as c:
            assert c.exec(["echo", "in"]).stdout == b"in\n"


def test_a_1gib_file_streams_through_with_bounded_memory(
    agent: RunningAgent, tmp_path: Path
) -> None:
    stream_a_gib(agent.socket, None, agent.process.pid, tmp_path, str(tmp_path / "in-guest.bin"))


def test_a_very_deep_tree_goes_both_ways(client: Client, tmp_path: Path) -> None:
    """Deeper than a thread's stack would allow if each level held a path buffer."""
    source = tmp_path / "deep"
    levels = ["d"] * 1000  # 2000 bytes of path, a thousand directories
    try:  # (Python's own mkdir -p and rmtree recurse: too deep for them)
        subprocess.run(["mkdir", "-p", str(source.joinpath(*levels))], check=True)
        source.joinpath(*levels, "f").write_text("bottom")
        client.files.upload(source, tmp_path / "up")
        assert (tmp_path / "up").joinpath(*levels, "f").read_text() == "bottom"
        client.files.download(tmp_path / "up", tmp_path / "down")
        assert (tmp_path / "down").joinpath(*levels, "f").read_text() == "bottom"
    finally:
        for name in ("deep", "up", "down"):
            subprocess.run(["rm", "-rf", str(tmp_path / name)], check=True)
