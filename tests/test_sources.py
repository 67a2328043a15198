"""Sources load offline and match known facts; recipes match their formulas."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from netrace.config import config_from_dict
from netrace.data import load_source, prepare, read_table
from netrace.data._recipes import log_range, log_return, parkinson, rolling_vol, volume_change
from netrace.errors import UserError
from tests.conftest import make_prices


@pytest.mark.parametrize("name, first_close", [("sp500", 1228.099976), ("nasdaq", 2208.050049)])
def test_price_sources_known_facts(name: str, first_close: float) -> None:
    f = load_source(name)
    assert f.shape == (5031, 7)
    assert list(f.columns) == ["Date", "Open", "High", "Low", "Close", "Adj Close", "Volume"]
    assert f.Date.iloc[0] == pd.Timestamp("1999-01-04")
    assert f.Date.iloc[-1] == pd.Timestamp("2018-12-31")
    assert f.Close.iloc[0] == pytest.approx(first_close)
    assert f.Date.is_monotonic_increasing and not f.Date.duplicated().any()
    assert (f.High >= f.Low).all()


def test_sp500_matches_arch_directly() -> None:
    import arch.data.sp500

    pd.testing.assert_frame_equal(load_source("sp500").set_index("Date"), arch.data.sp500.load())


@pytest.mark.parametrize("name, rows, classes", [
    ("iris", 150, 3), ("wine", 178, 3), ("breast_cancer", 569, 2), ("digits", 1797, 10),
    ("diabetes", 442, None)])
def test_sklearn_sources(name: str, rows: int, classes: int | None) -> None:
    f = load_source(name)
    assert len(f) == rows and "target" in f.columns
    if classes:
        assert f.target.nunique() == classes


def test_sp500_volatility_pipeline_against_direct_formula() -> None:
    cfg = config_from_dict({"data": {"source": "sp500"},
                            "task": {"target": "vol_next", "window": 5, "features": ["range"]},
                            "split": {"test": 0.2}})
    p = prepare(cfg)
    raw = load_source("sp500")
    park = np.sqrt(np.log(raw.High / raw.Low) ** 2 / (4 * np.log(2))).to_numpy()
    # sample i's window ends at row i + 4 (first 4 rows fill the first window); label next day
    np.testing.assert_allclose(p.dev.y, park[np.arange(p.dev.n) + 5], rtol=1e-11)
    assert p.dev.time[0] == pd.Timestamp("1999-01-08")


def test_recipes_match_formulas() -> None:
    f = make_prices(200, seed=9)
    c, h, lo, v = (f[k].to_numpy(float) for k in ("Close", "High", "Low", "Volume"))
    np.testing.assert_allclose(log_return(f)[1:], np.log(c[1:] / c[:-1]), rtol=0, atol=1e-14)
    assert np.isnan(log_return(f)[0])
    np.testing.assert_allclose(log_range(f), np.log(h / lo), rtol=1e-12)
    np.testing.assert_allclose(parkinson(f), np.abs(np.log(h / lo)) / np.sqrt(4 * np.log(2)),
                               rtol=1e-12)
    np.testing.assert_allclose(volume_change(f)[1:], np.diff(np.log1p(v)), rtol=1e-12)
    r = pd.Series(np.log(c)).diff()
    expect = np.sqrt((r ** 2).rolling(10).mean()).to_numpy()
    got = rolling_vol(10)(f)
    assert np.isnan(got[:10]).all()
    np.testing.assert_allclose(got[10:], expect[10:], rtol=1e-12)


def test_csv_gz_and_dataframe_sources_agree(tmp_path: Path) -> None:
    f = make_prices(300, seed=10)
    f.to_csv(tmp_path / "p.csv.gz", index=False)
    task = {"target": "return_next", "window": 3}
    from_file = prepare(config_from_dict({"data": {"path": "p.csv.gz", "time": "Date"},
                                          "task": task}, base_dir=tmp_path))
    from_frame = prepare(config_from_dict({"data": {"time": "Date"}, "task": task}), f)
    np.testing.assert_allclose(from_file.dev.y, from_frame.dev.y, rtol=1e-12)
    assert read_table(tmp_path / "p.csv.gz").shape == (300, 6)


def test_no_source_and_no_frame() -> None:
    with pytest.raises(UserError, match=r"\[data\] needs 'path' .* neither is set"):
        prepare(config_from_dict({"data": {"time": "Date"}, "task": {"target": "vol_next"}}))


def test_classification_and_iid_shapes() -> None:
    p = prepare(config_from_dict({"data": {"source": "iris"},
                                  "task": {"type": "multiclass", "target": "target"},
                                  "split": {"scheme": "kfold", "folds": 3}}))
    assert p.dev.classes == (0, 1, 2)
    fd = p.dev.fold_data(1)
    assert fd.X_train.shape[1:] == (1, 4) and fd.y_train.dtype == np.int64
    assert len(fd.y_train) + len(fd.y_valid) == p.dev.n == 120
    d = prepare(config_from_dict({"data": {"source": "sp500"},
                                  "task": {"type": "binary", "target": "direction_next"}}))
    assert d.dev.classes == (0, 1) and set(np.unique(d.dev.y)) == {0, 1}


@pytest.mark.parametrize("name, rows, column, first, last", [
    ("wti", 8321, "Close", ("1986-01-02", 25.56), ("2019-01-03", 46.92)),
    ("vix", 1259, "vix", ("2014-01-03", 13.76), ("2019-01-03", 25.45))])
def test_daily_close_sources_are_arch_without_fred_holidays(
        name: str, rows: int, column: str, first: tuple, last: tuple) -> None:
    import importlib

    raw = importlib.import_module(f"arch.data.{name}").load()
    f = load_source(name)
    assert list(f.columns) == ["Date", column] and len(f) == rows
    # exactly arch's rows that have a value: FRED marks holidays as missing
    assert len(f) == int(raw.notna().all(axis=1).sum()) < len(raw)
    np.testing.assert_array_equal(f[column].to_numpy(), raw.dropna().iloc[:, 0].to_numpy())
    assert (f.Date.iloc[0], f[column].iloc[0]) == (pd.Timestamp(first[0]), first[1])
    assert (f.Date.iloc[-1], f[column].iloc[-1]) == (pd.Timestamp(last[0]), last[1])
    assert f.Date.is_monotonic_increasing and not f.Date.duplicated().any()


def test_close_only_volatility_target_and_default_features() -> None:
    # WTI has a close and nothing else: the default features are the close's recipes, and
    # vol_close_next is sqrt(pi/2) |log return| of the next day
    cfg = config_from_dict({"data": {"source": "wti"},
                            "task": {"target": "vol_close_next", "window": 5},
                            "split": {"test": 0.2}})
    p = prepare(cfg)
    assert [f.name for f in p.features] == ["log_return", "rolling_vol_20"]
    close = load_source("wti").Close.to_numpy()
    proxy = np.sqrt(np.pi / 2) * np.abs(np.diff(np.log(close)))  # proxy[i] is row i + 1's
    # the first window ends at row 20 (rolling_vol_20 reads 21 rows) + 4; its label one later
    first_label_row = 20 + 4 + 1
    np.testing.assert_allclose(p.dev.y, proxy[first_label_row - 1:][:p.dev.n], rtol=1e-12)
    # E|r| sqrt(pi/2) is the standard deviation of normal returns with mean zero
    z = np.random.default_rng(0).normal(0.0, 0.02, 400_000)
    frame = pd.DataFrame({"Close": 100 * np.exp(np.cumsum(z))})
    from netrace.data._recipes import close_vol

    assert np.nanmean(close_vol(frame)) == pytest.approx(0.02, rel=5e-3)


def test_a_high_low_recipe_on_close_only_data_says_what_is_missing() -> None:
    cfg = config_from_dict({"data": {"source": "wti"},
                            "task": {"target": "vol_next", "window": 5}})
    with pytest.raises(UserError, match=r"vol_next.*needs price column\(s\) high, low.*Close"):
        prepare(cfg)
