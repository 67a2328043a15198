"""The runnable examples in the docstrings are true: every module of the package, found by
walking it (a new module's examples run without being listed anywhere)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest
import torch

import netrace

torch.set_num_threads(1)


def _modules() -> list[str]:
    found = pkgutil.walk_packages(netrace.__path__, prefix="netrace.")
    return sorted(["netrace", *(m.name for m in found)])


MODULES = _modules()


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS,
                             extraglobs={"torch": torch})
    assert result.failed == 0


def test_every_module_is_walked() -> None:
    """Each Python file under netrace/ is one of the modules above."""
    root = Path(netrace.__file__).parent
    files = {".".join(("netrace", *p.relative_to(root).with_suffix("").parts))
             .removesuffix(".__init__") for p in root.rglob("*.py")}
    assert files == set(MODULES)
