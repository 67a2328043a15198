"""The runnable examples in the docstrings of netrace.models and netrace.train are true."""

from __future__ import annotations

import doctest
import importlib

import pytest
import torch

torch.set_num_threads(1)

MODULES = [
    "netrace.models",
    "netrace.models._specs",
    "netrace.models._population_model",
    "netrace.train",
    "netrace.train._member",
    "netrace.train._optim",
    "netrace.train._device",
    "netrace.train._population",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS,
                             extraglobs={"torch": torch})
    assert result.attempted > 0
    assert result.failed == 0
