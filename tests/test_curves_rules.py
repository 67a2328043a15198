"""Tests of the termination rules (netrace.curves._rules)."""

from __future__ import annotations

import numpy as np
import pytest

from netrace.curves import (
    Curves,
    Decision,
    Goal,
    HyperbandRule,
    LCRule,
    MedianRule,
    NoRule,
    TopKRule,
    make_rule,
)
from netrace.errors import UserError

LEN = 40


def _race(extra: np.ndarray, n_good: int = 8, seed: int = 0) -> np.ndarray:
    """Finished learning curves (rising to ~0.7-0.8) plus one running curve ``extra``."""
    rng = np.random.default_rng(seed)
    x = np.arange(1.0, LEN + 1)
    good = [0.75 + 0.05 * rng.uniform(-1, 1) - 0.6 * x ** -0.6 + rng.normal(0, 0.005, LEN)
            for _ in range(n_good)]
    values = np.full((n_good + 1, LEN), np.nan)
    values[:n_good] = good
    values[n_good, : len(extra)] = extra
    return values


def _decide_each_step(rule, full: np.ndarray, goal: Goal = Goal.MAX, first: bool = False) -> list[int]:
    """Feed the running curve one evaluation at a time; return the steps at which it is stopped
    (only the first one with ``first``)."""
    stops = []
    for n in range(1, LEN):
        values = _race(full[:n])
        if goal is Goal.MIN:
            values = -values
        running = np.zeros(len(values), dtype=bool)
        running[-1] = True
        d = rule.decide(Curves(values, budget=np.full(len(values), LEN), running=running, goal=goal))
        assert all(x is Decision.CONTINUE for x in d[:-1])
        if d[-1] is Decision.STOP:
            stops.append(n)
            if first:
                break
    return stops


NEVER_LEARNS = 0.1 + np.random.default_rng(5).normal(0, 0.01, LEN)
x = np.arange(1.0, LEN + 1)
RISES_TO_BEST = 0.95 - 0.8 * x ** -0.5  # ends at 0.82, above every other curve


@pytest.mark.parametrize("rule", [LCRule(), MedianRule(), HyperbandRule()], ids=["lc", "median", "hyperband"])
@pytest.mark.parametrize("goal", [Goal.MAX, Goal.MIN])
def test_never_learns_is_stopped(rule, goal):
    stops = _decide_each_step(rule, NEVER_LEARNS, goal, first=True)
    assert stops and stops[0] <= 9


@pytest.mark.parametrize("goal", [Goal.MAX, Goal.MIN])
def test_lc_never_stops_a_steady_riser_that_ends_best(goal):
    assert _decide_each_step(LCRule(), RISES_TO_BEST, goal) == []


def test_none_never_stops():
    assert _decide_each_step(NoRule(), NEVER_LEARNS) == []


def test_topk_stops_at_its_checkpoint_only():
    stops = _decide_each_step(TopKRule(keep=0.5, at=0.1), NEVER_LEARNS)
    assert stops == [4]


def test_rules_use_the_running_best_of_an_overfitting_curve():
    # the curve peaked at 0.9 then fell: its running best stays the best, so nothing stops it
    peak = np.concatenate([np.linspace(0.5, 0.9, 10), np.linspace(0.85, 0.2, 10)])
    curve = np.pad(peak, (0, LEN - 20), constant_values=0.2)
    for rule in (MedianRule(min_curves=3), HyperbandRule(rungs=(3, 9, 18, 27)), LCRule()):
        assert _decide_each_step(rule, curve) == []


def test_hyperband_keeps_the_top_fraction_at_a_rung():
    values = np.array([[0.9, 0.9, 0.9], [0.5, 0.5, 0.5], [0.1, 0.1, 0.1], [0.7, 0.7, 0.7]])
    curves = Curves(values, budget=np.full(4, 10), running=np.array([True, True, True, True]))
    d = HyperbandRule(rungs=(3,), keep=0.5).decide(curves)
    assert [x.value for x in d] == ["continue", "stop", "stop", "continue"]


def test_lc_with_a_race_target_below_the_best():
    # the incumbent is far out of reach, but the race's target is easy: keep the curve
    values = _race(0.6 - 0.3 * x[:8] ** -0.5)  # 8 evaluations: a checkpoint of lc
    values[0] = 5.0
    running = np.zeros(len(values), dtype=bool)
    running[-1] = True
    curves = Curves(values, budget=np.full(len(values), LEN), running=running)
    assert LCRule().decide(curves)[-1] is Decision.STOP
    with_target = Curves(values, budget=np.full(len(values), LEN), running=running, target=0.5)
    assert LCRule().decide(with_target)[-1] is Decision.CONTINUE


def test_make_rule_and_errors():
    assert isinstance(make_rule("lc", epsilon=0.1), LCRule)
    with pytest.raises(UserError, match="unknown rule 'medain'; allowed: lc, median, hyperband, topk, none; did you mean 'median'"):
        make_rule("medain")
    with pytest.raises(UserError, match="epsilon must lie in \\(0, 1\\); got 2"):
        LCRule(epsilon=2)
    with pytest.raises(UserError, match="one entry per curve \\(2\\)"):
        Curves(np.zeros((2, 3)), budget=np.zeros(3), running=np.zeros(2, dtype=bool))
