"""``extrapolate``: where will each learning curve be at the end of its budget?"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from netrace.curves._amortized import amortized_draws
from netrace.curves._fit import N_BINS, prepare
from netrace.curves._sampler import SamplerSettings, sample_predictive
from netrace.errors import UserError
from netrace.vocabulary import FORECAST_METHODS

__all__ = ["CALIBRATED", "PAPER", "RAW", "Calibration", "Forecast", "extrapolate", "extrapolate_many"]


@dataclass(frozen=True)
class Calibration:
    """Corrections applied to the sampled posterior predictive, in units of the observed range.

    ``inflate`` widens the draws around their mean: the short ensemble run (20 steps) has not
    spread as far as the posterior does (longer runs widen it); 1.6 gives the 90% interval
    its nominal coverage on curves drawn from the model's prior (seed 0 of the test's prior
    generator; the test checks another seed). Real curves also keep gaining late (learning-rate
    decay) and sometimes collapse, which the 11 saturating families cannot represent: the draw
    gains ``h * (drift + spread * t_nu)``, with ``h = log(x_target / x_last)`` and ``t_nu`` a
    Student-t draw (heavy tails). ``RAW`` is the sampler's output, ``PAPER`` the paper's model
    with the sampler correction, ``CALIBRATED`` adds the term fitted on the AlgoPerf dev curves
    by ``bench/curves.py`` (on curves outside its scoring sample; held-out log-likelihood
    0.9-1.0, coverage ~0.92 at the 20% and 40% cutoffs).
    """

    inflate: float = 1.6
    drift: float = 0.0
    spread: float = 0.0
    nu: float = 4.0

    @property
    def has_discrepancy(self) -> bool:
        return self.drift != 0.0 or self.spread != 0.0


DEFAULT_SETTINGS = SamplerSettings()
METHODS = FORECAST_METHODS  # the vocabulary's
RAW = Calibration(inflate=1.0)
PAPER = Calibration()
CALIBRATED = Calibration(inflate=2.5, drift=0.1, spread=0.1, nu=2.5)


@dataclass(frozen=True)
class Forecast:
    """Predictive draws of each curve's value at its target x: ``samples`` is (curves, draws).

    >>> import numpy as np
    >>> f = Forecast(np.array([[0.1, 0.2, 0.3, 0.4]]))
    >>> f.mean, f.prob_above(0.25)
    (array([0.25]), array([0.5]))
    """

    samples: np.ndarray
    mean: np.ndarray = field(init=False, repr=False)
    std: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        s = np.asarray(self.samples, dtype=float)
        if s.ndim != 2 or s.shape[1] == 0:
            raise UserError(f"Forecast samples must be a (curves, draws) array with draws >= 1; "
                            f"got shape {s.shape}.")
        object.__setattr__(self, "samples", s)
        object.__setattr__(self, "mean", s.mean(axis=1))
        object.__setattr__(self, "std", s.std(axis=1))

    def __len__(self) -> int:
        return self.samples.shape[0]

    def quantile(self, q: float | Sequence[float]) -> np.ndarray:
        """Predictive quantile(s): (curves,) for a scalar q, (len(q), curves) for a sequence."""
        qa = np.asarray(q, dtype=float)
        if np.any(~np.isfinite(qa)) or np.any((qa < 0) | (qa > 1)):
            raise UserError(f"quantile q must lie in [0, 1]; got {q!r}. Pass e.g. 0.05 or [0.05, 0.95].")
        return np.quantile(self.samples, qa, axis=1)

    def prob_above(self, threshold: float | Sequence[float] | np.ndarray) -> np.ndarray:
        """P(value at the target > threshold), per curve; threshold scalar or one per curve."""
        t = np.asarray(threshold, dtype=float)
        if t.ndim > 1 or (t.ndim == 1 and t.shape[0] != len(self)):
            raise UserError(f"threshold must be a scalar or one value per curve ({len(self)}); "
                            f"got shape {t.shape}.")
        t = np.broadcast_to(t, (len(self),))
        return (self.samples > t[:, None]).mean(axis=1)


def _check_curves(xs: Sequence, ys: Sequence, x_target) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    if isinstance(xs, np.ndarray) and xs.ndim == 1:
        raise UserError("xs must be a sequence of 1-D arrays (one per curve), got one 1-D array; "
                        "wrap a single curve as [x].")
    if len(xs) != len(ys):
        raise UserError(f"xs and ys must hold the same number of curves; got {len(xs)} and {len(ys)}.")
    if len(xs) == 0:
        raise UserError("no curves given: pass at least one (x, y) curve.")
    xo, yo = [], []
    for i, (x, y) in enumerate(zip(xs, ys)):
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        if x.ndim != 1 or y.ndim != 1 or x.shape != y.shape:
            raise UserError(f"curve {i}: x and y must be 1-D arrays of the same length; got shapes "
                            f"{x.shape} and {y.shape}.")
        if x.size == 0:
            raise UserError(f"curve {i} is empty: every curve needs at least one observed point.")
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            raise UserError(f"curve {i} holds NaN or infinite values: x and y must be finite; "
                            "drop the failed evaluations before extrapolating.")
        if x[0] <= 0:
            raise UserError(f"curve {i}: x must be positive (epochs or steps, from 1); got x[0]={x[0]:g}.")
        if np.any(np.diff(x) <= 0):
            j = int(np.argmax(np.diff(x) <= 0))
            raise UserError(f"curve {i}: x must be strictly increasing; got x[{j}]={x[j]:g} then "
                            f"x[{j + 1}]={x[j + 1]:g}. Sort the points and drop duplicates.")
        xo.append(x)
        yo.append(y)
    xt = np.asarray(x_target, dtype=float)
    if xt.ndim == 0:
        xt = np.full(len(xo), float(xt))
    if xt.shape != (len(xo),):
        raise UserError(f"x_target must be a scalar or one value per curve ({len(xo)}); got shape {xt.shape}.")
    for i, (x, t) in enumerate(zip(xo, xt)):
        if not np.isfinite(t) or t <= x[-1]:
            raise UserError(f"curve {i}: x_target must lie beyond the observed range (> {x[-1]:g}); "
                            f"got {t:g}. Pass the x of the end of the budget.")
    return xo, yo, xt


def _curve_seed(seed: int, x: np.ndarray, y: np.ndarray, xt: float) -> np.random.Generator:
    # the stream depends on the seed and the curve itself, not on its place in the batch
    digest = zlib.crc32(np.concatenate([x, y, [xt]]).tobytes())
    return np.random.default_rng([seed, digest])


def extrapolate(xs: Sequence, ys: Sequence, x_target, *, seed: int = 0,
                bounds: tuple[float, float] | None = None,
                calibration: Calibration = CALIBRATED,
                settings: SamplerSettings = DEFAULT_SETTINGS, method: str = "sampler") -> Forecast:
    """Predictive distribution of each curve's value at ``x_target`` (higher is better).

    xs, ys: one 1-D array per curve (any lengths, x > 0 strictly increasing, finite values);
    x_target: a scalar or one per curve, beyond the observed x; bounds: the metric's range
    (e.g. (0, 1) for accuracy), a prior constraint; calibration: ``PAPER`` for the paper's
    model alone, ``CALIBRATED`` (default) adds the discrepancy term fitted on real curves;
    settings: the sampler's sizes (with ``method="amortized"``: the number of draws, walkers x
    keep); method: ``"sampler"``, the ensemble sampler, or ``"amortized"``, a network trained
    on the sampler's forecasts (``_amortized.py``: about 12x less CPU, the same scores on held-out
    real curves; ``bounds`` then only clip its draws).
    Deterministic for a given seed; a curve's result does not depend on its batch.

    >>> import numpy as np
    >>> x = np.arange(1.0, 11.0)
    >>> f = extrapolate([x], [0.9 - 0.5 * x ** -0.7], 50, bounds=(0, 1))
    >>> bool(0.8 < f.mean[0] < 0.95)
    True
    """
    return extrapolate_many(xs, ys, x_target, (calibration,), seed=seed, bounds=bounds,
                            settings=settings, method=method)[0]


def extrapolate_many(xs: Sequence, ys: Sequence, x_target, calibrations: Sequence[Calibration], *,
                     seed: int = 0, bounds: tuple[float, float] | None = None,
                     settings: SamplerSettings = DEFAULT_SETTINGS,
                     method: str = "sampler") -> tuple[Forecast, ...]:
    """``extrapolate`` under several calibrations from one sampler run: one Forecast each, in
    order. The first equals ``extrapolate(..., calibration=calibrations[0])``; a later one
    with a discrepancy term draws its own Student-t numbers after the earlier ones'."""
    if method not in METHODS:
        raise UserError(f"unknown forecast method {method!r}; allowed: {', '.join(METHODS)}.")
    xo, yo, xt = _check_curves(xs, ys, x_target)
    if bounds is not None:
        lo, hi = (float(b) for b in bounds)
        if not lo < hi:
            raise UserError(f"bounds must be (low, high) with low < high; got {bounds!r}.")
    else:
        lo, hi = -np.inf, np.inf
    batch = prepare(xo, yo, xt)
    bounds_n = np.stack([(lo - batch.y_offset) / batch.y_scale,
                         (hi - batch.y_offset) / batch.y_scale], axis=-1)
    rngs = [_curve_seed(seed, x, y, t) for x, y, t in zip(xo, yo, xt)]
    if method == "amortized":
        # the network gives the sampler's draws as PAPER makes them (inflated): undo that
        # inflation, which every calibration applies below
        d = amortized_draws(batch, rngs, settings.walkers * settings.keep)
        m = d.mean(axis=1, keepdims=True)
        draws = m + (d - m) / PAPER.inflate
    else:
        # short curves are sampled without most of the padding (a race forecasts many curves
        # of 5-11 points, which cost half of 16 bins): curves of up to 8 bins together with 8,
        # the others with 16. Two groups at most, each a fixed cost; the bucket depends on the
        # curve alone, so its result does not depend on the batch.
        draws = np.empty((batch.size, settings.walkers * settings.keep))
        bucket = np.where(batch.bins <= N_BINS // 2, N_BINS // 2, N_BINS)
        for b in np.unique(bucket):
            idx = np.nonzero(bucket == b)[0]
            draws[idx], _ = sample_predictive(batch.take(idx, int(b)), bounds_n[idx],
                                              [rngs[i] for i in idx], settings)
    # a curve whose fits all break the prior (e.g. it only falls) keeps its last value
    last = batch.y[np.arange(batch.size), np.maximum(batch.bins - 1, 0)]
    draws = np.where(np.isfinite(draws), draws, last[:, None])
    mean = draws.mean(axis=1, keepdims=True)
    out = []
    for calibration in calibrations:
        d = mean + calibration.inflate * (draws - mean)
        if calibration.has_discrepancy:
            t = np.stack([r.standard_t(calibration.nu, d.shape[1]) for r in rngs])
            d = d + batch.h[:, None] * (calibration.drift + calibration.spread * t)
        y = batch.y_offset[:, None] + batch.y_scale[:, None] * d
        out.append(Forecast(np.clip(y, lo, hi) if bounds is not None else y))
    return tuple(out)
