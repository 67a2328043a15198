"""Batched data preparation and least-squares fits of every family to every curve.

All curves of a batch become fixed-size arrays: x and y are normalized per curve and the
observed points are grouped into at most ``N_BINS`` contiguous bins (geometric in the index) (the Gaussian likelihood only
needs each bin's count, mean and within-bin sum of squares, so the cost per likelihood
evaluation no longer depends on the curve's length and curves of any lengths batch together).
Everything here is pure array math; nothing depends on the other curves of the batch, so a
curve's result is the same alone or in a batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from netrace.curves._families import FAMILIES, Family

__all__ = ["N_BINS", "Batch", "fit_all", "fit_family", "prepare"]

N_BINS = 16
_LM_ITERS = 30
_BAD = 1e3  # residual given to points where a family is undefined (NaN)


@dataclass(frozen=True)
class Batch:
    """A batch of curves in normalized units, binned.

    x: (C, N_BINS + 2) bin mean x, then the first observed x, then the target x.
    y: (C, N_BINS) bin mean y; n: (C, N_BINS) bin counts (0 for padding);
    ssw: (C,) within-bin sum of squares; n_obs: (C,) number of points;
    x_scale, y_offset, y_scale: (C,) the maps back to user units (x = x_n * x_scale,
    y = y_offset + y_n * y_scale); h: (C,) log(x_target / x_last), the extrapolation horizon.
    """

    x: np.ndarray
    y: np.ndarray
    n: np.ndarray
    ssw: np.ndarray
    n_obs: np.ndarray
    x_scale: np.ndarray
    y_offset: np.ndarray
    y_scale: np.ndarray
    h: np.ndarray

    @property
    def size(self) -> int:
        return self.y.shape[0]


def _bin_edges(n: int) -> np.ndarray:
    """Edges of up to N_BINS contiguous bins over n points, geometric in the index.

    Early points (where curves are steep) stay alone; late, flat stretches share a bin.
    """
    if n <= N_BINS:
        return np.arange(n + 1)
    best = np.array([0, n])
    for k in range(N_BINS + 1, 8 * N_BINS):
        e = np.unique(np.round(np.geomspace(1, n + 1, k)).astype(int)) - 1
        if len(e) > N_BINS + 1:
            break
        best = e
    return best


def prepare(xs: list[np.ndarray], ys: list[np.ndarray], x_target: np.ndarray) -> Batch:
    """Normalize and bin validated curves (x > 0 increasing, finite, x_target > x[-1])."""
    c = len(xs)
    X = np.ones((c, N_BINS + 2))
    Y = np.zeros((c, N_BINS))
    Nb = np.zeros((c, N_BINS))
    ssw = np.zeros(c)
    n_obs = np.zeros(c)
    x_scale = np.zeros(c)
    y_off = np.zeros(c)
    y_scale = np.zeros(c)
    for i, (x, y) in enumerate(zip(xs, ys)):
        x_scale[i] = x[-1]
        xn = x / x[-1]
        lo, hi = float(y.min()), float(y.max())
        s = max(hi - lo, 1e-3 * max(1.0, abs(hi)), 1e-12)
        off = lo - 0.25 * s
        yn = (y - off) / s
        y_off[i], y_scale[i] = off, s
        groups = np.split(np.arange(len(x)), _bin_edges(len(x))[1:-1])
        for b, g in enumerate(groups):
            X[i, b] = xn[g].mean()
            Y[i, b] = yn[g].mean()
            Nb[i, b] = len(g)
            ssw[i] += float(((yn[g] - Y[i, b]) ** 2).sum())
        X[i, N_BINS] = xn[0]
        X[i, N_BINS + 1] = x_target[i] / x[-1]
        n_obs[i] = len(x)
    h = np.log(X[:, N_BINS + 1])
    return Batch(X, Y, Nb, ssw, n_obs, x_scale, y_off, y_scale, h)


def _residuals(fam: Family, x: Tensor, lx: Tensor, y: Tensor, w: Tensor, theta: Tensor) -> Tensor:
    r = (fam.f(x, lx, theta) - y) * w
    return torch.where(torch.isfinite(r), r, _BAD * w)


def _jacobian(fam: Family, x: Tensor, lx: Tensor, y: Tensor, w: Tensor, theta: Tensor,
              r: Tensor) -> Tensor:
    """Forward-difference Jacobian (B, m, p) of the residuals, all p directions in one call."""
    p = theta.shape[-1]
    step = 1e-6 * (1.0 + theta.abs())  # (B, p)
    eye = torch.eye(p, dtype=theta.dtype)
    shifted = theta[None] + eye[:, None, :] * step.T[:, :, None]  # (p, B, p): j shifts parameter j
    rj = _residuals(fam, x[None], lx[None], y[None], w[None], shifted)  # (p, B, m)
    return ((rj - r[None]) / step.T[:, :, None]).permute(1, 2, 0)


def fit_family(fam: Family, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
    """Levenberg-Marquardt fit of one family to every curve, from each of its starts.

    Returns theta (C, p), sse (C,) of the best start per curve, and the Cholesky factor (C, p, p)
    of its Laplace covariance (Gauss-Newton, residual variance from the fit). Fixed iteration count and
    per-curve damping, so a curve's fit does not depend on the rest of the batch.
    """
    c, s, p = batch.size, len(fam.starts), fam.n_params
    x = torch.from_numpy(np.repeat(batch.x[:, :N_BINS], s, axis=0))
    lx = torch.log(x)
    y = torch.from_numpy(np.repeat(batch.y, s, axis=0))
    w = torch.from_numpy(np.sqrt(np.repeat(batch.n, s, axis=0)))
    lower = torch.tensor(fam.lower, dtype=torch.float64)
    upper = torch.tensor(fam.upper, dtype=torch.float64)
    theta = torch.tensor(fam.starts, dtype=torch.float64).repeat(c, 1)
    lam = torch.full((c * s,), 1e-2, dtype=torch.float64)
    r = _residuals(fam, x, lx, y, w, theta)
    sse = (r**2).sum(-1)
    eye = torch.eye(p, dtype=torch.float64)
    for _ in range(_LM_ITERS):
        J = _jacobian(fam, x, lx, y, w, theta, r)
        JtJ = J.transpose(1, 2) @ J
        g = (J.transpose(1, 2) @ r[..., None])[..., 0]
        diag = torch.diagonal(JtJ, dim1=1, dim2=2)
        A = JtJ + lam[:, None, None] * (diag[:, :, None] * eye + 1e-9 * eye)
        delta, info = torch.linalg.solve_ex(A, -g)
        delta = torch.where(torch.isfinite(delta) & (info == 0)[:, None], delta, 0.0)
        cand = torch.clamp(theta + delta, lower, upper)
        rc = _residuals(fam, x, lx, y, w, cand)
        sc = (rc**2).sum(-1)
        better = sc < sse
        theta = torch.where(better[:, None], cand, theta)
        r = torch.where(better[:, None], rc, r)
        sse = torch.where(better, sc, sse)
        lam = torch.where(better, lam * 0.3, lam * 10.0).clamp(1e-9, 1e9)
    sse = sse.reshape(c, s)
    best = sse.argmin(-1)
    idx = torch.arange(c)
    theta = theta.reshape(c, s, p)[idx, best]
    sse = sse[idx, best]
    # Laplace approximation at the fit: a covariance to spread the sampler's walkers with
    x, lx, y, w = (v.reshape(c, s, -1)[idx, best] for v in (x, lx, y, w))
    r = _residuals(fam, x, lx, y, w, theta)
    J = _jacobian(fam, x, lx, y, w, theta, r)
    JtJ = J.transpose(1, 2) @ J
    resid_var = (sse + torch.from_numpy(batch.ssw)) / torch.from_numpy(batch.n_obs - p).clamp(min=1.0)
    scale = torch.diagonal(JtJ, dim1=1, dim2=2).clamp(min=1e-12).sqrt()
    corr = JtJ / (scale[:, :, None] * scale[:, None, :]) + 1e-6 * eye
    chol, info = torch.linalg.cholesky_ex(torch.linalg.inv(corr))
    chol = chol / scale[:, :, None] * resid_var.sqrt()[:, None, None]
    chol = torch.where(torch.isfinite(chol).all(-1).all(-1)[:, None, None] & (info == 0)[:, None, None],
                       chol, 1e-3 * eye)
    return theta, sse, chol


def fit_all(batch: Batch) -> tuple[list[Tensor], Tensor, list[Tensor]]:
    """Fit all 11 families; returns ([theta_k (C, p_k)], sse (C, 11), [chol_k (C, p_k, p_k)])."""
    fits = [fit_family(fam, batch) for fam in FAMILIES.values()]
    return [f[0] for f in fits], torch.stack([f[1] for f in fits], dim=-1), [f[2] for f in fits]
