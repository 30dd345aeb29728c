"""``firec run``: from command-line options to a running, recorded microVM.

The command itself: its options, and the order of things. The options
become a config in :mod:`~firec.cli.runconfig`; a host that cannot run
the VM is explained by :mod:`~firec.cli.readiness`; the VM is started, and
attended in the foreground, by :mod:`~firec.cli.start`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from firec.cli import runcmd
from firec.cli.output import ExitCode, fail
from firec.cli.readiness import binary_or_doctor, check_jailer_privileges, explain_host

# NetworkOptions, network_interfaces, StartedVm and start_vm lived here: importable from here too.
from firec.cli.runconfig import (
    JailerOptions,
    NetworkOptions,
    as_option_error,
    network_interfaces,
    run_config,
)
from firec.cli.start import StartedVm, detach_or_run_foreground, new_vm_id, start_vm
from firec.errors import APIError, ConfigError, MachineError, ValidationError
from firec.host.registry import Registry
from firec.vm.config import BootMethod

__all__ = [
    "NetworkOptions",
    "StartedVm",
    "network_interfaces",
    "run",
    "start_vm",
]

TEST_GUEST_ECHO = "hello-from-firec"


def run(
    ctx: typer.Context,
    kernel: Annotated[
        Path | None,
        typer.Argument(
            metavar="KERNEL|IMAGE",
            help="The guest kernel (on x86-64 an uncompressed ELF vmlinux), or an image "
            "(a root filesystem, e.g. from firec image build) to boot with --kernel and run "
            "a command in.",
        ),
    ] = None,
    command: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[-- CMD ARGS]",
            help="With an IMAGE: the command to run through the guest agent (default: the "
            "image's); its output is streamed, firec exits with its status and removes the VM.",
        ),
    ] = None,
    kernel_path: Annotated[
        Path | None,
        typer.Option(
            "--kernel", help="With an IMAGE: the kernel (default: the one firec kernel fetch got)."
        ),
    ] = None,
    interactive: Annotated[
        bool, typer.Option("--interactive", "-i", help="With a command: pass stdin on.")
    ] = False,
    terminal: Annotated[
        bool,
        typer.Option("--tty", "-t", help="With a command: a PTY (when stdin is a terminal)."),
    ] = False,
    test_guest: Annotated[
        bool,
        typer.Option(
            "--test-guest",
            help="Boot firec's tiny test guest (built with cc) instead of KERNEL: a smoke "
            "test. In the foreground it prints and powers off; detached it keeps running.",
        ),
    ] = False,
    boot_args: Annotated[
        str | None, typer.Option("--boot-args", help="The kernel command line.")
    ] = None,
    initrd: Annotated[Path | None, typer.Option(help="An initrd.")] = None,
    rootfs: Annotated[
        Path | None, typer.Option(help="The root filesystem image (drive 'rootfs').")
    ] = None,
    rootfs_ro: Annotated[bool, typer.Option("--rootfs-ro", help="Attach it read-only.")] = False,
    drive: Annotated[
        list[str] | None,
        typer.Option(
            metavar="SPEC", help="Another drive: PATH, or path=PATH[,id=ID][,ro]. Repeatable."
        ),
    ] = None,
    cpus: Annotated[int, typer.Option(help="vCPUs.", min=1, max=32)] = 1,
    memory: Annotated[str, typer.Option(help="Guest memory: MiB, or a size like 1G.")] = "128",
    net: Annotated[
        list[str] | None,
        typer.Option(
            metavar="SPEC",
            help="A network interface: none, tap:NAME (an existing tap), routed[:SUBNET] (NAT) "
            "or cni:CONFLIST. Repeatable (eth0, eth1...). Needs root.",
        ),
    ] = None,
    publish: Annotated[
        list[str] | None,
        typer.Option(
            "--publish",
            "-p",
            metavar="PORTS",
            help="Forward a host port: HOST[:GUEST][/udp] (routed eth0).",
        ),
    ] = None,
    dns: Annotated[
        list[str] | None, typer.Option(metavar="ADDR", help="A nameserver for the guest (routed).")
    ] = None,
    vsock: Annotated[
        str | None,
        typer.Option(help="A vsock device: CID, or CID:PATH for its host socket."),
    ] = None,
    vm_id: Annotated[
        str | None, typer.Option("--id", help="The microVM id (default: random).")
    ] = None,
    detach: Annotated[
        bool,
        typer.Option(
            "--detach", "-d", help="Start it and return; it runs on (see firec ls/stop/rm)."
        ),
    ] = False,
    firecracker_bin: Annotated[
        Path | None,
        typer.Option(help="The Firecracker binary (default: $FIRECRACKER_BIN, PATH, installed)."),
    ] = None,
    jailer: Annotated[bool, typer.Option("--jailer", help="Run under the jailer.")] = False,
    jailer_bin: Annotated[
        Path | None, typer.Option(help="The jailer binary (default: $JAILER_BIN, PATH...).")
    ] = None,
    uid: Annotated[
        int | None,
        typer.Option(help="Jailed (required): the unprivileged uid Firecracker runs as."),
    ] = None,
    gid: Annotated[
        int | None,
        typer.Option(help="Jailed (required): the unprivileged gid Firecracker runs as."),
    ] = None,
    allow_root: Annotated[
        bool,
        typer.Option(
            "--allow-root", help="Jailed: accept --uid 0 / --gid 0 (Firecracker as root)."
        ),
    ] = False,
    chroot_base: Annotated[
        Path | None, typer.Option(help="Jailed: --chroot-base-dir (default /srv/jailer).")
    ] = None,
    cgroup: Annotated[
        list[str] | None,
        typer.Option(metavar="FILE=VALUE", help="Jailed: --cgroup FILE=VALUE. Repeatable."),
    ] = None,
    cgroup_version: Annotated[
        int | None, typer.Option(help="Jailed: --cgroup-version (1 or 2).", min=1, max=2)
    ] = None,
    new_pid_ns: Annotated[
        bool, typer.Option("--new-pid-ns", help="Jailed: a new PID namespace.")
    ] = False,
    boot_method: Annotated[
        BootMethod, typer.Option(help="Configure over the API, or with one --config-file.")
    ] = BootMethod.API,
    log_level: Annotated[
        str | None, typer.Option(help="Firecracker's log level (Error, Warning, Info, Debug).")
    ] = None,
    workdir: Annotated[
        Path | None,
        typer.Option(help="Where firec keeps the VM's files (default: /run/firec, per user)."),
    ] = None,
    stop_timeout: Annotated[
        float,
        typer.Option(help="On Ctrl-C: seconds for the guest after Ctrl+Alt+Del, then SIGTERM."),
    ] = 3.0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Detached: print the VM as JSON.")
    ] = False,
) -> None:
    """Boot a microVM: in the foreground with its console here, or detached with -d.

    In the foreground, Ctrl-C stops the VM and removes everything it had. The
    exit status is 0 when Firecracker exited cleanly (the guest powered off).
    `firec run IMAGE [--kernel K] -- CMD ARGS` boots an image with firec's
    agent, runs CMD in it with its output here, exits with its status and
    removes the VM (-d: the VM runs on).
    """
    registry: Registry = ctx.obj
    image = None
    if kernel is not None and runcmd.is_image(kernel, command=bool(command), kernel=kernel_path):
        if rootfs is not None:
            fail(ExitCode.USAGE, f"{kernel} is an image: --rootfs is one too; give one")
        image, rootfs, kernel = kernel, kernel, runcmd.default_kernel(kernel_path, kernel)
    elif kernel_path is not None or command:
        fail(ExitCode.USAGE, "--kernel and a command go with an IMAGE", "firec run --help")
    if test_guest == (kernel is not None):
        fail(ExitCode.USAGE, "give either a KERNEL or --test-guest", "firec run --help")
    if not math.isfinite(stop_timeout) or stop_timeout < 0:
        raise ConfigError("--stop-timeout", f"{stop_timeout}: give seconds, 0 or more")
    if jailer and (uid is None or gid is None):
        raise ConfigError(
            "--uid" if uid is None else "--gid",
            "--jailer needs --uid and --gid: the unprivileged user and group Firecracker "
            "runs as in the jail (e.g. --uid 1234 --gid 1234)",
        )
    for option, value in (("--uid", uid), ("--gid", gid)):
        if jailer and value == 0 and not allow_root:
            raise ConfigError(
                option,
                "0 is root: Firecracker would run as root inside the jail, which defeats the "
                "jailer; give an unprivileged --uid and --gid (e.g. --uid 1234 --gid 1234), or "
                "add --allow-root to run it as root all the same",
            )
    firecracker = binary_or_doctor(firecracker_bin, "firecracker")
    if test_guest:
        from firec.testing.guest import build_test_guest, guest_args

        kernel = build_test_guest()
        if boot_args is None:
            boot_args = "console=ttyS0 " + guest_args(echo=[TEST_GUEST_ECHO], exit=not detach)
    assert kernel is not None
    vm_id = vm_id if vm_id is not None else new_vm_id()
    try:
        config = run_config(
            ctx,
            vm_id=vm_id,
            kernel=kernel,
            boot_args=boot_args,
            workdir=workdir,
            boot_method=boot_method,
            cpus=cpus,
            memory=memory,
            initrd=initrd,
            rootfs=rootfs,
            rootfs_ro=rootfs_ro,
            drives=drive or [],
            vsock=vsock if vsock is not None or image is None else "3",
            log_level=log_level,
            firecracker=firecracker,
            jailer=JailerOptions(
                jailer_bin,
                uid or 0,
                gid or 0,
                allow_root,
                chroot_base,
                cgroup or [],
                cgroup_version,
                new_pid_ns,
            )
            if jailer
            else None,
            console=not detach and image is None,
            network=NetworkOptions(tuple(net or ()), tuple(publish or ()), tuple(dns or ())),
        )
    except ValidationError as exc:
        raise as_option_error(exc) from None
    if image is not None:
        config = runcmd.with_agent(config)
    if jailer:
        check_jailer_privileges()
    try:
        started = start_vm(registry, config, detached=detach)
    except MachineError as exc:
        explain_host(exc)
        raise
    except APIError as exc:
        explain_host(exc)
        fail(ExitCode.VM_FAILED, f"microVM {vm_id} did not boot: {exc}")
    if image is not None and (command or not detach):
        runcmd.run_in_vm(
            registry,
            started,
            command or [],
            detach=detach,
            interactive=interactive,
            terminal=terminal,
        )
    detach_or_run_foreground(
        registry, started, detach=detach, as_json=as_json, stop_timeout=stop_timeout
    )
