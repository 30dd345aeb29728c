"""The examples in the images modules' docstrings run."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "firec.images",
    "firec.images.e2fs",
    "firec.images.kernel",
    "firec.images.layers",
    "firec.images.oci",
    "firec.images.rootfs",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
