"""Batched data preparation and least-squares fits of every family to every curve.

All curves of a batch become fixed-size arrays: x and y are normalized per curve and the
observed points are grouped into at most ``N_BINS`` contiguous bins (the Gaussian likelihood only
needs each bin's count, mean and within-bin sum of squares, so the cost per likelihood
evaluation no longer depends on the curve's length and curves of any lengths batch together).
Everything here is pure array math; nothing depends on the other curves of the batch, so a
curve's result is the same alone or in a batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from netrace.curves._families import FAMILIES, Family

__all__ = ["N_BINS", "Batch", "prepare", "fit_family", "fit_all"]

N_BINS = 16
_LM_ITERS = 40
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
        groups = np.array_split(np.arange(len(x)), min(len(x), N_BINS))
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


def _residuals(fam: Family, x: np.ndarray, y: np.ndarray, w: np.ndarray,
               theta: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        r = (fam.f(x, theta) - y) * w
    return np.where(np.isfinite(r), r, _BAD * w)


def fit_family(fam: Family, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
    """Levenberg-Marquardt fit of one family to every curve, from each of its starts.

    Returns (theta (C, p), sse (C,)) of the best start per curve. Fixed iteration count and
    per-curve damping, so a curve's fit does not depend on the rest of the batch.
    """
    c, s, p = batch.size, len(fam.starts), fam.n_params
    x = np.repeat(batch.x[:, :N_BINS], s, axis=0)
    y = np.repeat(batch.y, s, axis=0)
    w = np.sqrt(np.repeat(batch.n, s, axis=0))
    lower, upper = np.array(fam.lower), np.array(fam.upper)
    theta = np.tile(np.array(fam.starts, dtype=float), (c, 1))
    lam = np.full(c * s, 1e-2)
    r = _residuals(fam, x, y, w, theta)
    sse = (r**2).sum(-1)
    eye = np.eye(p)
    for _ in range(_LM_ITERS):
        step = 1e-6 * (1.0 + np.abs(theta))
        J = np.empty(r.shape + (p,))
        for j in range(p):
            tj = theta.copy()
            tj[:, j] += step[:, j]
            J[..., j] = (_residuals(fam, x, y, w, tj) - r) / step[:, j : j + 1]
        JtJ = np.einsum("bmi,bmj->bij", J, J)
        g = np.einsum("bmi,bm->bi", J, r)
        A = JtJ + lam[:, None, None] * (np.einsum("bii->bi", JtJ)[:, :, None] * eye + 1e-9 * eye)
        try:
            delta = np.linalg.solve(A, -g[..., None])[..., 0]
        except np.linalg.LinAlgError:
            delta = -g * 1e-3
        delta = np.where(np.isfinite(delta), delta, 0.0)
        cand = np.clip(theta + delta, lower, upper)
        rc = _residuals(fam, x, y, w, cand)
        sc = (rc**2).sum(-1)
        better = sc < sse
        theta = np.where(better[:, None], cand, theta)
        r = np.where(better[:, None], rc, r)
        sse = np.where(better, sc, sse)
        lam = np.where(better, lam * 0.3, lam * 10.0).clip(1e-9, 1e9)
    sse = sse.reshape(c, s)
    best = sse.argmin(-1)
    theta = theta.reshape(c, s, p)[np.arange(c), best]
    return theta, sse[np.arange(c), best]


def fit_all(batch: Batch) -> tuple[list[np.ndarray], np.ndarray]:
    """Fit all 11 families; returns ([theta_k (C, p_k)], sse (C, 11))."""
    thetas, sses = [], []
    for fam in FAMILIES.values():
        t, e = fit_family(fam, batch)
        thetas.append(t)
        sses.append(e)
    return thetas, np.stack(sses, axis=-1)
