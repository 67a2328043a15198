"""Every member's validation metrics from a population's outputs (K, N, n_outputs), by task.

Regression: ``mse`` and ``mae`` of each member's forecast (its first output, or the mean of
its outputs; a Gaussian network's second output is its log variance, not a forecast), the
out-of-sample ``r2`` against a baseline forecast and ``qlike`` in the target's own units when
they can be had; binary and multiclass: ``log_loss``, ``accuracy`` and ``auc`` of the logits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from netrace.errors import UserError
from netrace.train import _metrics

__all__ = ["class_metrics", "regression_metrics"]


def regression_metrics(out: Tensor, y: Tensor, *, loss: str, dtype: torch.dtype,
                       device: torch.device, baseline: Tensor | None = None,
                       scale: tuple[Any, Any] | None = None,
                       forecast: Callable[[Tensor], Tensor] | None = None
                       ) -> dict[str, np.ndarray]:
    """``mse`` and ``mae``; ``r2`` against ``baseline`` (N,) when given; ``qlike`` when
    ``scale``, the (mean, std) of a standardized ``y``, is given. Of ``forecast(out)`` when
    given (forecasts (K, N) in ``y``'s units), else of the outputs themselves."""
    metrics: dict[str, np.ndarray] = {}
    # a Gaussian network's second output is its log variance, not a forecast
    if forecast is not None:
        pred = forecast(out)
    else:
        pred = out.mean(dim=2) if out.shape[2] > 1 and loss != "gaussian_nll" else out[..., 0]
    metrics["mse"] = _metrics.mse(pred, y if y.dim() == 1 else y.mean(dim=1))
    metrics["mae"] = _metrics.mae(pred, y if y.dim() == 1 else y.mean(dim=1))
    if baseline is not None:
        base = torch.as_tensor(baseline).to(device, dtype)
        if base.shape != y.shape:
            raise UserError(f"baseline must hold one forecast per row, shape "
                            f"{tuple(y.shape)}; got {tuple(base.shape)}")
        metrics["r2"] = _metrics.r2_oos(pred, y, base)
    if scale is not None:
        mu, sd = (v if np.ndim(v) == 0 else torch.as_tensor(
            v, dtype=torch.float64, device=device) for v in scale)
        metrics["qlike"] = _metrics.qlike(mu + sd * pred.double(),
                                          mu + sd * y.double().expand_as(pred))
    return metrics


def class_metrics(out: Tensor, y: Tensor, task: str) -> dict[str, np.ndarray]:
    """``log_loss``, ``accuracy`` and ``auc`` (one-vs-rest, macro, for multiclass) of a
    ``binary`` or ``multiclass`` population's logits."""
    logits = out[..., 0] if task == "binary" else out
    return {"log_loss": _metrics.log_loss(logits, y), "accuracy": _metrics.accuracy(logits, y),
            "auc": _metrics.auc(logits, y)}
