"""The blocking twins of ``../_async``: ``cluster.py``, ``remote.py`` are generated (unasync.py)."""
