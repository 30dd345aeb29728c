"""A real Firecracker on a tap set up by firec.network, inside the VM's namespace.

Needs ``FIRECRACKER_BIN`` (skips with the reason otherwise), root and
``/dev/kvm``. The namespace that plays the host is the test's own (see
network_support.py). Firecracker is started inside the VM's namespace
with :meth:`firec.network.VMNetwork.preexec_fn`, opens the tap there by name,
boots the tiny test guest with firec's ``ip=`` argument and takes firec's
MMDS document; ``GET /vm/config`` shows the interface.
"""

from __future__ import annotations

import os
import select
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import firec.network as fn
from firec.api import models
from firec.api._sync.client import Client
from firec.network.netns import netns_exists, run_in_netns
from firec.network.setup import netns_name
from firec.testing.guest import BOOT_LINE, build_test_guest
from tests.network_support import links_in, namespaces, unique

FIRECRACKER = os.environ.get("FIRECRACKER_BIN")

pytestmark = [
    pytest.mark.skipif(
        not FIRECRACKER, reason="FIRECRACKER_BIN is not set: no real Firecracker to run"
    ),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CAP_NET_ADMIN) for links and netns"),
    pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK), reason="needs /dev/kvm"),
]


@pytest.fixture
def host_ns() -> Iterator[str]:
    name = unique("fcth")
    with namespaces(name):
        yield name


def _operstate(tap: str) -> Any:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        return ipr.link("get", index=ipr.link_lookup(ifname=tap)[0])[0].get("IFLA_OPERSTATE")


def _wait_for_line(proc: subprocess.Popen[bytes], wanted: str, timeout: float) -> list[str]:
    """Firecracker's output lines (its log and the serial console) up to ``wanted``."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    data = b""
    while time.monotonic() < deadline:
        lines = data.decode(errors="replace").splitlines()
        if wanted in (line.strip() for line in lines):
            return lines
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            data += chunk
    raise AssertionError(
        f"no {wanted!r} from Firecracker; it wrote: {data.decode(errors='replace')}"
    )


@pytest.mark.needs_tool("nft")
def test_firecracker_boots_with_a_tap_in_the_vm_namespace(host_ns: str, tmp_path: Path) -> None:
    assert FIRECRACKER is not None
    kernel = build_test_guest(tmp_path / "guest")
    vm = unique("fct-")
    state = tmp_path / "state"
    nic = fn.Interface(
        "net0",
        "tap0",
        network=fn.RoutedNetwork(
            subnet="10.99.0.0/24", nameservers=("10.99.0.1",), masquerade=False
        ),
    )
    net = fn.setup_network(vm, [nic], state_dir=state, host_netns=host_ns, hostname="fcguest")
    sock = tmp_path / "fc.sock"
    proc = subprocess.Popen(
        [FIRECRACKER, "--api-sock", str(sock)],
        preexec_fn=net.preexec_fn(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert sock.exists(), "Firecracker did not create its API socket"
        attached = net.interfaces[0]
        ip_arg = net.kernel_ip_arg()
        assert ip_arg == "ip=10.99.0.2::10.99.0.1:255.255.255.0:fcguest:eth0:off:10.99.0.1"
        with Client(sock) as client:
            client.put_machine_config(models.MachineConfiguration(vcpu_count=1, mem_size_mib=64))
            client.put_boot_source(
                models.BootSource(
                    kernel_image_path=str(kernel), boot_args=f"console=ttyS0 {ip_arg}"
                )
            )
            client.put_network_interface(attached.interface.to_model())
            client.put_mmds_config(models.MmdsConfig(network_interfaces=["net0"]))
            client.put_mmds(net.mmds())
            client.create_action("InstanceStart")
            _wait_for_line(proc, BOOT_LINE, 10)
            config = client.get_vm_config().to_api()
            assert client.get_mmds() == net.mmds()
        ifaces = config["network-interfaces"]
        assert [(i["iface_id"], i["host_dev_name"], i["guest_mac"]) for i in ifaces] == [
            ("net0", "tap0", attached.interface.guest_mac)
        ]
        assert ip_arg in config["boot-source"]["boot_args"]
        # Firecracker holds the tap open inside the VM's namespace: its carrier is up
        assert net.netns is not None
        assert run_in_netns(net.netns, _operstate, "tap0") == "UP"
        assert "tap0" not in links_in(host_ns)
    finally:
        proc.kill()
        proc.wait(timeout=10)
        net.teardown()
    assert not netns_exists(netns_name(vm))
    assert links_in(host_ns) == {"lo"}
