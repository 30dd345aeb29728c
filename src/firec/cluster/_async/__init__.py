"""The asyncio source of the cluster's driver side (``scripts/unasync.py`` writes ``../_sync``)."""
