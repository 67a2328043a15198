"""Forecast metrics and tests against scikit-learn, statsmodels, arch and SciPy, in float64."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from arch.bootstrap import SPA
from scipy import stats
from sklearn.metrics import (
    accuracy_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    roc_auc_score,
)
from statsmodels.tsa.stattools import acovf

from netrace.errors import UserError
from netrace.evaluate._stats import (
    binary_metrics,
    diebold_mariano,
    interval_coverage,
    multiclass_metrics,
    pesaran_timmermann,
    point_losses,
    regression_metrics,
    spa_pvalue,
)


def _probs(rng: np.random.Generator, n: int, c: int) -> np.ndarray:
    z = rng.normal(size=(n, c))
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# ----------------------------------------------------------------------------- point losses

def test_mse_mae_match_sklearn():
    rng = np.random.default_rng(0)
    y, f = rng.normal(size=200), rng.normal(size=200)
    assert point_losses("mse", y, f).mean() == pytest.approx(mean_squared_error(y, f), rel=1e-12)
    assert point_losses("mae", y, f).mean() == pytest.approx(mean_absolute_error(y, f), rel=1e-12)


def test_qlike_is_pattons_loss():
    rng = np.random.default_rng(1)
    y, f = np.exp(rng.normal(-4, 0.5, 300)), np.exp(rng.normal(-4, 0.5, 300))
    s, v = y ** 2, f ** 2
    np.testing.assert_allclose(point_losses("qlike", y, f), s / v - np.log(s / v) - 1, rtol=1e-12)
    np.testing.assert_allclose(point_losses("qlike", y, y), 0.0, atol=1e-12)


def test_qlike_zero_proxy_and_nonpositive_forecast_are_finite():
    y = np.array([0.0, 0.01, 0.02])
    a = point_losses("qlike", y, np.array([0.01, 0.01, 0.0]))
    b = point_losses("qlike", y, np.array([0.02, 0.01, -1.0]))
    assert np.isfinite(a).all() and np.isfinite(b).all()
    # at y == 0 the floor only shifts the loss: differences are those of log(v) exactly
    assert a[0] - b[0] == pytest.approx(np.log(0.01 ** 2) - np.log(0.02 ** 2), rel=1e-12)
    assert a[2] > 20  # a non-positive forecast of a positive volatility is heavily penalised


def test_log_loss_matches_sklearn_binary_and_multiclass():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 300)
    p = rng.uniform(0.05, 0.95, 300)
    assert point_losses("log_loss", y, p).mean() == pytest.approx(
        log_loss(y, y_proba=p, labels=[0, 1]), rel=1e-12)
    yc, P = rng.integers(0, 4, 300), _probs(rng, 300, 4)
    assert point_losses("log_loss", yc, P).mean() == pytest.approx(
        log_loss(yc, y_proba=P, labels=[0, 1, 2, 3]), rel=1e-12)


def test_log_loss_clips_probabilities():
    losses = point_losses("log_loss", np.array([1, 0]), np.array([0.0, 1.0]))
    np.testing.assert_allclose(losses, -np.log(1e-15), rtol=1e-9)


def test_point_losses_bad_input():
    with pytest.raises(UserError, match=r"unknown loss 'mase'; allowed: .*did you mean 'mse'"):
        point_losses("mase", [1.0], [1.0])
    with pytest.raises(UserError, match=r"lengths differ: y=2, forecasts=3"):
        point_losses("mse", [1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(UserError, match=r"class codes 0\.\.1; got 2 at position 1"):
        point_losses("log_loss", [0, 2], [0.5, 0.5])


# ----------------------------------------------------------------------------- summary metrics

def test_regression_metrics_match_sklearn():
    rng = np.random.default_rng(3)
    y = rng.normal(size=250)
    y[:5] = 0.0
    f = 0.5 * y + rng.normal(size=250)
    f[5:8] = 0.0
    m = regression_metrics(y, f, train_mean=0.3, volatility=False, returns=True)
    assert set(m) == {"mse", "mae", "r2", "hit_rate"}
    assert m["mse"] == pytest.approx(mean_squared_error(y, f), rel=1e-12)
    assert m["mae"] == pytest.approx(mean_absolute_error(y, f), rel=1e-12)
    expected = 1 - mean_squared_error(y, f) / mean_squared_error(y, np.full_like(y, 0.3))
    assert m["r2"] == pytest.approx(expected, rel=1e-12)
    # with the test mean as the constant forecast it is the usual R^2
    m_test = regression_metrics(y, f, train_mean=float(y.mean()))
    assert m_test["r2"] == pytest.approx(r2_score(y, f), rel=1e-10)
    up_y, up_f = np.sign(y) == 1, np.sign(f) == 1
    assert m["hit_rate"] == pytest.approx(accuracy_score(up_y, up_f), rel=1e-12)


def test_regression_metrics_volatility_and_nan():
    rng = np.random.default_rng(4)
    y, f = np.exp(rng.normal(-4, 0.3, 100)), np.exp(rng.normal(-4, 0.3, 100))
    m = regression_metrics(y, f, train_mean=float(y.mean()), volatility=True)
    s, v = y ** 2, f ** 2
    assert m["qlike"] == pytest.approx(np.mean(s / v - np.log(s / v) - 1), rel=1e-12)
    f[3] = np.nan
    assert all(math.isnan(x) for x in regression_metrics(y, f, train_mean=0.0).values())
    assert all(math.isnan(x) for x in regression_metrics([], [], train_mean=0.0).values())


def test_binary_metrics_match_sklearn():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 400)
    p = np.clip(0.3 * y + rng.uniform(0, 0.7, 400), 0.01, 0.99)
    m = binary_metrics(y, p)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, p >= 0.5), rel=1e-12)
    assert m["hit_rate"] == m["accuracy"]
    assert m["log_loss"] == pytest.approx(log_loss(y, y_proba=p, labels=[0, 1]), rel=1e-12)
    assert m["auc"] == pytest.approx(roc_auc_score(y, p), rel=1e-12)


def test_binary_metrics_one_class_gives_nan_auc(recwarn):
    m = binary_metrics(np.ones(10), np.full(10, 0.7))
    assert math.isnan(m["auc"]) and m["accuracy"] == 1.0
    assert not recwarn.list
    with pytest.raises(UserError, match=r"integer class codes 0\.\.1; got 0\.5"):
        binary_metrics([0.5, 1], [0.2, 0.3])


def test_multiclass_metrics_match_sklearn():
    rng = np.random.default_rng(6)
    y, P = rng.integers(0, 3, 300), _probs(rng, 300, 3)
    m = multiclass_metrics(y, P)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, P.argmax(1)), rel=1e-12)
    assert m["log_loss"] == pytest.approx(log_loss(y, y_proba=P, labels=[0, 1, 2]), rel=1e-12)
    assert m["auc"] == pytest.approx(roc_auc_score(y, P, multi_class="ovr", average="macro"),
                                     rel=1e-12)
    missing = multiclass_metrics(np.array([0, 1, 0, 1]), _probs(rng, 4, 3))  # class 2 absent
    assert math.isnan(missing["auc"]) and np.isfinite(missing["log_loss"])


# ----------------------------------------------------------------------------- Diebold-Mariano

def _hac_t(d: np.ndarray, maxlags: int) -> float:
    fit = sm.OLS(d, np.ones(len(d))).fit(cov_type="HAC", cov_kwds={"maxlags": maxlags})
    return float(fit.tvalues[0])


def test_dm_h1_equals_statsmodels_hac_t_value():
    rng = np.random.default_rng(7)
    a, b = rng.normal(1.1, 1, 120) ** 2, rng.normal(1.0, 1, 120) ** 2
    T, t_ref = 120, _hac_t(a - b, 0)
    stat, p = diebold_mariano(a, b, 1, harvey=False)
    assert stat == pytest.approx(t_ref, rel=1e-10)
    assert p == pytest.approx(2 * stats.norm.sf(abs(t_ref)), rel=1e-10)
    stat_h, p_h = diebold_mariano(a, b, 1)
    assert stat_h == pytest.approx(t_ref * math.sqrt((T - 1) / T), rel=1e-10)
    assert p_h == pytest.approx(2 * stats.t.sf(abs(stat_h), T - 1), rel=1e-10)


def test_dm_rectangular_long_run_variance_for_h_above_1():
    rng = np.random.default_rng(8)
    e = rng.normal(size=303)
    d = 0.2 + e[3:] + 0.6 * e[2:-1] + 0.3 * e[1:-2]  # MA(2): the loss differential of h = 3
    T, h = len(d), 3
    gamma = acovf(d, adjusted=False, demean=True, nlag=h - 1, fft=False)
    lrv = gamma[0] + 2 * gamma[1:].sum()
    assert lrv > 0
    raw = d.mean() / math.sqrt(lrv / T)
    stat, p = diebold_mariano(d, np.zeros(T), h)
    k = math.sqrt((T + 1 - 2 * h + h * (h - 1) / T) / T)
    assert stat == pytest.approx(raw * k, rel=1e-10)
    assert p == pytest.approx(2 * stats.t.sf(abs(raw * k), T - 1), rel=1e-10)


def test_dm_falls_back_to_bartlett_when_rectangular_variance_is_not_positive():
    rng = np.random.default_rng(9)
    d = 0.1 + (-1.0) ** np.arange(200) + 0.05 * rng.normal(size=200)
    gamma = acovf(d, adjusted=False, demean=True, nlag=1, fft=False)
    assert gamma[0] + 2 * gamma[1] <= 0
    stat, _ = diebold_mariano(d, np.zeros(200), 2, harvey=False)
    assert stat == pytest.approx(_hac_t(d, 1), rel=1e-10)


def test_dm_sign_size_and_edge_cases():
    rng = np.random.default_rng(10)
    good, bad = rng.normal(size=300) ** 2, 2 * rng.normal(size=300) ** 2
    stat, p = diebold_mariano(bad, good)
    assert stat > 0 and p < 0.01  # positive: the first model has the larger loss
    rejections = [diebold_mariano(*np.random.default_rng(s).normal(size=(2, 100)) ** 2)[1] < 0.05
                  for s in range(200)]
    assert 0.01 <= np.mean(rejections) <= 0.10
    assert diebold_mariano(np.ones(5), np.ones(5)) == (0.0, 1.0)
    assert diebold_mariano(np.full(5, 2.0), np.ones(5)) == (math.inf, 0.0)
    assert diebold_mariano(np.ones(5), np.full(5, 2.0)) == (-math.inf, 0.0)
    assert all(math.isnan(x) for x in diebold_mariano([1.0], [2.0]))
    assert all(math.isnan(x) for x in diebold_mariano([1.0, 2.0, 3.0], [2.0, 2.0, 2.0], h=3))


def test_dm_bad_input():
    with pytest.raises(UserError, match=r"loss_b has 1 non-finite losses \(first at position 2\)"):
        diebold_mariano([1.0, 2.0, 3.0], [1.0, 2.0, np.nan])
    with pytest.raises(UserError, match=r"horizon h must be an integer >= 1; got 0"):
        diebold_mariano([1.0, 2.0], [1.0, 2.0], h=0)


# ----------------------------------------------------------------------------- Pesaran-Timmermann

def _pt_reference(y: np.ndarray, f: np.ndarray) -> tuple[float, float]:
    """PT (1992) from the 2x2 table of up/down counts."""
    n = len(y)
    n_uu = np.sum((y > 0) & (f > 0))
    n_dd = np.sum((y <= 0) & (f <= 0))
    p_hat = (n_uu + n_dd) / n
    py, px = np.sum(y > 0) / n, np.sum(f > 0) / n
    p_star = py * px + (1 - py) * (1 - px)
    v_p = p_star * (1 - p_star) / n
    v_star = ((2 * py - 1) ** 2 * px * (1 - px) + (2 * px - 1) ** 2 * py * (1 - py)) / n \
        + 4 * py * px * (1 - py) * (1 - px) / n ** 2
    s = (p_hat - p_star) / np.sqrt(v_p - v_star)
    return float(s), float(1 - stats.norm.cdf(s))


def test_pt_matches_formula_and_directions():
    rng = np.random.default_rng(11)
    y = rng.normal(size=400)
    f = 0.3 * y + rng.normal(size=400)
    stat, p = pesaran_timmermann(y, f)
    ref = _pt_reference(y, f)
    assert stat == pytest.approx(ref[0], rel=1e-10) and p == pytest.approx(ref[1], rel=1e-8)
    same = pesaran_timmermann((y > 0).astype(float), (f > 0).astype(float))
    assert same == pytest.approx((stat, p), rel=1e-12)


def test_pt_power_and_size():
    y = np.random.default_rng(12).normal(size=500)
    assert pesaran_timmermann(y, y)[1] < 0.01
    ps = []
    for seed in range(200):
        r = np.random.default_rng(seed + 1000)
        ps.append(pesaran_timmermann(r.normal(size=500), r.normal(size=500))[1])
    assert 0.4 <= np.mean(ps) <= 0.6


def test_pt_edge_cases():
    assert all(math.isnan(x) for x in pesaran_timmermann([1.0, -1.0, 2.0], [1.0, 1.0, 1.0]))
    assert all(math.isnan(x) for x in pesaran_timmermann([], []))
    with pytest.raises(UserError, match="needs finite y and forecasts"):
        pesaran_timmermann([1.0, np.nan], [1.0, 1.0])


# ----------------------------------------------------------------------------- SPA

def test_spa_equals_arch_with_the_same_seed():
    rng = np.random.default_rng(13)
    bench = rng.normal(size=400) ** 2
    models = np.column_stack([bench * rng.uniform(0.8, 1.2, 400), rng.normal(size=400) ** 2])
    ref = SPA(bench, models, block_size=10, reps=500, seed=3)
    ref.compute()
    assert spa_pvalue(bench, models, reps=500, block=10, seed=3) == ref.pvalues["consistent"]
    ref = SPA(bench, models, reps=300, seed=0)
    ref.compute()
    assert spa_pvalue(bench, models, reps=300) == ref.pvalues["consistent"]


def test_spa_power_and_null():
    rng = np.random.default_rng(14)
    bench = rng.normal(size=500) ** 2
    assert spa_pvalue(bench, 0.5 * bench + 0.01 * rng.uniform(size=500), reps=500) < 0.05
    assert spa_pvalue(bench, bench) > 0.2
    assert spa_pvalue(bench, np.column_stack([bench, 1.5 * bench]), reps=500) > 0.2


def test_spa_bad_input():
    with pytest.raises(UserError, match=r"model_losses must have shape \(T,\) or \(T, models\) "
                                        r"with T = 3"):
        spa_pvalue(np.ones(3), np.ones((4, 2)))
    with pytest.raises(UserError, match="model_losses has non-finite losses"):
        spa_pvalue(np.ones(3), np.array([1.0, np.nan, 1.0]))


# ----------------------------------------------------------------------------- coverage

def test_interval_coverage_matches_pandas():
    rng = np.random.default_rng(15)
    y = rng.normal(size=300)
    lo, hi = rng.normal(-1, 0.3, 300), rng.normal(1, 0.3, 300)
    lo[:3], hi[:3] = y[:3], y[:3]  # the ends are inside
    expected = pd.Series(y).between(pd.Series(lo), pd.Series(hi), inclusive="both").mean()
    assert interval_coverage(y, lo, hi) == pytest.approx(expected, rel=1e-12)
    assert interval_coverage(y, np.full(300, -np.inf), np.full(300, np.inf)) == 1.0
    assert math.isnan(interval_coverage([], [], []))


def test_dm_with_newey_west_lags_equals_statsmodels_hac_with_bartlett_weights() -> None:
    import statsmodels.api as sm

    from netrace.evaluate._stats import newey_west_lags

    rng = np.random.default_rng(7)
    e = rng.normal(size=600)
    d = np.convolve(e, np.ones(5) / 5, mode="same") + 0.05  # correlated beyond lag 0
    lags = newey_west_lags(len(d))
    assert lags == int(4 * (600 / 100) ** (2 / 9))
    stat, p = diebold_mariano(d, np.zeros_like(d), h=1, harvey=False, lags=lags)
    fit = sm.OLS(d, np.ones(len(d))).fit(cov_type="HAC", cov_kwds={"maxlags": lags})
    assert stat == pytest.approx(fit.tvalues[0], rel=1e-10)
    assert p == pytest.approx(fit.pvalues[0], rel=1e-8)
    # the correlation widens the variance: the plain h-1 = 0 lag test is more confident
    plain = diebold_mariano(d, np.zeros_like(d), h=1, harvey=False)
    assert abs(plain[0]) > abs(stat)
    # Harvey's factor on top, as for the default test
    hs, hp = diebold_mariano(d, np.zeros_like(d), h=1, lags=lags)
    T = len(d)
    assert hs == pytest.approx(stat * np.sqrt((T + 1 - 2 + 0) / T), rel=1e-12)
