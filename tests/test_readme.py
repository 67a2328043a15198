"""The README's commands and code are the ones that work."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_python_example_runs(monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(ROOT)
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "(998, 20, 4) (998,)" in out


def test_make_targets_named_in_readme_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in re.findall(r"^make (\w+)", README, flags=re.M):
        assert re.search(rf"^{target}:", makefile, flags=re.M), target
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_examples_named_in_readme_exist() -> None:
    for name in set(re.findall(r"`(\w+\.toml)`", README)):
        assert (ROOT / "examples" / name).exists(), name


def test_config_reference_covers_every_key() -> None:
    import dataclasses

    from netrace.config import (
        SPACE_KEYS,
        DataConfig,
        EvaluateConfig,
        RaceConfig,
        SearchConfig,
        SplitConfig,
        TaskConfig,
    )

    for section, cls in [("data", DataConfig), ("task", TaskConfig), ("split", SplitConfig),
                         ("race", RaceConfig), ("search", SearchConfig),
                         ("evaluate", EvaluateConfig)]:
        part = README.split(f"### `[{section}]`")[1].split("###")[0]
        for f in dataclasses.fields(cls):
            assert f"| `{f.name}` |" in part, (section, f.name)
    from netrace.curves import RULES

    race = README.split("### `[race]`")[1].split("###")[0]
    for name, rule in RULES.items():
        for option in rule.options:
            assert f"`{option}`" in race, (name, option)
    space = README.split("### `[search.space]`")[1].split("###")[0]
    for key in SPACE_KEYS:
        assert f"`{key}`" in space, key
