"""``python -m firec.testing.jailer``: run the jailer emulator."""

from firec.testing.jailer._main import main

main()
