"""Synthetic learning curves for the curves/replay tests (no files needed)."""

from __future__ import annotations

import numpy as np
import torch

from netrace.curves import FAMILIES, FAMILY_NAMES


def family_curve(name: str, x_n: np.ndarray, theta) -> np.ndarray:
    """Family ``name`` at normalized x (x / last observed x)."""
    xt = torch.as_tensor(x_n, dtype=torch.float64)
    return FAMILIES[name].f(xt, xt.log(), torch.as_tensor(theta, dtype=torch.float64)).numpy()


def prior_curves(n_curves: int, seed: int, noise: float = 0.02, horizon: float = 3.0):
    """Curves drawn from a proper version of the model's prior: a weighted sum of all 11
    families (Dirichlet weights), each family's parameters spread around its first start,
    Gaussian noise; kept when the curve improves (f(first) < f(target), the paper's prior).

    Returns xs, ys (observed parts), x_target, truth (a noisy observation at the target).
    """
    rng = np.random.default_rng(seed)
    xs, ys, xt, truth = [], [], [], []
    while len(xs) < n_curves:
        n = int(rng.integers(10, 31))
        x = np.arange(1.0, n + 1)
        x_n = np.append(x / n, horizon)
        weights = rng.dirichlet(np.ones(len(FAMILY_NAMES)))
        y = np.zeros_like(x_n)
        for w, name in zip(weights, FAMILY_NAMES):
            fam = FAMILIES[name]
            y += w * family_curve(name, x_n, np.array(fam.starts[0]) * rng.uniform(0.7, 1.3, fam.n_params))
        if not np.all(np.isfinite(y)) or y[0] >= y[-1]:
            continue
        obs = y + rng.normal(0.0, noise, y.shape)
        xs.append(x)
        ys.append(obs[:n])
        xt.append(horizon * n)
        truth.append(obs[-1])
    return xs, ys, np.array(xt), np.array(truth)
