"""The runnable examples in the public docstrings are true."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "netrace.errors",
    "netrace.config._schema",
    "netrace.data._sources",
    "netrace.data._splits",
    "netrace.data._dataset",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
