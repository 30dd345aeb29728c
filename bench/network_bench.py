"""Set-up and teardown time of VM networks, for many VMs (default 100).

Run as root: ``python bench/network_bench.py [--count 100] [--mode routed|host|tap|cni]``.

Everything happens inside two namespaces the benchmark creates and removes:
one plays the host (with an uplink, forwarding on), one the outside. The real
host's links, namespaces and nft tables are not touched. All VMs are set up
one after the other (they stay up, so the nft table and lease file grow as
they would on a busy host), then torn down one after the other.

Modes:
  routed  netns per VM + veth + tap + lease + nft (masquerade, a port forward)
  host    tap on the host + lease + nft (no namespace)
  tap     netns per VM + a bare tap
  cni     netns per VM + CNI bridge/host-local + tap coupled by tc redirect
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

import firec.network as fn
from firec.network._netlink import netlink
from firec.network._sysctl import write_sysctl
from firec.network.netns import create_netns, delete_netns, netns_exists, run_in_netns
from firec.network.setup import netns_name


def _world(host: str, outside: str) -> None:
    create_netns(host)
    create_netns(outside)

    def host_side() -> None:
        with netlink() as nl:
            nl.add_veth("up0", "eth0", peer_netns=outside)
            nl.add_address("up0", IPv4Interface("172.31.9.1/24"))
            nl.set_up("up0")
            nl.add_route(IPv4Network("0.0.0.0/0"), "up0", via=IPv4Address("172.31.9.2"))
        write_sysctl("net/ipv4/conf/up0/forwarding", "1")

    def outside_side() -> None:
        with netlink() as nl:
            nl.add_address("eth0", IPv4Interface("172.31.9.2/24"))
            nl.set_up("eth0")

    run_in_netns(host, host_side)
    run_in_netns(outside, outside_side)


def _interface(mode: str, index: int, tmp: Path, tag: str) -> tuple[fn.Interface, bool]:
    if mode == "routed":
        plan = fn.RoutedNetwork(
            subnet="10.200.0.0/16", port_forwards=(fn.PortForward(20000 + index, 22),)
        )
        return fn.Interface("eth0", "tap0", network=plan), True
    if mode == "host":
        plan = fn.RoutedNetwork(subnet="10.200.0.0/16")
        return fn.Interface("eth0", f"fcb{tag}{index}", network=plan), False
    if mode == "tap":
        return fn.Interface("eth0", "tap0"), True
    conf = {
        "cniVersion": "1.0.0",
        "name": f"fcbench{tag}",
        "plugins": [
            {
                "type": "bridge",
                "bridge": f"fcbbr{tag}",
                "isGateway": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": "10.201.0.0/16"}]],
                    "dataDir": str(tmp / "ipam"),
                },
            }
        ],
    }
    return fn.Interface("eth0", "tap0", network=fn.CNINetwork(conf)), True


def _stats(label: str, values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return (
        f"{label:<9} n={len(ms):<4} mean {statistics.mean(ms):7.2f} ms   "
        f"median {statistics.median(ms):7.2f} ms   p95 {p95:7.2f} ms   "
        f"min {ms[0]:7.2f} ms   max {ms[-1]:7.2f} ms   total {sum(ms) / 1000:6.2f} s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100, help="VM networks (default 100)")
    parser.add_argument("--mode", choices=("routed", "host", "tap", "cni"), default="routed")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (CAP_NET_ADMIN)", file=sys.stderr)
        return 2

    tag = secrets.token_hex(3)
    host, outside = f"fcbh{tag}", f"fcbo{tag}"
    vm_ids = [f"fcb-{tag}-{i}" for i in range(args.count)]
    setups: list[float] = []
    teardowns: list[float] = []
    with tempfile.TemporaryDirectory(prefix="firec-netbench-") as tmp_name:
        tmp = Path(tmp_name)
        state = tmp / "state"
        _world(host, outside)
        try:
            for i, vm in enumerate(vm_ids):
                nic, in_netns = _interface(args.mode, i, tmp, tag)
                start = time.perf_counter()
                fn.setup_network(vm, [nic], state_dir=state, netns=in_netns, host_netns=host)
                setups.append(time.perf_counter() - start)
            for vm in vm_ids:
                start = time.perf_counter()
                fn.teardown_network(vm, state_dir=state)
                teardowns.append(time.perf_counter() - start)
        finally:
            for vm in vm_ids:  # after an error: remove what is left
                try:
                    fn.teardown_network(vm, state_dir=state)
                except Exception as exc:  # keep cleaning
                    print(f"cleanup: {exc}", file=sys.stderr)
            for vm in vm_ids:
                if netns_exists(netns_name(vm)):
                    delete_netns(netns_name(vm))
            delete_netns(host)
            delete_netns(outside)

    print(f"firec.network: {args.count} VM networks, mode {args.mode}, {os.cpu_count()} CPUs")
    print(_stats("set-up", setups))
    print(_stats("teardown", teardowns))
    both = [a + b for a, b in zip(setups, teardowns, strict=True)]
    print(_stats("both", both))
    return 0


if __name__ == "__main__":
    sys.exit(main())
