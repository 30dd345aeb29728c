"""``firec image build`` with the guest agent and the image's defaults: docker save and OCI
tarballs made here from files, a copy of /bin/true standing in for the agent."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

from firec.cli import app
from firec.cli.runconfig import with_image_init
from firec.errors import FirecError, ValidationError
from firec.images import ImageDefaults, build_rootfs, read_image_defaults
from firec.images.defaults import SCHEMA_VERSION, sidecar_path

pytestmark = pytest.mark.needs_tool("mkfs.ext4", "debugfs")

CONFIG = {
    "architecture": "amd64",
    "os": "linux",
    "config": {
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": ["echo hello"],
        "Env": ["PATH=/usr/bin:/bin", "GREETING=hi there"],
        "WorkingDir": "/srv",
        "User": "1000:1000",
    },
    "rootfs": {"type": "layers", "diff_ids": []},
}


def layer(files: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buf.getvalue()


def tar_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def docker_save(path: Path, layers: list[bytes], config: dict[str, object] = CONFIG) -> Path:
    blob = json.dumps(config).encode()
    config_name = f"{hashlib.sha256(blob).hexdigest()}.json"
    members = {config_name: blob}
    names = []
    for number, data in enumerate(layers):
        names.append(f"layer{number}/layer.tar")
        members[names[-1]] = data
    manifest = [{"Config": config_name, "RepoTags": ["test:latest"], "Layers": names}]
    members["manifest.json"] = json.dumps(manifest).encode()
    path.write_bytes(tar_of(members))
    return path


def oci_archive(path: Path, layers: list[bytes], config: dict[str, object] = CONFIG) -> Path:
    members: dict[str, bytes] = {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}'}

    def blob(data: bytes, media_type: str) -> dict[str, object]:
        digest = hashlib.sha256(data).hexdigest()
        members[f"blobs/sha256/{digest}"] = data
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}

    manifest = {
        "schemaVersion": 2,
        "config": blob(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json"),
        "layers": [blob(d, "application/vnd.oci.image.layer.v1.tar") for d in layers],
    }
    index = {
        "schemaVersion": 2,
        "manifests": [
            blob(json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")
        ],
    }
    members["index.json"] = json.dumps(index).encode()
    path.write_bytes(tar_of(members))
    return path


@pytest.fixture
def agent(tmp_path: Path) -> Path:
    binary = tmp_path / "firec-agent"
    shutil.copyfile("/bin/true", binary)
    return binary


def debugfs(image: Path, command: str) -> str:
    return subprocess.run(
        ["debugfs", "-R", command, str(image)], capture_output=True, text=True, check=True
    ).stdout


def image_file(image: Path, path: str, tmp_path: Path) -> bytes:
    out = tmp_path / "dumped"
    out.unlink(missing_ok=True)
    debugfs(image, f"dump {path} {out}")
    return out.read_bytes()


def inode(image: Path, path: str) -> str:
    return " ".join(debugfs(image, f"stat {path}").split())


def fsck(image: Path) -> None:
    check = subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


BASE = layer({"bin/sh": b"#!fake shell\n", "srv/app": b"app\n"})


@pytest.mark.parametrize("make", [docker_save, oci_archive], ids=["docker-save", "oci"])
def test_the_agent_goes_in_as_init_and_the_defaults_are_recorded(
    tmp_path: Path, agent: Path, make: object
) -> None:
    source = make(tmp_path / "image.tar", [BASE])  # type: ignore[operator]
    image = build_rootfs(source, tmp_path / "rootfs.ext4", agent=agent)
    fsck(image)
    assert image_file(image, "/.firec/firec-agent", tmp_path) == agent.read_bytes()
    stat = inode(image, "/.firec/firec-agent")
    assert "Mode: 0755" in stat and "User: 0 Group: 0" in stat
    record = json.loads(sidecar_path(image).read_text())
    assert json.loads(image_file(image, "/.firec/image.json", tmp_path)) == record
    assert record == {
        "schema": SCHEMA_VERSION,
        "entrypoint": ["/bin/sh", "-c"],
        "cmd": ["echo hello"],
        "env": ["PATH=/usr/bin:/bin", "GREETING=hi there"],
        "working_dir": "/srv",
        "user": "1000:1000",
        "agent": "/.firec/firec-agent",
        "agent_mode": "init",
        "init": "/.firec/firec-agent",
        "source": str(source),
    }
    defaults = read_image_defaults(image)
    assert defaults.argv() == ["/bin/sh", "-c", "echo hello"]
    assert defaults.argv(["date"]) == ["/bin/sh", "-c", "date"]
    assert with_image_init("console=ttyS0", image) == "console=ttyS0 init=/.firec/firec-agent"
    assert (
        with_image_init("console=ttyS0 init=/sbin/init", image) == "console=ttyS0 init=/sbin/init"
    )
    sidecar_path(image).unlink()  # the copy inside the image is read then
    assert read_image_defaults(image) == defaults
    assert with_image_init("console=ttyS0", image) == "console=ttyS0"  # no record: as given


def test_as_a_service_in_an_image_with_systemd(tmp_path: Path, agent: Path) -> None:
    systemd = layer(
        {"usr/lib/systemd/systemd": b"\x7fELF", "etc/systemd/system/.keep": b""},
        symlinks={"lib": "usr/lib", "sbin/init": "/lib/systemd/systemd"},
    )
    source = docker_save(tmp_path / "image.tar", [BASE, systemd])
    image = build_rootfs(source, tmp_path / "rootfs.ext4", agent=agent, agent_as_init=False)
    fsck(image)
    unit = image_file(image, "/etc/systemd/system/firec-agent.service", tmp_path).decode()
    assert "ExecStart=/.firec/firec-agent" in unit and "WantedBy=multi-user.target" in unit
    link = inode(image, "/etc/systemd/system/multi-user.target.wants/firec-agent.service")
    assert 'Fast link dest: "/etc/systemd/system/firec-agent.service"' in link
    defaults = read_image_defaults(image)
    assert (defaults.agent_mode, defaults.init) == ("service", None)


def test_as_a_service_without_systemd_is_refused_and_leaves_nothing(
    tmp_path: Path, agent: Path
) -> None:
    (tmp_path / "out").mkdir()
    source = docker_save(tmp_path / "image.tar", [BASE])
    with pytest.raises(ValidationError) as info:
        build_rootfs(source, tmp_path / "out" / "rootfs.ext4", agent=agent, agent_as_init=False)
    assert info.value.field == "agent_as_init"
    assert "has no systemd" in info.value.reason and "as init instead" in info.value.reason
    assert os.listdir(tmp_path / "out") == []


def test_a_directory_takes_its_defaults_from_options(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "app").write_text("app\n")
    image = build_rootfs(
        root,
        tmp_path / "rootfs.ext4",
        entrypoint=["/bin/app"],
        cmd=["--serve"],
        env=["A=1"],
        working_dir="/bin",
        user="nobody",
    )
    defaults = read_image_defaults(sidecar_path(image))
    assert defaults == ImageDefaults(
        entrypoint=("/bin/app",),
        cmd=("--serve",),
        env=("A=1",),
        working_dir="/bin",
        user="nobody",
        source=str(root),
    )
    assert defaults.agent is None and defaults.init is None
    assert not (root / ".firec").exists()  # the source directory is not touched
    assert json.loads(image_file(image, "/.firec/image.json", tmp_path))["agent"] is None


def test_options_replace_what_the_image_says(tmp_path: Path) -> None:
    source = oci_archive(tmp_path / "image.tar", [BASE])
    image = build_rootfs(source, tmp_path / "rootfs.ext4", cmd=["ls"], user="0")
    defaults = read_image_defaults(image)
    assert defaults.argv() == ["/bin/sh", "-c", "ls"] and defaults.user == "0"
    assert defaults.working_dir == "/srv"  # kept


def test_an_image_that_has_firecs_files_already_gets_new_ones(tmp_path: Path, agent: Path) -> None:
    root = tmp_path / "root"
    (root / ".firec").mkdir(parents=True)
    (root / ".firec" / "firec-agent").write_bytes(b"old agent")
    (root / ".firec" / "image.json").write_text("{}")
    image = build_rootfs(root, tmp_path / "rootfs.ext4", agent=agent)
    fsck(image)
    assert image_file(image, "/.firec/firec-agent", tmp_path) == agent.read_bytes()
    assert read_image_defaults(image).agent_mode == "init"


def test_a_bad_agent_is_refused_before_anything(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "script").write_text("#!/bin/sh\n")
    for bad, reason in ((tmp_path / "nope", "no such file"), (tmp_path / "script", "not an ELF")):
        with pytest.raises(ValidationError) as info:
            build_rootfs(tmp_path / "root", tmp_path / "rootfs.ext4", agent=bad)
        assert info.value.field == "agent" and reason in info.value.reason
    assert sorted(os.listdir(tmp_path)) == ["root", "script"]


def test_a_record_firec_cannot_read(tmp_path: Path) -> None:
    (tmp_path / "image.ext4").write_bytes(b"")
    sidecar_path(tmp_path / "image.ext4").write_text('{"schema": 99}')
    with pytest.raises(ValidationError, match="version 99 is newer than this firec reads"):
        read_image_defaults(tmp_path / "image.ext4")
    sidecar_path(tmp_path / "image.ext4").write_text('{"schema": 1, "cmd": "ls"}')
    with pytest.raises(ValidationError) as info:
        read_image_defaults(tmp_path / "image.ext4")
    assert info.value.field.endswith("image.ext4.json: cmd")
    with pytest.raises(FirecError, match="no such image"):
        read_image_defaults(tmp_path / "nothing.ext4")


def test_an_image_without_a_record(tmp_path: Path) -> None:
    image = tmp_path / "plain.ext4"
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image), "8M"], check=True)
    with pytest.raises(
        FirecError, match=r"no plain\.ext4\.json beside it and no /\.firec/image\.json"
    ):
        read_image_defaults(image)


# -- the command --------------------------------------------------------------------------------


def test_the_command_installs_the_agent_given(tmp_path: Path, agent: Path) -> None:
    source = docker_save(tmp_path / "image.tar", [BASE])
    image = tmp_path / "rootfs.ext4"
    args = ["image", "build", str(source), str(image), "--agent", str(agent)]
    result = CliRunner().invoke(app, [*args, "--env", "X=1", "--cmd", '["ls", "-l"]'])
    assert result.exit_code == 0, result.stderr
    assert "agent as init" in result.stdout and str(sidecar_path(image)) in result.stdout
    defaults = read_image_defaults(image)
    assert defaults.env == ("X=1",) and defaults.cmd == ("ls", "-l") and defaults.init


def test_without_an_agent_the_command_says_how_to_give_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "firec.agent", None)  # as if firec had no agent module
    (tmp_path / "root").mkdir()
    result = CliRunner().invoke(
        app, ["image", "build", str(tmp_path / "root"), str(tmp_path / "i")]
    )
    assert result.exit_code == 1
    assert "--agent PATH" in result.stderr and "--no-agent" in result.stderr
    assert sorted(os.listdir(tmp_path)) == ["root"]


def test_the_command_uses_firecs_own_agent(
    tmp_path: Path, agent: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = types.ModuleType("firec.agent")
    module.agent_binary = lambda: agent  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "firec.agent", module)
    (tmp_path / "root").mkdir()
    image = tmp_path / "rootfs.ext4"
    result = CliRunner().invoke(app, ["image", "build", str(tmp_path / "root"), str(image)])
    assert result.exit_code == 0, result.stderr
    assert image_file(image, "/.firec/firec-agent", tmp_path) == agent.read_bytes()


def test_the_command_refuses_contradicting_options(tmp_path: Path, agent: Path) -> None:
    (tmp_path / "root").mkdir()
    base = ["image", "build", str(tmp_path / "root"), str(tmp_path / "i")]
    for extra, word in (
        (["--no-agent", "--agent", str(agent)], "not both"),
        (["--no-agent", "--agent-as-service"], "no agent"),
        (["--no-agent", "--env", "NOEQUALS"], "KEY=VALUE"),
        (["--no-agent", "--cmd", "[1, 2]"], "JSON array of strings"),
    ):
        result = CliRunner().invoke(app, [*base, *extra])
        assert result.exit_code == 2, (extra, result.stderr)
        assert word in result.stderr
    assert sorted(os.listdir(tmp_path)) == ["firec-agent", "root"]


@pytest.mark.needs_tool("cc")
@pytest.mark.parametrize("backend", ["emulator"], indirect=True)
def test_firec_run_boots_the_agent_as_init(
    vmm_binary: Path, short_tmp: Path, tmp_path: Path, agent: Path
) -> None:
    from tests.test_cli_lifecycle import Cli

    image = build_rootfs(
        docker_save(tmp_path / "image.tar", [BASE]), tmp_path / "r.ext4", agent=agent
    )
    cli = Cli(
        {**os.environ, "FIREC_STATE_DIR": str(short_tmp / "state")}, short_tmp / "vms", vmm_binary
    )
    try:
        cli.run_detached("vm1", "--rootfs", str(image), "--boot-args", "console=ttyS0")
        boot_args = json.loads(cli("inspect", "vm1"))["vm_config"]["boot-source"]["boot_args"]
        assert boot_args.split()[:2] == ["console=ttyS0", "init=/.firec/firec-agent"]
    finally:
        cli("rm", "-f", "vm1")
