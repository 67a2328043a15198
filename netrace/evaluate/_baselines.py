"""Classical forecasts on the test points, the yardsticks a network must beat.

Time series: ``series`` holds the target's own value on each row (the day's volatility proxy
for a volatility target, the day's log return for a return target, the 0/1 direction for a
direction target). The sample anchored at row ``a`` (its last input row) has the label
``series[a + h]``. A forecast made at origin ``a`` may use ``series[:a + 1]``; the pairs it can
learn from are (row t, label ``series[t + h]``) with t + h <= a. Fitted models (HAR, AR(1),
GARCH) are refit on an expanding window at the first origin and then every ``refit_every``
origins (counted in ``anchors``, not in rows); between refits the parameters stay and the
inputs are always the latest rows, so the forecast at ``a`` uses the series up to ``a``. NaN
before the first finite value (a warm-up) is skipped; a NaN after it, up to the last origin,
is an error.

I.i.d. rows (no time): constant forecasts and scikit-learn's ``RidgeCV`` and
``LogisticRegression`` fitted on the training part.

Every function is pure: arrays in, forecasts out (one per origin or test row; class
probabilities as (n, C) arrays).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Collection
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.signal import lfilter

from netrace.evaluate._stats import _vector
from netrace.errors import UserError, did_you_mean

__all__ = [
    "ar1",
    "ewma",
    "expanding_mean",
    "garch",
    "har",
    "iid_baselines",
    "iid_majority",
    "iid_mean",
    "last_label",
    "logistic",
    "majority",
    "persistence",
    "ridge",
    "rolling_mean",
    "time_series_baselines",
    "zero",
]

MIN_PAIRS = 30  # known (input, label) pairs a regression baseline needs at its first fit
MIN_GARCH = 100  # finite returns GARCH needs at its first fit
GARCH_WINDOW = 2500  # GARCH is fit on at most the last this-many returns (speed; see garch)
EWMA_START = 22  # EWMA starts from the mean square of the first this-many values
LABEL_CLIP = 1e-3  # persistence of a class: one-hot clipped to [1e-3, 1 - 1e-3], renormalised

TIME_SERIES_KINDS = ("volatility", "returns", "level", "binary", "multiclass")
IID_TASKS = ("regression", "binary", "multiclass")


# ----------------------------------------------------------------------------- input checks

def _series(x, name: str) -> np.ndarray:
    return _vector(x, name)


def _anchors(anchors, n_rows: int) -> np.ndarray:
    a = np.asarray(anchors)
    if a.ndim != 1 or (a.size and not np.issubdtype(a.dtype, np.integer)):
        raise UserError(f"anchors must be a one-dimensional array of integer row numbers; got "
                        f"dtype {a.dtype} and shape {a.shape}.")
    a = a.astype(np.intp)
    if a.size and (a[0] < 0 or a[-1] >= n_rows):
        raise UserError(f"anchors must be rows of the series, 0..{n_rows - 1}; got "
                        f"{a.min()}..{a.max()}.")
    if np.any(np.diff(a) < 0):
        raise UserError("anchors must be sorted ascending (forecast origins in time order); "
                        "sort them first.")
    return a


def _horizon(h) -> int:
    if isinstance(h, bool) or not isinstance(h, (int, np.integer)) or h < 1:
        raise UserError(f"the horizon h must be an integer >= 1 (rows from the anchor to the "
                        f"label); got {h!r}.")
    return int(h)


def _checked(series, anchors, h, name: str = "series") -> tuple[np.ndarray, np.ndarray, int, int]:
    """(series, anchors, h, first finite row), after checking the rows the forecasts may read.

    Rows before the first finite value are a warm-up and are skipped; from there to the last
    origin every value must be finite; later rows are never read.
    """
    x = _series(series, name)
    a = _anchors(anchors, len(x))
    h = _horizon(h)
    finite = np.isfinite(x)
    if not finite.any():
        raise UserError(f"{name} has no finite value; it must hold the target's value per row.")
    first = int(np.argmax(finite))
    if a.size == 0:
        return x, a, h, first
    if a[0] < first:
        raise UserError(f"the first forecast origin, row {a[0]}, is in the warm-up of {name} "
                        f"(its first finite value is at row {first}); forecast origins must "
                        f"come after the warm-up.")
    bad = ~finite[first:a[-1] + 1]
    if bad.any():
        row = first + int(np.argmax(bad))
        raise UserError(f"{name} has a non-finite value ({x[row]}) at row {row}, after its "
                        f"first finite value (row {first}) and before the last forecast origin "
                        f"(row {a[-1]}); only a leading warm-up may be NaN: fill or drop the "
                        f"gap.")
    return x, a, h, first


def _blocks(n: int, refit_every: int) -> list[tuple[int, int]]:
    """Index ranges of the origins sharing one fit: refits at origins 0, k, 2k, ..."""
    if isinstance(refit_every, bool) or not isinstance(refit_every, (int, np.integer)) \
            or refit_every < 1:
        raise UserError(f"refit_every must be an integer >= 1 (origins between refits); got "
                        f"{refit_every!r}.")
    return [(i, min(i + refit_every, n)) for i in range(0, n, refit_every)]


def _trailing_mean(x: np.ndarray, n: int) -> np.ndarray:
    """Mean of x[t-n+1..t] per row t; NaN where the window starts before row 0 or holds NaN."""
    out = np.full(len(x), np.nan)
    if len(x) >= n:
        out[n - 1:] = np.lib.stride_tricks.sliding_window_view(x, n).mean(axis=1)
    return out


# ----------------------------------------------------------------------------- simple forecasts

def persistence(series: ArrayLike, anchors: ArrayLike, h: int) -> np.ndarray:
    """The last known value, ``series[a]``, at each origin ``a``.

    >>> persistence([1.0, 2.0, 3.0], [1, 2], 1)
    array([2., 3.])
    """
    x, a, _, _ = _checked(series, anchors, h)
    return x[a].copy()


def rolling_mean(series: ArrayLike, anchors: ArrayLike, h: int, n: int = 22) -> np.ndarray:
    """Mean of ``series[a-n+1..a]`` at each origin (of the finite ones early in the series).

    >>> rolling_mean([1.0, 2.0, 3.0, 4.0], [1, 3], 1, n=2)
    array([1.5, 3.5])
    """
    x, a, _, _ = _checked(series, anchors, h)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise UserError(f"the rolling window n must be an integer >= 1; got {n!r}.")
    padded = np.concatenate([np.full(n - 1, np.nan), x])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.lib.stride_tricks.sliding_window_view(padded, n)[a], axis=1)


def expanding_mean(series: ArrayLike, anchors: ArrayLike, h: int) -> np.ndarray:
    """Mean of every known value, the finite ``series[:a+1]``, at each origin.

    >>> expanding_mean([np.nan, 1.0, 2.0, 6.0], [2, 3], 1)
    array([1.5, 3. ])
    """
    x, a, _, _ = _checked(series, anchors, h)
    finite = np.isfinite(x)
    total = np.cumsum(np.where(finite, x, 0.0))
    count = np.cumsum(finite)
    return total[a] / count[a]


def zero(anchors: ArrayLike) -> np.ndarray:
    """Zero at every origin (the martingale forecast of a return).

    >>> zero([3, 4])
    array([0., 0.])
    """
    return np.zeros(len(np.asarray(anchors)))


def ewma(series: ArrayLike, anchors: ArrayLike, h: int, lam: float = 0.94) -> np.ndarray:
    """RiskMetrics volatility: sqrt(v_a) with v_t = lam * v_{t-1} + (1 - lam) * series[t]**2.

    ``series`` is a volatility proxy (or a return). The recursion starts at the 22nd finite
    row with v = the mean of the first 22 squares; before that v_t is the mean of the squares
    so far, so no value uses a later row. The forecast is flat in the horizon.

    >>> ewma(np.ones(30), [25, 29], 1)
    array([1., 1.])
    """
    x, a, _, first = _checked(series, anchors, h)
    if not 0.0 < lam < 1.0:
        raise UserError(f"the EWMA decay lam must be in (0, 1); got {lam!r} (RiskMetrics uses "
                        f"0.94 for daily data).")
    if a.size == 0:
        return np.empty(0)
    sq = x[first:a[-1] + 1] ** 2
    v = np.cumsum(sq) / np.arange(1, len(sq) + 1)
    if len(sq) > EWMA_START:
        start = v[EWMA_START - 1]
        v[EWMA_START:] = lfilter([1.0 - lam], [1.0, -lam], sq[EWMA_START:], zi=[lam * start])[0]
    return np.sqrt(v[a - first])


# ----------------------------------------------------------------------------- regressions

def _ols(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares coefficients and the residual variance SSE / (n - rank)."""
    beta, _, rank, _ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ beta
    dof = max(len(y) - rank, 1)
    return beta, float(resid @ resid) / dof


def _direct_regression(z: np.ndarray, design: np.ndarray, a: np.ndarray, h: int,
                       refit_every: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Predictions of z[a + h] from design[a], refit by blocks; and each origin's s2."""
    label = np.full(len(z), np.nan)
    label[:len(z) - h] = z[h:]
    usable = np.isfinite(design).all(axis=1) & np.isfinite(label)
    pred, s2 = np.empty(len(a)), np.empty(len(a))
    for i0, i1 in _blocks(len(a), refit_every):
        known = usable[:max(a[i0] - h + 1, 0)]
        rows = np.flatnonzero(known)
        if len(rows) < MIN_PAIRS:
            raise UserError(f"the {name} baseline needs at least {MIN_PAIRS} known (input, "
                            f"label) pairs at its first forecast origin (row {a[i0]}, horizon "
                            f"{h}); it has {len(rows)}. Start the test part later or use a "
                            f"longer series.")
        beta, s2[i0:i1] = _ols(design[rows], label[rows])
        pred[i0:i1] = design[a[i0:i1]] @ beta
    return pred, s2


def _har_design(z: np.ndarray) -> np.ndarray:
    return np.column_stack([np.ones(len(z)), z, _trailing_mean(z, 5), _trailing_mean(z, 22)])


def har(series: ArrayLike, anchors: ArrayLike, h: int, refit_every: int = 20,
        log: bool = False) -> np.ndarray:
    """Corsi's (2009) HAR: OLS of series[t+h] on [1, series[t], 5-row mean, 22-row mean].

    Direct h-step regression on the pairs known at each refit (see the module docstring).
    With ``log`` the regression runs on log(series) and the forecast is
    exp(prediction + s2 / 2), s2 the OLS residual variance (SSE / (n - 4)), the lognormal
    mean; values <= 0 are first floored at the smallest positive value known at the first
    origin. Needs 30 complete pairs at the first origin.

    >>> x = np.abs(np.sin(np.arange(200.0))) + 1.0
    >>> har(x, [150], 1).shape
    (1,)
    """
    x, a, h, _ = _checked(series, anchors, h)
    if a.size == 0:
        return np.empty(0)
    z = x
    if log:
        known = x[:a[0] + 1]
        positive = known[np.isfinite(known) & (known > 0)]
        if positive.size == 0:
            raise UserError(f"log-HAR needs positive values of the series; none is known at "
                            f"the first forecast origin (row {a[0]}).")
        z = np.log(np.maximum(x, positive.min()))  # NaN (warm-up) stays NaN
    pred, s2 = _direct_regression(z, _har_design(z), a, h, refit_every,
                                  "log-HAR" if log else "HAR")
    return np.exp(pred + 0.5 * s2) if log else pred


def ar1(series: ArrayLike, anchors: ArrayLike, h: int, refit_every: int = 20) -> np.ndarray:
    """Direct AR(1): OLS of series[t+h] on [1, series[t]], refit by blocks of origins.

    >>> ar1(np.arange(100.0), [80], 2)
    array([82.])
    """
    x, a, h, _ = _checked(series, anchors, h)
    if a.size == 0:
        return np.empty(0)
    design = np.column_stack([np.ones(len(x)), x])
    return _direct_regression(x, design, a, h, refit_every, "AR(1)")[0]


def _garch_backcast(e: np.ndarray) -> float:
    """arch's GARCH backcast: 0.94-weighted mean of the first (up to 75) squared residuals."""
    tau = min(75, len(e))
    w = 0.94 ** np.arange(tau)
    return float(np.sum(e[:tau] ** 2 * w / w.sum()))


def garch(returns: ArrayLike, anchors: ArrayLike, h: int, refit_every: int = 20,
          scale_to: ArrayLike | None = None) -> np.ndarray:
    """GARCH(1,1) volatility forecast for row a + h made at each origin a.

    At each refit origin a0, ``arch_model`` (constant mean, normal errors) is fit on
    100 * returns (percent returns, as arch prefers) over the last up to 2500 finite rows up
    to a0. Between refits the parameters stay and the variance recursion runs on, from the
    same first row, over the returns up to each origin (arch's backcast, no variance bounds),
    so the forecast at a refit origin is arch's own ``res.forecast(horizon=h)``. The h-step
    variance forecast is turned back into a volatility of returns (sqrt, / 100). A fit that
    does not converge keeps the previous fit's parameters and scale (if any).

    ``scale_to`` (the target series, e.g. a high/low volatility proxy, row-aligned with
    ``returns``) rescales each fit's forecasts by mean(target) / mean(GARCH in-sample
    volatility, the fit's ``conditional_volatility`` / 100) over the fit's rows where the
    target is finite (all known at the refit origin): a close-to-close GARCH
    volatility and a range-based proxy measure volatility on different scales.
    """
    from arch import arch_model

    r, a, h, first = _checked(returns, anchors, h, "returns")
    target = None
    if scale_to is not None:
        target = _series(scale_to, "scale_to")
        if len(target) != len(r):
            raise UserError(f"scale_to must have one value per row of returns ({len(r)}); got "
                            f"{len(target)}.")
    y = 100.0 * r
    out = np.empty(len(a))
    params, scale = None, 1.0
    for i0, i1 in _blocks(len(a), refit_every):
        a0 = a[i0]
        start = max(first, a0 - GARCH_WINDOW + 1)
        n_fit = a0 - start + 1
        if n_fit < MIN_GARCH:
            raise UserError(f"the GARCH baseline needs at least {MIN_GARCH} finite returns up "
                            f"to its first forecast origin (row {a0}); it has {n_fit}. Start "
                            f"the test part later or use a longer series.")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = arch_model(y[start:a0 + 1], mean="Constant", vol="GARCH", p=1, q=1,
                             dist="normal", rescale=False).fit(disp="off")
        if res.convergence_flag == 0 or params is None:
            params = np.asarray(res.params, dtype=float)
            if target is not None:
                rows = np.arange(start, a0 + 1)
                ok = np.isfinite(target[rows])
                if not ok.any():
                    raise UserError(f"scale_to has no finite value in the GARCH fit's rows "
                                    f"{start}..{a0}; pass the row-level target series.")
                in_sample = np.asarray(res.conditional_volatility, dtype=float)[ok] / 100.0
                scale = float(np.mean(target[rows[ok]])) / float(np.mean(in_sample))
        mu, omega, alpha, beta = params
        e = y[start:a[i1 - 1] + 1] - mu
        backcast = _garch_backcast(e[:n_fit])
        # sigma2[t] = omega + alpha * e[t-1]**2 + beta * sigma2[t-1], both lags backcast at t=0
        drive = omega + alpha * np.concatenate([[backcast], e[:-1] ** 2])
        sigma2 = lfilter([1.0], [1.0, -beta], drive, zi=[beta * backcast])[0]
        j = a[i0:i1] - start
        step = omega + alpha * e[j] ** 2 + beta * sigma2[j]
        for _ in range(h - 1):
            step = omega + (alpha + beta) * step
        vol = np.sqrt(step) / 100.0 * scale
        out[i0:i1] = vol
    return out


# ----------------------------------------------------------------------------- classification

def _label_codes(labels, anchors, h, n_classes: int) -> tuple[np.ndarray, np.ndarray, int]:
    x, a, _, first = _checked(labels, anchors, h, "labels")
    n_classes = _n_classes(n_classes)
    seen = x[first:a[-1] + 1] if a.size else x[first:]
    seen = seen[np.isfinite(seen)]
    bad = (seen != np.round(seen)) | (seen < 0) | (seen >= n_classes)
    if bad.any():
        raise UserError(f"labels must be integer class codes 0..{n_classes - 1}; got "
                        f"{seen[bad][0]:g}; encode the classes as 0..{n_classes - 1}.")
    return x, a, n_classes


def _n_classes(n_classes) -> int:
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) \
            or n_classes < 2:
        raise UserError(f"n_classes must be an integer >= 2 for a classification target; got "
                        f"{n_classes!r}.")
    return int(n_classes)


def _one_hot(codes: np.ndarray, n_classes: int) -> np.ndarray:
    out = np.zeros((len(codes), n_classes))
    ok = np.isfinite(codes)
    out[np.flatnonzero(ok), codes[ok].astype(np.intp)] = 1.0
    return out


def majority(labels: ArrayLike, anchors: ArrayLike, h: int, n_classes: int) -> np.ndarray:
    """Class frequencies of every known label (rows up to a) at each origin, shape (n, C).

    The arg-max is the majority class; a class not yet seen gets probability 0 (the log-loss
    clips it).

    >>> majority([0, 1, 1, 0, 1], [2, 4], 1, 2)
    array([[0.33333333, 0.66666667],
           [0.4       , 0.6       ]])
    """
    x, a, n_classes = _label_codes(labels, anchors, h, n_classes)
    counts = np.cumsum(_one_hot(x, n_classes), axis=0)[a]
    return counts / counts.sum(axis=1, keepdims=True)


def last_label(labels: ArrayLike, anchors: ArrayLike, h: int, n_classes: int) -> np.ndarray:
    """Persistence of a class: one-hot of labels[a], clipped to [1e-3, 1 - 1e-3], renormalised.

    >>> last_label([0, 1, 1], [2], 1, 2)
    array([[0.001, 0.999]])
    """
    x, a, n_classes = _label_codes(labels, anchors, h, n_classes)
    p = np.clip(_one_hot(x[a], n_classes), LABEL_CLIP, 1.0 - LABEL_CLIP)
    return p / p.sum(axis=1, keepdims=True)


# ----------------------------------------------------------------------------- i.i.d. rows

def _matrix(X, name: str) -> np.ndarray:
    m = np.asarray(X, dtype=float)
    if m.ndim == 1:
        m = m[:, None]
    m = m.reshape(len(m), -1)  # windows (n, steps, features) become flat rows
    if not np.isfinite(m).all():
        raise UserError(f"{name} has non-finite values; the baselines need finite features: "
                        f"impute or drop them first.")
    return m


def _targets(y, name: str = "y_train") -> np.ndarray:
    v = np.asarray(y, dtype=float)
    if v.ndim != 1 or v.size == 0 or not np.isfinite(v).all():
        raise UserError(f"{name} must be a non-empty one-dimensional array of finite values; "
                        f"got shape {v.shape}.")
    return v


def iid_mean(y_train: ArrayLike, n_test: int) -> np.ndarray:
    """The training mean, for each of ``n_test`` rows.

    >>> iid_mean([1.0, 3.0], 2)
    array([2., 2.])
    """
    return np.full(int(n_test), float(np.mean(_targets(y_train))))


def ridge(X_train: ArrayLike, y_train: ArrayLike, X_test: ArrayLike) -> np.ndarray:
    """scikit-learn ``RidgeCV(alphas=np.logspace(-3, 3, 13))`` fit on the training rows.

    The features are used as given (the pipeline standardises them before this point).
    """
    from sklearn.linear_model import RidgeCV

    Xtr, Xte, y = _matrix(X_train, "X_train"), _matrix(X_test, "X_test"), _targets(y_train)
    if len(Xtr) != len(y):
        raise UserError(f"X_train has {len(Xtr)} rows but y_train has {len(y)}; pass aligned "
                        f"arrays.")
    return RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(Xtr, y).predict(Xte)


def iid_majority(y_train: ArrayLike, n_test: int, n_classes: int) -> np.ndarray:
    """Class frequencies of the training labels for each of ``n_test`` rows, shape (n, C).

    >>> iid_majority([0, 0, 1], 1, 3)
    array([[0.66666667, 0.33333333, 0.        ]])
    """
    n_classes = _n_classes(n_classes)
    codes = _codes(y_train, n_classes)
    freq = np.bincount(codes, minlength=n_classes) / len(codes)
    return np.tile(freq, (int(n_test), 1))


def _codes(y, n_classes: int) -> np.ndarray:
    v = _targets(y)
    bad = (v != np.round(v)) | (v < 0) | (v >= n_classes)
    if bad.any():
        raise UserError(f"y_train must hold integer class codes 0..{n_classes - 1}; got "
                        f"{v[bad][0]:g}; encode the classes as 0..{n_classes - 1}.")
    return v.astype(np.intp)


def logistic(X_train: ArrayLike, y_train: ArrayLike, X_test: ArrayLike,
             n_classes: int | None = None) -> np.ndarray:
    """scikit-learn ``LogisticRegression(max_iter=1000)`` probabilities, shape (n, C).

    There is a column for every class 0..C-1 (C = ``n_classes``, default the largest training
    code + 1); a class absent from y_train gets probability 0. With a single training class
    the forecast is that class with probability 1.
    """
    from sklearn.linear_model import LogisticRegression

    Xtr, Xte = _matrix(X_train, "X_train"), _matrix(X_test, "X_test")
    v = _targets(y_train)
    C = _n_classes(max(2, int(np.max(v)) + 1) if n_classes is None else n_classes)
    codes = _codes(v, C)
    if len(Xtr) != len(codes):
        raise UserError(f"X_train has {len(Xtr)} rows but y_train has {len(codes)}; pass "
                        f"aligned arrays.")
    out = np.zeros((len(Xte), C))
    classes = np.unique(codes)
    if len(classes) == 1:
        out[:, classes[0]] = 1.0
        return out
    model = LogisticRegression(max_iter=1000).fit(Xtr, codes)
    out[:, model.classes_] = model.predict_proba(Xte)
    return out


# ----------------------------------------------------------------------------- dispatchers

def time_series_baselines(kind: str, series: ArrayLike, anchors: ArrayLike, h: int, *,
                          returns: ArrayLike | None = None, n_classes: int = 0,
                          refit_every: int = 20, only: Collection[str] | None = None
                          ) -> dict[str, np.ndarray]:
    """Every baseline of a kind of target (or those named in ``only``), by name, forecast at
    each origin in ``anchors``.

    - ``volatility`` (series a volatility proxy): ``har``, ``log_har``, ``garch`` (when the
      row-level ``returns`` are given; scaled to the proxy), ``ewma``, ``mean_22``,
      ``persistence``.
    - ``returns``: ``zero``, ``mean`` (expanding), ``ar1``.
    - ``level`` (any other regression column): ``persistence``, ``mean``, ``ar1``.
    - ``binary`` (0/1 rows): ``majority``, ``persistence``, as (n, 2) probabilities.
    - ``multiclass`` (codes 0..n_classes-1): ``majority``, as (n, C) probabilities.
    """
    makers: dict[str, Callable[[], np.ndarray]]
    if kind == "volatility":
        makers = {"har": lambda: har(series, anchors, h, refit_every),
                  "log_har": lambda: har(series, anchors, h, refit_every, log=True)}
        if returns is not None:
            makers["garch"] = lambda: garch(returns, anchors, h, refit_every, scale_to=series)
        makers |= {"ewma": lambda: ewma(series, anchors, h),
                   "mean_22": lambda: rolling_mean(series, anchors, h, 22),
                   "persistence": lambda: persistence(series, anchors, h)}
    elif kind == "returns":
        makers = {"zero": lambda: zero(anchors), "mean": lambda: expanding_mean(series, anchors, h),
                  "ar1": lambda: ar1(series, anchors, h, refit_every)}
    elif kind == "level":
        makers = {"persistence": lambda: persistence(series, anchors, h),
                  "mean": lambda: expanding_mean(series, anchors, h),
                  "ar1": lambda: ar1(series, anchors, h, refit_every)}
    elif kind == "binary":
        makers = {"majority": lambda: majority(series, anchors, h, 2),
                  "persistence": lambda: last_label(series, anchors, h, 2)}
    elif kind == "multiclass":
        makers = {"majority": lambda: majority(series, anchors, h, n_classes)}
    else:
        raise UserError(f"unknown time-series target kind '{kind}'; allowed: "
                        f"{', '.join(TIME_SERIES_KINDS)}"
                        f"{did_you_mean(str(kind), TIME_SERIES_KINDS)}")
    if only is not None:
        unknown = sorted(set(only) - set(makers))
        if unknown:
            raise UserError(f"no baseline '{unknown[0]}' for a {kind} target; its baselines: "
                            f"{', '.join(makers)}{did_you_mean(unknown[0], makers)}")
    return {name: make() for name, make in makers.items() if only is None or name in only}


def per_series_baselines(kind: str, history: Any, anchors: ArrayLike, h: int, *,
                         n_classes: int = 0, refit_every: int = 20,
                         only: Collection[str] | None = None) -> dict[str, np.ndarray]:
    """:func:`time_series_baselines` on a history table (columns ``target``, and ``returns``
    when there are prices, per row) at origins ``anchors`` (its rows, ascending). With a
    ``series`` column (a panel, one contiguous block of rows per series) every series is
    forecast from its own rows alone, as if it were the only one."""
    a = np.asarray(anchors, dtype=np.intp)
    target = history["target"].to_numpy()
    returns = history["returns"].to_numpy() if "returns" in history else None
    if "series" not in history:
        return time_series_baselines(kind, target, a, h, returns=returns, n_classes=n_classes,
                                     refit_every=refit_every, only=only)
    labels = history["series"].to_numpy()
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
    ends = np.r_[starts[1:], len(labels)]
    out: dict[str, np.ndarray] = {}
    for b0, b1 in zip(starts, ends, strict=True):
        sel = np.flatnonzero((a >= b0) & (a < b1))
        if not len(sel):
            continue
        part = time_series_baselines(
            kind, target[b0:b1], a[sel] - b0, h,
            returns=None if returns is None else returns[b0:b1], n_classes=n_classes,
            refit_every=refit_every, only=only)
        for name, f in part.items():
            if name not in out:
                out[name] = np.full((len(a), *f.shape[1:]), np.nan)
            out[name][sel] = f
    return out


def iid_baselines(task: str, X_train: ArrayLike, y_train: ArrayLike, X_test: ArrayLike,
                  n_classes: int = 0) -> dict[str, np.ndarray]:
    """The i.i.d. baselines of a task: ``regression`` gives ``mean`` and ``ridge``; ``binary``
    and ``multiclass`` give ``majority`` and ``logistic`` as (n, C) probabilities (C = 2 for
    binary, ``n_classes`` for multiclass)."""
    n_test = len(_matrix(X_test, "X_test"))
    if task == "regression":
        return {"mean": iid_mean(y_train, n_test), "ridge": ridge(X_train, y_train, X_test)}
    if task in ("binary", "multiclass"):
        C = 2 if task == "binary" else _n_classes(n_classes)
        return {"majority": iid_majority(y_train, n_test, C),
                "logistic": logistic(X_train, y_train, X_test, C)}
    raise UserError(f"unknown task '{task}'; allowed: {', '.join(IID_TASKS)}"
                    f"{did_you_mean(str(task), IID_TASKS)}")
