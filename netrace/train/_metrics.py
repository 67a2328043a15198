"""Validation metrics of all members at once: predictions (K, N[, C]) -> one value per member.

Pure functions of tensors: no state, no I/O. Binary and multiclass outputs are logits.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from torch import Tensor

__all__ = ["accuracy", "auc", "log_loss", "mae", "mse", "qlike", "r2_oos"]


def _np(t: Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()


def mse(pred: Tensor, y: Tensor) -> np.ndarray:
    """Mean squared error per member; ``pred`` (K, N), ``y`` (N,)."""
    return _np(((pred - y) ** 2).mean(dim=1))


def mae(pred: Tensor, y: Tensor) -> np.ndarray:
    """Mean absolute error per member."""
    return _np((pred - y).abs().mean(dim=1))


def r2_oos(pred: Tensor, y: Tensor, baseline: Tensor) -> np.ndarray:
    """Out-of-sample R^2 against a baseline forecast: ``1 - SSE(pred) / SSE(baseline)``.

    Positive when a member beats the baseline (e.g. the historical mean, or a random walk);
    NaN when the baseline is perfect.
    """
    sse = ((pred - y) ** 2).sum(dim=1)
    sse_base = ((baseline - y) ** 2).sum()
    return _np(1 - sse / sse_base) if sse_base > 0 else np.full(pred.shape[0], np.nan)


def qlike(pred: Tensor, y: Tensor) -> np.ndarray:
    """Patton's (2011) QLIKE of volatility forecasts per member, in the target's own units:
    with the variance proxy s = y^2 and the forecast variance v = pred^2,
    mean(s / v - log(s / v) - 1). Both are floored at 1e-12 times the mean of s (a forecast at
    or below zero gets a large finite loss), as ``netrace.evaluate`` scores the test part."""
    p, t = pred.to(torch.float64), y.to(torch.float64)
    s = t ** 2
    floor = 1e-12 * float(s.mean()) if float(s.mean()) > 0 else 1e-300
    v = (p ** 2).clamp_min(floor)
    ratio = s / v
    return _np((ratio - torch.log(s.clamp_min(floor) / v) - 1).mean(dim=1))


def accuracy(logits: Tensor, y: Tensor) -> np.ndarray:
    """Share of correct labels: binary ``logits`` (K, N) (> 0 means class 1) or multiclass
    (K, N, C) (argmax)."""
    label = logits.argmax(dim=2) if logits.dim() == 3 else (logits > 0).long()
    return _np((label == y.long()).to(torch.float64).mean(dim=1))


def log_loss(logits: Tensor, y: Tensor) -> np.ndarray:
    """Mean negative log-likelihood per member, from logits (binary (K, N), multiclass
    (K, N, C)); computed from logits, so it stays finite where clipped probabilities would not."""
    if logits.dim() == 3:
        k, n, c = logits.shape
        nll = F.cross_entropy(logits.reshape(k * n, c), y.long().repeat(k), reduction="none")
        return _np(nll.view(k, n).mean(dim=1))
    y2 = y.to(logits.dtype).expand_as(logits)
    return _np(F.binary_cross_entropy_with_logits(logits, y2, reduction="none").mean(dim=1))


def auc(scores: Tensor, y: Tensor) -> np.ndarray:
    """Area under the ROC curve per member (ties count one half, via mid-ranks).

    Binary: ``scores`` (K, N) logits, NaN when the labels hold one class only. Multiclass:
    ``scores`` (K, N, C) logits, the one-vs-rest AUC of each class's softmax probability,
    averaged over the classes present with both positives and negatives (scikit-learn's
    ``roc_auc_score(multi_class="ovr", average="macro")`` when every class is present).
    """
    if scores.dim() == 3:
        proba = torch.softmax(scores.to(torch.float64), dim=2)
        labels = y.long()
        per_class = [_binary_auc(_np(proba[..., c]), _np(labels == c) > 0.5)
                     for c in range(scores.shape[2])]
        present = [a for a in per_class if not np.isnan(a).all()]
        if not present:
            return np.full(scores.shape[0], np.nan)
        return np.mean(present, axis=0)
    return _binary_auc(_np(scores), _np(y) > 0.5)


def _binary_auc(s: np.ndarray, labels: np.ndarray) -> np.ndarray:
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return np.full(s.shape[0], np.nan)
    ranks = rankdata(s, axis=1)
    return (ranks[:, labels].sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
