"""The asyncio source of the agent client (``scripts/unasync.py`` writes ``../_sync``)."""
