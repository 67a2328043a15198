"""Termination rules: pure decisions over a batch of running learning curves.

A rule sees every curve of the race so far (running, finished or stopped), as a
(curves x evaluations) array with NaN where nothing was observed yet, and answers, for each
running curve, whether to stop it. Rules work on the running best of each curve (the network
keeps its best checkpoint), oriented so that higher is better whatever the goal.

>>> import numpy as np
>>> values = np.array([[0.1, 0.1, 0.1, 0.1, 0.1, 0.1],
...                    [0.2, 0.4, 0.5, 0.6, 0.7, 0.8],
...                    [0.2, 0.3, 0.5, 0.6, 0.7, np.nan]])
>>> curves = Curves(values, budget=np.array([6, 6, 20]), running=np.array([True, False, True]))
>>> [d.value for d in MedianRule(min_observed=5, min_curves=1).decide(curves)]
['stop', 'continue', 'continue']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from netrace.errors import UserError, did_you_mean

__all__ = [
    "RULES",
    "Curves",
    "Decision",
    "Goal",
    "HyperbandRule",
    "LCRule",
    "MedianRule",
    "NoRule",
    "Rule",
    "TopKRule",
    "make_rule",
]


class Goal(Enum):
    """Whether higher (MAX) or lower (MIN) metric values are better."""

    MAX = "max"
    MIN = "min"


class Decision(Enum):
    """What to do with one curve."""

    CONTINUE = "continue"
    STOP = "stop"


@dataclass(frozen=True)
class Curves:
    """Curves of a race: ``values`` (curves, evaluations) with NaN after the last observation;
    ``budget`` evaluations each curve gets if never stopped; ``running`` which curves may be
    stopped now; ``goal``; ``target`` the race's target value, if any (in metric units)."""

    values: np.ndarray
    budget: np.ndarray
    running: np.ndarray
    goal: Goal = Goal.MAX
    target: float | None = None
    observed: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        v = np.asarray(self.values, dtype=float)
        if v.ndim != 2:
            raise UserError(f"Curves.values must be a (curves, evaluations) array; got shape {v.shape}.")
        budget = np.asarray(self.budget, dtype=float)
        running = np.asarray(self.running, dtype=bool)
        if budget.shape != (v.shape[0],) or running.shape != (v.shape[0],):
            raise UserError(f"Curves.budget and Curves.running need one entry per curve ({v.shape[0]}); "
                            f"got shapes {budget.shape} and {running.shape}.")
        if not isinstance(self.goal, Goal):
            raise UserError(f"goal must be Goal.MAX or Goal.MIN; got {self.goal!r}.")
        object.__setattr__(self, "values", v)
        object.__setattr__(self, "budget", budget)
        object.__setattr__(self, "running", running)
        # observations are a prefix of each row
        object.__setattr__(self, "observed", (~np.isnan(v)).sum(axis=1))

    def running_best(self) -> np.ndarray:
        """Running best, higher is better whatever the goal; NaN where not observed."""
        s = 1.0 if self.goal is Goal.MAX else -1.0
        v = s * self.values
        best = np.fmax.accumulate(v, axis=1)
        return np.where(np.isnan(v), np.nan, best)

    def oriented_target(self) -> float | None:
        if self.target is None:
            return None
        return self.target if self.goal is Goal.MAX else -self.target


class Rule:
    """A termination rule: ``decide(curves)`` returns one Decision per curve.

    The base class checks the input and orients the curves; subclasses implement
    ``_stop(best, curves) -> bool array`` (True = stop) on running bests, higher is better.
    Curves that are not running always get CONTINUE.
    """

    name = "rule"

    def decide(self, curves: Curves) -> tuple[Decision, ...]:
        if not isinstance(curves, Curves):
            raise UserError(f"decide() takes a Curves record; got {type(curves).__name__}.")
        if not curves.running.any():
            return tuple(Decision.CONTINUE for _ in range(len(curves.running)))
        stop = np.asarray(self._stop(curves.running_best(), curves), dtype=bool) & curves.running
        return tuple(Decision.STOP if s else Decision.CONTINUE for s in stop)

    def _stop(self, best: np.ndarray, curves: Curves) -> np.ndarray:
        raise NotImplementedError


@dataclass(frozen=True)
class NoRule(Rule):
    """Never stops anything (train everything fully)."""

    name = "none"

    def _stop(self, best: np.ndarray, curves: Curves) -> np.ndarray:
        return np.zeros(len(best), dtype=bool)


def _at(best: np.ndarray, index: np.ndarray) -> np.ndarray:
    """best[c, index[c]-1] (value after index[c] evaluations), NaN when not observed."""
    ok = (index >= 1) & (index <= best.shape[1])
    out = np.full(len(best), np.nan)
    rows = np.nonzero(ok)[0]
    out[rows] = best[rows, index[rows].astype(int) - 1]
    return out


@dataclass(frozen=True)
class MedianRule(Rule):
    """Optuna's MedianPruner on running bests: stop a curve whose running best after n
    evaluations is below the ``percentile`` of the other curves' running bests after n
    evaluations, once n >= min_observed and at least min_curves others reached n (with
    ``finished_only``, only curves trained to their full budget count, as Optuna's)."""

    percentile: float = 50.0
    min_observed: int = 5
    min_curves: int = 5
    finished_only: bool = False
    name = "median"

    def _stop(self, best: np.ndarray, curves: Curves) -> np.ndarray:
        stop = np.zeros(len(best), dtype=bool)
        pool = best
        if self.finished_only:  # Optuna compares with COMPLETE trials only
            pool = np.where((curves.observed >= curves.budget)[:, None], best, np.nan)
        for c in np.nonzero(curves.running)[0]:
            n = curves.observed[c]
            if n < self.min_observed:
                continue
            col = pool[:, n - 1].copy()
            col[c] = np.nan
            others = col[~np.isnan(col)]
            if len(others) >= max(self.min_curves, 1):
                stop[c] = best[c, n - 1] < np.percentile(others, self.percentile)
        return stop


@dataclass(frozen=True)
class HyperbandRule(Rule):
    """Asynchronous successive halving (ASHA, as Optuna's SuccessiveHalvingPruner): when a
    curve reaches a rung (after rungs[k] evaluations) it continues only if its running best
    is within the top ``keep`` fraction of every curve's running best at that rung (at least
    the best one is kept)."""

    rungs: tuple[int, ...] = (3, 9, 27, 81, 243)
    keep: float = 1.0 / 3.0
    name = "hyperband"

    def _stop(self, best: np.ndarray, curves: Curves) -> np.ndarray:
        stop = np.zeros(len(best), dtype=bool)
        for c in np.nonzero(curves.running)[0]:
            n = int(curves.observed[c])
            if n not in self.rungs:
                continue
            col = best[:, n - 1]
            values = np.sort(col[~np.isnan(col)])[::-1]
            k = max(int(len(values) * self.keep), 1)
            stop[c] = best[c, n - 1] < values[k - 1]
        return stop


@dataclass(frozen=True)
class TopKRule(Rule):
    """Keep the top fraction after the first evaluations: at ``at`` of its budget (a fraction,
    at least ``min_observed`` evaluations) a curve continues only if its running best is within
    the top ``keep`` fraction of all curves' running bests at their own such point."""

    keep: float = 1.0 / 3.0
    at: float = 0.1
    min_observed: int = 2
    name = "topk"

    def _checkpoint(self, budget: np.ndarray) -> np.ndarray:
        return np.maximum(np.ceil(self.at * budget), self.min_observed)

    def _stop(self, best: np.ndarray, curves: Curves) -> np.ndarray:
        point = self._checkpoint(curves.budget)
        stop = np.zeros(len(best), dtype=bool)
        due = curves.running & (curves.observed == point)
        if not due.any():
            return stop
        vals = _at(best, np.where(curves.observed >= point, point, 0))
        values = np.sort(vals[~np.isnan(vals)])[::-1]
        k = max(int(len(values) * self.keep), 1)
        stop[due] = vals[due] < values[k - 1]
        return stop


Forecaster = Callable[[list, list, np.ndarray], object]


def _default_forecaster(xs: list, ys: list, x_target: np.ndarray, calibration=None):
    from netrace.curves._forecast import CALIBRATED, extrapolate

    return extrapolate(xs, ys, x_target, calibration=calibration or CALIBRATED)


def checkpoints(min_observed: int, growth: float, budget: int) -> list[int]:
    """Evaluation counts at which the lc rule forecasts: min_observed, then x growth, < budget."""
    out, n = [], float(min_observed)
    while round(n) < budget:
        if not out or round(n) > out[-1]:
            out.append(round(n))
        n *= growth
    return out


@dataclass(frozen=True)
class LCRule(Rule):
    """Learning-curve rule (Domhan et al. 2015): stop a curve when the probability that its
    running best reaches the best value seen so far in other curves (or the race's target,
    when lower) by the end of its budget is below ``epsilon``.

    It forecasts at ``min_observed`` evaluations and then every time the count grows by
    ``growth`` (forecasting every evaluation buys little and costs a sampler run each).
    ``forecast(xs, ys, x_target) -> Forecast`` is ``extrapolate`` with ``calibration``
    (default ``CALIBRATED``) unless given (replay passes a cache of precomputed forecasts; the
    decision is the same).
    """

    epsilon: float = 0.05
    min_observed: int = 5
    growth: float = 1.5
    calibration: object = None
    forecast: Forecaster | None = field(default=None, compare=False)
    name = "lc"

    def __post_init__(self) -> None:
        if not 0.0 < self.epsilon < 1.0:
            raise UserError(f"lc epsilon must lie in (0, 1); got {self.epsilon!r}.")
        if self.min_observed < 1 or self.growth <= 1.0:
            raise UserError(f"lc needs min_observed >= 1 and growth > 1; got {self.min_observed}, {self.growth}.")

    def is_checkpoint(self, observed: int, budget: int) -> bool:
        return observed in checkpoints(self.min_observed, self.growth, budget)

    def _stop(self, best: np.ndarray, curves: Curves) -> np.ndarray:
        stop = np.zeros(len(best), dtype=bool)
        due = [c for c in np.nonzero(curves.running)[0]
               if self.is_checkpoint(int(curves.observed[c]), int(curves.budget[c]))]
        if not due:
            return stop
        target = curves.oriented_target()
        thresholds = []
        for c in due:
            others = np.delete(best, c, axis=0)
            seen = np.nanmax(others) if np.isfinite(others).any() else np.nan
            thr = seen if target is None else np.nanmin([seen, target])
            thresholds.append(thr)
        thresholds = np.array(thresholds)
        ask = [i for i, t in enumerate(thresholds) if np.isfinite(t)]
        if not ask:
            return stop
        cs = [due[i] for i in ask]
        ys = [best[c, : curves.observed[c]] for c in cs]
        xs = [np.arange(1.0, len(y) + 1) for y in ys]
        if self.forecast is not None:
            forecast = self.forecast(xs, ys, curves.budget[cs])
        else:
            forecast = _default_forecaster(xs, ys, curves.budget[cs], self.calibration)
        # the running best can also already be at the threshold: then it is not hopeless
        p = forecast.prob_above(thresholds[ask])
        reached = np.array([y[-1] >= t for y, t in zip(ys, thresholds[ask])])
        stop[cs] = (p < self.epsilon) & ~reached
        return stop


RULES: dict[str, Callable[[], Rule]] = {
    "lc": LCRule,
    "median": MedianRule,
    "hyperband": HyperbandRule,
    "topk": TopKRule,
    "none": NoRule,
}


def make_rule(name: str, **kwargs) -> Rule:
    """The rule called ``name`` (lc, median, hyperband, topk, none) with its options.

    >>> make_rule("median", percentile=25.0).percentile
    25.0
    """
    if name not in RULES:
        raise UserError(f"unknown rule '{name}'; allowed: {', '.join(RULES)}{did_you_mean(name, RULES)}. "
                        "Pass one of them, e.g. --rule lc.")
    return RULES[name](**kwargs)
