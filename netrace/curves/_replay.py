"""Replay: run a termination rule over recorded curves as if trained by asynchronous workers.

The simulation of ``../shared/data/learning-curves/README.md``: configurations (the curves,
values already oriented so that higher is better) arrive in a seeded random order; W workers
each train one configuration at a time, all advancing one evaluation per tick; after each
tick the rule decides, for every running configuration, whether to stop it, seeing only what
has been observed so far (and learning as it goes: each replay keeps the rule's state from one
decision to the next, starting from the rule's initial state); a freed worker starts the next
configuration on the next tick.
cost = evaluations consumed; found = the best value observed at any evaluation;
regret = best value of all points - found.

>>> import numpy as np
>>> from netrace.curves import NoRule
>>> curves = [np.linspace(0.1, 0.9, 30), np.full(30, 0.1), np.linspace(0.1, 0.5, 30)]
>>> r = simulate(curves, NoRule(), workers=2, seed=0)
>>> (r.cost, r.total, r.regret)
(90, 90, 0.0)
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from netrace.curves._forecast import CALIBRATED, PAPER, Forecast, extrapolate_many
from netrace.curves._rules import Curves, LCRule, Rule, checkpoints
from netrace.errors import UserError

__all__ = ["ReplayResult", "lc_with_precomputed_forecasts", "replay_many", "simulate"]


@dataclass(frozen=True)
class ReplayResult:
    """One replay: evaluations consumed, evaluations to train all fully, best found, best of all."""

    cost: int
    total: int
    found: float
    best: float

    @property
    def speedup(self) -> float:
        return self.total / self.cost

    @property
    def regret(self) -> float:
        return self.best - self.found


def simulate(curves: Sequence[np.ndarray], rule: Rule, *, workers: int = 4, seed: int = 0) -> ReplayResult:
    """Replay ``rule`` over ``curves`` (1-D arrays, higher is better) with ``workers`` workers."""
    if workers < 1:
        raise UserError(f"workers must be at least 1; got {workers}.")
    if len(curves) == 0:
        raise UserError("no curves to replay: the input holds no curve.")
    ys = [np.asarray(y, dtype=float) for y in curves]
    lengths = np.array([len(y) for y in ys])
    values = np.full((len(ys), int(lengths.max())), np.nan)
    order = np.random.default_rng(seed).permutation(len(ys))
    queue = deque(int(i) for i in order)
    progress = np.zeros(len(ys), dtype=int)
    running: list[int] = []
    started: list[int] = []
    cost = 0
    state = rule.initial_state()
    while queue or running:
        while len(running) < workers and queue:
            c = queue.popleft()
            running.append(c)
            started.append(c)
        for c in running:
            values[c, progress[c]] = ys[c][progress[c]]
            progress[c] += 1
        cost += len(running)
        running = [c for c in running if progress[c] < lengths[c]]
        if not running:
            continue
        idx = np.array(started)
        mask = np.isin(idx, running)
        verdicts, state = rule.decide(Curves(values[idx], budget=lengths[idx], running=mask),
                                      state)
        stopped = {int(c) for c, v in zip(idx, verdicts) if v.stop}
        running = [c for c in running if c not in stopped]
    found = float(np.nanmax(values))
    best = float(max(np.nanmax(y) for y in ys))
    return ReplayResult(cost=cost, total=int(lengths.sum()), found=found, best=best)


def lc_with_precomputed_forecasts(curves: Sequence[np.ndarray], rule: LCRule, *, seed: int = 0,
                                  chunk: int = 256) -> LCRule:
    """``rule`` with every forecast it can ask for over ``curves`` computed up front, batched.

    A curve's forecast depends only on its own observed prefix (never on the arrival order or
    the batch), so the decisions equal those of the plain rule; replay then costs one batched
    sampler run per chunk instead of one per tick.
    """
    cals = (rule.calibration or CALIBRATED, PAPER)
    xs, ys, xt = [], [], []
    for y in curves:
        best = np.maximum.accumulate(np.asarray(y, dtype=float))
        for n in checkpoints(rule.min_observed, rule.growth, len(best)):
            xs.append(np.arange(1.0, n + 1))
            ys.append(best[:n])
            xt.append(float(len(best)))
    cache: dict[tuple[float, bytes], tuple[np.ndarray, np.ndarray]] = {}

    def fill(xs_: list, ys_: list, x_target: np.ndarray) -> None:
        fs = extrapolate_many(xs_, ys_, x_target, cals, seed=seed, method=rule.method,
                              bounds=rule.bounds)
        for y, t, a, b in zip(ys_, x_target, fs[0].samples, fs[1].samples):
            cache[(float(t), np.asarray(y, dtype=float).tobytes())] = (a, b)

    for i in range(0, len(xs), chunk):
        fill(xs[i : i + chunk], ys[i : i + chunk], np.array(xt[i : i + chunk]))

    def forecast(xs_: list, ys_: list, x_target: np.ndarray) -> tuple[Forecast, Forecast]:
        keys = [(float(t), np.asarray(y, dtype=float).tobytes()) for y, t in zip(ys_, x_target)]
        missing = [i for i, k in enumerate(keys) if k not in cache]
        if missing:
            fill([xs_[i] for i in missing], [ys_[i] for i in missing], np.asarray(x_target)[missing])
        return tuple(Forecast(np.stack([cache[k][m] for k in keys])) for m in (0, 1))

    return dataclasses.replace(rule, forecast=forecast)


def replay_many(curves: Sequence[np.ndarray], rule: Rule, *, workers: int = 4, seed: int = 0,
                orders: int = 5) -> list[ReplayResult]:
    """``simulate`` over ``orders`` seeded arrival orders (seeds seed, seed+1, ...)."""
    if isinstance(rule, LCRule) and rule.forecast is None:
        rule = lc_with_precomputed_forecasts(curves, rule)
    return [simulate(curves, rule, workers=workers, seed=seed + k) for k in range(orders)]
