"""Forecast metrics and tests of predictive accuracy: pure functions, numpy arrays in, floats out.

Losses are per point (:func:`point_losses`) so the tests that compare two forecasts
(:func:`diebold_mariano`, :func:`spa_pvalue`) see the same numbers as the summary metrics. The
summary metrics return NaN when any label or forecast is not finite (a diverged model shows as
NaN instead of stopping a report); the tests raise a :class:`~netrace.errors.UserError` instead,
because a p-value of NaN losses would hide the problem.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from netrace.errors import UserError, did_you_mean

__all__ = [
    "LOSSES",
    "binary_metrics",
    "diebold_mariano",
    "newey_west_lags",
    "interval_coverage",
    "multiclass_metrics",
    "pesaran_timmermann",
    "point_losses",
    "regression_metrics",
    "spa_pvalue",
]

LOSSES = ("mse", "mae", "qlike", "log_loss")
_PROB_EPS = 1e-15  # probabilities are clipped to [eps, 1 - eps], as scikit-learn did before 1.5
_QLIKE_FLOOR = 1e-12  # variances are floored at this fraction of the mean variance proxy


def _vector(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.ndim != 1:
        raise UserError(f"{name} must be one-dimensional (one value per point); got an array "
                        f"of shape {a.shape}; pass a flat array.")
    return a


def _same_length(*pairs: tuple[str, np.ndarray]) -> None:
    n = {name: len(a) for name, a in pairs}
    if len(set(n.values())) > 1:
        raise UserError(f"arrays must have one value per point, but the lengths differ: "
                        f"{', '.join(f'{k}={v}' for k, v in n.items())}; pass aligned arrays.")


def _codes(y, n_classes: int, name: str = "y") -> np.ndarray:
    """Integer class codes in [0, n_classes), checked."""
    a = np.asarray(y)
    if a.ndim != 1:
        raise UserError(f"{name} must be one-dimensional class codes; got shape {a.shape}.")
    af = a.astype(float)
    bad = ~np.isfinite(af) | (af != np.round(af)) | (af < 0) | (af >= n_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise UserError(f"{name} must hold integer class codes 0..{n_classes - 1}; got "
                        f"{a[i].item()!r} at position {i}; encode the classes as "
                        f"0..{n_classes - 1}.")
    return af.astype(np.intp)


def _probabilities(y, f) -> tuple[np.ndarray, np.ndarray]:
    """Class codes and (n, C) clipped, row-normalised probabilities from binary or (n, C) input."""
    p = np.asarray(f, dtype=float)
    if p.ndim == 1:
        p = np.column_stack([1.0 - p, p])
    if p.ndim != 2 or p.shape[1] < 2:
        raise UserError(f"probabilities must be P(y=1) of shape (n,) or a matrix of shape "
                        f"(n, classes) with at least 2 classes; got shape {np.shape(f)}.")
    codes = _codes(y, p.shape[1])
    _same_length(("y", codes), ("probabilities", p))
    p = np.clip(p, _PROB_EPS, 1.0 - _PROB_EPS)
    return codes, p / p.sum(axis=1, keepdims=True)


def point_losses(metric: str, y: ArrayLike, f: ArrayLike) -> np.ndarray:
    """Loss of each forecast ``f`` of ``y``: ``mse``, ``mae``, ``qlike`` or ``log_loss``.

    ``qlike`` (Patton 2011) takes volatilities: with the variance proxy s = y**2 and the
    forecast variance v = f**2, loss = s/v - log(s/v) - 1. Forecast variances are floored at
    1e-12 times the mean proxy (so a forecast <= 0 gives a large, finite loss), and the s inside
    the log is floored the same way, so a y of exactly 0 gives a finite loss; that floor only
    shifts the loss of such a point by a constant that is the same for every forecast, so
    differences of losses (what the tests compare) are exact.

    ``log_loss`` takes P(y=1) of shape (n,) with y in {0, 1}, or probabilities of shape (n, C)
    with y integer codes; probabilities are clipped to [1e-15, 1 - 1e-15] and each row is
    renormalised to sum to one (scikit-learn's rule before 1.5).

    >>> point_losses("mse", [1.0, 2.0], [0.0, 2.5])
    array([1.  , 0.25])
    """
    if metric == "log_loss":
        codes, p = _probabilities(y, f)
        return -np.log(p[np.arange(len(codes)), codes])
    if metric not in LOSSES:
        raise UserError(f"unknown loss '{metric}'; allowed: {', '.join(LOSSES)}"
                        f"{did_you_mean(metric, LOSSES)}")
    y, f = _vector(y, "y"), _vector(f, "forecasts")
    _same_length(("y", y), ("forecasts", f))
    if metric == "mse":
        return (y - f) ** 2
    if metric == "mae":
        return np.abs(y - f)
    s = y ** 2
    finite = np.isfinite(s)
    scale = float(s[finite].mean()) if finite.any() else 0.0
    tiny = _QLIKE_FLOOR * scale if scale > 0 else np.finfo(float).tiny
    v = np.maximum(np.where(f > 0, f, 0.0) ** 2, tiny)
    v = np.where(np.isnan(f), np.nan, v)
    return s / v - np.log(np.maximum(s, tiny) / v) - 1.0


def _all_finite(*arrays: np.ndarray) -> bool:
    return all(np.isfinite(a).all() for a in arrays)


def regression_metrics(y: ArrayLike, f: ArrayLike, *, train_mean: float, volatility: bool = False,
                       returns: bool = False) -> dict[str, float]:
    """``mse``, ``mae`` and out-of-sample ``r2``, plus ``qlike`` and ``hit_rate`` on request.

    ``r2`` = 1 - SSE(f) / SSE(train_mean): the share of the squared error of the constant
    forecast ``train_mean`` (the training mean of the target) that ``f`` removes; NaN when that
    constant forecast is exact. ``qlike`` (``volatility=True``) is the mean of
    :func:`point_losses`; ``hit_rate`` (``returns=True``) is the share of points where f and y
    are on the same side of zero, zero counting as "not up". Every value is NaN when any y or f
    is not finite.

    >>> regression_metrics([1.0, -1.0], [0.5, -0.5], train_mean=0.0, returns=True)
    {'mse': 0.25, 'mae': 0.5, 'r2': 0.75, 'hit_rate': 1.0}
    """
    y, f = _vector(y, "y"), _vector(f, "forecasts")
    _same_length(("y", y), ("forecasts", f))
    names = ["mse", "mae", "r2"] + ["qlike"] * volatility + ["hit_rate"] * returns
    if len(y) == 0 or not _all_finite(y, f) or not math.isfinite(train_mean):
        return dict.fromkeys(names, math.nan)
    sse = float(np.sum((y - f) ** 2))
    sse0 = float(np.sum((y - train_mean) ** 2))
    out = {"mse": sse / len(y), "mae": float(np.mean(np.abs(y - f))),
           "r2": 1.0 - sse / sse0 if sse0 > 0 else math.nan}
    if volatility:
        out["qlike"] = float(np.mean(point_losses("qlike", y, f)))
    if returns:
        out["hit_rate"] = float(np.mean((f > 0) == (y > 0)))
    return out


def _auc(y: np.ndarray, score: np.ndarray, **kwargs) -> float:
    """scikit-learn's ROC AUC, or NaN where it is undefined (one class only, and the like)."""
    from sklearn.exceptions import UndefinedMetricWarning
    from sklearn.metrics import roc_auc_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        try:
            return float(roc_auc_score(y, score, **kwargs))
        except ValueError:
            return math.nan


def binary_metrics(y: ArrayLike, p: ArrayLike) -> dict[str, float]:
    """``accuracy`` (predict 1 when p >= 0.5), ``log_loss``, ``auc`` and ``hit_rate``.

    ``p`` is P(y=1) per point, ``y`` is 0/1. ``auc`` is scikit-learn's ``roc_auc_score``, NaN
    when y holds one class only; ``hit_rate`` equals ``accuracy`` (for a direction label it is
    the share of directions called right). Every value is NaN when any p is not finite.

    >>> binary_metrics([0, 1, 1], [0.2, 0.6, 0.4])["accuracy"]
    0.6666666666666666
    """
    p = _vector(p, "probabilities")
    codes = _codes(y, 2)
    _same_length(("y", codes), ("probabilities", p))
    names = ("accuracy", "log_loss", "auc", "hit_rate")
    if len(p) == 0 or not _all_finite(p):
        return dict.fromkeys(names, math.nan)
    accuracy = float(np.mean((p >= 0.5) == (codes == 1)))
    return {"accuracy": accuracy, "log_loss": float(np.mean(point_losses("log_loss", codes, p))),
            "auc": _auc(codes, p), "hit_rate": accuracy}


def multiclass_metrics(y: ArrayLike, P: ArrayLike) -> dict[str, float]:
    """``accuracy`` (argmax), ``log_loss`` and one-vs-rest macro ``auc`` of (n, C) probabilities.

    ``auc`` is scikit-learn's ``roc_auc_score(multi_class="ovr", average="macro")`` over the
    classes 0..C-1, NaN where it is not defined (a class absent from y, rows that are not
    probabilities). Every value is NaN when any probability is not finite.

    >>> multiclass_metrics([0, 2], [[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])["accuracy"]
    1.0
    """
    P = np.asarray(P, dtype=float)
    if P.ndim != 2 or P.shape[1] < 2:
        raise UserError(f"multiclass probabilities must have shape (n, classes) with at least "
                        f"2 classes; got shape {P.shape}.")
    codes = _codes(y, P.shape[1])
    _same_length(("y", codes), ("probabilities", P))
    names = ("accuracy", "log_loss", "auc")
    if len(P) == 0 or not _all_finite(P):
        return dict.fromkeys(names, math.nan)
    return {"accuracy": float(np.mean(P.argmax(axis=1) == codes)),
            "log_loss": float(np.mean(point_losses("log_loss", codes, P))),
            "auc": _auc(codes, P, multi_class="ovr", average="macro",
                        labels=np.arange(P.shape[1]))}


def _loss_pair(loss_a, loss_b) -> np.ndarray:
    a, b = _vector(loss_a, "loss_a"), _vector(loss_b, "loss_b")
    _same_length(("loss_a", a), ("loss_b", b))
    for name, x in (("loss_a", a), ("loss_b", b)):
        bad = ~np.isfinite(x)
        if bad.any():
            raise UserError(f"{name} has {int(bad.sum())} non-finite losses (first at position "
                            f"{int(np.flatnonzero(bad)[0])}); a test of predictive accuracy needs "
                            f"finite losses: drop those points from both models or fix the "
                            f"forecasts.")
    return a - b


def _long_run_variance(d: np.ndarray, lags: int, bartlett: bool) -> float:
    """gamma_0 + 2 sum_k w_k gamma_k with 1/T autocovariances; w_k = 1 or 1 - k/(lags+1)."""
    e = d - d.mean()
    T = len(e)
    lrv = float(e @ e) / T
    for k in range(1, lags + 1):
        w = 1.0 - k / (lags + 1) if bartlett else 1.0
        lrv += 2.0 * w * float(e[k:] @ e[:-k]) / T
    return lrv


def newey_west_lags(n: int) -> int:
    """Newey and West's (1994) rule for the lags of a long-run variance: floor(4 (n/100)^(2/9)).

    >>> newey_west_lags(1000)
    6
    """
    return int(math.floor(4.0 * (max(n, 1) / 100.0) ** (2.0 / 9.0)))


def diebold_mariano(loss_a: ArrayLike, loss_b: ArrayLike, h: int = 1, *,
                    harvey: bool = True, lags: int | None = None) -> tuple[float, float]:
    """Diebold-Mariano test of equal predictive accuracy: (statistic, two-sided p-value).

    d = loss_a - loss_b; its long-run variance sums the autocovariances (1/T normalisation) up
    to lag h-1 with Diebold and Mariano's rectangular weights, or with Bartlett (Newey-West)
    weights 1 - k/h when the rectangular sum is not positive. The statistic mean(d) /
    sqrt(lrv/T) is positive when ``a`` has the larger loss (``b`` is better). With ``harvey``
    (default) it is multiplied by Harvey, Leybourne and Newbold's (1997) factor
    sqrt((T + 1 - 2h + h(h-1)/T) / T) and the p-value comes from Student's t with T-1 degrees
    of freedom; ``harvey=False`` gives the original statistic and a standard normal p-value.

    ``lags`` (when given, and above h-1) replaces that variance by Newey and West's: Bartlett
    weights 1 - k/(lags+1) up to ``lags`` (see :func:`newey_west_lags`), robust to loss
    differentials that stay correlated beyond h-1 steps, as volatility forecasts' do.

    Edge cases: d == 0 everywhere gives (0.0, 1.0); d constant and nonzero gives (+-inf, 0.0);
    fewer than h+1 points (at least 2) gives (nan, nan). Non-finite losses raise a UserError.

    >>> stat, p = diebold_mariano([1.0, 2.0, 1.5, 2.5], [1.0, 1.0, 1.0, 1.0])
    >>> round(stat, 3), round(p, 3)
    (2.324, 0.103)
    """
    if isinstance(h, bool) or not isinstance(h, (int, np.integer)) or h < 1:
        raise UserError(f"the forecast horizon h must be an integer >= 1; got {h!r}.")
    d = _loss_pair(loss_a, loss_b)
    T = len(d)
    if T < max(2, h + 1):
        return math.nan, math.nan
    if np.all(d == d[0]):
        return (0.0, 1.0) if d[0] == 0 else (math.copysign(math.inf, d[0]), 0.0)
    if lags is not None and lags > h - 1:
        lrv = _long_run_variance(d, min(int(lags), T - 1), bartlett=True)
    else:
        lrv = _long_run_variance(d, h - 1, bartlett=False)
        if lrv <= 0:
            lrv = _long_run_variance(d, h - 1, bartlett=True)
    mean = float(d.mean())
    if lrv <= 0:
        return math.copysign(math.inf, mean), 0.0
    stat = mean / math.sqrt(lrv / T)
    if not harvey:
        return stat, float(2.0 * stats.norm.sf(abs(stat)))
    stat *= math.sqrt((T + 1 - 2 * h + h * (h - 1) / T) / T)
    return stat, float(2.0 * stats.t.sf(abs(stat), df=T - 1))


def pesaran_timmermann(y: ArrayLike, f: ArrayLike) -> tuple[float, float]:
    """Pesaran and Timmermann's (1992) test of directional accuracy: (statistic, p-value).

    "Up" means a value > 0, so ``y`` and ``f`` may be real numbers (returns and their
    forecasts) or 0/1 directions (1 is up); for probabilities pass ``p >= 0.5``. The p-value is
    one-sided, from the standard normal, for the null that the forecast has no directional
    skill (the hits are what independent directions would give). (nan, nan) when the statistic
    is undefined: no points, or y or f always on one side.

    >>> stat, p = pesaran_timmermann([1, -1, 1, -1, 1, -1], [2, -1, 3, -2, 1, -1])
    >>> round(stat, 3), round(p, 4)
    (2.683, 0.0036)
    """
    y, f = _vector(y, "y"), _vector(f, "forecasts")
    _same_length(("y", y), ("forecasts", f))
    if not _all_finite(y, f):
        raise UserError("the Pesaran-Timmermann test needs finite y and forecasts; drop the "
                        "points where either is NaN.")
    n = len(y)
    if n == 0:
        return math.nan, math.nan
    uy, uf = y > 0, f > 0
    p_hit = float(np.mean(uy == uf))
    py, pf = float(uy.mean()), float(uf.mean())
    p_star = py * pf + (1 - py) * (1 - pf)
    var_hit = p_star * (1 - p_star) / n
    var_star = ((2 * py - 1) ** 2 * pf * (1 - pf) / n + (2 * pf - 1) ** 2 * py * (1 - py) / n
                + 4 * py * pf * (1 - py) * (1 - pf) / n ** 2)
    var = var_hit - var_star
    if not var > 1e-12 * max(var_hit, 1e-300):  # rounding of an exact zero
        return math.nan, math.nan
    stat = (p_hit - p_star) / math.sqrt(var)
    return stat, float(stats.norm.sf(stat))


def spa_pvalue(benchmark_losses: ArrayLike, model_losses: ArrayLike, *, reps: int = 1000,
               block: int | None = None, seed: int = 0) -> float:
    """Hansen's (2005) SPA p-value that no model beats the benchmark (the "consistent" one).

    ``benchmark_losses`` (T,) and ``model_losses`` (T,) or (T, M) go to ``arch.bootstrap.SPA``
    with a stationary bootstrap of mean block length ``block`` (default sqrt(T), arch's rule),
    ``reps`` replications and ``seed``. A small p-value says some model has a lower expected
    loss than the benchmark. A model whose losses equal the benchmark's at every point cannot
    beat it and is left out (arch counts a bootstrap maximum only when it is strictly above the
    observed one, so such an exact tie would give p = 0); with no other model the p-value is
    1.0.

    >>> rng = np.random.default_rng(0)
    >>> bench = rng.normal(0, 1, 300) ** 2
    >>> spa_pvalue(bench, bench[:, None] * 0.5) < 0.05
    True
    """
    from arch.bootstrap import SPA

    bench = _vector(benchmark_losses, "benchmark_losses")
    models = np.asarray(model_losses, dtype=float)
    if models.ndim == 1:
        models = models[:, None]
    if models.ndim != 2 or models.shape[0] != len(bench):
        raise UserError(f"model_losses must have shape (T,) or (T, models) with T = "
                        f"{len(bench)} (the benchmark's length); got shape {models.shape}.")
    for name, x in (("benchmark_losses", bench), ("model_losses", models)):
        if not np.isfinite(x).all():
            raise UserError(f"{name} has non-finite losses; the SPA test needs finite losses: "
                            f"drop those points from every model or fix the forecasts.")
    if len(bench) < 2:
        raise UserError(f"the SPA test needs at least 2 loss points; got {len(bench)}.")
    if reps < 1:
        raise UserError(f"reps must be a positive number of bootstrap replications; got {reps}.")
    tied = np.all(bench[:, None] == models, axis=0)
    if tied.all():
        return 1.0
    models = models[:, ~tied]
    spa = SPA(bench, models, block_size=block, reps=reps, bootstrap="stationary", seed=seed)
    spa.compute()
    return float(spa.pvalues["consistent"])


def interval_coverage(y: ArrayLike, lower: ArrayLike, upper: ArrayLike) -> float:
    """Share of the points with lower <= y <= upper (NaN when there are none, or any is NaN).

    >>> interval_coverage([1.0, 2.0, 5.0], [0.0, 0.0, 0.0], [2.0, 2.0, 2.0])
    0.6666666666666666
    """
    y, lo, hi = _vector(y, "y"), _vector(lower, "lower"), _vector(upper, "upper")
    _same_length(("y", y), ("lower", lo), ("upper", hi))
    if len(y) == 0 or np.isnan(y).any() or np.isnan(lo).any() or np.isnan(hi).any():
        return math.nan
    return float(np.mean((lo <= y) & (y <= hi)))
