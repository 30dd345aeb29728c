"""The asyncio sources of the machine and its waits (``scripts/unasync.py`` writes ``../_sync``)."""
