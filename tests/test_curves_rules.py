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
    FinalForecast,
    LCState,
    NoRule,
    PatientRule,
    TopKRule,
    Verdict,
    make_rule,
    patient,
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
    stops, state = [], None
    for n in range(1, LEN):
        values = _race(full[:n])
        if goal is Goal.MIN:
            values = -values
        running = np.zeros(len(values), dtype=bool)
        running[-1] = True
        d, state = rule.decide(Curves(values, budget=np.full(len(values), LEN), running=running,
                                      goal=goal), state)
        assert all(x.decision is Decision.CONTINUE for x in d[:-1])
        if d[-1].stop:
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
    verdicts = {c: r.decide(curves)[0] for c, r in rules.items()}
    got = {c: [v.value for v in vs[3:]] for c, vs in verdicts.items()}
    assert got == {"probability": ["continue", "stop"], "improvement": ["stop", "continue"]}
    hair_f, long_f = (v.forecast for v in verdicts["improvement"][3:])
    assert (hair_f.gain, long_f.gain) == pytest.approx((0.4 * 0.001, 0.03 * 0.2))
    assert (hair_f.p, long_f.p) == pytest.approx((0.4, 0.03))
    # each verdict says why, in the rule's own terms
    assert verdicts["improvement"][3].reason == ("an expected gain of 0.0004 over the best seen "
                                                 "by its end (below delta 0.002)")
    assert verdicts["probability"][4].reason == ("a 3.0% chance of reaching the best seen by its "
                                                 "end (below epsilon 0.05)")


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
    d, state = HyperbandRule(rungs=(3,), keep=0.5).decide(curves)
    assert [x.value for x in d] == ["continue", "stop", "stop", "continue"]
    assert state is None  # hyperband learns nothing
    assert d[1].reason == "not among the best 2 of 4 curves at the rung of 3 evaluations"
    assert d[0] == Verdict() and d[0].forecast is None


def test_lc_with_a_race_target_below_the_best():
    # the incumbent is far out of reach, but the race's target is easy: keep the curve
    values = _race(0.6 - 0.3 * x[:AT] ** -0.5)  # judged at a checkpoint of lc
    values[0] = 5.0
    running = np.zeros(len(values), dtype=bool)
    running[-1] = True
    curves = Curves(values, budget=np.full(len(values), LEN), running=running)
    assert LCRule().decide(curves)[0][-1].stop
    with_target = Curves(values, budget=np.full(len(values), LEN), running=running, target=0.5)
    assert not LCRule().decide(with_target)[0][-1].stop


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
    verdicts, state = rule.decide(curves)
    got = verdicts[12].forecast.as_dict()
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
    plain = LCRule(prior_weight=math.inf).decide(curves)[0][12].forecast
    assert plain.p == pytest.approx(p_cal, abs=1e-12)
    assert plain.gain == pytest.approx(gain_cal, rel=1e-9)
    # a curve judged while no other has finished: the calibrated forecast alone
    values = curves.values[[0, 12]]
    values[0, 20:] = np.nan  # stopped at 20 evaluations
    verdicts, _ = rule.decide(Curves(values, budget=np.full(2, LEN),
                                     running=np.array([False, True])), state)
    assert verdicts[1].forecast.learned_from == 0


def test_lc_learns_from_how_finished_curves_ended():
    # Finished curves that ended as the model forecast them: the rule becomes sharper than
    # the calibrated forecast alone, and stops a low riser that the forecast alone keeps.
    honest = _finished_then_running(0.0, LOW_RISER)
    alone, learning = (r.decide(honest)[0][-1] for r in (LCRule(prior_weight=math.inf), LCRule()))
    assert (alone.decision, learning.decision) == (Decision.CONTINUE, Decision.STOP)
    assert learning.forecast.p < 0.6 * alone.forecast.p
    # Finished curves that all gained late (no family of the model foresees it): a riser on
    # their track (near their top, not ahead of them all), which the paper's model alone gives
    # no chance of reaching the best, is kept once the race has shown what such curves gain.
    late = _finished_then_running(0.1, 0.795 - 0.6 * x[:AT] ** -0.6)
    alone, learning = (r.decide(late)[0][-1] for r in (LCRule(calibration=PAPER, prior_weight=math.inf),
                                                       LCRule(calibration=PAPER)))
    assert (alone.decision, learning.decision) == (Decision.STOP, Decision.CONTINUE)
    assert not learning.forecast.leading
    assert alone.forecast.p == 0.0 and learning.forecast.p > 0.1


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
        verdict = rule.decide(Curves(values, np.full(len(values), LEN), running))[0][-1]
        assert verdict.decision is want
        assert verdict.forecast.leading is (shift > 0)
        assert ("leads every curve" in verdict.reason) is (shift > 0)


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


# -- verdicts, explicit state -------------------------------------------------------------------

def _counting(rule: LCRule) -> tuple[LCRule, list[int]]:
    """``rule`` with a forecaster that counts the curves it is asked to forecast."""
    import dataclasses

    asked: list[int] = []

    def forecast(xs, ys, x_target):
        asked.append(len(xs))
        return extrapolate_many(xs, ys, x_target, (CALIBRATED, PAPER), method=rule.method)

    return dataclasses.replace(rule, forecast=forecast), asked


def test_a_rule_holds_nothing_its_state_is_passed_in_and_out():
    curves = _finished_then_running(0.05, LOW_RISER)
    rule, asked = _counting(LCRule())
    assert not hasattr(rule, "memory")
    frozen = repr(rule)
    first, state = rule.decide(curves)
    # the running curve and the 12 finished ones at its evaluation count (to learn from them)
    assert asked == [1, 12] and isinstance(state, LCState) and len(state) == 13
    # with the state it returned, the rule learns from the finished curves without
    # forecasting them again; with a fresh state (None), it must forecast them all again
    kept = state.copy()
    again, state = rule.decide(curves, state)
    assert asked[2:] == [1] and again == first
    fresh, _ = rule.decide(curves)
    assert asked[3:] == [1, 12] and fresh == first
    # a copy is a branch point: deciding from it does not touch the state it was taken from
    assert len(kept.errors) == 12 and kept.model.keys() <= state.model.keys()
    assert repr(rule) == frozen  # the rule itself did not change
    # every verdict is a record: the decision, why, and the forecast behind it (lc's)
    v = first[12]
    assert isinstance(v, Verdict) and isinstance(v.forecast, FinalForecast)
    assert v.reason.startswith(f"a {v.forecast.p:.1%} chance of reaching the best seen")
    assert all(u == Verdict() for u in first[:12])  # finished curves: continue, nothing said


def test_a_rule_learns_forecasts_made_elsewhere():
    # what worker A's rule forecast for curve 0 at AT evaluations, taught to worker B's state,
    # spares B that forecast once curve 0 has finished and B learns from it
    curves = _finished_then_running(0.0, LOW_RISER, n_done=2)
    seen_by_a = curves.values[:2].copy()
    seen_by_a[0, AT:] = np.nan
    a_verdicts, _ = LCRule().decide(Curves(seen_by_a, np.full(2, LEN), np.array([True, False])))
    told = a_verdicts[0].forecast
    assert told is not None
    for teach, want in ((False, [1, 2]), (True, [1, 1])):
        rule, asked = _counting(LCRule())
        state = rule.initial_state()
        if teach:
            state = rule.learn(state, LEN, curves.running_best()[0, :AT], told)
        verdicts, _ = rule.decide(curves, state)
        assert asked == want and verdicts[-1].forecast.learned_from == 2
    # rules that learn nothing take nothing in
    assert not MedianRule.learns and MedianRule().learn(None, LEN, np.zeros(3), told) is None


def test_a_forecast_in_metric_units_and_back():
    f = FinalForecast(p=0.2, gain=0.01, learned_from=3, mean=-0.5, std=0.1, q05=-0.7, q95=-0.3,
                      model_mean=-0.6, unit=0.05, leading=False)
    stored = f.in_metric_units(Goal.MIN)
    assert list(stored) == ["p", "gain", "learned_from", "mean", "std", "q05", "q95",
                            "model_mean", "unit", "leading"]
    assert (stored["mean"], stored["q05"], stored["q95"], stored["model_mean"]) == (0.5, 0.3, 0.7, 0.6)
    assert FinalForecast.from_metric_units(stored, Goal.MIN) == f
    assert FinalForecast.from_metric_units(f.in_metric_units(Goal.MAX), Goal.MAX) == f


# -- the patient wrapper ------------------------------------------------------------------------

class _AlwaysStop(MedianRule):
    """Stops every running curve (as a pruner that always says prune)."""

    name = "always"

    def _stop(self, best, curves):
        return curves.running.copy()


@pytest.mark.parametrize("goal", [Goal.MAX, Goal.MIN])
@pytest.mark.parametrize(("patience", "min_delta"), [(0, 0.0), (1, 0.0), (3, 0.0), (2, 0.05)])
def test_patient_stops_as_optunas_patient_pruner(goal, patience, min_delta):
    import optuna

    class AlwaysPrune(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return True

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    direction = "maximize" if goal is Goal.MAX else "minimize"
    study = optuna.create_study(direction=direction)
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        pruner = optuna.pruners.PatientPruner(AlwaysPrune(), patience, min_delta)
    rule = patient(_AlwaysStop(), patience, min_delta)
    rng = np.random.default_rng(patience)
    values = np.cumsum(rng.normal(0.0, 0.05, (200, 12)), axis=1)  # noisy curves ...
    values[np.arange(12) >= rng.integers(1, 13, (200, 1))] = np.nan  # ... of 1 to 12 values
    budget = np.full(len(values), 12)
    got = rule.decide(Curves(values, budget, np.ones(len(values), dtype=bool), goal))[0]
    want = [pruner.prune(study, optuna.trial.create_trial(
                state=optuna.trial.TrialState.RUNNING,
                intermediate_values={s: float(v) for s, v in enumerate(row) if not np.isnan(v)}))
            for row in values]
    assert [v.stop for v in got] == want
    assert 20 < sum(want) < 180  # both kinds of answer occur


def test_patient_wraps_a_rule_with_its_state_forecasts_and_name():
    # a low riser that the lc rule stops at a checkpoint, still improving at every evaluation:
    # the patient rule keeps it, with the lc rule's forecast and state; once it has stalled
    # for the patience's evaluations, it lets the stop stand
    curves = _finished_then_running(0.0, LOW_RISER)
    lc = LCRule()
    wrapped = patient(lc, 2)
    assert isinstance(wrapped, PatientRule) and wrapped.name == "lc" and wrapped.learns
    assert isinstance(wrapped.initial_state(), LCState)
    plain, _ = lc.decide(curves)
    kept, state = wrapped.decide(curves)
    assert plain[-1].stop and not kept[-1].stop
    assert kept[-1].forecast == plain[-1].forecast and len(state) == 13
    assert kept[-1].reason == plain[-1].reason + (
        "; but it improved within its last 3 evaluations (patience 2)")
    stalled = curves.values.copy()
    stalled[-1, AT - 3:AT] = stalled[-1, AT - 4] - 0.01  # worse than before, 3 times
    stalled = Curves(stalled, curves.budget, curves.running)
    assert lc.decide(stalled)[0][-1].stop and wrapped.decide(stalled)[0][-1].stop
    with pytest.raises(UserError, match="lc patience must be at least 0"):
        patient(lc, -1)
    with pytest.raises(UserError, match="patient\\(\\) wraps a rule"):
        patient("lc", 2)
