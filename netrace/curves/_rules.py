"""Termination rules: pure decisions over a batch of running learning curves.

A rule sees every curve of the race so far (running, finished or stopped), as a
(curves x evaluations) array with NaN where nothing was observed yet, and answers, for each
curve, with a :class:`Verdict`: continue or stop, why, and (the lc rule) the forecast behind
it. Rules work on the running best of each curve (the network keeps its best checkpoint),
oriented so that higher is better whatever the goal.

A rule holds nothing between decisions: what it learns (the lc rule's forecasts and their
errors) is a state that the caller keeps and passes in, ``decide(curves, state) ->
(verdicts, state)``; ``None`` stands for the rule's initial state.

>>> import numpy as np
>>> values = np.array([[0.1, 0.1, 0.1, 0.1, 0.1, 0.1],
...                    [0.2, 0.4, 0.5, 0.6, 0.7, 0.8],
...                    [0.2, 0.3, 0.5, 0.6, 0.7, np.nan]])
>>> curves = Curves(values, budget=np.array([6, 6, 20]), running=np.array([True, False, True]))
>>> verdicts, state = MedianRule(min_observed=5, min_curves=1).decide(curves)
>>> [v.value for v in verdicts]
['stop', 'continue', 'continue']
>>> verdicts[0].reason
'its best after 6 evaluations, 0.1, is below the 50th percentile, 0.8, of 1 other curve at 6'
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

import numpy as np

from netrace.curves._fit import y_range
from netrace.errors import UserError
from netrace.vocabulary import (
    PATIENCE_OPTIONS,
    RULE_OPTIONS,
    check_option,
    no_option,
    rule_options,  # re-exported: it lives in the vocabulary
    unknown_rule,
)

__all__ = [
    "RULES",
    "Curves",
    "Decision",
    "FinalForecast",
    "Goal",
    "HyperbandRule",
    "LCRule",
    "LCState",
    "MedianRule",
    "NoRule",
    "PatientRule",
    "Rule",
    "TopKRule",
    "Verdict",
    "make_rule",
    "patient",
    "rule_options",
]


def _default(rule: str, option: str) -> Any:
    """The option's default, as the vocabulary gives it."""
    return RULE_OPTIONS[rule][option].default


class Goal(Enum):
    """Whether higher (MAX) or lower (MIN) metric values are better."""

    MAX = "max"
    MIN = "min"


class Decision(Enum):
    """What to do with one curve."""

    CONTINUE = "continue"
    STOP = "stop"


@dataclass(frozen=True)
class FinalForecast:
    """Where a curve's running best will be at the end of its budget, as the lc rule forecast
    it when it judged the curve, in oriented units (higher is better): the probability ``p``
    of reaching the threshold (the best value of the other curves, or the target when lower)
    and the expected ``gain`` over it, both learned from ``learned_from`` finished curves; the
    calibrated forecast's ``mean``, ``std`` and 90% interval ``q05``-``q95``; the model's
    forecast alone, ``model_mean``, and the curve's ``unit`` of forecast error (what another
    rule learns from, :meth:`Rule.learn`); ``leading``: the curve led every other at its
    evaluation count."""

    p: float
    gain: float
    learned_from: int
    mean: float
    std: float
    q05: float
    q95: float
    model_mean: float
    unit: float
    leading: bool

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def in_metric_units(self, goal: Goal) -> dict[str, Any]:
        """The forecast as a dict in the metric's units (a minimized metric's values negated
        back, the interval's ends swapped), as the race stores it with a decision.

        >>> f = FinalForecast(0.2, 0.01, 3, -0.5, 0.1, -0.7, -0.3, -0.6, 0.05, False)
        >>> f.in_metric_units(Goal.MIN)["q05"], f.in_metric_units(Goal.MAX)["q05"]
        (0.3, -0.7)
        """
        out = self.as_dict()
        if goal is Goal.MIN:
            out.update(mean=-self.mean, q05=-self.q95, q95=-self.q05, model_mean=-self.model_mean)
        return out

    @classmethod
    def from_metric_units(cls, values: Mapping[str, Any], goal: Goal) -> FinalForecast:
        """The inverse of :meth:`in_metric_units` (e.g. a forecast stored by another worker)."""
        s = 1.0 if goal is Goal.MAX else -1.0
        get = values.get
        lo, hi = (get("q05", math.nan), get("q95", math.nan))[::int(s)]
        return cls(p=get("p", math.nan), gain=get("gain", math.nan),
                   learned_from=get("learned_from", 0), mean=s * get("mean", math.nan),
                   std=get("std", math.nan), q05=s * lo, q95=s * hi,
                   model_mean=s * values["model_mean"], unit=values["unit"],
                   leading=bool(get("leading", False)))


@dataclass(frozen=True)
class Verdict:
    """A rule's answer for one curve: continue or stop, why (empty where the rule did not weigh
    the curve this time, e.g. between the lc rule's checkpoints), and the forecast behind it
    where the rule made one (the lc rule at its checkpoints).

    >>> v = Verdict(Decision.STOP, "fell behind")
    >>> v.stop, v.value
    (True, 'stop')
    """

    decision: Decision = Decision.CONTINUE
    reason: str = ""
    forecast: FinalForecast | None = None

    @property
    def stop(self) -> bool:
        return self.decision is Decision.STOP

    @property
    def value(self) -> str:
        """``"continue"`` or ``"stop"``."""
        return self.decision.value


_GO_ON = Verdict()


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
    """A termination rule: ``decide(curves, state) -> (verdicts, state)``, one
    :class:`Verdict` per curve and what the rule has learned, to pass to its next decision.

    The base class checks the input and orients the curves; a rule that learns nothing
    implements ``_stop(best, curves) -> bool array`` (True = stop) on running bests, higher is
    better, and ``_why(best, curves, c)``, the reason it stops curve c; one that learns
    overrides ``_judge(best, curves, state) -> (verdicts, state)``, ``initial_state`` and
    ``learn``. Curves that are not running always continue.
    """

    name = "rule"
    #: what a user may set (``[race.<name>]`` in a config, ``netrace replay --option``), from
    #: :data:`netrace.vocabulary.RULE_OPTIONS`
    options: ClassVar[tuple[str, ...]] = ()
    #: options that apply only when another option has a value: option -> (other, value)
    applies: ClassVar[dict[str, tuple[str, Any]]] = {}
    #: whether :meth:`learn` takes anything in (else the race need not offer it forecasts)
    learns: ClassVar[bool] = False
    #: the rule of the vocabulary whose options this one has (a subclass keeps its parent's)
    _vocabulary_name: ClassVar[str] = "none"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name", "")
        specs = RULE_OPTIONS.get(name)
        if specs is not None:  # a rule of the vocabulary: its options are the vocabulary's
            cls.options = tuple(specs)
            cls.applies = {k: o.applies for k, o in specs.items() if o.applies is not None}
            cls._vocabulary_name = name

    def __post_init__(self) -> None:
        """Each option's value checked as the vocabulary says (in the options' order)."""
        for option in self.options:
            check_option(self._vocabulary_name, option, getattr(self, option))

    def initial_state(self) -> Any:
        """What the rule knows before its first decision (None: a rule that learns nothing)."""
        return None

    def decide(self, curves: Curves, state: Any = None) -> tuple[tuple[Verdict, ...], Any]:
        """One verdict per curve of ``curves``, and the rule's state after them. ``state`` is
        what the previous decision returned (None: :meth:`initial_state`); the rule may update
        it in place rather than copy it, so pass on the returned one and keep a copy of the
        older one to branch from it."""
        if not isinstance(curves, Curves):
            raise UserError(f"decide() takes a Curves record; got {type(curves).__name__}.")
        if state is None:
            state = self.initial_state()
        if not curves.running.any():
            return tuple(_GO_ON for _ in range(len(curves.running))), state
        verdicts, state = self._judge(curves.running_best(), curves, state)
        return tuple(v if r else _GO_ON for v, r in zip(verdicts, curves.running, strict=True)), state

    def learn(self, state: Any, budget: float, best: np.ndarray, forecast: FinalForecast) -> Any:
        """``state`` told of a forecast made elsewhere (by the same rule in another worker) of
        the curve whose running best (oriented) starts with ``best``, with ``budget``
        evaluations; a rule that learns from finished curves then need not forecast that
        curve again. Rules that learn nothing return ``state``."""
        return state

    def _judge(self, best: np.ndarray, curves: Curves, state: Any) -> tuple[tuple[Verdict, ...], Any]:
        stop = np.asarray(self._stop(best, curves), dtype=bool) & curves.running
        return tuple(Verdict(Decision.STOP, self._why(best, curves, c)) if s else _GO_ON
                     for c, s in enumerate(stop)), state

    def _stop(self, best: np.ndarray, curves: Curves) -> np.ndarray:
        raise NotImplementedError

    def _why(self, best: np.ndarray, curves: Curves, c: int) -> str:
        """Why the rule stops curve ``c`` (called for the curves it stops)."""
        return f"the {self.name} rule stopped it after {int(curves.observed[c])} evaluations"


@dataclass(frozen=True)
class NoRule(Rule):
    """Never stops anything (train everything fully)."""

    name = "none"

    def _stop(self, best: np.ndarray, curves: Curves) -> np.ndarray:
        return np.zeros(len(best), dtype=bool)


def _curves(n: int, what: str = "curve") -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


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

    percentile: float = _default("median", "percentile")
    min_observed: int = _default("median", "min_observed")
    min_curves: int = _default("median", "min_curves")
    finished_only: bool = _default("median", "finished_only")
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

    def _why(self, best: np.ndarray, curves: Curves, c: int) -> str:
        n = int(curves.observed[c])
        pool = best if not self.finished_only else \
            np.where((curves.observed >= curves.budget)[:, None], best, np.nan)
        col = np.delete(pool[:, n - 1], c)
        others = col[~np.isnan(col)]
        s = 1.0 if curves.goal is Goal.MAX else -1.0
        return (f"its best after {n} evaluations, {s * best[c, n - 1]:.4g}, is below the "
                f"{self.percentile:g}th percentile, {s * np.percentile(others, self.percentile):.4g}"
                f", of {_curves(len(others), 'other curve')} at {n}")


@dataclass(frozen=True)
class HyperbandRule(Rule):
    """Asynchronous successive halving (ASHA, as Optuna's SuccessiveHalvingPruner): when a
    curve reaches a rung (after rungs[k] evaluations) it continues only if its running best
    is within the top ``keep`` fraction of every curve's running best at that rung (at least
    the best one is kept)."""

    rungs: tuple[int, ...] = _default("hyperband", "rungs")
    keep: float = _default("hyperband", "keep")
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

    def _why(self, best: np.ndarray, curves: Curves, c: int) -> str:
        n = int(curves.observed[c])
        reached = int(np.sum(~np.isnan(best[:, n - 1])))
        return (f"not among the best {max(int(reached * self.keep), 1)} of "
                f"{_curves(reached)} at the rung of {n} evaluations")


@dataclass(frozen=True)
class TopKRule(Rule):
    """Keep the top fraction after the first evaluations: at ``at`` of its budget (a fraction,
    at least ``min_observed`` evaluations) a curve continues only if its running best is within
    the top ``keep`` fraction of all curves' running bests at their own such point."""

    keep: float = _default("topk", "keep")
    at: float = _default("topk", "at")
    min_observed: int = _default("topk", "min_observed")
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

    def _why(self, best: np.ndarray, curves: Curves, c: int) -> str:
        point = self._checkpoint(curves.budget)
        vals = _at(best, np.where(curves.observed >= point, point, 0))
        reached = int(np.sum(~np.isnan(vals)))
        return (f"not among the best {max(int(reached * self.keep), 1)} of "
                f"{_curves(reached)} after {int(point[c])} evaluations")


Forecaster = Callable[[list, list, np.ndarray], tuple]
"""``forecast(xs, ys, x_target) -> (calibrated, model)``: two Forecasts of the same curves, the
calibrated one and the model's alone (``PAPER``), as ``extrapolate_many`` gives them."""


def _default_forecaster(calibration=None, method: str = "amortized",
                        bounds: tuple[float, float] | None = None) -> Forecaster:
    from netrace.curves._forecast import CALIBRATED, PAPER, extrapolate_many

    cals = (calibration or CALIBRATED, PAPER)
    return lambda xs, ys, x_target: extrapolate_many(xs, ys, x_target, cals, method=method,
                                                     bounds=bounds)


def _leading(best: np.ndarray, observed: np.ndarray, cs: list) -> np.ndarray:
    """For each curve of ``cs``: is its running best after its n evaluations at least that of
    every other curve after n evaluations (of those that have had n)? A forecast from a few
    points does not overrule the race's own ranking: the leader of its age is never hopeless."""
    out = np.zeros(len(cs), dtype=bool)
    for i, c in enumerate(cs):
        n = int(observed[c])
        peers = observed >= n
        peers[c] = False
        out[i] = not np.any(best[peers, n - 1] > best[c, n - 1])
    return out


def checkpoints(min_observed: int, growth: float, budget: int) -> list[int]:
    """Evaluation counts at which the lc rule forecasts: min_observed, then x growth, < budget."""
    out, n = [], float(min_observed)
    while round(n) < budget:
        if not out or round(n) > out[-1]:
            out.append(round(n))
        n *= growth
    return out


def _units(budgets: np.ndarray, ys: list) -> np.ndarray:
    """The calibration's unit of forecast error for curves observed as ``ys`` (x = 1..n): the
    range of the observed values times the horizon log(budget / n), as in ``Calibration``."""
    return np.array([y_range(y) * np.log(t / len(y)) for t, y in zip(budgets, ys)])


class LCState:
    """What an lc rule has learned, kept by its caller between decisions: the mean of its
    recent model forecasts and their unit of error (by budget and observed prefix; a curve that
    finishes finds its own there), and the errors of finished curves' forecasts (by budget,
    evaluation count and whole curve). :meth:`LCRule.decide` updates it in place and returns
    it; :meth:`copy` to keep one as it was."""

    SIZE = 65536  # forecasts kept

    def __init__(self) -> None:
        self.model: OrderedDict[tuple[float, bytes], tuple[float, float]] = OrderedDict()
        self.errors: dict[tuple[float, int, bytes], float] = {}

    def __len__(self) -> int:
        return len(self.model)

    def copy(self) -> LCState:
        out = LCState()
        out.model, out.errors = OrderedDict(self.model), dict(self.errors)
        return out

    def keep(self, budgets, ys: list, means, units) -> None:
        for t, y, m, u in zip(budgets, ys, means, units):
            self.model[(float(t), np.asarray(y, dtype=float).tobytes())] = (float(m), float(u))
        while len(self.model) > self.SIZE:
            self.model.popitem(last=False)


@dataclass(frozen=True)
class LCRule(Rule):
    """Learning-curve rule (Domhan et al. 2015): stop a curve when the probability that its
    running best reaches the best value seen so far in other curves (or the race's target,
    when lower) by the end of its budget is below ``epsilon``.

    It forecasts at ``min_observed`` evaluations and then every time the count grows by
    ``growth`` (forecasting every evaluation buys little and costs a sampler run each).

    The probability learns from the race. A curve that has run its whole budget shows how
    the model's forecast made at n evaluations fared: its error e, the value the curve reached
    minus that forecast's mean, in the unit of ``Calibration``'s discrepancy term (the range
    of the values observed by then times log(budget / n)). A curve judged at n evaluations,
    whose threshold lies d such units above its model forecast's mean, gets
    p = (#{finished curves with e > d} + w * p_cal) / (m + w): the evidence of m finished
    curves, and the calibrated forecast's probability p_cal, which counts as
    w = ``prior_weight`` curves (``math.inf``: p = p_cal, no learning). So the discrepancy
    that ``CALIBRATED`` fits once on the AlgoPerf curves is re-learned from the race's own:
    where its networks keep gaining late, p rises; where they end as the model says, p
    follows the model, sharper than the calibrated forecast. The rule stops on observed
    prefixes only, so where the model errs alike on a race's curves, those it lets finish
    show the error as the stopped ones would have.

    With ``criterion = "improvement"`` the rule weighs by how much a curve could still win,
    not only how likely it is to win: it stops a curve whose expected gain over the threshold,
    E[max(Y - threshold, 0)], is below ``delta``, in the metric's units (the least gain worth
    training for; in ``netrace replay``, a fraction of the workload's score range). A curve
    with a fair chance of beating the best by a hair goes; one with a small chance of beating
    it by far stays. The gain learns from the race as the probability does:
    g = (u * sum(max(e - d, 0)) + w * g_cal) / (m + w), u the curve's unit of error. Missing a curve costs about the gain it
    would have had, so this is the criterion that regret, as ``netrace replay`` measures it,
    asks for.

    ``forecast(xs, ys, x_target) -> (calibrated, model)`` is ``extrapolate_many`` with
    ``(calibration, PAPER)`` (default ``CALIBRATED``) and ``method`` (default ``"amortized"``:
    the network that gives the sampler's forecasts at a twelfth of the CPU) and ``bounds``,
    the metric's range in oriented units (higher is better; e.g. (-inf, 1) for R², (-inf, 0)
    for an MSE), unless given (replay passes a cache of precomputed forecasts; the decisions
    are the same). Each curve judged at a checkpoint gets a verdict with what lay behind it, a
    :class:`FinalForecast`: the probability, the expected gain, the calibrated forecast, and
    the model forecast's mean and unit of error. What the rule learns lives in an
    :class:`LCState` that the caller keeps (``decide(curves, state) -> (verdicts, state)``).
    """

    epsilon: float = _default("lc", "epsilon")
    min_observed: int = _default("lc", "min_observed")
    growth: float = _default("lc", "growth")
    calibration: object = None
    prior_weight: float = _default("lc", "prior_weight")
    method: str = _default("lc", "method")
    criterion: str = _default("lc", "criterion")
    delta: float = _default("lc", "delta")
    bounds: tuple[float, float] | None = None
    forecast: Forecaster | None = field(default=None, compare=False)
    name = "lc"
    learns = True

    def is_checkpoint(self, observed: int, budget: int) -> bool:
        return observed in checkpoints(self.min_observed, self.growth, budget)

    def initial_state(self) -> LCState:
        return LCState()

    def learn(self, state: LCState, budget: float, best: np.ndarray,
              forecast: FinalForecast) -> LCState:
        """``state`` with the model forecast that another worker's rule made of the curve whose
        running best starts with ``best``: learning from that curve once it has finished then
        needs no forecast here."""
        state.keep([budget], [best], [forecast.model_mean], [forecast.unit])
        return state

    def _forecasts(self, xs: list, ys: list, budgets: np.ndarray, state: LCState) -> tuple:
        """(calibrated, model) forecasts and each curve's unit of error; the model forecast's
        mean and unit go to the state."""
        forecast = self.forecast or _default_forecaster(self.calibration, self.method, self.bounds)
        calibrated, model = forecast(xs, ys, budgets)
        units = _units(budgets, ys)
        state.keep(budgets, ys, model.mean, units)
        return calibrated, model, units

    def _judge(self, best: np.ndarray, curves: Curves, state: LCState
               ) -> tuple[tuple[Verdict, ...], LCState]:
        verdicts = [_GO_ON] * len(best)
        due = [c for c in np.nonzero(curves.running)[0]
               if self.is_checkpoint(int(curves.observed[c]), int(curves.budget[c]))]
        target = curves.oriented_target()
        thresholds = []
        for c in due:
            others = np.delete(best, c, axis=0)
            seen = np.nanmax(others) if np.isfinite(others).any() else np.nan
            thr = seen if target is None else np.nanmin([seen, target])
            thresholds.append(thr)
        ask = [i for i, t in enumerate(thresholds) if np.isfinite(t)]
        for i in (i for i in range(len(due)) if i not in ask):
            verdicts[due[i]] = Verdict(reason="no other curve to measure it against yet")
        if ask:
            cs = [int(due[i]) for i in ask]
            for c, v in zip(cs, self._weigh(best, curves, cs, np.array(thresholds)[ask], state)):
                verdicts[c] = v
        return tuple(verdicts), state

    def _weigh(self, best: np.ndarray, curves: Curves, cs: list[int], thr: np.ndarray,
               state: LCState) -> list[Verdict]:
        """The verdicts on curves ``cs`` at their checkpoints, against thresholds ``thr``."""
        ys = [best[c, : curves.observed[c]] for c in cs]
        xs = [np.arange(1.0, len(y) + 1) for y in ys]
        calibrated, model, units = self._forecasts(xs, ys, curves.budget[cs], state)
        p = calibrated.prob_above(thr)
        gain = np.maximum(calibrated.samples - thr[:, None], 0.0).mean(axis=1)
        learned = np.zeros(len(cs), dtype=int)
        if np.isfinite(self.prior_weight):
            d, w = (thr - model.mean) / units, self.prior_weight
            for i, e in enumerate(self._errors(cs, best, curves, state)):
                learned[i] = len(e)
                p[i] = ((e > d[i]).sum() + w * p[i]) / (len(e) + w)
                gain[i] = (units[i] * np.maximum(e - d[i], 0.0).sum() + w * gain[i]) / (len(e) + w)
        hopeless = p < self.epsilon if self.criterion == "probability" else gain < self.delta
        # the running best can also already be at the threshold: then it is not hopeless
        reached = np.array([y[-1] >= t for y, t in zip(ys, thr)])
        leading = _leading(best, curves.observed, cs)
        stop = hopeless & ~reached & ~leading
        q05, q95 = calibrated.quantile([0.05, 0.95])
        out = []
        for j in range(len(cs)):
            f = FinalForecast(
                p=float(p[j]), gain=float(gain[j]), learned_from=int(learned[j]),
                mean=float(calibrated.mean[j]), std=float(calibrated.std[j]), q05=float(q05[j]),
                q95=float(q95[j]), model_mean=float(model.mean[j]), unit=float(units[j]),
                leading=bool(leading[j]))
            why = ("it is already at the best seen" if reached[j] else
                   "it leads every curve at its evaluation count" if leading[j] else
                   self._odds(f, bool(hopeless[j])))
            out.append(Verdict(Decision.STOP if stop[j] else Decision.CONTINUE, why, f))
        return out

    def _odds(self, f: FinalForecast, hopeless: bool) -> str:
        below = "below" if hopeless else "at least"
        if self.criterion == "probability":
            return (f"a {f.p:.1%} chance of reaching the best seen by its end ({below} epsilon "
                    f"{self.epsilon:g})")
        return (f"an expected gain of {f.gain:.3g} over the best seen by its end ({below} "
                f"delta {self.delta:g})")

    def _errors(self, cs: list, best: np.ndarray, curves: Curves, state: LCState
                ) -> list[np.ndarray]:
        """For each curve of ``cs``, the errors of the model forecasts made for the finished
        curves at as many evaluations as it has (in their units)."""
        finished = np.nonzero((curves.observed >= curves.budget) & ~curves.running)[0]
        budget = curves.budget.astype(int)
        whole = {j: best[j, : budget[j]].tobytes() for j in finished}
        ns = [int(curves.observed[c]) for c in cs]
        keys = {n: {j: (float(budget[j]), n, whole[j]) for j in finished if budget[j] > n}
                for n in set(ns)}
        missing = [(j, n) for n, ks in keys.items() for j, k in ks.items()
                   if k not in state.errors]
        unseen = []
        for j, n in missing:  # those forecast before first: new forecasts may push them out
            if (float(budget[j]), best[j, :n].tobytes()) in state.model:
                _error(state, best, budget, keys[n][j], j, n)
            else:
                unseen.append((j, n))
        for i in range(0, len(unseen), 1024):  # finished curves this rule never forecast
            chunk = unseen[i : i + 1024]  # (another worker's), in batches the state holds
            self._forecasts([np.arange(1.0, n + 1) for _, n in chunk],
                            [best[j, :n] for j, n in chunk],
                            np.array([float(budget[j]) for j, _ in chunk]), state)
            for j, n in chunk:
                _error(state, best, budget, keys[n][j], j, n)
        return [np.array([state.errors[k] for k in keys[n].values()]) for n in ns]


def _error(state: LCState, best: np.ndarray, budget: np.ndarray, key: tuple, j: int,
           n: int) -> None:
    mean, unit = state.model[(float(budget[j]), best[j, :n].tobytes())]
    state.errors[key] = float((best[j, budget[j] - 1] - mean) / unit)


@dataclass(frozen=True)
class PatientRule(Rule):
    """``rule`` with patience, as Optuna's PatientPruner wraps another pruner: a curve that
    ``rule`` stops goes on while it is still improving, that is unless its best value over its
    last ``patience`` + 1 evaluations is below its best before them by more than
    ``min_delta`` (on the curve's own values, not its running best; a curve with at most
    ``patience`` + 1 evaluations is not stopped). ``rule`` judges every time, so its state and
    forecasts are those it has alone; its name is the wrapper's.

    >>> values = np.array([[0.9, 0.9, 0.9, 0.9], [0.1, 0.2, 0.3, 0.4], [0.4, 0.1, 0.1, 0.1]])
    >>> curves = Curves(values, budget=np.full(3, 10), running=np.array([False, True, True]))
    >>> rule = TopKRule(keep=0.1, at=0.4, min_observed=4)
    >>> [v.value for v in rule.decide(curves)[0]]
    ['continue', 'stop', 'stop']
    >>> [v.value for v in patient(rule, 2).decide(curves)[0]]
    ['continue', 'continue', 'stop']
    """

    rule: Rule
    patience: int = PATIENCE_OPTIONS["patience"].default
    min_delta: float = PATIENCE_OPTIONS["min_delta"].default

    def __post_init__(self) -> None:
        if not isinstance(self.rule, Rule):
            raise UserError(f"patient() wraps a rule; got {type(self.rule).__name__}.")
        for option, spec in PATIENCE_OPTIONS.items():
            check_option(self.name, option, getattr(self, option), spec)

    @property  # type: ignore[override]
    def name(self) -> str:  # the decisions stored are the wrapped rule's kind
        return self.rule.name

    @property  # type: ignore[override]
    def learns(self) -> bool:
        return self.rule.learns

    def initial_state(self) -> Any:
        return self.rule.initial_state()

    def learn(self, state: Any, budget: float, best: np.ndarray, forecast: FinalForecast) -> Any:
        return self.rule.learn(state, budget, best, forecast)

    def _judge(self, best: np.ndarray, curves: Curves, state: Any
               ) -> tuple[tuple[Verdict, ...], Any]:
        verdicts, state = self.rule.decide(curves, state)
        out = tuple(dataclasses.replace(v, decision=Decision.CONTINUE, reason=(
                        f"{v.reason}; but it improved within its last {self.patience + 1} "
                        f"evaluations (patience {self.patience})"))
                    if v.stop and self._improving(curves, c) else v
                    for c, v in enumerate(verdicts))
        return out, state

    def _improving(self, curves: Curves, c: int) -> bool:
        """Optuna's test: not (best before the window - min_delta > best within it)."""
        s = 1.0 if curves.goal is Goal.MAX else -1.0
        v = s * curves.values[c, : int(curves.observed[c])]
        w = self.patience + 1
        before, after = v[:-w], v[-w:]
        if len(v) <= w or np.isnan(before).all() or np.isnan(after).all():
            return True
        return not np.nanmax(before) - self.min_delta > np.nanmax(after)


def patient(rule: Rule, patience: int, min_delta: float = 0.0) -> PatientRule:
    """``rule`` that stops a curve only once it has stopped improving (:class:`PatientRule`)."""
    return PatientRule(rule, patience, min_delta)


RULES: dict[str, type[Rule]] = {
    "lc": LCRule,
    "median": MedianRule,
    "hyperband": HyperbandRule,
    "topk": TopKRule,
    "none": NoRule,
}
assert tuple(RULES) == tuple(RULE_OPTIONS)  # the vocabulary's rules, in its order


def make_rule(name: str, **kwargs) -> Rule:
    """The rule called ``name`` (lc, median, hyperband, topk, none) with its options.

    >>> make_rule("median", percentile=25.0).percentile
    25.0
    """
    if name not in RULES:
        raise unknown_rule(name)
    cls = RULES[name]
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in kwargs:
        if key not in known:
            raise no_option(name, key)
    return cls(**kwargs)

