"""Test helpers for firec: a tiny guest kernel and a Firecracker emulator."""
