"""The judge step of a race worker: which networks end after an epoch, and why.

A network ends on its own (it diverged, early stopping froze it in every fold, it trained
``max_epochs``) or by the race's rule, which a :class:`Judge` applies: the rule with the state
it has learned, judging this worker's running networks against the whole race's finished
curves. The judge owns the rule's state; the rule holds none (:mod:`netrace.curves`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from netrace.curves import Curves, FinalForecast, Goal, Rule, Verdict
from netrace.storage import DecisionRecord, Storage, TrialEnd, TrialEndReason, TrialState
from netrace.train import MemberState

__all__ = ["FINISHED", "Judge", "natural_end", "stop_forecasts", "teach"]

FINISHED = (TrialState.COMPLETE, TrialState.STOPPED, TrialState.CUT, TrialState.DIVERGED,
            TrialState.FAILED)
#: seconds between two reads of the race's finished curves from the storage
REFRESH = 5.0


def natural_end(trial_id: int, curve: Sequence[float], states: Sequence[MemberState],
                max_epochs: int) -> TrialEnd | None:
    """How a network whose ``curve`` has just grown by an epoch ends on its own, whatever the
    rule: diverged (in a fold, ``states``, or its score not finite), frozen by early stopping
    in every fold, or trained ``max_epochs``; None if it goes on.

    >>> natural_end(7, [0.1, 0.2], [MemberState.RUNNING], 2)
    TrialEnd(trial_id=7, state=<TrialState.COMPLETE: 'complete'>, note='trained 2 epochs', reason=<TrialEndReason.EPOCH_CAP: 'epoch_cap'>)
    >>> natural_end(7, [0.1, 0.2], [MemberState.RUNNING, MemberState.FROZEN], 3) is None
    True
    """
    epoch = len(curve) - 1
    if any(s is MemberState.DIVERGED for s in states) or not math.isfinite(curve[-1]):
        return TrialEnd(trial_id, TrialState.DIVERGED,
                        f"loss became NaN or infinite in epoch {epoch + 1}")
    if all(s is not MemberState.RUNNING for s in states):
        return TrialEnd(trial_id, TrialState.COMPLETE, f"early stopping after epoch {epoch + 1}",
                        TrialEndReason.EARLY_STOPPING)
    if epoch + 1 >= max_epochs:
        return TrialEnd(trial_id, TrialState.COMPLETE, f"trained {max_epochs} epochs")
    return None


class Judge:
    """The race's ``rule`` as one worker applies it, with the state it has learned and the
    race's finished curves: those of other workers read from ``storage`` (every
    :data:`REFRESH` seconds; none without a storage), this worker's own as they end
    (:meth:`ended`). ``budget`` is every network's epochs (``[race] max_epochs``), ``target``
    the race's target in metric units."""

    def __init__(self, rule: Rule, goal: Goal, budget: int, target: float | None = None,
                 storage: Storage | None = None, study_id: int | None = None) -> None:
        self.rule, self.goal, self.budget, self.target = rule, goal, budget, target
        self.storage, self.study_id = storage, study_id
        self.state = rule.initial_state()
        self.finished: dict[int, np.ndarray] = {}  # finished curves by trial id
        self._taught: set[int] = set()  # finished trials whose forecasts the rule has
        self._read_at = -math.inf

    def ended(self, trial_id: int, curve: Sequence[float]) -> None:
        """This worker's network ``trial_id`` ended with ``curve``: the rule sees it from the
        next judgement on (other workers' come with the next refresh), as the storage keeps
        it (non-finite values as NaN); its forecasts are the rule's own."""
        c = np.asarray(curve, dtype=float)
        self.finished[trial_id] = np.where(np.isfinite(c), c, np.nan)
        self._taught.add(trial_id)

    def verdicts(self, curves: Sequence[Sequence[float]]
                 ) -> list[tuple[Verdict, dict[str, Any]]]:
        """The rule's verdict on each of this worker's running networks, whose curves these
        are, and the prediction stored with it (metric units): the evaluations observed, the
        best value so far and, where the rule forecast, the forecast behind the verdict."""
        self._refresh()
        own = [np.asarray(c) for c in curves]
        # in trial order, not in the order they came: a refresh reads them by id, this
        # worker's own are added as they end, and the lc rule's learned gain is a float sum
        # over them, which depends on the order; a race with one worker would otherwise record
        # (and, with criterion = "improvement", decide) as its refreshes happened to fall
        rows = own + [self.finished[t] for t in sorted(self.finished)]
        width = max(len(r) for r in rows)
        values = np.full((len(rows), width), np.nan)
        for r, row in enumerate(rows):
            values[r, :len(row)] = row
        budget = np.full(len(rows), float(self.budget))
        running = np.zeros(len(rows), dtype=bool)
        running[:len(own)] = True
        verdicts, self.state = self.rule.decide(
            Curves(values, budget, running, self.goal, self.target), self.state)
        out = []
        for r, curve in enumerate(own):
            best = np.nanmax(curve) if self.goal is Goal.MAX else np.nanmin(curve)
            pred: dict[str, Any] = {"observed": len(curve), "best": _num(best)}
            v = verdicts[r]
            if v.forecast is not None:
                pred.update(v.forecast.in_metric_units(self.goal))
            out.append((v, pred))
        return out

    def _refresh(self) -> None:
        """The race's finished curves, read again now and then; and what other workers'
        rules forecast for them, for the rule to learn from."""
        now = time.monotonic()
        if self.storage is None or now - self._read_at <= REFRESH:
            return
        assert self.study_id is not None
        self.finished = self.storage.curves(self.study_id, FINISHED)
        self._read_at = now
        if self.rule.learns:
            new = [t for t, c in self.finished.items()
                   if len(c) >= self.budget and t not in self._taught]
            self._taught.update(new)
            self.state = teach(self.rule, self.state, self.finished,
                               self.storage.decisions_of(new), self.goal, self.budget)


def teach(rule: Rule, state: Any, curves: Mapping[int, np.ndarray],
          decisions: Mapping[int, list[DecisionRecord]], goal: Goal, budget: int) -> Any:
    """``state`` of ``rule`` taught the forecasts behind other workers' decisions (by the same
    kind of rule) on these finished ``curves`` (metric units, by trial id), so that the rule
    learns from them without forecasting them again."""
    s = 1.0 if goal is Goal.MAX else -1.0
    for tid, records in decisions.items():
        v = s * curves[tid]
        best = np.where(np.isnan(v), np.nan, np.fmax.accumulate(v))  # as Curves.running_best
        for d in records:
            pr = d.prediction or {}
            if d.rule == rule.name and "model_mean" in pr:
                state = rule.learn(state, budget, best[: pr["observed"]],
                                   FinalForecast.from_metric_units(pr, goal))
    return state


def stop_forecasts(decisions: Mapping[int, list[DecisionRecord]]) -> dict[int, float]:
    """The forecast of the final value behind each lc stop among these trials' decisions
    (metric units, by trial id; trials the lc rule did not stop are left out)."""
    out = {}
    for tid, records in decisions.items():
        for d in records:
            if d.action == "stop" and d.prediction and "mean" in d.prediction:
                out[tid] = float(d.prediction["mean"])
    return out


def _num(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None
