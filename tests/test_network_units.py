"""firec.network values and files: MACs, interfaces, plans, guest ip=/MMDS, leases, CNI results.

Nothing here touches links, namespaces or nft (see test_network_host.py and
test_network_cni.py for those).
"""

from __future__ import annotations

import dataclasses
import doctest
import importlib
import json
import multiprocessing
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from pathlib import Path
from typing import Any

import pytest

import firec.network as fn
from firec.api.models import RateLimiter, TokenBucket
from firec.errors import ConfigError, FirecError, NetworkError, ValidationError
from firec.network.cni import CNIConfList, CNIResult
from firec.network.guest_ip import GuestIPConfig
from firec.network.leases import LeaseStore, parse_subnet
from firec.network.mac import derive_mac, validate_mac
from firec.network.nat import GuestRule, PortForward, VMRules
from firec.network.setup import host_link_name, netns_name, validate_vm_id
from firec.network.tap import validate_ifname

MODULES = [
    "firec.network",
    "firec.network.cni",
    "firec.network.guest_ip",
    "firec.network.interface",
    "firec.network.leases",
    "firec.network.mac",
    "firec.network.names",
    "firec.network.nat",
    "firec.network.netns",
    "firec.network.record",
    "firec.network.setup",
    "firec.network.tap",
    "firec.network.teardown",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_hold(name: str) -> None:
    module = importlib.import_module(name)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(module, optionflags=flags, raise_on_error=False)
    assert result.failed == 0


def test_network_error_is_a_firec_error() -> None:
    assert issubclass(NetworkError, FirecError)
    assert issubclass(ConfigError, ValidationError)


# -- MACs ---------------------------------------------------------------------------------------


def test_derived_mac_is_stable_locally_administered_unicast_and_distinct() -> None:
    macs = {derive_mac(f"vm{i}", iface) for i in range(200) for iface in ("eth0", "eth1")}
    assert len(macs) == 400
    for mac in macs:
        first = int(mac[:2], 16)
        assert first & 0x02, mac  # locally administered
        assert not first & 0x01, mac  # unicast
        assert validate_mac(mac) == mac
    assert derive_mac("vm1", "eth0") == derive_mac("vm1", "eth0")
    assert derive_mac("vm1", "eth0") == "06:" + derive_mac("vm1", "eth0")[3:]


@pytest.mark.parametrize(
    "bad", ["06:00:00:00:00", "06-00-00-00-00-01", "zz:00:00:00:00:01", "", "01:00:5e:00:00:01"]
)
def test_bad_macs_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_mac(bad)
    assert info.value.field == "guest_mac"


# -- names --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tap0", "a" * 15, "fc_1.2-x"])
def test_valid_interface_names(name: str) -> None:
    assert validate_ifname(name) == name


@pytest.mark.parametrize("name", ["a" * 16, "", "tap 0", "tap/0", "tap:0", "-tap", ".", "ta\u00e9"])
def test_invalid_interface_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_ifname(name)
    assert info.value.field == "host_dev_name"


def test_vm_names_fit_linux_limits() -> None:
    vm_id = "a" * 64
    assert validate_vm_id(vm_id) == vm_id
    assert len(host_link_name(vm_id)) <= 15
    assert netns_name("vm1") == "fc-vm1"
    for bad in ("", "a" * 65, "vm_1", "../x", "-vm"):
        with pytest.raises(ConfigError):
            validate_vm_id(bad)


# -- Interface ----------------------------------------------------------------------------------


def test_interface_to_model_carries_every_field() -> None:
    limiter = RateLimiter(bandwidth=TokenBucket(size=1 << 20, refill_time=100))
    nic = fn.Interface(
        "eth0",
        "tap0",
        guest_mac="06:AA:bb:cc:dd:ee",
        rx_rate_limiter=limiter,
        tx_rate_limiter=limiter,
    )
    assert nic.guest_mac == "06:aa:bb:cc:dd:ee"
    assert nic.to_model().to_api() == {
        "iface_id": "eth0",
        "host_dev_name": "tap0",
        "guest_mac": "06:aa:bb:cc:dd:ee",
        "rx_rate_limiter": {"bandwidth": {"size": 1048576, "refill_time": 100}},
        "tx_rate_limiter": {"bandwidth": {"size": 1048576, "refill_time": 100}},
    }


def test_interface_is_immutable() -> None:
    nic = fn.Interface("eth0", "tap0")
    with pytest.raises(dataclasses.FrozenInstanceError):
        nic.host_dev_name = "tap1"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"iface_id": "eth0", "host_dev_name": "tap-name-too-long"}, "host_dev_name"),
        ({"iface_id": "eth 0", "host_dev_name": "tap0"}, "iface_id"),
        ({"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "nope"}, "guest_mac"),
        (
            {"iface_id": "eth0", "host_dev_name": "tap0", "rx_rate_limiter": {"x": 1}},
            "rx_rate_limiter",
        ),
        ({"iface_id": "eth0", "host_dev_name": "tap0", "network": "routed"}, "network"),
    ],
)
def test_interface_refuses_bad_values(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        fn.Interface(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


# -- plans --------------------------------------------------------------------------------------


def test_routed_network_normalises_its_values() -> None:
    plan = fn.RoutedNetwork(
        subnet="10.9.0.0/24",
        address="10.9.0.7",
        nameservers=("1.1.1.1", "2606:4700::1111"),
        egress_allow=("10.0.0.0/8", "192.0.2.1"),
    )
    assert str(plan.network) == "10.9.0.0/24"
    assert plan.wanted_address == IPv4Address("10.9.0.7")
    assert plan.dns == (IPv4Address("1.1.1.1"), IPv6Address("2606:4700::1111"))
    assert [str(n) for n in plan.allow or ()] == ["10.0.0.0/8", "192.0.2.1/32"]


@pytest.mark.parametrize(
    ("kwargs", "field", "words"),
    [
        ({"subnet": "10.9.0.0"}, "subnet", "CIDR"),
        ({"subnet": "10.9.0.1/24"}, "subnet", "did you mean 10.9.0.0/24"),
        ({"subnet": "10.9.0.0/33"}, "subnet", "CIDR"),
        ({"subnet": "10.9.0.0/31"}, "subnet", "too small"),
        ({"subnet": "fd00::/64"}, "subnet", "CIDR"),
        ({"subnet": "banana/8"}, "subnet", "CIDR"),
        ({"subnet": "10.9.0.0/24", "address": "10.9.0.300"}, "address", "IPv4"),
        ({"subnet": "10.9.0.0/24", "address": "10.8.0.3"}, "address", "not in subnet"),
        ({"subnet": "10.9.0.0/24", "guest_address": "10.9.0.1"}, "guest_address", "gateway"),
        ({"subnet": "10.9.0.0/24", "guest_address": "10.9.0.255"}, "guest_address", "broadcast"),
        ({"subnet": "10.9.0.0/24", "gateway": "10.9.1.1"}, "gateway", "not a host address"),
        ({"subnet": "10.9.0.0/24", "nameservers": ("dns",)}, "nameservers[0]", "IP address"),
        ({"subnet": "10.9.0.0/24", "egress_allow": ("10.0.0.1/8",)}, "egress_allow[0]", "CIDR"),
        ({"subnet": "10.9.0.0/24", "mtu": 20}, "mtu", "MTU"),
        ({"subnet": "10.9.0.0/24", "port_forwards": (8080,)}, "port_forwards[0]", "PortForward"),
    ],
)
def test_routed_network_refuses_bad_values(
    kwargs: dict[str, object], field: str, words: str
) -> None:
    with pytest.raises(ConfigError) as info:
        fn.RoutedNetwork(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
    assert words in str(info.value)


def test_port_forward_defaults_and_refusals() -> None:
    assert PortForward(2222).target_port == 2222
    assert PortForward(8080, 80, "udp").target_port == 80
    bad_values: list[dict[str, Any]] = [
        {"host_port": 0},
        {"host_port": 70000},
        {"host_port": 80, "protocol": "sctp"},
    ]
    for bad in bad_values:
        with pytest.raises(ConfigError):
            PortForward(**bad)
    with pytest.raises(ConfigError, match="forwarded twice"):
        VMRules(
            key="abc",
            links=("fcabc",),
            guests=(GuestRule(IPv4Address("10.0.0.2")),),
            port_forwards=(
                (PortForward(80), IPv4Address("10.0.0.2")),
                (PortForward(80, 81), IPv4Address("10.0.0.2")),
            ),
        )


def test_cni_network_reads_its_conflist(tmp_path: Path) -> None:
    conf = {"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "bridge"}]}
    path = tmp_path / "n.conflist"
    path.write_text(json.dumps(conf))
    assert fn.CNINetwork(path).conf.name == "n"
    assert fn.CNINetwork(conf).conf.plugins[0]["type"] == "bridge"
    path.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        fn.CNINetwork(path)
    with pytest.raises(ConfigError, match="plugins"):
        fn.CNINetwork({"cniVersion": "1.0.0", "name": "n", "plugins": []})
    with pytest.raises(ConfigError, match="type"):
        fn.CNINetwork({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "../x"}]})


def test_missing_cni_plugin_is_named(tmp_path: Path) -> None:
    conf = CNIConfList.from_dict(
        {"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "no-such-plugin"}]}
    )
    with pytest.raises(NetworkError, match=r"'no-such-plugin'.*not found"):
        conf.find_plugins([tmp_path])


# -- guest IP configuration ---------------------------------------------------------------------


def test_kernel_ip_arg_fields() -> None:
    cfg = GuestIPConfig(
        address=IPv4Interface("10.1.2.3/20"),
        gateway=IPv4Address("10.1.0.1"),
        nameservers=(
            IPv6Address("2001:db8::53"),
            IPv4Address("10.1.0.53"),
            IPv4Address("10.1.0.54"),
            IPv4Address("10.1.0.55"),
        ),
        hostname="vm-1",
        device="eth1",
        ipv6_address=IPv6Interface("fd00::3/64"),
        mtu=1400,
    )
    arg = cfg.kernel_ip_arg()
    assert arg == "ip=10.1.2.3::10.1.0.1:255.255.240.0:vm-1:eth1:off:10.1.0.53:10.1.0.54"
    # the kernel's field order: client:server:gw:netmask:hostname:device:autoconf:dns0:dns1
    fields = arg[3:].split(":")
    assert fields[1] == "" and fields[6] == "off"
    assert len(fields) == 9


def test_kernel_ip_arg_without_gateway_or_dns_ends_at_autoconf() -> None:
    cfg = GuestIPConfig(address=IPv4Interface("192.168.7.2/24"))
    assert cfg.kernel_ip_arg() == "ip=192.168.7.2:::255.255.255.0::eth0:off"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"gateway": IPv4Address("10.2.0.1")}, "gateway"),
        ({"gateway": IPv4Address("10.1.0.2")}, "gateway"),
        ({"hostname": "bad:name"}, "hostname"),
        ({"hostname": "a" * 65}, "hostname"),
        ({"device": "e" * 16}, "device"),
        ({"mac": "01:00:00:00:00:00"}, "mac"),
        ({"mtu": 10}, "mtu"),
    ],
)
def test_guest_config_refuses_what_the_kernel_would_not_take(
    kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(ConfigError) as info:
        GuestIPConfig(address=IPv4Interface("10.1.0.2/24"), **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def _leaves(doc: object) -> list[object]:
    if isinstance(doc, dict):
        return [leaf for value in doc.values() for leaf in _leaves(value)]
    return [doc]


def test_mmds_document_has_only_strings_and_objects() -> None:
    cfg = GuestIPConfig(
        address=IPv4Interface("10.1.2.3/24"),
        gateway=IPv4Address("10.1.2.1"),
        nameservers=(IPv4Address("10.1.2.53"), IPv6Address("fd00::53")),
        hostname="vm1",
        mac="06:00:00:00:00:01",
        mtu=1500,
        ipv6_address=IPv6Interface("fd00::3/64"),
        ipv6_gateway=IPv6Address("fd00::1"),
        search_domains=("example.com",),
    )
    doc = cfg.mmds()
    assert all(isinstance(leaf, str) for leaf in _leaves(doc))
    assert doc["ipv4"] == {
        "address": "10.1.2.3",
        "prefix-length": "24",
        "netmask": "255.255.255.0",
        "cidr": "10.1.2.3/24",
        "gateway": "10.1.2.1",
    }
    assert doc["ipv6"] == {
        "address": "fd00::3",
        "prefix-length": "64",
        "cidr": "fd00::3/64",
        "gateway": "fd00::1",
    }
    assert doc["nameservers"] == "10.1.2.53 fd00::53"
    assert doc["search"] == "example.com"
    assert json.loads(json.dumps(doc)) == doc


# -- leases -------------------------------------------------------------------------------------


def test_leases_are_handed_out_in_order_skipping_the_gateway(tmp_path: Path) -> None:
    store = LeaseStore(tmp_path, "10.5.0.0/29")
    got = [store.allocate(f"vm{i}/eth0").address for i in range(5)]
    assert [str(a) for a in got] == ["10.5.0.2", "10.5.0.3", "10.5.0.4", "10.5.0.5", "10.5.0.6"]
    lease = store.get("vm0/eth0")
    assert lease is not None
    assert lease.gateway == IPv4Address("10.5.0.1")
    assert str(lease.interface) == "10.5.0.2/29"


def test_allocate_is_idempotent_per_owner(tmp_path: Path) -> None:
    store = LeaseStore(tmp_path, "10.5.0.0/24")
    first = store.allocate("vm1/eth0")
    assert store.allocate("vm1/eth0") == first
    assert store.allocate("vm1/eth0", address=first.address) == first
    with pytest.raises(NetworkError, match="already holds"):
        store.allocate("vm1/eth0", address="10.5.0.99")


def test_exhausted_subnet_is_refused_clearly(tmp_path: Path) -> None:
    store = LeaseStore(tmp_path, "10.5.0.0/30")
    assert store.free() == 1
    store.allocate("vm1/eth0")
    with pytest.raises(NetworkError, match=r"10\.5\.0\.0/30 is exhausted"):
        store.allocate("vm2/eth0")
    with pytest.raises(NetworkError, match="exhausted"):
        store.check("vm2/eth0")


def test_address_conflicts_are_refused(tmp_path: Path) -> None:
    store = LeaseStore(tmp_path, "10.5.0.0/24")
    store.allocate("vm1/eth0", address="10.5.0.50")
    with pytest.raises(NetworkError, match="already leased to 'vm1/eth0'"):
        store.allocate("vm2/eth0", address="10.5.0.50")
    for bad, words in (
        ("10.6.0.5", "not in subnet"),
        ("10.5.0.0", "network or broadcast"),
        ("10.5.0.255", "network or broadcast"),
        ("10.5.0.1", "gateway"),
        ("nope", "not an IPv4 address"),
    ):
        with pytest.raises(ConfigError, match=words):
            store.allocate("vm3/eth0", address=bad)
    assert [lease.owner for lease in store.leases()] == ["vm1/eth0"]


def test_leases_survive_a_restart_and_are_reused_round_robin(tmp_path: Path) -> None:
    LeaseStore(tmp_path, "10.5.0.0/29").allocate("vm1/eth0")
    again = LeaseStore(tmp_path, "10.5.0.0/29")
    assert again.get("vm1/eth0") is not None
    assert again.allocate("vm2/eth0").address == IPv4Address("10.5.0.3")
    released = again.release("vm1/eth0")
    assert released is not None and released.address == IPv4Address("10.5.0.2")
    assert again.release("vm1/eth0") is None
    # the freed address is not the next one handed out
    assert again.allocate("vm3/eth0").address == IPv4Address("10.5.0.4")
    data = json.loads(again.path.read_text())
    assert data["format"] == "firec-leases/1"
    assert set(data["leases"]) == {"vm2/eth0", "vm3/eth0"}


def test_reclaim_frees_leases_whose_owner_is_gone(tmp_path: Path) -> None:
    store = LeaseStore(tmp_path, "10.5.0.0/24")
    for name in ("alive", "dead1", "dead2"):
        store.allocate(f"{name}/eth0")
    gone = store.reclaim(lambda lease: lease.owner.startswith("alive"))
    assert sorted(lease.owner for lease in gone) == ["dead1/eth0", "dead2/eth0"]
    assert [lease.owner for lease in LeaseStore(tmp_path, "10.5.0.0/24").leases()] == ["alive/eth0"]
    assert store.reclaim(lambda lease: True) == []


def test_gateway_is_fixed_by_the_lease_file(tmp_path: Path) -> None:
    LeaseStore(tmp_path, "10.5.0.0/24", gateway="10.5.0.254").allocate("vm1/eth0")
    assert LeaseStore(tmp_path, "10.5.0.0/24").gateway == IPv4Address("10.5.0.254")
    with pytest.raises(ConfigError, match=r"already uses gateway 10\.5\.0\.254"):
        LeaseStore(tmp_path, "10.5.0.0/24", gateway="10.5.0.1").allocate("vm2/eth0")
    with pytest.raises(ConfigError, match="not a host address"):
        LeaseStore(tmp_path, "10.5.0.0/24", gateway="10.6.0.1")


def test_corrupt_lease_file_is_reported_not_discarded(tmp_path: Path) -> None:
    store = LeaseStore(tmp_path, "10.5.0.0/24")
    store.allocate("vm1/eth0")
    store.path.write_text("{not json")
    with pytest.raises(NetworkError, match="corrupt"):
        store.allocate("vm2/eth0")
    assert store.path.read_text() == "{not json"


def _grab(args: tuple[str, int]) -> list[str]:
    state_dir, worker = args
    store = LeaseStore(state_dir, "10.5.0.0/24")
    return [str(store.allocate(f"w{worker}-{i}/eth0").address) for i in range(20)]


def test_concurrent_processes_never_share_an_address(tmp_path: Path) -> None:
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.map(_grab, [(str(tmp_path), w) for w in range(4)])
    addresses = [a for chunk in results for a in chunk]
    assert len(addresses) == 80
    assert len(set(addresses)) == 80
    assert len(LeaseStore(tmp_path, "10.5.0.0/24").leases()) == 80


def test_parse_subnet_accepts_networks() -> None:
    assert parse_subnet("192.168.0.0/16").num_addresses == 65536


# -- CNI results --------------------------------------------------------------------------------

RESULT = {
    "cniVersion": "1.0.0",
    "interfaces": [
        {"name": "cni0", "mac": "aa:aa:aa:aa:aa:aa"},
        {"name": "veth1", "mac": "bb:bb:bb:bb:bb:bb"},
        {"name": "eth0", "mac": "06:11:22:33:44:55", "sandbox": "/var/run/netns/fc-vm1"},
    ],
    "ips": [
        {"interface": 2, "address": "10.88.0.5/16", "gateway": "10.88.0.1"},
        {"interface": 2, "address": "fd88::5/64", "gateway": "fd88::1"},
    ],
    "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
    "dns": {"nameservers": ["10.88.0.1"], "search": ["cluster.local"]},
}


def test_cni_result_becomes_the_guest_configuration() -> None:
    result = CNIResult.parse(RESULT)
    cfg = result.guest_config("eth0", hostname="vm1", mac="06:11:22:33:44:55", mtu=1500)
    assert cfg.kernel_ip_arg() == "ip=10.88.0.5::10.88.0.1:255.255.0.0:vm1:eth0:off:10.88.0.1"
    doc = cfg.mmds()
    assert doc["ipv6"] == {
        "address": "fd88::5",
        "prefix-length": "64",
        "cidr": "fd88::5/64",
        "gateway": "fd88::1",
    }
    assert doc["search"] == "cluster.local"


def test_cni_result_gateway_from_the_default_route() -> None:
    raw = {
        "cniVersion": "0.4.0",
        "ips": [{"version": "4", "address": "10.1.0.9/24"}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.254"}],
    }
    cfg = CNIResult.parse(raw).guest_config("eth0")
    assert cfg.gateway == IPv4Address("10.1.0.254")


def test_cni_result_without_ipv4_is_an_error() -> None:
    with pytest.raises(NetworkError, match="no IPv4 address"):
        CNIResult.parse({"cniVersion": "1.0.0", "ips": []}).guest_config("eth0")
    with pytest.raises(NetworkError, match="could not read the CNI result"):
        CNIResult.parse({"ips": [{"address": "not-an-ip"}]})
