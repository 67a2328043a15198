"""Baseline forecasts against statsmodels OLS, arch, pandas and scikit-learn, on synthetic series;
and the contract every time-series baseline keeps: no forecast reads a row after its origin."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from arch import arch_model
from sklearn.linear_model import LogisticRegression, RidgeCV

from netrace.errors import UserError
from netrace.evaluate import _baselines
from netrace.evaluate._baselines import (
    ar1,
    ewma,
    expanding_mean,
    garch,
    har,
    iid_baselines,
    iid_majority,
    iid_mean,
    last_label,
    logistic,
    majority,
    persistence,
    ridge,
    rolling_mean,
    time_series_baselines,
    zero,
)

WARMUP = 5


def _ar1_series(n: int = 700, seed: int = 0) -> np.ndarray:
    """x_t = 0.5 + 0.7 x_{t-1} + e_t, with a NaN warm-up."""
    rng = np.random.default_rng(seed)
    x = np.empty(n)
    x[0] = 0.5 / 0.3
    for t in range(1, n):
        x[t] = 0.5 + 0.7 * x[t - 1] + rng.normal()
    x[:WARMUP] = np.nan
    return x


def _vol_series(n: int = 800, seed: int = 1) -> np.ndarray:
    """A positive, persistent volatility: exp of a HAR-type log process, with a NaN warm-up."""
    rng = np.random.default_rng(seed)
    z = np.full(n, -4.6)
    for t in range(22, n):
        z[t] = (-4.6 * 0.1 + 0.4 * z[t - 1] + 0.3 * z[t - 5:t].mean() + 0.2 * z[t - 22:t].mean()
                + 0.3 * rng.normal())
    x = np.exp(z)
    x[:WARMUP] = np.nan
    return x


def _garch_returns(n: int = 900, seed: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r, s2 = np.empty(n), 1e-4
    for t in range(n):
        r[t] = 0.0003 + np.sqrt(s2) * rng.normal()
        s2 = 2e-6 + 0.08 * (r[t] - 0.0003) ** 2 + 0.9 * s2
    r[0] = np.nan  # no return on the first day
    return r


def _sm_direct(z: np.ndarray, a: int, a0: int, h: int, har_terms: bool) -> tuple[float, float]:
    """statsmodels OLS of z[t+h] on the regressors at t, on the pairs known at a0; the
    prediction at row a and the residual variance."""
    s = pd.Series(z)
    cols = {"x": s}
    if har_terms:
        cols |= {"m5": s.rolling(5).mean(), "m22": s.rolling(22).mean()}
    X = sm.add_constant(pd.DataFrame(cols), has_constant="add")
    data = X.assign(y=s.shift(-h)).loc[: a0 - h].dropna()
    res = sm.OLS(data["y"], data.drop(columns="y")).fit()
    return float(X.loc[a].to_numpy() @ res.params.to_numpy()), float(res.scale)


def _refit_origin(anchors: np.ndarray, i: int, every: int) -> int:
    return int(anchors[(i // every) * every])


# ----------------------------------------------------------------------------- regressions

@pytest.mark.parametrize("h", [1, 5])
def test_har_equals_statsmodels_ols(h):
    x = _vol_series()
    anchors = np.arange(200, 300)
    f = har(x, anchors, h)
    for i in (0, 7, 20, 59, 99):
        ref, _ = _sm_direct(x, anchors[i], _refit_origin(anchors, i, 20), h, True)
        assert f[i] == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize("h", [1, 3])
def test_log_har_equals_statsmodels_ols_with_lognormal_correction(h):
    x = _vol_series()
    x[150] = 0.0  # floored at the smallest positive value known at the first origin
    x[260] = 0.0
    anchors = np.arange(200, 300)
    floor = np.nanmin(np.where(x[:201] > 0, x[:201], np.nan))
    z = np.log(np.clip(x, floor, None))  # the warm-up stays NaN
    f = har(x, anchors, h, refit_every=15, log=True)
    for i in (0, 14, 15, 70, 99):
        pred, s2 = _sm_direct(z, anchors[i], _refit_origin(anchors, i, 15), h, True)
        assert f[i] == pytest.approx(np.exp(pred + 0.5 * s2), rel=1e-9)


@pytest.mark.parametrize("h", [1, 3])
def test_ar1_equals_statsmodels_ols_refit_every_20_origins(h):
    x = _ar1_series()
    anchors = np.arange(100, 400, 2)  # refits count origins, not rows
    f = ar1(x, anchors, h)
    for i in (0, 19, 20, 41, 149):
        ref, _ = _sm_direct(x, anchors[i], _refit_origin(anchors, i, 20), h, False)
        assert f[i] == pytest.approx(ref, rel=1e-9)


# ----------------------------------------------------------------------------- simple forecasts

def test_simple_forecasts_equal_pandas():
    x = _ar1_series()
    s = pd.Series(x)
    anchors = np.arange(WARMUP, 600, 7)
    np.testing.assert_array_equal(persistence(x, anchors, 1), x[anchors])
    np.testing.assert_allclose(rolling_mean(x, anchors, 1),
                               s.rolling(22, min_periods=1).mean().to_numpy()[anchors], rtol=1e-12)
    np.testing.assert_allclose(rolling_mean(x, anchors, 1, n=5),
                               s.rolling(5, min_periods=1).mean().to_numpy()[anchors], rtol=1e-12)
    np.testing.assert_allclose(expanding_mean(x, anchors, 1),
                               s.expanding().mean().to_numpy()[anchors], rtol=1e-10)
    np.testing.assert_array_equal(zero(anchors), np.zeros(len(anchors)))


@pytest.mark.parametrize("lam", [0.94, 0.8])
def test_ewma_equals_pandas_ewm(lam):
    x = _vol_series()
    sq = pd.Series(x[WARMUP:] ** 2)
    ref = np.empty(len(sq))
    ref[:22] = sq[:22].expanding().mean()  # before the start: the mean square so far
    start = pd.concat([pd.Series([sq[:22].mean()]), sq[22:]], ignore_index=True)
    ref[21:] = start.ewm(alpha=1 - lam, adjust=False).mean().to_numpy()
    anchors = np.arange(WARMUP, len(x))
    np.testing.assert_allclose(ewma(x, anchors, 4, lam=lam), np.sqrt(ref), rtol=1e-12)


# ----------------------------------------------------------------------------- GARCH

def _arch_fit(y: np.ndarray):
    return arch_model(y, mean="Constant", vol="GARCH", p=1, q=1, dist="normal",
                      rescale=False).fit(disp="off")


def _arch_vol(res, h: int) -> float:
    return float(np.sqrt(res.forecast(horizon=h).variance.to_numpy()[-1, h - 1]) / 100)


def test_garch_equals_arch_forecasts():
    r, h = _garch_returns(), 3
    anchors = np.arange(500, 560)
    f = garch(r, anchors, h)
    res = _arch_fit(100 * r[1:521])  # the refit at origin 20, row 520
    assert f[20] == pytest.approx(_arch_vol(res, h), rel=1e-8)
    # between refits: the same parameters on the longer sample
    fixed = arch_model(100 * r[1:528], mean="Constant", vol="GARCH", p=1, q=1,
                       dist="normal", rescale=False).fix(res.params)
    assert f[27] == pytest.approx(_arch_vol(fixed, h), rel=1e-8)
    assert f[0] == pytest.approx(_arch_vol(_arch_fit(100 * r[1:501]), h), rel=1e-8)


def test_garch_fits_on_the_last_window(monkeypatch):
    monkeypatch.setattr(_baselines, "GARCH_WINDOW", 300)
    r = _garch_returns()
    f = garch(r, np.arange(500, 560), 1)
    assert f[40] == pytest.approx(_arch_vol(_arch_fit(100 * r[241:541]), 1), rel=1e-8)


def test_garch_scaled_to_the_target():
    r = _garch_returns()
    target = 1.3 * np.abs(r) + 0.002
    target[:10] = np.nan
    anchors = np.arange(500, 560)
    ratio = garch(r, anchors, 2, scale_to=target) / garch(r, anchors, 2)
    res = _arch_fit(100 * r[1:521])
    ok = np.isfinite(target[1:521])
    expected = target[1:521][ok].mean() / (res.conditional_volatility[ok] / 100).mean()
    np.testing.assert_allclose(ratio[20:40], expected, rtol=1e-8)


# ----------------------------------------------------------------------------- classification

def _labels(n: int = 400, seed: int = 3, classes: int = 3) -> np.ndarray:
    y = np.random.default_rng(seed).integers(0, classes, n).astype(float)
    y[:WARMUP] = np.nan
    return y


def test_majority_is_the_class_frequency_so_far():
    y = _labels()
    anchors = np.arange(WARMUP, 400, 9)
    p = majority(y, anchors, 1, 3)
    for i, a in enumerate(anchors):
        ref = pd.Series(y[:a + 1]).value_counts(normalize=True).reindex([0.0, 1.0, 2.0],
                                                                       fill_value=0.0)
        np.testing.assert_allclose(p[i], ref.to_numpy(), rtol=1e-12)


def test_last_label_is_a_clipped_one_hot():
    y = _labels()
    anchors = np.arange(WARMUP, 400, 9)
    p = last_label(y, anchors, 2, 3)
    for i, a in enumerate(anchors):
        ref = np.full(3, 1e-3)
        ref[int(y[a])] = 1 - 1e-3
        np.testing.assert_allclose(p[i], ref / ref.sum(), rtol=1e-12)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)


# ----------------------------------------------------------------------------- no look-ahead

def _vol_and_returns() -> tuple[np.ndarray, np.ndarray]:
    r = _garch_returns(700)
    return 1.3 * np.abs(r) + 0.002, r


LOOKAHEAD = {
    "persistence": lambda x, r, a: persistence(x, a, 2),
    "mean_22": lambda x, r, a: rolling_mean(x, a, 2),
    "expanding_mean": lambda x, r, a: expanding_mean(x, a, 2),
    "ewma": lambda x, r, a: ewma(x, a, 2),
    "har": lambda x, r, a: har(x, a, 2, refit_every=7),
    "log_har": lambda x, r, a: har(x, a, 2, refit_every=7, log=True),
    "ar1": lambda x, r, a: ar1(x, a, 3, refit_every=7),
    "garch": lambda x, r, a: garch(r, a, 2, refit_every=7, scale_to=x),
    "majority": lambda x, r, a: majority((x > 0.012).astype(float), a, 1, 2),
    "last_label": lambda x, r, a: last_label((x > 0.012).astype(float), a, 1, 2),
}


@pytest.mark.parametrize("name", list(LOOKAHEAD))
@pytest.mark.parametrize("garbage", ["values", "nan"])
def test_no_forecast_reads_a_row_after_its_origin(name, garbage):
    fn = LOOKAHEAD[name]
    x, r = _vol_and_returns()
    anchors = np.arange(400, 460)
    clean = fn(x, r, anchors)
    rng = np.random.default_rng(0)
    for k in (0, 6, 7, 31, 59):
        a = anchors[k]
        xg, rg = x.copy(), r.copy()
        n_after = len(x) - a - 1
        xg[a + 1:] = rng.uniform(5, 50, n_after) if garbage == "values" else np.nan
        rg[a + 1:] = rng.normal(0, 3, n_after) if garbage == "values" else np.nan
        np.testing.assert_allclose(fn(xg, rg, anchors[:k + 1]), clean[:k + 1], rtol=1e-12,
                                   err_msg=f"{name} at origin {k} (row {a})")


# ----------------------------------------------------------------------------- dispatch

def test_time_series_baselines_names_and_values():
    x, r = _vol_and_returns()
    anchors = np.arange(300, 330)
    vol = time_series_baselines("volatility", x, anchors, 1, returns=r)
    assert list(vol) == ["har", "log_har", "garch", "ewma", "mean_22", "persistence"]
    np.testing.assert_array_equal(vol["mean_22"], rolling_mean(x, anchors, 1, 22))
    np.testing.assert_array_equal(vol["garch"], garch(r, anchors, 1, scale_to=x))
    assert "garch" not in time_series_baselines("volatility", x, anchors, 1)
    assert set(time_series_baselines("returns", r, anchors, 1)) == {"zero", "mean", "ar1"}
    level = time_series_baselines("level", x, anchors, 2, refit_every=5)
    assert set(level) == {"persistence", "mean", "ar1"}
    np.testing.assert_array_equal(level["ar1"], ar1(x, anchors, 2, refit_every=5))
    up = (r > 0).astype(float)
    binary = time_series_baselines("binary", up, anchors, 1)
    assert set(binary) == {"majority", "persistence"}
    assert binary["majority"].shape == binary["persistence"].shape == (30, 2)
    multi = time_series_baselines("multiclass", _labels(), anchors, 1, n_classes=3)
    assert set(multi) == {"majority"} and multi["majority"].shape == (30, 3)
    for out in (vol, level):
        assert all(v.shape == (30,) and np.isfinite(v).all() for v in out.values())


# ----------------------------------------------------------------------------- i.i.d. rows

def _iid(n: int = 300, seed: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    y = X @ np.array([1.0, -0.5, 0.0, 2.0]) + rng.normal(size=n)
    return X[:200], y[:200], X[200:]


def test_ridge_and_mean_equal_sklearn():
    Xtr, ytr, Xte = _iid()
    ref = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(Xtr, ytr).predict(Xte)
    np.testing.assert_allclose(ridge(Xtr, ytr, Xte), ref, rtol=1e-12)
    np.testing.assert_allclose(iid_mean(ytr, 100), np.full(100, ytr.mean()), rtol=1e-12)
    out = iid_baselines("regression", Xtr, ytr, Xte)
    assert list(out) == ["mean", "ridge"] and out["ridge"].shape == (100,)


def test_logistic_has_a_column_for_every_class():
    Xtr, ytr, Xte = _iid()
    codes = np.where(ytr > 0, 2, 0)  # class 1 never seen in training
    ref = LogisticRegression(max_iter=1000).fit(Xtr, codes).predict_proba(Xte)
    p = logistic(Xtr, codes, Xte, n_classes=3)
    assert p.shape == (100, 3)
    np.testing.assert_allclose(p[:, [0, 2]], ref, rtol=1e-10)
    np.testing.assert_array_equal(p[:, 1], 0.0)
    np.testing.assert_array_equal(logistic(Xtr, np.ones(200), Xte, n_classes=2)[:, 1], 1.0)
    freq = pd.Series(codes).value_counts(normalize=True).reindex([0, 1, 2], fill_value=0.0)
    np.testing.assert_allclose(iid_majority(codes, 4, 3), np.tile(freq.to_numpy(), (4, 1)))
    out = iid_baselines("multiclass", Xtr, codes, Xte, n_classes=3)
    assert list(out) == ["majority", "logistic"]
    assert iid_baselines("binary", Xtr, (ytr > 0).astype(int), Xte)["logistic"].shape == (100, 2)


# ----------------------------------------------------------------------------- bad input

def test_nan_in_the_middle_is_an_error():
    x = _vol_series()
    x[150] = np.nan
    with pytest.raises(UserError, match=r"series has a non-finite value \(nan\) at row 150, "
                                        r"after its first finite value \(row 5\)"):
        har(x, np.arange(200, 210), 1)
    with pytest.raises(UserError, match=r"returns has a non-finite value \(nan\) at row 150"):
        garch(x, np.arange(200, 210), 1)
    persistence(x, np.arange(100, 140), 1)  # a gap after the last origin is never read


def test_too_few_points_is_an_error():
    x = _vol_series()
    with pytest.raises(UserError, match=r"the HAR baseline needs at least 30 known \(input, "
                                        r"label\) pairs at its first forecast origin \(row 40, "
                                        r"horizon 1\); it has 14\. Start the test part later"):
        har(x, np.arange(40, 50), 1)
    with pytest.raises(UserError, match=r"the GARCH baseline needs at least 100 finite returns "
                                        r"up to its first forecast origin \(row 60\); it has 56"):
        garch(x, np.arange(60, 70), 1)


def test_bad_origins_kinds_and_labels():
    x = _vol_series()
    with pytest.raises(UserError, match=r"first forecast origin, row 2, is in the warm-up of "
                                        r"series \(its first finite value is at row 5\)"):
        persistence(x, np.arange(2, 10), 1)
    with pytest.raises(UserError, match="anchors must be sorted ascending"):
        persistence(x, np.array([20, 10]), 1)
    with pytest.raises(UserError, match=r"the horizon h must be an integer >= 1.*got 0"):
        persistence(x, np.arange(10, 20), 0)
    with pytest.raises(UserError, match=r"unknown time-series target kind 'volatilty'; "
                                        r"allowed: .*; did you mean 'volatility'\?"):
        time_series_baselines("volatilty", x, np.arange(200, 210), 1)
    with pytest.raises(UserError, match=r"unknown task 'regresion'.*did you mean 'regression'"):
        iid_baselines("regresion", *_iid())
    with pytest.raises(UserError, match=r"labels must be integer class codes 0\.\.1; got 3"):
        majority(np.array([0.0, 1.0, 3.0]), np.array([2]), 1, 2)
    with pytest.raises(UserError, match=r"n_classes must be an integer >= 2"):
        time_series_baselines("multiclass", _labels(), np.arange(10, 20), 1)
    Xtr, ytr, Xte = _iid()
    Xtr[3, 1] = np.nan
    with pytest.raises(UserError, match="X_train has non-finite values"):
        ridge(Xtr, ytr, Xte)
