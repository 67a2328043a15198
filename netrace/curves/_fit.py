"""Batched data preparation and least-squares fits of every family to every curve.

All curves of a batch become fixed-size arrays: x and y are normalized per curve and the
observed points are grouped into at most ``N_BINS`` contiguous bins (geometric in the index) (the Gaussian likelihood only
needs each bin's count, mean and within-bin sum of squares, so the cost per likelihood
evaluation no longer depends on the curve's length and curves of any lengths batch together).
Everything here is pure array math; nothing depends on the other curves of the batch, so a
curve's result is the same alone or in a batch.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from netrace.curves._families import FAMILIES, Family

__all__ = ["N_BINS", "Batch", "fit_all", "fit_family", "prepare"]

N_BINS = 16
_LM_ITERS = 10  # more iterations fit no better on the dev curves (BENCHMARKS.md)
_BAD = 1e3  # residual given to points where a family is undefined (NaN)


@dataclass(frozen=True)
class Batch:
    """A batch of curves in normalized units, binned.

    x: (C, B + 2) bin mean x, then the first observed x, then the target x.
    y: (C, B) bin mean y; n: (C, B) bin counts (0 for padding), B = N_BINS from ``prepare``;
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

    @property
    def bins(self) -> np.ndarray:
        """(C,) bins each curve uses (its points, up to N_BINS)."""
        return (self.n > 0).sum(-1)

    def take(self, index: np.ndarray, bins: int | None = None) -> Batch:
        """The curves at ``index`` with ``bins`` bins (default: the most any of them uses).

        Cutting padding changes no value: a padded bin has no weight, and a curve with fewer
        than N_BINS points has one point per bin, the last at x = 1, where padding sits too
        (so a state undefined at a padded x is undefined at the last point as well). Sums over
        bins may round differently with another padding, so a caller that wants a curve's
        result independent of its batch chooses ``bins`` from the curve alone.
        """
        used = int(self.bins[index].max())
        b = max(used, 1) if bins is None else bins
        if b < used:
            raise ValueError(f"take: {b} bins would cut observed bins")
        cols = np.r_[0:b, self.x.shape[1] - 2, self.x.shape[1] - 1]
        return Batch(self.x[index][:, cols], self.y[index, :b], self.n[index, :b], self.ssw[index],
                     self.n_obs[index], self.x_scale[index], self.y_offset[index],
                     self.y_scale[index], self.h[index])


@functools.lru_cache(maxsize=4096)
def _bin_edges(n: int) -> np.ndarray:
    """Edges of up to N_BINS contiguous bins over n points, geometric in the index.

    Early points (where curves are steep) stay alone; late, flat stretches share a bin.
    Cached: the array is shared between calls, read it only.
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


def y_range(y: np.ndarray) -> float:
    """The unit of a curve's values: their range, floored (a flat curve still has one)."""
    lo, hi = float(y.min()), float(y.max())
    return max(hi - lo, 1e-3 * max(1.0, abs(hi)), 1e-12)


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
        lo, s = float(y.min()), y_range(y)
        off = lo - 0.25 * s
        yn = (y - off) / s
        y_off[i], y_scale[i] = off, s
        edges = _bin_edges(len(x))
        b = len(edges) - 1
        counts = np.diff(edges)
        X[i, :b] = np.add.reduceat(xn, edges[:-1]) / counts
        Y[i, :b] = np.add.reduceat(yn, edges[:-1]) / counts
        Nb[i, :b] = counts
        if b < len(x):
            ssw[i] = float(((yn - np.repeat(Y[i, :b], counts)) ** 2).sum())
        X[i, N_BINS] = xn[0]
        X[i, N_BINS + 1] = x_target[i] / x[-1]
        n_obs[i] = len(x)
    h = np.log(X[:, N_BINS + 1])
    return Batch(X, Y, Nb, ssw, n_obs, x_scale, y_off, y_scale, h)


def _eval(fams: list[Family], rows: list[slice], x: Tensor, lx: Tensor, y: Tensor, w: Tensor,
          theta: Tensor) -> tuple[Tensor, Tensor]:
    """Weighted residuals (R, m) at theta (R, P) and their forward-difference Jacobian (R, m, P).

    Row block ``rows[k]`` holds family k; its parameters are the first p_k columns of theta
    (the rest is padding, which the family ignores, so its Jacobian column is exactly 0).
    One call per family evaluates theta and its P shifted copies together.
    """
    p = theta.shape[-1]
    step = 1e-6 * (1.0 + theta.abs())  # (R, P)
    eye = torch.eye(p, dtype=theta.dtype)
    shifted = torch.cat([theta[None], theta[None] + eye[:, None, :] * step.T[:, :, None]])  # (P+1, R, P)
    vals = torch.cat([fam.f(x[None, r], lx[None, r], shifted[:, r, : fam.n_params])
                      for fam, r in zip(fams, rows)], dim=1)  # (P+1, R, m)
    # where a family is undefined (NaN, inf) the point's residual is _BAD (times its weight)
    res = torch.nan_to_num(vals - y, nan=_BAD, posinf=_BAD, neginf=_BAD) * w
    r = res[0]
    J = ((res[1:] - r) / step.T[:, :, None]).permute(1, 2, 0)
    return r, J


def _fit(fams: list[Family], batch: Batch) -> tuple[list[Tensor], Tensor, list[Tensor]]:
    """Levenberg-Marquardt fits of the given families to every curve, from each family's starts,
    all families and starts in one batched iteration (parameters padded to the largest count).

    Returns per family theta (C, p), the sse (C, families) of the best start per curve, and per
    family the Cholesky factor (C, p, p) of its Laplace covariance (Gauss-Newton, residual
    variance from the fit). Fixed iteration count and per-row damping, so a curve's fit depends
    neither on the rest of the batch nor on which other families are fitted with it.
    """
    c = batch.size
    P = max(f.n_params for f in fams)
    starts = [len(f.starts) for f in fams]
    rows, lo = [], 0
    for s in starts:
        rows.append(slice(lo, lo + c * s))
        lo += c * s
    # rows: family-major, then curve, then start
    xb = torch.from_numpy(batch.x[:, :-2])
    yb = torch.from_numpy(batch.y)
    wb = torch.from_numpy(np.sqrt(batch.n))
    reps = torch.cat([torch.arange(c).repeat_interleave(s) for s in starts])
    x, y, w = xb[reps], yb[reps], wb[reps]
    lx = torch.log(x)

    def padded(v: tuple[float, ...], fill: float) -> list[float]:
        return list(v) + [fill] * (P - len(v))

    lower = torch.cat([torch.tensor(padded(f.lower, 0.0), dtype=torch.float64).expand(c * s, P)
                       for f, s in zip(fams, starts)])
    upper = torch.cat([torch.tensor(padded(f.upper, 0.0), dtype=torch.float64).expand(c * s, P)
                       for f, s in zip(fams, starts)])
    theta = torch.cat([torch.tensor([padded(t, 0.0) for t in f.starts], dtype=torch.float64).repeat(c, 1)
                       for f in fams])
    # padding columns: a unit diagonal keeps their (zero) step well-posed
    pad = torch.diag_embed((lower == upper).double())
    lam = torch.full((x.shape[0],), 1e-2, dtype=torch.float64)
    r, J = _eval(fams, rows, x, lx, y, w, theta)
    sse = (r**2).sum(-1)
    eye = torch.eye(P, dtype=torch.float64)
    for _ in range(_LM_ITERS):
        Jt = J.transpose(1, 2)
        JtJ = Jt @ J
        g = (Jt @ r[..., None])[..., 0]
        diag = torch.diagonal(JtJ, dim1=1, dim2=2)
        A = JtJ + lam[:, None, None] * (diag[:, :, None] * eye + 1e-9 * eye) + pad
        delta, info = torch.linalg.solve_ex(A, -g)
        delta = torch.where(torch.isfinite(delta) & (info == 0)[:, None], delta, 0.0)
        cand = torch.clamp(theta + delta, lower, upper)
        rc, Jc = _eval(fams, rows, x, lx, y, w, cand)
        sc = (rc**2).sum(-1)
        better = sc < sse
        theta = torch.where(better[:, None], cand, theta)
        r = torch.where(better[:, None], rc, r)
        J = torch.where(better[:, None, None], Jc, J)
        sse = torch.where(better, sc, sse)
        lam = torch.where(better, lam * 0.3, lam * 10.0).clamp(1e-9, 1e9)
    # Laplace approximation at each family's best start: a covariance to spread the walkers with
    thetas, sses, chols = [], [], []
    n_obs = torch.from_numpy(batch.n_obs)
    ssw = torch.from_numpy(batch.ssw)
    idx = torch.arange(c)
    for fam, rk, s in zip(fams, rows, starts):
        p = fam.n_params
        sk = sse[rk].reshape(c, s)
        best = sk.argmin(-1)
        sel = rk.start + idx * s + best
        th, sb, Jb = theta[sel, :p], sk[idx, best], J[sel, :, :p]
        JtJ = Jb.transpose(1, 2) @ Jb
        resid_var = (sb + ssw) / (n_obs - p).clamp(min=1.0)
        scale = torch.diagonal(JtJ, dim1=1, dim2=2).clamp(min=1e-12).sqrt()
        e = eye[:p, :p]
        corr = JtJ / (scale[:, :, None] * scale[:, None, :]) + 1e-6 * e
        chol, info = torch.linalg.cholesky_ex(torch.linalg.inv(corr))
        chol = chol / scale[:, :, None] * resid_var.sqrt()[:, None, None]
        chol = torch.where(torch.isfinite(chol).all(-1).all(-1)[:, None, None] & (info == 0)[:, None, None],
                           chol, 1e-3 * e)
        thetas.append(th)
        sses.append(sb)
        chols.append(chol)
    return thetas, torch.stack(sses, dim=-1), chols


def fit_family(fam: Family, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
    """Levenberg-Marquardt fit of one family to every curve: theta (C, p), sse (C,), and the
    Cholesky factor (C, p, p) of its Laplace covariance (see ``_fit``)."""
    thetas, sse, chols = _fit([fam], batch)
    return thetas[0], sse[:, 0], chols[0]


def fit_all(batch: Batch) -> tuple[list[Tensor], Tensor, list[Tensor]]:
    """Fit all 11 families; returns ([theta_k (C, p_k)], sse (C, 11), [chol_k (C, p_k, p_k)])."""
    return _fit(list(FAMILIES.values()), batch)
