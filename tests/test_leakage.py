"""Leakage: changing validation or test rows changes nothing the training part sees."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from netrace.config import config_from_dict
from netrace.data import prepare
from tests.conftest import make_prices


def _cfg(scheme: str, **split: object) -> object:
    return config_from_dict({
        "data": {"path": "unused.csv", "time": "Date"},
        "task": {"type": "regression", "target": "vol_next", "window": 10, "horizon": 2,
                 "features": ["log_return", "range", "volume_change", "rolling_vol_5", "Close"]},
        "split": {"scheme": scheme, "test": 0.2, **split},
    })


def _perturb(frame: pd.DataFrame, rows: np.ndarray, seed: int = 1) -> pd.DataFrame:
    """Scale OHLC of these rows by random positive factors (keeping high >= low)."""
    out = frame.copy()
    f = np.exp(np.random.default_rng(seed).normal(0, 0.2, len(rows)))
    for c in ("Open", "High", "Low", "Close"):
        out.loc[rows, c] = out.loc[rows, c].to_numpy() * f
    out.loc[rows, "Volume"] = out.loc[rows, "Volume"].to_numpy() * 3 + 7
    return out


def _assert_fold_same(a: object, b: object, fold: int) -> None:
    fa, fb = a.dev.fold_data(fold), b.dev.fold_data(fold)
    assert np.array_equal(fa.X_train, fb.X_train)
    assert np.array_equal(fa.y_train, fb.y_train)
    assert np.array_equal(fa.preprocessor.mean, fb.preprocessor.mean)
    assert np.array_equal(fa.preprocessor.scale, fb.preprocessor.scale)


@pytest.mark.parametrize("scheme", ["holdout", "walk_forward", "purged_kfold"])
def test_perturbing_validation_rows_leaves_training_unchanged(scheme: str) -> None:
    frame = make_prices(600, seed=3)
    cfg = _cfg(scheme, folds=3)
    base = prepare(cfg, frame)
    dev = base.dev
    for fold in dev.folds:
        # every raw row any validation sample of this fold reads (inputs and label)
        first = dev.anchors[fold.valid[0]] - dev.lookback + 1
        last = dev.anchors[fold.valid[-1]] + dev.horizon
        if scheme == "purged_kfold":
            rows = np.arange(first, last + 1)
        else:  # forward schemes: everything from the validation part on, test part included
            rows = np.arange(first, len(frame))
        changed = prepare(cfg, _perturb(frame, rows))
        fc = changed.dev.fold_data(fold.index)
        fb = dev.fold_data(fold.index)
        _assert_fold_same(base, changed, fold.index)
        # and the perturbation was real: the validation inputs did change
        assert not np.array_equal(fc.X_valid, fb.X_valid)


def test_perturbing_test_rows_leaves_development_unchanged() -> None:
    frame = make_prices(600, seed=4)
    cfg = _cfg("walk_forward", folds=3)
    base = prepare(cfg, frame)
    test_first_row = base.test_range[0] + base.first_anchor_row - base.dev.lookback + 1
    changed = prepare(cfg, _perturb(frame, np.arange(test_first_row, len(frame))))
    pd.testing.assert_frame_equal(base.dev.rows, changed.dev.rows)
    assert np.array_equal(base.dev.y, changed.dev.y)
    for f in base.dev.folds:
        _assert_fold_same(base, changed, f.index)
    assert base.holdout.fingerprint != changed.holdout.fingerprint


def test_development_part_holds_no_test_row() -> None:
    """Structural: the rows the race gets end before the first row a test sample reads."""
    frame = make_prices(500, seed=5)
    p = prepare(_cfg("holdout"), frame)
    first_test_input = p.test_range[0] + p.first_anchor_row - p.dev.lookback + 1
    assert len(p.dev.rows) <= first_test_input
    assert p.dev.anchors.max() + p.dev.horizon < first_test_input


def test_holdout_opens_once_and_does_not_pickle() -> None:
    import pickle

    from netrace.errors import UserError

    p = prepare(_cfg("holdout"), make_prices(500, seed=6))
    fitted = p.dev.fit_preprocessor(p.dev.folds[0].train)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(p.holdout)
    assert "sealed" in repr(p.holdout)
    test = p.holdout.open(fitted)
    assert test.X.shape == (p.holdout.n, 10, 5) and len(test.y) == p.holdout.n
    assert np.isfinite(test.X).all()
    with pytest.raises(UserError, match="already opened once"):
        p.holdout.open(fitted)


def test_test_windows_equal_the_full_series_windows() -> None:
    """The sealed test part's windows are the same numbers a naive full-series pipeline gives."""
    frame = make_prices(500, seed=7)
    p = prepare(_cfg("holdout"), frame)
    fitted = p.dev.fit_preprocessor(p.dev.folds[0].train)
    test = p.holdout.open(fitted)
    # recompute from scratch on the whole frame
    lr = np.log(frame.Close).diff()
    feats = pd.DataFrame({
        "log_return": lr, "range": np.log(frame.High / frame.Low),
        "volume_change": np.log1p(frame.Volume.astype(float)).diff(),
        "rolling_vol_5": np.sqrt((lr ** 2).rolling(5).mean()), "Close": frame.Close})
    z = fitted.transform(feats)
    anchors = np.arange(p.test_range[0], p.test_range[1] + 1) + p.first_anchor_row
    expect = np.stack([z[a - 9: a + 1] for a in anchors])
    np.testing.assert_allclose(test.X, expect, rtol=0, atol=1e-12)
    hl = np.log(frame.High / frame.Low).to_numpy()
    np.testing.assert_allclose(test.y, np.sqrt(hl[anchors + 2] ** 2 / (4 * np.log(2))))


def test_scaler_fitted_on_training_rows_only() -> None:
    frame = make_prices(500, seed=8)
    p = prepare(_cfg("holdout"), frame)
    fold = p.dev.folds[0]
    fitted = p.dev.fit_preprocessor(fold.train)
    rows = p.dev.input_rows(fold.train)
    a = p.dev.anchors[fold.train]
    assert rows[0] == a[0] - 9 and rows[-1] == a[-1] and len(rows) == rows[-1] - rows[0] + 1
    x = p.dev.rows.iloc[rows]["Close"].to_numpy()
    i = fitted.numeric.index("Close")
    assert fitted.mean[i] == pytest.approx(x.mean(), rel=1e-12)
    assert fitted.scale[i] == pytest.approx(x.std(), rel=1e-12)
    fd = p.dev.fold_data(0)
    # standardized training inputs have mean 0, std 1 over the rows they read
    z = fitted.transform(p.dev.rows.iloc[rows])
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-10)
    assert fd.X_train.shape[1:] == (10, 5)
