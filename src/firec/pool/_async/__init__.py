"""The asyncio source of the pool and its waits (``scripts/unasync.py`` writes ``../_sync``)."""
