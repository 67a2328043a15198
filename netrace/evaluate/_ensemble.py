"""Combining finalists on out-of-fold validation forecasts: pure functions, arrays in and out.

Greedy ensemble selection with replacement (Caruana, Niculescu-Mizil, Crew & Ksikes 2004, as
auto-sklearn and AutoGluon use it): start from the best single model, then repeatedly add (again
if it helps most) the model whose addition most lowers the ensemble's validation loss; the
weights are how often each model was added.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from netrace.evaluate._stats import point_losses

__all__ = ["ensemble_loss", "greedy_weights", "out_of_fold"]


def ensemble_loss(task: str, y: np.ndarray, f: np.ndarray, loss: str | None = None) -> float:
    """Mean ``loss`` of a forecast: by default squared error (regression) or log-loss
    (classes: ``f`` is P(class 1), or (n, C) probabilities); ``"qlike"`` for a volatility
    (a forecast <= 0 is floored, as :func:`point_losses` does: an enormous loss). A loss that
    is not a number (NaN forecasts) gives ``inf``."""
    name = loss or ("mse" if task == "regression" else "log_loss")
    with np.errstate(all="ignore"):
        value = float(point_losses(name, y, f).mean())
    return value if np.isfinite(value) else np.inf


def greedy_weights(task: str, y: np.ndarray, forecasts: np.ndarray, rounds: int = 50,
                   loss: str | Sequence[str] | None = None, floor: int | None = None
                   ) -> np.ndarray:
    """Weights (summing to 1) of greedy ensemble selection with replacement over ``rounds``
    additions; ``forecasts`` has the models first ((m, n) or (m, n, C)); ``loss`` as in
    :func:`ensemble_loss`, or several losses, whose mean the selection lowers after dividing
    each by the smallest of it among the single models (so that each counts alike whatever
    its scale). Ties go to the earlier model, so with finalists in order of validation score
    the better one wins; a model whose forecast is not a number somewhere is never added.

    ``floor``, a model's index: the ensemble is never worse than that model on any of the
    losses (on these samples). Only additions that keep it so are made (the first may be the
    floor model itself, which always does), and the selection ends when none does: a gain on
    one loss is not bought with a loss on another beyond the floor's.

    >>> y = np.array([0.0, 1.0, 2.0, 3.0])
    >>> f = np.stack([y + 1, y - 1, y + 5])
    >>> greedy_weights("regression", y, f, rounds=4).round(2).tolist()
    [0.5, 0.5, 0.0]
    """
    f = np.asarray(forecasts, dtype=np.float64)
    m = f.shape[0]
    usable = np.array([np.isfinite(f[j]).all() for j in range(m)])
    if not usable.any():
        raise ValueError("no model has a finite forecast everywhere")
    names = [loss] if loss is None or isinstance(loss, str) else list(loss)
    scale = [min(ensemble_loss(task, y, f[j], name) for j in range(m) if usable[j])
             for name in names]

    def criterion(g: np.ndarray) -> float:
        return float(np.mean([ensemble_loss(task, y, g, name) / (s if 0 < s < np.inf else 1.0)
                              for name, s in zip(names, scale, strict=True)]))

    if floor is not None and not usable[floor]:
        raise ValueError(f"the floor model {floor} has no finite forecast everywhere")
    bound = None if floor is None else [ensemble_loss(task, y, f[floor], n) for n in names]

    def allowed(g: np.ndarray) -> bool:
        return bound is None or all(ensemble_loss(task, y, g, n) <= b
                                    for n, b in zip(names, bound, strict=True))

    counts = np.zeros(m, dtype=np.int64)
    total = np.zeros_like(f[0])
    for r in range(rounds):
        tried = [(total + f[j]) / (r + 1) if usable[j] else None for j in range(m)]
        losses = [criterion(g) if g is not None and allowed(g) else np.inf for g in tried]
        j = int(np.argmin(losses))
        if not np.isfinite(losses[j]):
            if floor is not None and r > 0:  # no addition keeps the floor: stop here
                break
            # every addition gives a loss that is not a number: keep the floor or the first
            j = floor if floor is not None else int(np.flatnonzero(usable)[0])
        counts[j] += 1
        total = total + f[j]
    return counts / counts.sum()


def out_of_fold(n: int, valid_parts: list[np.ndarray], fold_forecasts: list[np.ndarray]
                ) -> tuple[np.ndarray, np.ndarray]:
    """Assemble one model's validation forecasts of each fold into one forecast per
    development sample (the mean where validation parts overlap). Returns the samples that
    some fold validated (sorted) and their forecasts."""
    first = np.asarray(fold_forecasts[0])
    total = np.zeros((n, *first.shape[1:]))
    count = np.zeros(n)
    for idx, fc in zip(valid_parts, fold_forecasts, strict=True):
        total[idx] += fc
        count[idx] += 1
    seen = np.flatnonzero(count > 0)
    shape = (-1,) + (1,) * (total.ndim - 1)
    return seen, total[seen] / count[seen].reshape(shape)
