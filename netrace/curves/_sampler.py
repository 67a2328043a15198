"""The combined curve model and its posterior, sampled as one batched array computation.

Model (Domhan et al. 2015): y(x) = sum_k w_k f_k(x; theta_k) + eps, eps ~ N(0, sigma^2), with
w_k >= 0, every theta_k in its family's box, f_comb(x_first) <= f_comb(x_target) (the curve
improves), f_comb(x_target) within the metric's bounds when given, and a flat prior on
log sigma. One walker state is the vector [theta_1 .. theta_11, w_1 .. w_11, log sigma]
(48 numbers).

Sampler: the affine-invariant ensemble sampler of Goodman & Weare (2010) with the stretch move,
as emcee runs it (two halves of the ensemble updated in turn), written over arrays of shape
(curves, walkers, dims) so that every curve, walker and family advances in the same numpy
operations. Walkers start around the per-family least-squares fits. numpy rather than torch:
at these sizes (100 curves x 64 walkers x 16 bins) the cost is per-operation overhead, where
numpy's is smaller, and float64 keeps batch and single-curve results bitwise equal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from netrace.curves._families import FAMILIES
from netrace.curves._fit import N_BINS, Batch, fit_all

__all__ = ["SamplerSettings", "sample_predictive"]

_FAMS = list(FAMILIES.values())
_SIZES = [f.n_params for f in _FAMS]
_OFFS = np.cumsum([0] + _SIZES)
_N_THETA = int(_OFFS[-1])
_N_FAM = len(_FAMS)
DIM = _N_THETA + _N_FAM + 1
_LOWER = np.concatenate([np.array(f.lower) for f in _FAMS])
_UPPER = np.concatenate([np.array(f.upper) for f in _FAMS])
_LOG_SIGMA_MIN, _LOG_SIGMA_MAX = np.log(1e-4), np.log(10.0)


@dataclass(frozen=True)
class SamplerSettings:
    """Sizes of the ensemble run: walkers (even), steps in all, steps kept at the end."""

    walkers: int = 64
    steps: int = 240
    keep: int = 4
    stretch: float = 2.0


def _curve_values(state: np.ndarray, x: np.ndarray) -> np.ndarray:
    """f_comb at x (C, 1, m) for states (C, W, DIM) -> (C, W, m)."""
    total = 0.0
    for k, fam in enumerate(_FAMS):
        theta = state[..., _OFFS[k] : _OFFS[k + 1]]
        w = state[..., _N_THETA + k : _N_THETA + k + 1]
        total = total + w * fam.f(x, theta)
    return total


def _log_post(state: np.ndarray, batch: Batch, bounds_n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log posterior (C, W) and f_comb(x_target) (C, W) of states (C, W, DIM)."""
    with np.errstate(all="ignore"):
        vals = _curve_values(state, batch.x[:, None, :])
        fit, first, target = vals[..., :N_BINS], vals[..., N_BINS], vals[..., N_BINS + 1]
        log_sigma = state[..., -1]
        sse = (batch.n[:, None, :] * (fit - batch.y[:, None, :]) ** 2).sum(-1) + batch.ssw[:, None]
        ll = -batch.n_obs[:, None] * log_sigma - 0.5 * sse * np.exp(-2.0 * log_sigma)
        ok = (
            np.all(state[..., :_N_THETA] >= _LOWER, axis=-1)
            & np.all(state[..., :_N_THETA] <= _UPPER, axis=-1)
            & np.all(state[..., _N_THETA:-1] >= 0.0, axis=-1)
            & (log_sigma > _LOG_SIGMA_MIN)
            & (log_sigma < _LOG_SIGMA_MAX)
            & (first <= target)
            & (target >= bounds_n[:, 0:1])
            & (target <= bounds_n[:, 1:2])
            & np.isfinite(ll)
        )
    return np.where(ok, ll, -np.inf), np.where(ok, target, np.nan)


def _initial_state(batch: Batch, normals: np.ndarray) -> np.ndarray:
    """Walkers around the least-squares fits: (C, W, DIM)."""
    thetas, sse = fit_all(batch)
    center_theta = np.concatenate(thetas, axis=-1)  # (C, 36)
    span = _UPPER - _LOWER
    center_theta = np.clip(center_theta, _LOWER + 1e-6 * span.clip(max=1.0), _UPPER - 1e-6 * span.clip(max=1.0))
    rel = sse.min(-1, keepdims=True) / np.maximum(sse, 1e-300)
    weights = rel / rel.sum(-1, keepdims=True)
    n = batch.n_obs[:, None]
    sigma = np.sqrt((sse.min(-1, keepdims=True) + batch.ssw[:, None]) / n) + 1e-3
    center = np.concatenate([center_theta, weights, np.log(sigma)], axis=-1)  # (C, DIM)
    # a small ball: relative for the family parameters and weights, absolute for log sigma
    scale = np.concatenate([1e-2 * (np.abs(center_theta) + 1e-2), 0.1 * weights + 1e-3,
                            np.full_like(sigma, 0.1)], axis=-1)
    state = center[:, None, :] + scale[:, None, :] * normals
    state[..., _N_THETA:-1] = np.abs(state[..., _N_THETA:-1])
    state[..., :_N_THETA] = np.clip(state[..., :_N_THETA], _LOWER, _UPPER)
    return state, center


def sample_predictive(batch: Batch, bounds_n: np.ndarray, rngs: list[np.random.Generator],
                      settings: SamplerSettings) -> tuple[np.ndarray, np.ndarray]:
    """Posterior predictive draws of y_n(x_target): returns (draws (C, W*keep), sigma draws).

    ``rngs`` holds one generator per curve, so a curve's draws do not depend on its batch.
    """
    c, W, T = batch.size, settings.walkers, settings.steps
    half = W // 2
    a = settings.stretch
    # all randomness up front, curve by curve
    normals = np.stack([r.standard_normal((W, DIM)) for r in rngs])
    u_z = np.stack([r.random((T, 2, half)) for r in rngs])
    partner = np.stack([r.integers(0, half, (T, 2, half)) for r in rngs])
    log_u = np.log(np.stack([r.random((T, 2, half)) for r in rngs]))
    noise = np.stack([r.standard_normal(W * settings.keep) for r in rngs])

    state, center = _initial_state(batch, normals)
    logp, pred = _log_post(state, batch, bounds_n)
    # a walker that starts outside the prior's support restarts at the fit itself, when valid
    lp_c, pred_c = _log_post(center[:, None, :], batch, bounds_n)
    bad = ~np.isfinite(logp) & np.isfinite(lp_c)
    state = np.where(bad[..., None], center[:, None, :], state)
    logp = np.where(bad, lp_c, logp)
    pred = np.where(bad, pred_c, pred)

    z = ((a - 1.0) * u_z + 1.0) ** 2 / a  # g(z) ~ 1/sqrt(z) on [1/a, a]
    kept_pred, kept_sigma = [], []
    ci = np.arange(c)[:, None]
    for t in range(T):
        for s in range(2):
            act = slice(0, half) if s == 0 else slice(half, W)
            oth = slice(half, W) if s == 0 else slice(0, half)
            xk = state[:, act]
            xj = state[:, oth][ci, partner[:, t, s]]
            zz = z[:, t, s]
            prop = xj + zz[..., None] * (xk - xj)
            lp_new, pred_new = _log_post(prop, batch, bounds_n)
            with np.errstate(invalid="ignore"):
                log_ratio = (DIM - 1) * np.log(zz) + lp_new - logp[:, act]
            accept = log_u[:, t, s] < log_ratio
            state[:, act] = np.where(accept[..., None], prop, xk)
            logp[:, act] = np.where(accept, lp_new, logp[:, act])
            pred[:, act] = np.where(accept, pred_new, pred[:, act])
        if t >= T - settings.keep:
            kept_pred.append(pred.copy())
            kept_sigma.append(np.exp(state[..., -1]))
    f_target = np.concatenate(kept_pred, axis=-1)
    sigma = np.concatenate(kept_sigma, axis=-1)
    return f_target + sigma * noise, sigma
