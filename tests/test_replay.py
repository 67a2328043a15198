"""Tests of replay: the pure simulation (netrace.curves._replay) and netrace.replay's CLI logic."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from netrace.curves import HyperbandRule, MedianRule, NoRule, TopKRule
from netrace.curves._replay import simulate
from netrace.errors import UserError
from netrace.replay import load_curves, main

ROOT = Path(__file__).resolve().parents[1]


def _curves(n: int = 12, length: int = 30, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.arange(1.0, length + 1)
    out = [rng.uniform(0.3, 0.9) * (1 - x ** -rng.uniform(0.3, 1.0)) + rng.normal(0, 0.01, length)
           for _ in range(n)]
    out.append(np.full(length, 0.05))  # never learns
    return out


def _write_csv(path: Path, goal: str = "max", n: int = 12, extra: bool = True) -> Path:
    import pandas as pd

    rows = []
    for w, wl in enumerate(["alpha", "beta"]):
        for c, y in enumerate(_curves(n, 25 + 5 * w, seed=w)):
            vals = y if goal == "max" else 1.0 - y
            for step, v in enumerate(vals, start=1):
                rows.append({"curve_id": f"{wl}/{c}", "workload": wl, "goal": goal, "step": step * 10,
                             "value": v, **({"hparams": "{}"} if extra else {})})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_no_rule_trains_everything():
    ys = _curves()
    r = simulate(ys, NoRule(), workers=4, seed=0)
    assert r.cost == r.total == sum(len(y) for y in ys)
    assert r.regret == 0.0 and r.speedup == 1.0


def test_rules_save_steps_and_are_deterministic():
    ys = _curves(20)
    for rule in (MedianRule(), HyperbandRule(rungs=(3, 9, 27)), TopKRule()):
        a = simulate(ys, rule, workers=3, seed=1)
        assert a == simulate(ys, rule, workers=3, seed=1)
        assert a.cost < a.total
        assert 0.0 <= a.regret < 0.2


def test_one_worker_sees_every_finished_curve_before_the_next():
    # with one worker and a rule that never stops, cost is the sum of lengths whatever the order
    ys = [np.linspace(0, 1, 5), np.linspace(0, 0.5, 8)]
    for seed in range(3):
        assert simulate(ys, NoRule(), workers=1, seed=seed).cost == 13


def test_load_curves_normalizes_per_workload_and_orients_min(tmp_path):
    up = load_curves(_write_csv(tmp_path / "max.csv", "max"))
    down = load_curves(_write_csv(tmp_path / "min.csv.gz", "min"))
    assert sorted(up) == ["alpha", "beta"]
    for w in up:
        assert len(up[w]) == 13
        for a, b in zip(up[w], down[w]):
            np.testing.assert_allclose(a, b, atol=1e-9)  # goal min of 1 - y is the same score
    allv = np.concatenate(up["alpha"])
    assert -0.5 <= allv.min() and allv.max() <= 1.5 and np.percentile(allv, 99) == pytest.approx(1.0, abs=1e-9)


def test_main_prints_a_table_and_writes_json(tmp_path, capsys):
    csv = _write_csv(tmp_path / "c.csv")
    out = tmp_path / "r.json"
    assert main([str(csv), "--rule", "median", "--workers", "2", "--seed", "3", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| alpha | 13 |" in text and "| **median** |" in text
    result = json.loads(out.read_text())
    assert result["rule"] == "median" and result["workers"] == 2
    assert {r["workload"] for r in result["workloads"]} == {"alpha", "beta"}


def test_main_lc_on_a_tiny_csv(tmp_path, capsys):
    csv = _write_csv(tmp_path / "c.csv", n=5)
    assert main([str(csv), "--rule", "lc", "--orders", "1", "--min-points", "20"]) == 0
    assert "rule lc" in capsys.readouterr().out


def test_main_passes_the_rule_options(tmp_path, capsys):
    csv = _write_csv(tmp_path / "c.csv")
    out = tmp_path / "r.json"
    # keeping every curve at every rung is training everything; the default keeps a third
    assert main([str(csv), "--rule", "hyperband", "--option", "keep=1.0", "--option",
                 "rungs=[3, 9]", "--json", str(out)]) == 0
    assert "rule hyperband (keep=1.0, rungs=(3, 9))" in capsys.readouterr().out
    kept = json.loads(out.read_text())
    assert kept["options"] == {"keep": 1.0, "rungs": [3, 9]}
    assert kept["median_speedup"] == 1.0 and kept["worst_regret"] == 0.0
    assert main([str(csv), "--rule", "hyperband", "--option", "rungs=[3, 9]", "--json",
                 str(out)]) == 0
    assert json.loads(out.read_text())["median_speedup"] > 1.2
    # a bare word is a string; an infinite number is written as the string "inf" (strict JSON)
    assert main([str(csv), "--rule", "lc", "--option", "method=sampler", "--option",
                 "prior_weight=inf", "--orders", "1", "--json", str(out)]) == 0
    assert json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(c))["options"] == {
        "method": "sampler", "prior_weight": "inf"}
    # lc's improvement criterion: a larger least gain stops more
    speed = []
    for delta in ("0.0001", "0.2"):
        assert main([str(csv), "--rule", "lc", "--option", "criterion=improvement", "--option",
                     f"delta={delta}", "--orders", "1", "--json", str(out)]) == 0
        speed.append(json.loads(out.read_text())["median_speedup"])
    assert "rule lc (criterion=improvement, delta=0.2)" in capsys.readouterr().out
    assert speed[0] < speed[1]


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        (None, ["--rule", "median"], "curves file '.*nope.csv' not found"),
        ("nocol", ["--rule", "median"], "lacks column\\(s\\) goal; required: curve_id, workload, goal, step, value"),
        ("badgoal", ["--rule", "median"], "column 'goal' must hold 'max' or 'min'; got 'up'"),
        ("ok", ["--rule", "medain"], "unknown rule 'medain'; allowed: lc, median, hyperband, topk, none; did you mean 'median'"),
        ("ok", ["--rule", "none", "--workers", "0"], "--workers and --orders must be at least 1; got 0"),
        ("ok", ["--rule", "none", "--min-points", "500"], "no curve in .* has at least 500 points"),
        ("ok", ["--rule", "median", "--option", "percentil=25"],
         "rule 'median' has no option 'percentil'; did you mean 'percentile'"),
        ("ok", ["--rule", "none", "--option", "keep=0.5"], "rule 'none' has no option 'keep'; its options: none"),
        ("ok", ["--rule", "lc", "--option", "epsilon"], "--option takes KEY=VALUE, e.g. --option epsilon=0.1; got 'epsilon'"),
        ("ok", ["--rule", "lc", "--option", "epsilon=2"], "lc epsilon must lie in \\(0, 1\\); got 2.0"),
        ("ok", ["--rule", "lc", "--option", "epsilon=0.1", "--option", "epsilon=0.2"],
         "--option epsilon is given twice"),
        ("ok", ["--rule", "medain", "--option", "percentile=25"], "unknown rule 'medain'"),
    ],
)
def test_bad_input_says_what_is_wrong(tmp_path, make, args, message):
    import pandas as pd

    path = tmp_path / "nope.csv"
    if make is not None:
        _write_csv(path)
        d = pd.read_csv(path)
        if make == "nocol":
            d = d.drop(columns=["goal"])
        elif make == "badgoal":
            d["goal"] = "up"
        d.to_csv(path, index=False)
    with pytest.raises(UserError, match=message):
        main([str(path), *args])


def test_module_is_runnable_and_exits_2_on_a_user_error(tmp_path):
    res = subprocess.run([sys.executable, "-m", "netrace.replay", str(tmp_path / "x.csv"), "--rule", "none"],
                         check=False, capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 2
    assert "not found" in res.stderr and "Traceback" not in res.stderr
