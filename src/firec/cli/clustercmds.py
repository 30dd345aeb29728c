"""microVMs on a Ray cluster: ``firec cluster hosts|ls|run|rm|gc``.

Each command joins the cluster at ``--address`` (default: ``$RAY_ADDRESS``,
else the cluster ``ray start`` began on this machine, else a new local one)
through :func:`firec.cluster.connect`, and prints a table (``--json`` for
scripts).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from firec.cli.output import EPILOG, ExitCode, fail, out, print_json, table
from firec.cli.runconfig import parse_memory
from firec.errors import ConfigError

if TYPE_CHECKING:
    from firec.cluster import Cluster

__all__ = ["cluster_app"]

cluster_app = typer.Typer(
    help="microVMs on the KVM hosts of a Ray cluster (pip install 'firec[ray]').",
    no_args_is_help=True,
)

AddressOption = Annotated[
    str | None,
    typer.Option(
        "--address",
        envvar="RAY_ADDRESS",
        help="The Ray cluster (host:port, or ray://host:port); default: RAY_ADDRESS, else the "
        "cluster ray start began on this machine, else a new local one.",
    ),
]
NamespaceOption = Annotated[str, typer.Option(help="The Ray namespace of firec's actors.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON, for scripts.")]


@contextmanager
def _cluster(address: str | None, namespace: str) -> Iterator[Cluster]:
    from firec import cluster

    try:
        connected = cluster.connect(address, namespace=namespace)
    except ImportError as exc:  # connect names the extra that brings Ray
        fail(ExitCode.HOST_NOT_READY, str(exc))
    with connected as c:
        yield c


@cluster_app.command("hosts", epilog=EPILOG)
def hosts(
    address: AddressOption = None,
    namespace: NamespaceOption = "firec",
    as_json: JsonOption = False,
) -> None:
    """The cluster's hosts: what each has free, its Firecracker and CPU; why one is unusable."""
    with _cluster(address, namespace) as c:
        found = c.hosts()
    if as_json:
        print_json([dataclasses.asdict(h) for h in found])
        return
    rows = [
        [
            h.name,
            "yes" if h.usable else f"no: {h.reason}",
            f"{h.vcpus_free}/{h.vcpus}",
            f"{h.memory_mib_free}/{h.memory_mib} MiB",
            f"{h.vms}" + (f"/{h.max_vms}" if h.max_vms is not None else ""),
            h.firecracker_version,
            h.cpu.vendor,
            ",".join(f"{k}={v}" for k, v in h.labels.items()),
        ]
        for h in found
    ]
    columns = ["HOST", "USABLE", "VCPUS FREE", "MEMORY FREE", "VMS", "FIRECRACKER", "CPU", "LABELS"]
    out.print(table(columns, rows))


@cluster_app.command("ls", epilog=EPILOG)
def ls(
    address: AddressOption = None,
    namespace: NamespaceOption = "firec",
    as_json: JsonOption = False,
) -> None:
    """Every microVM of the cluster and the host it runs on (Lost: its host died)."""
    with _cluster(address, namespace) as c:
        vms = c.ls()
    if as_json:
        print_json([dataclasses.asdict(v) for v in vms])
        return
    rows = [
        [
            v.vm_id,
            v.host,
            str(v.state),
            v.vcpus,
            f"{v.memory_mib} MiB",
            "detached" if v.detached else v.owner[:12],
        ]
        for v in vms
    ]
    out.print(table(["ID", "HOST", "STATE", "CPUS", "MEMORY", "OWNER"], rows))


@cluster_app.command("run", epilog=EPILOG)
def run(
    kernel: Annotated[Path, typer.Argument(help="The guest kernel, at this path on the hosts.")],
    name: Annotated[str | None, typer.Option(help="The VM's id (default: a new one).")] = None,
    boot_args: Annotated[
        str, typer.Option("--boot-args", help="The kernel command line.")
    ] = "console=ttyS0 reboot=k panic=1",
    rootfs: Annotated[
        Path | None, typer.Option(help="The root filesystem image, at this path on the hosts.")
    ] = None,
    cpus: Annotated[int, typer.Option(help="vCPUs.", min=1, max=32)] = 1,
    memory: Annotated[str, typer.Option(help="Guest memory: MiB, or a size like 1G.")] = "128",
    host: Annotated[str | None, typer.Option(help="Run on this host.")] = None,
    label: Annotated[
        list[str] | None,
        typer.Option(metavar="KEY=VALUE", help="Only on hosts with this label. Repeatable."),
    ] = None,
    address: AddressOption = None,
    namespace: NamespaceOption = "firec",
    as_json: JsonOption = False,
) -> None:
    """Boot a microVM on the host it fits best; print its id and host.

    The VM is detached: it runs on after this command, until `firec cluster rm`.
    The kernel and root filesystem must be at the given paths on the hosts.
    """
    import firec

    labels = {}
    for item in label or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError("--label", f"{item!r}: use KEY=VALUE")
        labels[key] = value
    builder = (
        firec.Config.builder(name, kernel.absolute())
        .kernel_args(boot_args)
        .machine_cfg()
        .vcpu_count(cpus)
        .mem_size_mib(parse_memory(memory))
        .build()
    )
    if rootfs is not None:
        builder = builder.add_drive("rootfs", rootfs.absolute()).is_root_device(True).build()
    config = builder.build(check_files=False)  # the files are on the hosts, which check them
    with _cluster(address, namespace) as c:
        vm = c.run(config, host=host, labels=labels, detached=True)
    if as_json:
        print_json({"id": vm.vm_id, "host": vm.host})
    else:
        out.print(f"{vm.vm_id}\t{vm.host}")


@cluster_app.command("rm", epilog=EPILOG)
def rm(
    vms: Annotated[list[str], typer.Argument(metavar="ID...", help="The microVMs to remove.")],
    host: Annotated[str | None, typer.Option(help="The host, when several have the id.")] = None,
    address: AddressOption = None,
    namespace: NamespaceOption = "firec",
) -> None:
    """Stop microVMs of the cluster and remove everything they had on their hosts."""
    with _cluster(address, namespace) as c:
        for vm_id in vms:
            c.get(vm_id, host).delete()
            out.print(vm_id)


@cluster_app.command("gc", epilog=EPILOG)
def gc(
    address: AddressOption = None,
    namespace: NamespaceOption = "firec",
    as_json: JsonOption = False,
) -> None:
    """Remove, now, the microVMs whose driver is gone (detached ones stay)."""
    with _cluster(address, namespace) as c:
        reaped = c.gc()
    if as_json:
        print_json([dataclasses.asdict(v) for v in reaped])
        return
    for v in reaped:
        out.print(f"{v.vm_id}\t{v.host}")
