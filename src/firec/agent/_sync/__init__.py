"""The synchronous agent client, generated from ``../_async`` (its ``io.py`` is written by hand)."""
