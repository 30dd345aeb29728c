"""Boot a microVM and print what its guest says.

Builds firec's tiny test guest with the machine's C compiler, then boots it on
the Firecracker named by FIRECRACKER_BIN (and under the jailer named by
JAILER_BIN, if set), or on firec's emulator when no Firecracker is named.

    python examples/quickstart.py
"""

from __future__ import annotations

import os
import sys

import firec
from firec.testing import emulator_binary
from firec.testing.guest import BOOT_LINE, build_test_guest, guest_args


def main() -> int:
    binary = os.environ.get("FIRECRACKER_BIN") or emulator_binary()
    print(f"firec {firec.__version__}: booting the test guest on {binary}")
    config = (
        firec.Config.builder(None, build_test_guest())
        .kernel_args(f"console=ttyS0 {guest_args(echo=['hello-from-firec'], exit=True)}")
        .firecracker_binary(binary)
        .machine_cfg()
        .vcpu_count(1)
        .mem_size_mib(64)
        .build()
        .build()
    )
    with firec.Machine.create(config) as machine:
        version = machine.client.firecracker_version()
        machine.start()
        status = machine.wait(timeout=30)
        console = machine.console_path.read_text() if machine.console_path else ""
    print(f"Firecracker {version}, microVM {config.vm_id}")
    print("console:")
    for line in console.splitlines():
        print(f"  {line}")
    print(f"exit: {status}")
    return 0 if status.ok and BOOT_LINE in console else 1


if __name__ == "__main__":
    sys.exit(main())
