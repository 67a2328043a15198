"""One vocabulary: the rules' options, the metrics and the default budget are defined once, in
:mod:`netrace.vocabulary`, and the packages keep their import boundaries."""

from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from netrace import vocabulary as vocab
from netrace.config import config_from_dict
from netrace.curves import RULES, make_rule
from netrace.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
BASE = {"data": {"source": "sp500"}, "task": {"target": "vol_next"}}
#: per rule, one value of each option that its check refuses (of the option's type)
OUT_OF_RANGE = {
    ("lc", "epsilon"): 2.0, ("lc", "min_observed"): 0, ("lc", "growth"): 1.0,
    ("lc", "prior_weight"): 0.0, ("lc", "method"): "mcmc", ("lc", "criterion"): "gain",
    ("lc", "delta"): 0.0, ("median", "percentile"): 120.0, ("median", "min_observed"): 0,
    ("median", "min_curves"): 0, ("hyperband", "rungs"): (9, 3), ("hyperband", "keep"): 0.0,
    ("topk", "keep"): 1.5, ("topk", "at"): 0.0, ("topk", "min_observed"): 0,
}


def test_the_rules_are_the_vocabularys() -> None:
    assert tuple(RULES) == vocab.RULES
    for name, cls in RULES.items():
        specs = vocab.RULE_OPTIONS[name]
        assert cls.options == tuple(specs)
        assert cls.applies == {k: s.applies for k, s in specs.items() if s.applies}
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        for option, spec in specs.items():
            assert defaults[option] == spec.default
            vocab.check_option(name, option, defaults[option])  # every default is allowed


def test_every_option_that_can_be_out_of_range_is_tested() -> None:
    checked = {(r, o) for r, specs in vocab.RULE_OPTIONS.items() for o in specs
               if o != "finished_only"}  # a bool: any bool is allowed
    assert checked == set(OUT_OF_RANGE)


def _toml(value):  # what TOML would give for the value
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("rule, option", sorted(OUT_OF_RANGE))
def test_an_out_of_range_value_fails_alike_in_config_and_rule(rule: str, option: str) -> None:
    value = OUT_OF_RANGE[(rule, option)]
    with pytest.raises(UserError) as direct:
        make_rule(rule, **{option: value})
    with pytest.raises(UserError) as checked:
        vocab.check_option(rule, option, value)
    needs = {"epsilon": "probability", "delta": "improvement"}
    given = {option: _toml(value)}
    if rule == "lc" and option in needs:
        given["criterion"] = needs[option]
    with pytest.raises(UserError) as configured:
        config_from_dict({**BASE, "race": {"rule": rule, rule: given}}, origin="c.toml")
    assert str(direct.value) == str(checked.value)
    assert str(configured.value) == f"c.toml: [race.{rule}] {direct.value}"


def test_metrics_and_budget() -> None:
    for task in vocab.TASKS:
        assert set(vocab.RACE_METRICS[task]) <= set(vocab.MEASURED_METRICS[task])
        assert vocab.DEFAULT_METRIC[task] == vocab.RACE_METRICS[task][0]
    assert [vocab.direction(m) for m in ("r2", "auc", "accuracy", "loss", "qlike")] == \
        ["maximize"] * 3 + ["minimize"] * 2
    cfg = config_from_dict({**BASE, "race": {"population": 8, "max_epochs": 5}})
    from netrace.race._worker import budget_of

    assert budget_of(cfg) == vocab.default_budget(8, 5) == vocab.DEFAULT_BUDGET_FACTOR * 40


def _imported(code: str) -> set[str]:
    """The netrace modules a fresh interpreter has imported after ``code``."""
    script = (code + "\nimport sys, json\n"
              "print(json.dumps(sorted(m for m in sys.modules if m.startswith('netrace'))))")
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                         text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
                                                   "PATH": "/usr/bin:/bin"})
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _packages(modules: set[str]) -> set[str]:
    return {".".join(m.split(".")[:2]) for m in modules}


def test_config_validates_rule_options_without_importing_curves(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text('[data]\nsource = "sp500"\n[task]\ntarget = "vol_next"\n'
                 '[race]\nrule = "lc"\n[race.lc]\nepsilon = 0.2\nmethod = "sampler"\n')
    code = (f"import netrace.config, sys\n"
            f"c = netrace.config.load_config({str(p)!r})\n"
            f"assert c.race.lc == {{'epsilon': 0.2, 'method': 'sampler'}}\n"
            f"assert 'netrace.curves' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT,
                   env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


#: package imported alone -> the netrace packages it must not import
BOUNDARIES = {
    "netrace.vocabulary": {"netrace.config", "netrace.curves", "netrace.data", "netrace.race",
                           "netrace.train", "netrace.backends", "netrace.storage"},
    "netrace.config": {"netrace.curves", "netrace.data", "netrace.race", "netrace.train"},
    "netrace.data": {"netrace.config", "netrace.race", "netrace.train", "netrace.curves"},
    "netrace.curves": {"netrace.config", "netrace.data", "netrace.race", "netrace.train"},
    "netrace.train": {"netrace.backends", "netrace.config", "netrace.data", "netrace.race"},
    "netrace.backends": {"netrace.train", "netrace.race", "netrace.config"},
}


@pytest.mark.parametrize("package", sorted(BOUNDARIES))
def test_import_boundaries(package: str) -> None:
    imported = _packages(_imported(f"import {package}"))
    assert package in imported
    assert not imported & BOUNDARIES[package], f"{package} imports {imported & BOUNDARIES[package]}"


def test_process_setup_imports_neither_torch_nor_ray_nor_train() -> None:
    mods = _imported("from netrace.backends import set_worker_threads")
    assert "netrace.train" not in _packages(mods)
    script = ("from netrace.backends import set_worker_threads\nimport sys\n"
              "assert 'torch' not in sys.modules and 'ray' not in sys.modules\n"
              "set_worker_threads(1)\nimport torch\nassert torch.get_num_threads() == 1\n"
              "assert 'netrace.train' not in sys.modules")
    subprocess.run([sys.executable, "-c", script], check=True, cwd=ROOT,
                   env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def _netrace_imports(path: Path) -> set[str]:
    """Every netrace module a source file imports, at its top or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("netrace"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("netrace"))
    return out


def _within(imports: set[str], packages: set[str]) -> set[str]:
    return {m for m in imports for p in packages if m == p or m.startswith(p + ".")}


@pytest.mark.parametrize("source, forbidden", [
    # the vocabulary is the bottom: netrace's errors and nothing else
    ("netrace/vocabulary.py", {"netrace." + p for p in (
        "backends", "config", "curves", "data", "evaluate", "models", "race", "replay",
        "report", "storage", "train")}),
    ("netrace/config", {"netrace.curves", "netrace.data", "netrace.race", "netrace.train"}),
    ("netrace/data", {"netrace.config", "netrace.race", "netrace.train"}),
    ("netrace/backends/_process.py", {"netrace.train", "netrace.race"}),
    ("netrace/backends/_base.py", {"netrace.train", "netrace.race"}),
    ("netrace/train", {"netrace.backends", "netrace.race"}),
    ("netrace/race/_progress.py", {"netrace.race._worker"}),
])
def test_no_import_crosses_a_boundary_even_inside_a_function(source: str,
                                                             forbidden: set[str]) -> None:
    path = ROOT / source
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
    for f in files:
        crossing = _within(_netrace_imports(f), forbidden)
        assert not crossing, f"{f.relative_to(ROOT)} imports {sorted(crossing)}"
