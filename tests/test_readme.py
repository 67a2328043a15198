"""The README's and docs/'s commands, code, names and links are the ones that work."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
CONFIG_REFERENCE = (ROOT / "docs" / "config.md").read_text()
# The pages a reader follows from the README: the README itself, docs/, BENCHMARKS.md.
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "BENCHMARKS.md"]
PAGE_IDS = [str(p.relative_to(ROOT)) for p in PAGES]


def test_python_example_runs(monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(ROOT)
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "(998, 20, 4) (998,)" in out


def _code(text: str) -> str:
    """The code blocks and inline code of a page: where commands are."""
    blocks = re.findall(r"```.*?```", text, flags=re.S)
    spans = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    return "\n".join(blocks + spans)


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_make_targets_named_exist(page: Path) -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in re.findall(r"(?:^\s*|&&\s*|;\s*)make (\w+)", _code(page.read_text()), flags=re.M):
        assert re.search(rf"^{target}:", makefile, flags=re.M), (page.name, target)


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in README
    assert "make test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_examples_named_exist(page: Path) -> None:
    for name in set(re.findall(r"`(\w+\.toml)`", page.read_text())):
        assert (ROOT / "examples" / name).exists(), (page.name, name)


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_relative_links_point_at_files(page: Path) -> None:
    """Every relative link names a file that exists, without an anchor (anchors break silently
    when a heading is reworded; a link names the page, the text names the section)."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # code is not links
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        assert "#" not in target, (page.name, target)
        assert (page.parent / target).exists(), (page.name, target)


def test_readme_links_every_docs_page() -> None:
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"](docs/{page.name})" in README, page.name


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
        part = CONFIG_REFERENCE.split(f"### `[{section}]`")[1].split("###")[0]
        for f in dataclasses.fields(cls):
            assert f"| `{f.name}` |" in part, (section, f.name)
    from netrace.curves import RULES

    race = CONFIG_REFERENCE.split("### `[race]`")[1].split("###")[0]
    for name, rule in RULES.items():
        for option in rule.options:
            assert f"`{option}`" in race, (name, option)
    space = CONFIG_REFERENCE.split("### `[search.space]`")[1].split("###")[0]
    for key in SPACE_KEYS:
        assert f"`{key}`" in space, key
