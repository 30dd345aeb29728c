"""firec's JSON records (firec._jsonfile), where they live (firec._statedirs), the config codec."""

from __future__ import annotations

import doctest
import importlib
import json
import os
import subprocess
import sys
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

import firec
import firec.host.registry
import firec.network as fn
import firec.vm.config
from firec import _jsonfile, _statedirs
from firec.errors import StateError
from firec.network.leases import LeaseStore
from firec.vm import _codec

THING = _jsonfile.Format("firec-thing", 2)


@pytest.mark.parametrize(
    "name",
    [
        "firec._jsonfile",
        "firec._statedirs",
        "firec._proc",
        "firec.vm._codec",
        "firec.vm.config",
        "firec.vm._registry.records",
        "firec.vm._registry.claim",
        "firec.vm._registry.unrecorded",
    ],
)
def test_docstring_examples_hold(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# -- formats -----------------------------------------------------------------------------------


def test_every_write_stamps_the_format(tmp_path: Path) -> None:
    path = tmp_path / "a" / "thing.json"
    _jsonfile.create(path, {"x": 1}, THING)
    assert json.loads(path.read_text()) == {"format": "firec-thing/2", "x": 1}
    _jsonfile.write(path, {"x": 2, "format": "wrong"}, THING, fsync=True)
    assert _jsonfile.read(path, THING) == {"format": "firec-thing/2", "x": 2}
    assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["thing.json"]  # no temporary left


def test_a_manifest_style_format_is_a_bare_number(tmp_path: Path) -> None:
    manifest = _jsonfile.Format("firec snapshot manifest", 1, key="manifest_version")
    path = tmp_path / "m.json"
    _jsonfile.write(path, {"a": 1}, manifest, mode=0o644)
    assert json.loads(path.read_text()) == {"a": 1, "manifest_version": 1}
    assert path.stat().st_mode & 0o777 == 0o644
    path.write_text(json.dumps({"manifest_version": True}))
    with pytest.raises(_jsonfile.FormatError, match="not a firec snapshot manifest"):
        _jsonfile.read(path, manifest)


def test_a_newer_format_is_refused_naming_the_file_and_both_formats(tmp_path: Path) -> None:
    path = tmp_path / "thing.json"
    path.write_text(json.dumps({"format": "firec-thing/3", "x": 1}))
    with pytest.raises(StateError) as raised:
        _jsonfile.read(path, THING)
    error = raised.value
    assert isinstance(error, _jsonfile.NewerFormatError)
    assert error.path == str(path) and str(path) in str(error)
    assert (error.found, error.supported) == ("firec-thing/3", "firec-thing/2")
    assert "firec-thing/3" in str(error) and "firec-thing/2" in str(error)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{half", "not JSON"),
        ("[1]", "not a firec-thing/2 record"),
        ('{"format": "firec-other/2"}', "not a firec-thing/2 record"),
        ('{"format": "firec-thing/x"}', "not a firec-thing/2 record"),
        ('{"format": "firec-thing/1"}', "firec-thing/1 record, which this firec does not read"),
    ],
)
def test_what_is_not_a_record_of_the_format_is_refused(
    tmp_path: Path, content: str, reason: str
) -> None:
    path = tmp_path / "thing.json"
    path.write_text(content)
    with pytest.raises(_jsonfile.FormatError, match=reason) as raised:
        _jsonfile.read(path, THING)
    assert not isinstance(raised.value, _jsonfile.NewerFormatError)
    assert path.read_text() == content  # never overwritten


def test_create_refuses_an_existing_file_and_leaves_it(tmp_path: Path) -> None:
    path = tmp_path / "thing.json"
    _jsonfile.create(path, {"x": 1}, THING)
    with pytest.raises(FileExistsError):
        _jsonfile.create(path, {"x": 2}, THING)
    assert _jsonfile.read(path, THING) == {"format": "firec-thing/2", "x": 1}
    assert _jsonfile.read(tmp_path / "none.json", THING) is None


def test_a_write_that_fails_names_the_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StateError, match=r"file/thing\.json"):
        _jsonfile.write(blocker / "thing.json", {}, THING)


# -- read-modify-write under the lock ----------------------------------------------------------


def test_update_writes_what_the_block_changed_and_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "thing.json"
    with _jsonfile.update(path, THING, new=lambda: {"n": 0}) as data:
        data["n"] += 1
    assert _jsonfile.read(path, THING) == {"format": "firec-thing/2", "n": 1}
    inode = path.stat().st_ino
    with _jsonfile.update(path, THING, new=dict) as data:
        assert data["n"] == 1  # unchanged: not written again
    assert path.stat().st_ino == inode
    with pytest.raises(RuntimeError), _jsonfile.update(path, THING, new=dict) as data:
        data["n"] = 99
        raise RuntimeError("changed my mind")
    assert _jsonfile.read(path, THING) == {"format": "firec-thing/2", "n": 1}
    assert (tmp_path / "thing.lock").exists()


def test_update_waits_for_another_process_and_then_gives_up(tmp_path: Path) -> None:
    path = tmp_path / "thing.json"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import filelock, time\n"
            f"with filelock.FileLock({str(tmp_path / 'thing.lock')!r}):\n"
            "    print('held', flush=True); time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        with (
            pytest.raises(_jsonfile.LockTimeout, match=r"thing\.lock.*more than 0\.2s"),
            _jsonfile.update(path, THING, new=dict, timeout=0.2),
        ):
            pass
    finally:
        holder.kill()
        holder.wait()
    with _jsonfile.update(path, THING, new=dict, timeout=5) as data:
        data["free"] = True
    assert _jsonfile.read(path, THING) == {"format": "firec-thing/2", "free": True}


def test_one_lock_object_can_be_taken_again_by_its_holder(tmp_path: Path) -> None:
    lock = _jsonfile.Lock(tmp_path / "thing.json")
    with lock.held(), lock.held(timeout=0):
        pass


# -- leases and network records ---------------------------------------------------------------


# A lease file as the previous firec wrote it (the same format, firec-leases/1).
PREVIOUS_LEASES = {
    "format": "firec-leases/1",
    "gateway": "10.9.0.1",
    "leases": {"old-1/eth0": {"address": "10.9.0.2", "created": 1796322646.743775}},
    "next": "10.9.0.2",
    "subnet": "10.9.0.0/24",
}


def test_a_lease_file_of_the_previous_firec_is_read(tmp_path: Path) -> None:
    (tmp_path / "leases").mkdir()
    path = tmp_path / "leases" / "10.9.0.0_24.json"
    path.write_text(json.dumps(PREVIOUS_LEASES, indent=2))
    store = LeaseStore.from_file(path)
    assert store.subnet == IPv4Network("10.9.0.0/24")
    assert [(lease.owner, str(lease.address)) for lease in store.leases()] == [
        ("old-1/eth0", "10.9.0.2")
    ]
    assert store.allocate("new-1/eth0").address == IPv4Address("10.9.0.3")
    assert (
        json.loads(path.read_text())["leases"]["old-1/eth0"]
        == PREVIOUS_LEASES["leases"]["old-1/eth0"]
    )


def test_a_lease_file_of_a_newer_firec_is_refused_naming_both_formats(tmp_path: Path) -> None:
    store = LeaseStore(tmp_path, "10.5.0.0/24")
    store.allocate("vm1/eth0")
    newer = {**json.loads(store.path.read_text()), "format": "firec-leases/2"}
    store.path.write_text(json.dumps(newer))
    for attempt in (
        lambda: store.allocate("vm2/eth0"),
        lambda: LeaseStore.from_file(store.path),
        lambda: fn.reclaim_leases(tmp_path),
    ):
        with pytest.raises(
            StateError, match=r"10\.5\.0\.0_24\.json.*firec-leases/2.*firec-leases/1"
        ):
            attempt()
    assert json.loads(store.path.read_text()) == newer


def test_a_network_record_of_a_newer_firec_is_refused(tmp_path: Path) -> None:
    (tmp_path / "networks").mkdir()
    record = tmp_path / "networks" / "vm-1.json"
    record.write_text(json.dumps({"format": "firec-network/2", "vm_id": "vm-1", "steps": []}))
    with pytest.raises(StateError, match=r"vm-1\.json.*firec-network/2.*firec-network/1"):
        fn.teardown_network("vm-1", state_dir=tmp_path)
    assert record.exists()


# -- where records live ------------------------------------------------------------------------


def test_the_two_state_directories(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("FIREC_STATE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert _statedirs.registry_dir() == tmp_path / "explicit"
    assert _statedirs.network_dir() == Path("/var/lib/firec")  # not moved by $FIREC_STATE_DIR
    monkeypatch.delenv("FIREC_STATE_DIR")
    assert _statedirs.registry_dir() == Path("/run/firec/state")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert _statedirs.registry_dir() == _statedirs.network_dir() == tmp_path / "xdg" / "firec"


def test_the_former_names_are_the_same_functions() -> None:
    assert firec.host.registry.state_dir is _statedirs.registry_dir
    assert firec.vm.config.state_dir is _statedirs.network_dir


def test_a_vm_without_a_state_dir_keeps_its_network_in_the_network_directory(
    tmp_path: Path,
) -> None:
    config = firec.Config(vm_id="vm-1", kernel_image=tmp_path)
    assert firec.host.registry.network_state_dir(config) == _statedirs.network_dir()
    mine = config.replace(state_dir=tmp_path)
    assert firec.host.registry.network_state_dir(mine) == tmp_path


# -- the codec ---------------------------------------------------------------------------------


def test_type_hints_are_worked_out_once_per_class(tmp_path: Path) -> None:
    config = firec.Config(vm_id="vm-1", kernel_image=tmp_path, kernel_args="x")
    firec.Config.from_dict(config.to_dict())
    hints = _codec._hints(firec.Config)
    firec.Config.from_dict(config.to_dict())
    assert _codec._hints(firec.Config) is hints


def test_a_value_the_codec_cannot_write_is_named() -> None:
    with pytest.raises(TypeError, match="cannot write a set as JSON"):
        _codec.encode({"a": {1}})
