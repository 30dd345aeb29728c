"""``python -m firec.testing.emulator``: run the Firecracker emulator."""

from firec.testing.emulator._cli import main

main()
