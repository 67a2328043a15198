"""Amortized forecasts: a network that gives the ensemble sampler's predictive at once.

The sampler (``_sampler.py``) costs 1-2 ms of CPU per curve, about as much as several epochs
of a small network, so a race of small networks spent a large share of its time forecasting.
This network maps a curve, binned and normalized as ``prepare`` does it, to 32 quantiles of the
sampler's predictive draws (``PAPER`` calibration, normalized units) for the same curve:
inference amortized over curves, as LC-PFN does for learning curves (Adriaensen et al.,
NeurIPS 2023). ``bench/amortize.py`` trained it on the sampler's forecasts (never on how the
curves ended) for ~65,000 curves: running bests of AlgoPerf dev curves cut at the lc rule's
checkpoints, raw dev curves cut anywhere, and curves drawn from the model's prior; the 400
curves that BENCHMARKS.md scores were held out. Its weights ship in ``amortized.npz`` (0.6 MB).

Each curve is computed alone (matrix-vector products and elementwise functions of fixed
length), so its forecast does not depend on the batch it is in.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from netrace.curves._fit import N_BINS, Batch

__all__ = ["LEVELS", "amortized_draws", "amortized_quantiles", "features", "standardize"]

LEVELS = (np.arange(32) + 0.5) / 32
_WEIGHTS = Path(__file__).with_name("amortized.npz")


@functools.lru_cache(maxsize=1)
def _net() -> dict[str, np.ndarray]:
    with np.load(_WEIGHTS) as f:
        return {k: f[k].astype(np.float64) for k in f.files}


def features(batch: Batch) -> np.ndarray:
    """(C, 51): the binned normalized values and x positions (zero where a bin is empty), the
    bins in use, x_first, the horizon log(x_target / x_last) and log(points observed)."""
    mask = (batch.n > 0).astype(float)
    return np.concatenate([batch.y * mask, mask, batch.x[:, :N_BINS] * mask,
                           batch.x[:, N_BINS : N_BINS + 1], batch.h[:, None],
                           np.log(batch.n_obs)[:, None]], axis=1)


def standardize(f: np.ndarray, mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """Features in training units, clipped: a curve unlike any in training (a feature that
    hardly varied there) must not land far outside what the network has seen."""
    return np.clip((f - mu) / sd, -8.0, 8.0)


def amortized_quantiles(batch: Batch) -> np.ndarray:
    """(C, 32) predictive quantiles at ``LEVELS``, normalized units, increasing."""
    w = _net()
    z = standardize(features(batch), w["mu"], w["sd"])
    layers = sum(1 for k in w if k.startswith("w"))
    out = np.empty((batch.size, len(LEVELS)))
    with np.errstate(over="ignore"):  # exp(-h) = inf for a very negative h: SiLU gives -0
        for i, h in enumerate(z):  # one curve at a time: nothing depends on the batch
            for k in range(layers):
                h = w[f"w{k}"] @ h + w[f"b{k}"]
                if k < layers - 1:
                    h = h / (1.0 + np.exp(-h))  # SiLU
            out[i, 0] = h[0]
            out[i, 1:] = h[0] + np.cumsum(np.logaddexp(0.0, h[1:]))  # softplus steps: increasing
    return out


def amortized_draws(batch: Batch, rngs: list[np.random.Generator], n: int) -> np.ndarray:
    """(C, n) predictive draws in normalized units: the quantiles inverted at uniform draws
    from each curve's own generator (linear between levels and beyond the outer two)."""
    q = amortized_quantiles(batch)
    u = np.stack([r.random(n) for r in rngs])
    hi = np.clip(np.searchsorted(LEVELS, u), 1, len(LEVELS) - 1)
    frac = (u - LEVELS[hi - 1]) / (LEVELS[hi] - LEVELS[hi - 1])
    q_lo = np.take_along_axis(q, hi - 1, axis=1)
    return q_lo + frac * (np.take_along_axis(q, hi, axis=1) - q_lo)
