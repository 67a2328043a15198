"""The combined curve model and its posterior, sampled as one batched array computation.

Model (Domhan et al. 2015): y(x) = sum_k w_k f_k(x; theta_k) + eps, eps ~ N(0, sigma^2), with
w_k >= 0, every theta_k in its family's box, f_comb(x_first) <= f_comb(x_target) (the curve
improves), f_comb(x_target) within the metric's bounds when given, and a flat prior on
log sigma. The weights enter normalized (w / sum w, a weighted average of the families: the
overall scale of the weights is otherwise traded against the families' own scale parameters,
which lets the extrapolation drift upwards through prior volume); a weak N(1, 0.1^2) prior
on sum w pins that free direction. One walker state is the vector
[theta_1 .. theta_11, w_1 .. w_11, log sigma] (48 numbers).

Sampler: the affine-invariant ensemble sampler of Goodman & Weare (2010) with the stretch move,
as emcee runs it (two halves of the ensemble updated in turn), written over arrays of shape
(curves, walkers, dims) so that every curve, walker and family advances in the same tensor
operations. Walkers start around the per-family least-squares fits, spread by each fit's
Laplace covariance. torch (CPU, one thread, float32; the fits run in float64) rather than
numpy: the cost is exp/log over (curves, walkers, bins) arrays, where torch is several times
faster than numpy here; randomness comes from per-curve numpy generators so that a curve's
draws do not depend on the batch it is in.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from netrace.curves._families import FAMILIES
from netrace.curves._fit import Batch, fit_all

__all__ = ["SamplerSettings", "sample_predictive"]

_FAMS = list(FAMILIES.values())
_SIZES = [f.n_params for f in _FAMS]
_OFFS = np.cumsum([0] + _SIZES).tolist()
_N_THETA = _OFFS[-1]
_N_FAM = len(_FAMS)
DIM = _N_THETA + _N_FAM + 1
_DTYPE = torch.float32  # the sampler's arithmetic; the least-squares fits run in float64
_LOWER = torch.tensor([v for f in _FAMS for v in f.lower], dtype=_DTYPE)
_UPPER = torch.tensor([v for f in _FAMS for v in f.upper], dtype=_DTYPE)
_LOG_SIGMA_MIN, _LOG_SIGMA_MAX = float(np.log(1e-4)), float(np.log(10.0))


@dataclass(frozen=True)
class SamplerSettings:
    """Sizes of the ensemble run: walkers (even, more than the 48 dimensions so the ensemble
    spans the space), steps in all, and steps kept at the end (draws = walkers * keep)."""

    walkers: int = 52
    steps: int = 20
    keep: int = 6
    stretch: float = 2.0
    # torch threads while sampling: one, since netrace runs one worker process per core and
    # torch's thread pool slows down many-fold when the cores are already busy
    threads: int = 1


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@dataclass(frozen=True)
class _Data:
    x: Tensor  # (C, 1, B + 2)
    lx: Tensor
    y: Tensor  # (C, 1, B)
    n: Tensor
    ssw: Tensor  # (C, 1)
    n_obs: Tensor
    lo: Tensor  # (C, 1) metric bounds in normalized units
    hi: Tensor


def _t(a: np.ndarray) -> Tensor:
    return torch.as_tensor(np.ascontiguousarray(a), dtype=_DTYPE)


def _curve_values(state: Tensor, d: _Data) -> Tensor:
    """f_comb at every x of the data for states (C, W, DIM) -> (C, W, B + 2)."""
    cols = state.unsqueeze(-1).unbind(-2)  # DIM views (C, W, 1), in one call
    total = torch.zeros(())
    for k, fam in enumerate(_FAMS):
        total = total + cols[_N_THETA + k] * fam.f(d.x, d.lx, cols[_OFFS[k] : _OFFS[k + 1]])
    # the weights enter normalized (a weighted average of the families)
    return total / state[..., _N_THETA:-1].sum(-1, keepdim=True)


def _log_post(state: Tensor, d: _Data) -> tuple[Tensor, Tensor]:
    """Log posterior (C, W) and f_comb(x_target) (C, W) of states (C, W, DIM)."""
    vals = _curve_values(state, d)
    fit, first, target = vals[..., :-2], vals[..., -2], vals[..., -1]
    log_sigma = state[..., -1]
    sse = (d.n * (fit - d.y) ** 2).sum(-1) + d.ssw
    ll = -d.n_obs * log_sigma - 0.5 * sse * torch.exp(-2.0 * log_sigma)
    # weights enter normalized (a weighted average of the families); this weak prior pins
    # their otherwise free overall scale
    ll = ll - 0.5 * ((state[..., _N_THETA:-1].sum(-1) - 1.0) / 0.1) ** 2
    ok = (
        # (amin over the last axis is several times faster than a boolean all; NaN fails it too)
        ((state[..., :_N_THETA] - _LOWER).amin(-1) >= 0.0)
        & ((_UPPER - state[..., :_N_THETA]).amin(-1) >= 0.0)
        & (state[..., _N_THETA:-1].amin(-1) >= 0.0)
        & (log_sigma > _LOG_SIGMA_MIN)
        & (log_sigma < _LOG_SIGMA_MAX)
        & (first <= target)
        & (target >= d.lo)
        & (target <= d.hi)
        & torch.isfinite(ll)
    )
    return torch.where(ok, ll, -torch.inf), torch.where(ok, target, torch.nan)


def _initial_state(batch: Batch, normals: Tensor) -> tuple[Tensor, Tensor]:
    """Walkers around the least-squares fits: (C, W, DIM), and the centre (C, DIM)."""
    thetas, sse, chols = fit_all(batch)
    thetas = [t.to(_DTYPE) for t in thetas]
    sse = sse.to(_DTYPE)
    chols = [c.to(_DTYPE) for c in chols]
    span = (_UPPER - _LOWER).clamp(max=1.0)
    center_theta = torch.clamp(torch.cat(thetas, dim=-1), _LOWER + 1e-6 * span, _UPPER - 1e-6 * span)
    rel = sse.min(-1, keepdim=True).values / sse.clamp(min=1e-300)
    weights = rel / rel.sum(-1, keepdim=True)
    n = _t(batch.n_obs)[:, None]
    ssw = _t(batch.ssw)[:, None]
    sigma = torch.sqrt((sse.min(-1, keepdim=True).values + ssw) / n) + 1e-3
    center = torch.cat([center_theta, weights, torch.log(sigma)], dim=-1)
    # family parameters spread by their Laplace covariance (capped), weights and log sigma by a
    # small relative ball
    spread = []
    for k, chol in enumerate(chols):
        e = normals[..., _OFFS[k] : _OFFS[k + 1]]
        d = (chol[:, None, :, :] @ e[..., None])[..., 0]
        cap = 0.2 * (thetas[k].abs() + 0.1)[:, None, :]
        spread.append(torch.clamp(d, -cap, cap))
    rest = torch.cat([0.3 * weights + 1e-3, torch.full_like(sigma, 0.1)], dim=-1)
    state = center[:, None, :] + torch.cat([torch.cat(spread, dim=-1),
                                            rest[:, None, :] * normals[..., _N_THETA:]], dim=-1)
    state[..., _N_THETA:-1] = state[..., _N_THETA:-1].abs()
    state[..., :_N_THETA] = torch.clamp(state[..., :_N_THETA], _LOWER, _UPPER)
    return state, center


def sample_predictive(batch: Batch, bounds_n: np.ndarray, rngs: list[np.random.Generator],
                      settings: SamplerSettings) -> tuple[np.ndarray, np.ndarray]:
    """Posterior predictive draws of y_n(x_target): (draws (C, W*keep), sigma draws (C, W*keep)).

    ``rngs`` holds one generator per curve, so a curve's draws do not depend on its batch.
    """
    with _torch_threads(settings.threads):
        return _sample_predictive(batch, bounds_n, rngs, settings)


def _sample_predictive(batch: Batch, bounds_n: np.ndarray, rngs: list[np.random.Generator],
                       settings: SamplerSettings) -> tuple[np.ndarray, np.ndarray]:
    """Posterior predictive draws of y_n(x_target): (draws (C, W*keep), sigma draws (C, W*keep)).

    ``rngs`` holds one generator per curve, so a curve's draws do not depend on its batch.
    """
    c, W, T = batch.size, settings.walkers, settings.steps
    half = W // 2
    a = settings.stretch
    # all randomness up front, curve by curve, from numpy generators
    normals = _t(np.stack([r.standard_normal((W, DIM)) for r in rngs]))
    u_z = np.stack([r.random((T, 2, half)) for r in rngs])
    partner = torch.from_numpy(np.stack([r.integers(0, half, (T, 2, half)) for r in rngs]))
    log_u = _t(np.log(np.stack([r.random((T, 2, half)) for r in rngs])))
    noise = np.stack([r.standard_normal(W * settings.keep) for r in rngs])
    z = _t(((a - 1.0) * u_z + 1.0) ** 2 / a)  # g(z) ~ 1/sqrt(z) on [1/a, a]

    x = _t(batch.x)[:, None, :]
    d = _Data(x=x, lx=torch.log(x), y=_t(batch.y)[:, None, :], n=_t(batch.n)[:, None, :],
              ssw=_t(batch.ssw)[:, None], n_obs=_t(batch.n_obs)[:, None],
              lo=_t(bounds_n[:, :1]), hi=_t(bounds_n[:, 1:]))
    state, center = _initial_state(batch, normals)
    logp, pred = _log_post(state, d)
    # a walker that starts outside the prior's support moves halfway to the fit, repeatedly
    # (not onto it: identical walkers could never separate again)
    for _ in range(12):
        bad = ~torch.isfinite(logp)
        if not bool(bad.any()):
            break
        state = torch.where(bad[..., None], 0.5 * (state + center[:, None, :]), state)
        lp2, pred2 = _log_post(state, d)
        logp = torch.where(bad, lp2, logp)
        pred = torch.where(bad, pred2, pred)

    kept_pred, kept_sigma = [], []
    # partner j of walker k, as a row of state viewed (C * W, DIM): one index_select a move
    rows = (partner.permute(1, 2, 0, 3) + torch.arange(c)[:, None] * W
            + torch.tensor([half, 0])[None, :, None, None]).reshape(T, 2, c * half).contiguous()
    for t in range(T):
        for s in range(2):
            act = slice(0, half) if s == 0 else slice(half, W)
            xk = state[:, act]
            xj = state.view(c * W, DIM).index_select(0, rows[t, s]).view(c, half, DIM)
            zz = z[:, t, s]
            prop = xj + zz[..., None] * (xk - xj)
            lp_new, pred_new = _log_post(prop, d)
            log_ratio = (DIM - 1) * torch.log(zz) + lp_new - logp[:, act]
            accept = log_u[:, t, s] < log_ratio
            state[:, act] = torch.where(accept[..., None], prop, xk)
            logp[:, act] = torch.where(accept, lp_new, logp[:, act])
            pred[:, act] = torch.where(accept, pred_new, pred[:, act])
        if t >= T - settings.keep:
            kept_pred.append(pred.clone())
            kept_sigma.append(torch.exp(state[..., -1]))
    f_target = torch.cat(kept_pred, dim=-1).double().numpy()
    sigma = torch.cat(kept_sigma, dim=-1).double().numpy()
    return f_target + sigma * noise, sigma
