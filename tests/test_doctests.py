"""The runnable examples in the public docstrings are true."""

from __future__ import annotations

import doctest
import importlib

import pytest
import torch

torch.set_num_threads(1)

MODULES = [
    "netrace.errors",
    "netrace.vocabulary",
    "netrace.config._schema",
    "netrace.config._space",
    "netrace.data._checks",
    "netrace.data._sources",
    "netrace.data._splits",
    "netrace.data._dataset",
    "netrace.storage._storage",
    "netrace.storage._records",
    "netrace.storage._reads",
    "netrace.storage._heartbeat",
    "netrace.race._build",
    "netrace.race._proposer",
    "netrace.race._resume",
    "netrace.models",
    "netrace.models._specs",
    "netrace.models._population_model",
    "netrace.models._dense",
    "netrace.models._recurrent",
    "netrace.train",
    "netrace.train._member",
    "netrace.train._optim",
    "netrace.train._device",
    "netrace.train._population",
    "netrace.evaluate._ensemble",
    "netrace.evaluate._stats",
    "netrace.evaluate._baselines",
    "netrace.evaluate._nested",
    "netrace.evaluate._model",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS,
                             extraglobs={"torch": torch})
    assert result.attempted > 0
    assert result.failed == 0
