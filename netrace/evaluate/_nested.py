"""Nested choices: which networks, trained how long, would validation have chosen for one
fold's validation block without looking at that block? Pure functions, arrays in and out.

The race ranks networks by their score averaged over every fold, and each fold network keeps
the weights of the epoch at which that average peaked, so a finalist's out-of-fold forecast
of fold ``j`` was chosen partly on fold ``j``: an optimistic forecast to weigh candidates on
(the regime trap: networks that look ahead of HAR on validation and are not). Here each fold
gets its own choice from the *other* folds' curves only (the race stores every epoch's score
per fold): the networks with the best mean over the other folds, each trained for the number
of epochs at which that mean peaked. Networks trained by that choice on the fold's training
part give the fold's *nested* validation forecasts, honest out-of-sample forecasts like the
classical baselines' (which fit on the past only).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["FoldChoice", "fold_table", "choose_without"]


@dataclass(frozen=True)
class FoldChoice:
    """For validation fold ``fold`` (counted from 0): the networks chosen on the other folds,
    best first, and the epochs (counted from 1) each trains."""

    fold: int
    trials: tuple[int, ...]
    epochs: tuple[int, ...]
    scores: tuple[float, ...]


def fold_table(metrics: Sequence[Mapping[str, float]], n_folds: int, key: str = "fold"
               ) -> np.ndarray | None:
    """A trial's scores per epoch and fold, ``(epochs, n_folds)``, from its recorded epochs'
    metrics (``fold1`` .. ``fold<n>``); ``None`` when some epoch lacks them (a race recorded
    before netrace kept per-fold scores).

    >>> fold_table([{"fold1": 0.1, "fold2": 0.3}, {"fold1": 0.2, "fold2": 0.4}], 2).tolist()
    [[0.1, 0.3], [0.2, 0.4]]
    >>> fold_table([{"mse": 0.1}], 2) is None
    True
    """
    if not metrics:
        return None
    rows = []
    for m in metrics:
        row = [m.get(f"{key}{j + 1}") for j in range(n_folds)]
        if any(v is None for v in row):
            return None
        rows.append([math.nan if v is None else float(v) for v in row])
    return np.asarray(rows, dtype=np.float64)


def choose_without(tables: Mapping[int, np.ndarray], fold: int, n: int, *, maximize: bool
                   ) -> FoldChoice:
    """The ``n`` trials with the best peak of their mean score over every fold but ``fold``,
    and the epoch count at that peak. An epoch whose score is not a number on some other fold
    cannot be a peak; a trial with no such epoch is left out. Ties go to the smaller id.

    >>> t = {1: np.array([[0.5, 0.1], [0.6, 0.2]]), 2: np.array([[0.1, 0.3], [0.0, 0.9]])}
    >>> c = choose_without(t, 0, 1, maximize=True)   # fold 0 ignored: trial 2 peaks at 0.9
    >>> c.trials, c.epochs
    ((2,), (2,))
    >>> choose_without(t, 1, 2, maximize=True).trials   # on fold 0 alone trial 1 leads
    (1, 2)
    """
    ranked = []
    for trial, table in tables.items():
        if table.ndim != 2 or not 0 <= fold < table.shape[1] or table.shape[1] < 2:
            raise ValueError(f"trial {trial}: a table of shape {table.shape} has no fold {fold} "
                             "and another to choose on")
        others = np.delete(table, fold, axis=1)
        mean = others.mean(axis=1)  # NaN on any fold: not a candidate epoch
        if not np.isfinite(mean).any():
            continue
        filled = np.where(np.isfinite(mean), mean, -np.inf if maximize else np.inf)
        epoch = int(np.argmax(filled) if maximize else np.argmin(filled))
        ranked.append((-filled[epoch] if maximize else filled[epoch], trial, epoch + 1))
    ranked.sort()
    top = ranked[:n]
    return FoldChoice(fold, tuple(t for _, t, _ in top), tuple(e for _, _, e in top),
                      tuple(float(-v if maximize else v) for v, _, _ in top))
