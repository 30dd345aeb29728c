"""The asyncio source of the API client (``scripts/unasync.py`` writes ``../_sync``)."""
