"""Per-member losses over a shared batch: outputs (K, B, O) -> one loss per member (K,).

``qlike`` is QLIKE, ``y / f - log(y / f) - 1``, of a positive forecast ``f`` of a positive
target, with the network's output read as ``log f`` and the target given as ``log y`` (both
may be shifted by one constant, such as the mean log target: the loss is a function of
``y / f`` alone). Its expected value is smallest at ``f = E[y]``.

A member's loss is ``sum_b w[k, b] * l(out[k, b], y[b]) / B``: sample weights are bootstrap
counts (mean 1), so dividing by the batch size, not by ``sum(w)``, keeps the expected scale
of an unweighted mean and never divides by zero when a minibatch holds no sampled rows.
Summing the members' losses gives a scalar whose gradient for member k is member k's own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from netrace.errors import UserError, did_you_mean

__all__ = ["LOSSES", "check_loss", "member_losses", "sample_losses"]

LOSSES = {"regression": ("mse", "mae", "huber", "gaussian_nll", "qlike"), "binary": ("bce",),
          "multiclass": ("cross_entropy",)}
_ALIASES = {"bce_with_logits": "bce", "nll": "cross_entropy", "ce": "cross_entropy",
            "l2": "mse", "l1": "mae"}


def check_loss(task: str, loss: str | None) -> str:
    """The canonical loss name for ``task`` (its default when ``loss`` is None)."""
    allowed = LOSSES[task]
    if loss is None:
        return allowed[0]
    name = _ALIASES.get(loss, loss)
    if name not in allowed:
        raise UserError(f"loss {loss!r} does not fit a {task} task; allowed: "
                        f"{', '.join(allowed)}{did_you_mean(str(loss), allowed)}")
    return name


def sample_losses(out: Tensor, y: Tensor, loss: str, huber_delta: float = 1.0) -> Tensor:
    """Unreduced losses (K, B): ``out`` (K, B, O), ``y`` (B,) or (B, O) shared by members."""
    k, b, o = out.shape
    if loss == "cross_entropy":
        target = y.long().expand(k, b).reshape(k * b)
        return F.cross_entropy(out.reshape(k * b, o), target, reduction="none").view(k, b)
    if loss == "bce":
        return F.binary_cross_entropy_with_logits(out[..., 0], y.to(out.dtype).expand(k, b),
                                                  reduction="none")
    if loss == "gaussian_nll":
        # two outputs: the mean and the log of the variance; as torch's GaussianNLLLoss
        # (full=False) of the variance exp(out[..., 1]), with the same floor eps = 1e-6
        mean, var = out[..., 0], out[..., 1].exp().clamp_min(1e-6)
        return 0.5 * (var.log() + (mean - y.to(out.dtype).expand(k, b)) ** 2 / var)
    if loss == "qlike":
        # the output is the log of a positive forecast f and y the log of the target, both
        # less one constant (the loss depends on their difference only): QLIKE(y, f) =
        # y / f - log(y / f) - 1 with y / f = exp(d); expm1 keeps it exact near the minimum
        d = y.to(out.dtype).expand(k, b) - out[..., 0]
        return torch.expm1(d) - d
    target = (y.unsqueeze(-1) if y.dim() == 1 else y).to(out.dtype).expand_as(out)
    if loss == "mse":
        per = (out - target) ** 2
    elif loss == "mae":
        per = (out - target).abs()
    else:
        per = F.huber_loss(out, target, reduction="none", delta=huber_delta)
    return per.mean(dim=2)


def member_losses(out: Tensor, y: Tensor, weight: Tensor | None, loss: str,
                  huber_delta: float = 1.0) -> Tensor:
    """Each member's (weighted) mean loss over the batch, shape (K,)."""
    per = sample_losses(out, y, loss, huber_delta)
    if weight is None:
        return per.mean(dim=1)
    return (weight * per).sum(dim=1) / per.shape[1]
