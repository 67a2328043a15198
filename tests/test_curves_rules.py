"""Tests of the termination rules (netrace.curves._rules)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from netrace.curves import (
    CALIBRATED,
    PAPER,
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
from netrace.curves._forecast import extrapolate_many
from netrace.errors import UserError

LEN = 40
AT = 7  # evaluations at which the running curves below are judged: a checkpoint of lc's
#         defaults (after 3 evaluations, then x 1.5: 3, 4, 7, 10, 15, 23, 34)


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


@pytest.mark.parametrize("rule", [LCRule(), LCRule(criterion="improvement"), MedianRule(),
                                  HyperbandRule()],
                         ids=["lc", "lc-improvement", "median", "hyperband"])
@pytest.mark.parametrize("goal", [Goal.MAX, Goal.MIN])
def test_never_learns_is_stopped(rule, goal):
    stops = _decide_each_step(rule, NEVER_LEARNS, goal, first=True)
    assert stops and stops[0] <= 9


@pytest.mark.parametrize("criterion", ["probability", "improvement"])
@pytest.mark.parametrize("goal", [Goal.MAX, Goal.MIN])
def test_lc_never_stops_a_steady_riser_that_ends_best(goal, criterion):
    assert _decide_each_step(LCRule(criterion=criterion), RISES_TO_BEST, goal) == []


def _given(draws: list[list[float]]):
    """A forecaster that returns these draws for the curves it is asked about, in order."""
    from netrace.curves import Forecast

    def forecast(xs, ys, x_target):
        f = Forecast(np.array(draws[: len(ys)], dtype=float))
        return f, f
    return forecast


def test_lc_improvement_weighs_how_much_a_curve_could_win():
    # three finished curves, the best at 0.8; two running curves at AT evaluations below it;
    # the rule asks for an expected gain of at least delta = 0.002
    values = np.full((5, LEN), np.nan)
    values[0], values[1], values[2] = 0.2, 0.5, 0.8
    values[3, :AT] = 0.799   # a hair below the best: likely to pass it, by a hair
    values[4, :AT] = 0.5     # far below: unlikely to pass it, but by far if it does
    curves = Curves(values, budget=np.full(5, LEN), running=np.arange(5) >= 3)
    hair = [0.799] * 60 + [0.801] * 40          # p = 0.4, gain 0.4 * 0.001 = 0.0004
    long_shot = [0.5] * 97 + [1.0] * 3          # p = 0.03, gain 0.03 * 0.2 = 0.006
    rules = {c: LCRule(criterion=c, prior_weight=math.inf, forecast=_given([hair, long_shot]))
             for c in ("probability", "improvement")}
    got = {c: [d.value for d in r.decide(curves)[3:]] for c, r in rules.items()}
    assert got == {"probability": ["continue", "stop"], "improvement": ["stop", "continue"]}
    last = rules["improvement"].memory.last
    assert (last[3]["gain"], last[4]["gain"]) == pytest.approx((0.4 * 0.001, 0.03 * 0.2))
    assert (last[3]["p"], last[4]["p"]) == pytest.approx((0.4, 0.03))


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
    values = _race(0.6 - 0.3 * x[:AT] ** -0.5)  # judged at a checkpoint of lc
    values[0] = 5.0
    running = np.zeros(len(values), dtype=bool)
    running[-1] = True
    curves = Curves(values, budget=np.full(len(values), LEN), running=running)
    assert LCRule().decide(curves)[-1] is Decision.STOP
    with_target = Curves(values, budget=np.full(len(values), LEN), running=running, target=0.5)
    assert LCRule().decide(with_target)[-1] is Decision.CONTINUE


def _finished_then_running(late: float, running: np.ndarray, n_done: int = 12) -> Curves:
    """``n_done`` curves that ran their whole budget, rising like power laws and, with
    ``late`` > 0, gaining ``late`` over their last quarter (as after a learning-rate decay,
    which none of the model's families foresees); then one running curve."""
    rng = np.random.default_rng(1)
    values = np.full((n_done + 1, LEN), np.nan)
    for j in range(n_done):
        values[j] = (0.75 + 0.05 * rng.uniform(-1, 1) - 0.6 * x ** -0.6
                     + rng.normal(0, 0.003, LEN) + late * np.clip((x - 30) / 10, 0, 1))
    values[n_done, : len(running)] = running
    return Curves(values, budget=np.full(n_done + 1, LEN), running=np.arange(n_done + 1) == n_done)


LOW_RISER = 0.6 - 0.6 * x[:AT] ** -0.6  # at a checkpoint, below every finished curve


def test_lc_probability_is_the_finished_curves_errors_and_the_calibrated_forecast():
    curves = _finished_then_running(0.05, 0.81 - 0.6 * x[:AT] ** -0.6)
    rule = LCRule()
    rule.decide(curves)
    got = rule.memory.last[12]
    # by hand, one curve at a time: how far above its model forecast made at AT evaluations
    # each finished curve ended, in units of its observed range times log(40 / AT), and the
    # running curve's two forecasts
    best = curves.running_best()
    tau = np.nanmax(best[:12])
    unit = np.log(LEN / AT)
    cal, model = extrapolate_many([x[:AT]], [best[12, :AT]], LEN, (CALIBRATED, PAPER), method=rule.method)
    d = (tau - model.mean[0]) / (np.ptp(best[12, :AT]) * unit)
    p_cal = np.mean(cal.samples[0] > tau)
    e = []
    for j in range(12):
        m = extrapolate_many([x[:AT]], [best[j, :AT]], LEN, (CALIBRATED, PAPER), method=rule.method)[1]
        e.append((best[j, -1] - m.mean[0]) / (np.ptp(best[j, :AT]) * unit))
    want = ((np.array(e) > d).sum() + 10.0 * p_cal) / (12 + 10.0)
    assert 0 < (np.array(e) > d).sum() < 12  # the check below tells the errors apart
    assert got["p"] == pytest.approx(want, abs=1e-12)
    # the expected gain over tau learns the same way, in the curve's unit
    u = np.ptp(best[12, :AT]) * unit
    gain_cal = np.mean(np.maximum(cal.samples[0] - tau, 0.0))
    gain = (u * np.maximum(np.array(e) - d, 0.0).sum() + 10.0 * gain_cal) / (12 + 10.0)
    assert got["gain"] == pytest.approx(gain, rel=1e-9)
    assert got["learned_from"] == 12
    assert (got["mean"], got["q05"]) == pytest.approx((cal.mean[0], np.quantile(cal.samples[0], 0.05)))
    plain = LCRule(prior_weight=math.inf)
    plain.decide(curves)
    assert plain.memory.last[12]["p"] == pytest.approx(p_cal, abs=1e-12)
    assert plain.memory.last[12]["gain"] == pytest.approx(gain_cal, rel=1e-9)
    # a curve judged while no other has finished: the calibrated forecast alone
    values = curves.values[[0, 12]]
    values[0, 20:] = np.nan  # stopped at 20 evaluations
    rule.decide(Curves(values, budget=np.full(2, LEN), running=np.array([False, True])))
    assert rule.memory.last[1]["learned_from"] == 0


def test_lc_learns_from_how_finished_curves_ended():
    # Finished curves that ended as the model forecast them: the rule becomes sharper than
    # the calibrated forecast alone, and stops a low riser that the forecast alone keeps.
    honest = _finished_then_running(0.0, LOW_RISER)
    alone, learning = LCRule(prior_weight=math.inf), LCRule()
    assert (alone.decide(honest)[-1], learning.decide(honest)[-1]) == (Decision.CONTINUE, Decision.STOP)
    assert learning.memory.last[12]["p"] < 0.6 * alone.memory.last[12]["p"]
    # Finished curves that all gained late (no family of the model foresees it): a riser on
    # their track (near their top, not ahead of them all), which the paper's model alone gives
    # no chance of reaching the best, is kept once the race has shown what such curves gain.
    late = _finished_then_running(0.1, 0.795 - 0.6 * x[:AT] ** -0.6)
    alone, learning = LCRule(calibration=PAPER, prior_weight=math.inf), LCRule(calibration=PAPER)
    assert (alone.decide(late)[-1], learning.decide(late)[-1]) == (Decision.STOP, Decision.CONTINUE)
    assert not learning.memory.last[12]["leading"]
    assert alone.memory.last[12]["p"] == 0.0 and learning.memory.last[12]["p"] > 0.1


def test_lc_never_stops_the_leader_of_its_age():
    # a curve ahead of every other curve at as many evaluations is not stopped on a forecast
    # from its first few points, however low the forecast's probability: the same curve a
    # hair below the best of the others at that age is
    finished = _race(np.full(0, np.nan))[:-1]
    at = finished[:, AT - 1].max()
    for shift, want in ((0.001, Decision.CONTINUE), (-0.001, Decision.STOP)):
        values = np.vstack([finished, np.full(LEN, np.nan)])
        values[-1, :AT] = at + shift  # flat: the model forecasts no further gain
        running = np.arange(len(values)) == len(values) - 1
        rule = LCRule(prior_weight=math.inf)
        assert rule.decide(Curves(values, np.full(len(values), LEN), running))[-1] is want
        assert rule.memory.last[len(values) - 1]["leading"] is (shift > 0)


def test_make_rule_and_errors():
    assert isinstance(make_rule("lc", epsilon=0.1), LCRule)
    with pytest.raises(UserError, match="unknown rule 'medain'; allowed: lc, median, hyperband, topk, none; did you mean 'median'"):
        make_rule("medain")
    with pytest.raises(UserError, match="epsilon must lie in \\(0, 1\\); got 2"):
        LCRule(epsilon=2)
    with pytest.raises(UserError, match="prior_weight must be > 0"):
        LCRule(prior_weight=0)
    with pytest.raises(UserError, match="one entry per curve \\(2\\)"):
        Curves(np.zeros((2, 3)), budget=np.zeros(3), running=np.zeros(2, dtype=bool))


def test_the_judging_point_of_these_tests_is_a_checkpoint_of_lcs_defaults():
    from netrace.curves._rules import checkpoints

    rule = LCRule()
    assert checkpoints(rule.min_observed, rule.growth, LEN) == [3, 4, 7, 10, 15, 23, 34]
    assert rule.is_checkpoint(AT, LEN) and not rule.is_checkpoint(AT + 1, LEN)
