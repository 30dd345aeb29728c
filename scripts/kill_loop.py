"""Kill a controller at a random point of a microVM's start, run ``firec gc``, take a census.

Outside CI (it takes minutes): each round starts one VM through
``tests/fault_child.py`` (plain, jailed or routed, in turn), SIGKILLs that
controller after a random delay (anywhere from before its id is claimed to
after the VM runs), runs ``firec gc`` as its own process, and takes the
census of ``tests/census.py``. Example::

    FIRECRACKER_BIN=/opt/fc/firecracker-v1.14.2 JAILER_BIN=/opt/fc/jailer-v1.0.0 \\
        python scripts/kill_loop.py --rounds 200

Without ``FIRECRACKER_BIN`` it runs on firec's emulator (and its emulated jailer).
Prints, per mode, how many rounds there were, how many controllers died before
their VM ran, how many gc runs failed and how many rounds left something.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from firec.testing.guest import build_test_guest  # noqa: E402
from tests import census  # noqa: E402
from tests.support import emulator_wrapper, jailer_wrapper  # noqa: E402

MODES = ("plain", "jailed", "routed")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--seed", type=int, default=None)
    options = parser.parse_args()
    rng = random.Random(options.seed)
    root = Path(tempfile.mkdtemp(prefix="kl-", dir="/tmp"))
    binary = os.environ.get("FIRECRACKER_BIN") or str(emulator_wrapper(root))
    jailer = os.environ.get("JAILER_BIN") or str(jailer_wrapper(root))
    kernel = build_test_guest(root)
    state = root / "state"
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "FIREC_STATE_DIR": str(state), "PYTHONPATH": path}
    figures: dict[str, collections.Counter[str]] = {m: collections.Counter() for m in MODES}
    dirty: list[str] = []
    to_ready: dict[str, float] = {}
    started = time.monotonic()
    for index in range(options.rounds):
        mode = MODES[index % len(MODES)]
        vm_id = f"kl-{index}"
        spec: dict[str, object] = {
            "vm_id": vm_id,
            "kernel": str(kernel),
            "binary": binary,
            "workdir": str(root / "run"),
            "state_dir": str(state),
        }
        if mode == "jailed":
            spec["jailer"] = {"binary": jailer, "chroot_base": str(root / "jail")}
        if mode == "routed":
            spec["routed"] = "172.31.243.0/24"
        controller = subprocess.Popen(
            [sys.executable, "-m", "tests.fault_child", json.dumps(spec)],
            env=env,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        ran = False
        if mode not in to_ready:  # calibrate: how long from exec to a running VM here
            t0 = time.monotonic()
            assert controller.stdout is not None
            ran = controller.stdout.readline().startswith(b"ready")
            to_ready[mode] = time.monotonic() - t0
        else:  # anywhere from python's start-up to a little after the VM runs
            time.sleep(rng.uniform(0.2, 1.3) * to_ready[mode])
        controller.send_signal(signal.SIGKILL)
        out, err = controller.communicate(timeout=60)
        figures[mode]["rounds"] += 1
        if controller.returncode != -signal.SIGKILL:  # it ended by itself: an error
            figures[mode]["controller failed"] += 1
            dirty.append(f"{vm_id} ({mode}): the controller failed: {err.decode()[-2000:]}")
        if not ran and b"ready" not in out:
            figures[mode]["killed before the VM ran"] += 1
        gc = subprocess.run(
            [sys.executable, "-m", "firec.cli", "gc"], env=env, capture_output=True, text=True
        )
        if gc.returncode != 0:
            figures[mode]["gc failed"] += 1
            dirty.append(f"{vm_id} ({mode}): gc exited {gc.returncode}: {gc.stdout}{gc.stderr}")
        left = census.leftovers(
            [vm_id], state_dir=state, workdir=root / "run", chroot_base=root / "jail"
        )
        if left:
            figures[mode]["left something"] += 1
            dirty.append(f"{vm_id} ({mode}): " + "; ".join(left))
    took = time.monotonic() - started
    print(f"{options.rounds} rounds in {took:.0f} s on {binary}")
    times = ", ".join(f"{m} {t:.2f} s" for m, t in to_ready.items())
    print(f"  from exec to a running VM: {times}")
    for mode, counts in figures.items():
        print(
            f"  {mode:7} rounds {counts['rounds']:4}  killed before the VM ran "
            f"{counts['killed before the VM ran']:4}  controller failed "
            f"{counts['controller failed']:3}  gc failed {counts['gc failed']:3}  "
            f"left something {counts['left something']:3}"
        )
    for line in dirty:
        print("  " + line)
    shutil.rmtree(root, ignore_errors=True)
    return 1 if dirty else 0


if __name__ == "__main__":
    sys.exit(main())
