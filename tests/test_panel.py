"""Many series in one race (``[data] series``): per-series features, targets and scaling,
windows that never cross series, splits that cut every series at the same dates."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from netrace.cli import main
from netrace.config import Config, config_from_dict
from netrace.data import DevData, Prepared, load_rows, load_source, prepare
from netrace.errors import UserError

FEATURES = ["log_return", "range", "volume_change", "rolling_vol_10", "vol_mean_5"]


def make_series(n: int, seed: int, start: str, vol: float) -> pd.DataFrame:
    """A geometric random walk with OHLCV columns and business-day dates, volatility ``vol``."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, vol, n)))
    open_ = close * np.exp(rng.normal(0, vol / 3, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, vol / 2, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, vol / 2, n)))
    return pd.DataFrame({"Date": pd.bdate_range(start, periods=n), "Open": open_, "High": high,
                         "Low": low, "Close": close, "Volume": rng.integers(1_000, 10_000, n)})


def make_panel(gaps: bool = False) -> dict[str, pd.DataFrame]:
    """Three series: different volatility levels and start dates; with ``gaps`` the third
    skips every seventh date (another calendar)."""
    out = {"AAA": make_series(700, 1, "2001-01-01", 0.005),
           "BBB": make_series(600, 2, "2001-05-01", 0.02),
           "CCC": make_series(560, 3, "2001-08-01", 0.01)}
    if gaps:
        out["CCC"] = out["CCC"][np.arange(560) % 7 != 3].reset_index(drop=True)
    return out


def long_frame(series: dict[str, pd.DataFrame], order: str = "date") -> pd.DataFrame:
    frame = pd.concat([f.assign(ticker=name) for name, f in series.items()])
    keys = ["Date", "ticker"] if order == "date" else ["ticker", "Date"]
    return frame.sort_values(keys).reset_index(drop=True)


def config(series: str | None = "ticker", **split: object) -> Config:
    return config_from_dict({
        "data": {"time": "Date", **({"series": series} if series else {})},
        "task": {"target": "vol_next", "window": 5, "features": FEATURES},
        "split": {"scheme": "walk_forward", "folds": 3, **split}})


# -- features, targets and windows --------------------------------------------------------------
@pytest.mark.parametrize("order", ["date", "series"])
def test_features_and_targets_per_series_equal_each_series_alone(order: str) -> None:
    panel = make_panel()
    rows = load_rows(config(), long_frame(panel, order))
    assert rows.series_names == ("AAA", "BBB", "CCC")
    for i, (name, frame) in enumerate(panel.items()):
        alone = load_rows(config(None), frame)
        a, b = rows.bounds[i], rows.bounds[i + 1]
        block = rows.row_feats.iloc[a:b].reset_index(drop=True)
        assert (block["ticker"] == name).all()
        pd.testing.assert_frame_equal(block.drop(columns="ticker"), alone.row_feats,
                                      check_exact=True)
        np.testing.assert_array_equal(rows.y_row.to_numpy()[a:b], alone.y_row.to_numpy())
        np.testing.assert_array_equal(rows.returns[a:b], alone.returns)
        np.testing.assert_array_equal(rows.time[a:b], alone.time)


def test_no_window_or_label_crosses_series() -> None:
    p = prepare(config(), long_frame(make_panel()))
    dev, w, h = p.dev, p.dev.window, p.dev.horizon
    labels = dev.rows["ticker"].to_numpy()
    for k in range(-w + 1, h + 1):  # every input row and the label row of every sample
        np.testing.assert_array_equal(labels[dev.anchors + k], dev.series)
    np.testing.assert_array_equal(dev.history["series"].to_numpy(), labels)
    test = p.holdout.open()
    local = test._local
    rows = test._rows["ticker"].to_numpy()
    for k in range(-w + 1, 1):
        np.testing.assert_array_equal(rows[local + k], test.series)
    hist = test.history["series"].to_numpy()
    for k in range(-w + 1, h + 1):
        np.testing.assert_array_equal(hist[test.anchors + k], test.series)


def test_samples_carry_the_target_of_their_own_series() -> None:
    panel = make_panel()
    p = prepare(config(), long_frame(panel))
    dev, test = p.dev, p.holdout.open()
    for name, frame in panel.items():
        alone = load_rows(config(None), frame)
        for part in (dev, test):
            mine = part.series == name
            row = np.searchsorted(alone.time, part.time[mine])
            np.testing.assert_array_equal(alone.time[row], part.time[mine])
            np.testing.assert_array_equal(part.y[mine], alone.y_row.to_numpy()[row + 1])


# -- splits in dates --------------------------------------------------------------------------
def _check_apart(dev: DevData, train: np.ndarray, evaluated: np.ndarray, first: np.ndarray,
                 last: np.ndarray, embargo: int) -> None:
    """No training sample reads a date (window or label) in the span the evaluated part
    reads, whatever its series; and at least ``embargo`` of the samples' dates lie between
    the two parts."""
    lo, hi = first[evaluated].min(), last[evaluated].max()
    assert ((last[train] < lo) | (first[train] > hi)).all()
    all_dates = np.unique(dev.time)
    pos_tr = np.searchsorted(all_dates, dev.time[train])
    pos_ev = np.searchsorted(all_dates, dev.time[evaluated])
    earlier = pos_tr[pos_tr < pos_ev.min()]
    if len(earlier):
        assert pos_ev.min() - earlier.max() - 1 >= embargo
    later = pos_tr[pos_tr > pos_ev.max()]
    if len(later):
        assert later.min() - pos_ev.max() - 1 >= embargo


def _spans(p: Prepared) -> tuple[np.ndarray, np.ndarray]:
    """Per development sample: the date of its first input row and of its label row."""
    dev = p.dev
    t = dev.history["time"].to_numpy()
    return t[dev.anchors - dev.lookback + 1], t[dev.anchors + dev.horizon]


@pytest.mark.parametrize("gaps", [False, True])
@pytest.mark.parametrize("scheme,embargo", [("holdout", None), ("walk_forward", None),
                                            ("walk_forward", 30), ("purged_kfold", None),
                                            ("purged_kfold", 25)])
def test_every_split_cuts_all_series_at_the_same_dates(scheme: str, embargo: int | None,
                                                       gaps: bool) -> None:
    split = {"scheme": scheme, **({"embargo": embargo} if embargo else {})}
    p = prepare(config(**split), long_frame(make_panel(gaps)))
    dev = p.dev
    first, last = _spans(p)
    assert dev.lookback == 5 + 11 - 1 and p.embargo == (embargo or dev.lookback)
    assert len(dev.folds) == (1 if scheme == "holdout" else 3)
    for f in dev.folds:
        _check_apart(dev, f.train, f.valid, first, last, p.embargo)
        # the same cut for every series: a series' validation samples are all of its samples
        # in the block's dates (less those of a series with no training sample)
        lo, hi = dev.time[f.valid].min(), dev.time[f.valid].max()
        inside = (dev.time >= lo) & (dev.time <= hi) & np.isin(dev.series, dev.series[f.train])
        np.testing.assert_array_equal(np.flatnonzero(inside), f.valid)
        for name in dev.series_names:
            mine = dev.series == name
            assert not (mine[f.train] & (dev.time[f.train] >= lo)
                        & (dev.time[f.train] <= hi)).any()


@pytest.mark.parametrize("embargo", [None, 40])
def test_test_part_starts_at_one_date_for_every_series(embargo: int | None) -> None:
    panel = make_panel(gaps=True)
    split = {"embargo": embargo} if embargo else {}
    p = prepare(config(**split), long_frame(panel))
    dev, test = p.dev, p.holdout.open()
    cut = test.time.min()
    n_all = sum(c for _, c, _ in p.series_counts) + p.holdout.n
    assert abs(p.holdout.n / n_all - 0.2) < 0.02
    first, last = _spans(p)
    test_hist = test.history["time"].to_numpy()
    test_first = test_hist[test.anchors - dev.lookback + 1]
    assert last.max() < test_first.min()  # no development label reaches a test input
    dates = np.unique(np.concatenate([f["Date"].to_numpy() for f in panel.values()]))
    for name in panel:  # every series' test part starts at the cut, the embargo before it
        assert test.time[test.series == name].min() == cut
        between = dates[(dates > dev.time[dev.series == name].max()) & (dates < cut)]
        assert len(between) >= p.embargo, (name, len(between))


def test_two_builtin_series_together_match_each_alone() -> None:
    frames = {name: load_source(name) for name in ("sp500", "nasdaq")}
    cfg = config_from_dict({"data": {"time": "Date", "series": "ticker"},
                            "task": {"target": "vol_next", "window": 20},
                            "split": {"scheme": "walk_forward", "folds": 3}})
    p = prepare(cfg, long_frame(frames))
    assert p.series_names == ("nasdaq", "sp500")
    one = config_from_dict({"data": {"source": "sp500"},
                            "task": {"target": "vol_next", "window": 20},
                            "split": {"scheme": "walk_forward", "folds": 3}})
    alone = prepare(one)
    # the two share one calendar, so each has the samples it has alone, cut at the same dates
    for rows, n_dev, n_test in p.series_counts:
        assert (rows, n_dev, n_test) == (5031, alone.dev.n, alone.holdout.n)
    assert p.holdout.first_time == alone.holdout.first_time
    for f, g in zip(p.dev.folds, alone.dev.folds, strict=True):
        assert len(f.train) == 2 * len(g.train) and len(f.valid) == 2 * len(g.valid)
        assert p.dev.time[f.valid].min() == alone.dev.time[g.valid].min()
    first, last = _spans(p)
    for f in p.dev.folds:
        _check_apart(p.dev, f.train, f.valid, first, last, p.embargo)
    # each series scaled by its own training rows: the same statistics as alone
    fitted = p.dev.fit_preprocessor(p.dev.folds[0].train)
    own = alone.dev.fit_preprocessor(alone.dev.folds[0].train)
    np.testing.assert_allclose(fitted.series_mean[fitted.labels.index("sp500")], own.mean,
                               rtol=1e-12)
    np.testing.assert_allclose(fitted.series_scale[fitted.labels.index("sp500")], own.scale,
                               rtol=1e-12)
    scaling = p.dev.target_scaling(0).kept
    mu, sd = alone.dev.target_scaling(0).kept
    i = scaling.labels.index("sp500")
    assert scaling.mean[i] == pytest.approx(mu, rel=1e-12)
    assert scaling.std[i] == pytest.approx(sd, rel=1e-12)


def test_a_series_without_training_samples_is_not_validated_or_tested() -> None:
    panel = make_panel()
    panel["LATE"] = make_series(200, 9, "2003-06-02", 0.01)  # starts after the test cut
    p = prepare(config(), long_frame(panel))
    assert "LATE" in p.series_names
    late = p.series_counts[p.series_names.index("LATE")]
    assert late[1] == 0 and late[2] == 0
    assert "LATE" not in p.holdout.open().series
    for f in p.dev.folds:  # every validated series has training samples in its fold
        assert set(p.dev.series[f.valid]) <= set(p.dev.series[f.train])


# -- scaling per series from training rows only -----------------------------------------------
def test_scaling_per_series_from_training_rows_only() -> None:
    panel = make_panel()
    p = prepare(config(), long_frame(panel))
    dev = p.dev
    for f in dev.folds:
        fitted = dev.fit_preprocessor(f.train)
        rows = dev.rows.iloc[dev.input_rows(f.train)]
        trained = tuple(pd.unique(dev.series[f.train]))
        assert fitted.labels == tuple(sorted(trained))
        for name in trained:
            own = rows[rows["ticker"] == name]
            x = own[list(fitted.numeric)].to_numpy()
            i = fitted.labels.index(name)
            np.testing.assert_allclose(fitted.series_mean[i], x.mean(axis=0), rtol=1e-12)
            np.testing.assert_allclose(fitted.series_scale[i], x.std(axis=0), rtol=1e-12)
        z = fitted.transform(rows)  # each series' training rows standardized on their own
        for name in trained:
            mine = (rows["ticker"] == name).to_numpy()
            np.testing.assert_allclose(z[mine].mean(axis=0), 0.0, atol=1e-9)
        s = dev.target_scaling(f)
        for name in trained:
            i = s.kept.labels.index(name)
            y = dev.y[f.train][dev.series[f.train] == name]
            assert s.kept.mean[i] == pytest.approx(y.mean(), rel=1e-12)
            assert s.kept.std[i] == pytest.approx(y.std(), rel=1e-12)
            np.testing.assert_array_equal(s.train[0][dev.series[f.train] == name],
                                          s.kept.mean[i])
            np.testing.assert_array_equal(s.valid[1][dev.series[f.valid] == name],
                                          s.kept.std[i])

    # a test-period value changes nothing that a fold learns
    changed = {k: v.copy() for k, v in panel.items()}
    test_start = p.holdout.first_time
    late = changed["BBB"]["Date"] >= test_start
    changed["BBB"].loc[late, "High"] *= 3.0
    changed["BBB"].loc[late, "Close"] *= 1.5
    q = prepare(config(), long_frame(changed))
    assert q.holdout.fingerprint != p.holdout.fingerprint
    np.testing.assert_array_equal(q.dev.y, p.dev.y)
    for f, g in zip(p.dev.folds, q.dev.folds, strict=True):
        np.testing.assert_array_equal(f.train, g.train)
        a, b = p.dev.fit_preprocessor(f.train), q.dev.fit_preprocessor(g.train)
        np.testing.assert_array_equal(a.series_mean, b.series_mean)
        np.testing.assert_array_equal(a.series_scale, b.series_scale)
        np.testing.assert_array_equal(p.dev.target_scaling(f).kept.std,
                                      q.dev.target_scaling(g).kept.std)


def test_single_series_scaling_is_two_floats() -> None:
    p = prepare(config(None), make_series(500, 4, "2001-01-01", 0.01))
    s = p.dev.target_scaling(0)
    y = p.dev.y[p.dev.folds[0].train]
    assert s.kept == s.train == s.valid == (float(y.mean()), float(y.std()))
    assert p.dev.series is None and p.series_name is None


def test_measure_takes_per_sample_scales() -> None:
    import torch

    from netrace.models import MLPSpec
    from netrace.train import MemberSpec, Population

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, generator=gen, dtype=torch.float64)
    y = torch.randn(40, generator=gen, dtype=torch.float64)
    pop = Population(MLPSpec(in_features=6, hidden=(4,)), [MemberSpec(seed=1),
                     MemberSpec(seed=2)], monitor="qlike", device="cpu", dtype=torch.float64)
    scalar = pop.measure(x, y, scale=(2.0, 0.5))
    arrays = pop.measure(x, y, scale=(np.full(40, 2.0), np.full(40, 0.5)))
    np.testing.assert_allclose(arrays["qlike"], scalar["qlike"], rtol=1e-12)


def test_a_series_that_starts_after_a_folds_training_part_sits_that_fold_out() -> None:
    # CCC's first window ends after fold 1's training part: fold 1 neither trains nor
    # validates on it, and its preprocessing (fitted without CCC) never reads CCC's rows
    p = prepare(config(folds=3), long_frame(make_panel()))
    first = p.dev.folds[0]
    assert "CCC" not in set(p.dev.series[first.train]) | set(p.dev.series[first.valid])
    d = p.dev.fold_data(first)
    assert d.preprocessor.labels == ("AAA", "BBB")
    assert np.isfinite(d.X_train).all() and np.isfinite(d.X_valid).all()
    # the later folds hold it, and scale it by its own training rows
    for f in p.dev.folds[1:]:
        assert "CCC" in set(p.dev.series[f.train]) and "CCC" in set(p.dev.series[f.valid])
        assert p.dev.fold_data(f).preprocessor.labels == ("AAA", "BBB", "CCC")
    # its AAA windows are AAA's rows scaled by AAA's fold-1 training rows alone
    aaa = p.dev.series[first.valid] == "AAA"
    again = d.preprocessor.transform(p.dev.rows[p.dev.rows["ticker"] == "AAA"])
    assert np.isin(d.X_valid[aaa][:, -1, :].round(12), again.round(12)).all()


# -- the race and the commands ------------------------------------------------------------------
def _run(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "netrace.cli", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_a_tiny_race_on_a_panel_csv(tmp_path: Path) -> None:
    # three folds: CCC starts after the first fold's training part (a ticker listed later)
    long_frame(make_panel()).to_csv(tmp_path / "panel.csv", index=False)
    (tmp_path / "panel.toml").write_text(
        '[data]\npath = "panel.csv"\ntime = "Date"\nseries = "ticker"\n'
        '[task]\ntarget = "vol_next"\nwindow = 5\nfeatures = ["log_return", "range", '
        '"vol_mean_5"]\n[split]\nscheme = "walk_forward"\nfolds = 3\n'
        '[race]\npopulation = 4\nmax_epochs = 3\nbudget = 24\nmetric = "qlike"\n')
    out = _run("data", "inspect", "panel.toml", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert re.search(r"series +'ticker': 3 series .*AAA 700/\d+/\d+, BBB 600/", out.stdout)
    out = _run("run", "panel.toml", "--workers", "1", "--quiet", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    out = _run("status", "--json", cwd=tmp_path)
    assert out.returncode == 0 and '"state": "done"' in out.stdout, out.stdout
    # the verdict, pooled and per series, and forecasts per series from the raw long file
    out = _run("evaluate", "panel", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert [one["series"] for one in r["series"]] == ["AAA", "BBB", "CCC"]
    assert sum(one["n"] for one in r["series"]) == r["test"]["n"]
    names = {m["name"] for m in r["models"]}
    assert {"blend", "top_k", "har", "log_har", "garch", "ewma"} <= names
    for one in r["series"]:
        assert {m["name"] for m in one["models"]} == names and one["verdict"].endswith(".")
        for m in one["models"]:
            if m["kind"] == "baseline":
                assert set(m["dm_pvalue"]) == {"mse", "mae", "qlike"}
    # every series its own blend weights, chosen on its own nested validation samples
    by = r["blend"]["by_series"]
    assert set(by) == {"AAA", "BBB", "CCC"}
    assert all(sum(w.values()) == pytest.approx(1.0) for w in by.values())
    for one in r["series"]:
        assert one["verdict"].count("%") == sum(1 for w in by[one["series"]].values() if w)
    text = _run("evaluate", "panel", cwd=tmp_path).stdout
    assert "series AAA (" in text and "pooled over the panel's series" in text
    out = _run("predict", "panel", "--data", "panel.csv", "--out", "p.csv", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert re.search(r"each series' last \(for its next period\): AAA from \d{4}-\d\d-\d\d: "
                     r"[\d.e-]+; BBB from .*; CCC from ", out.stderr), out.stderr
    # a series too short for the blend's baselines: the others are forecast, it is named
    raw = pd.read_csv(tmp_path / "panel.csv")
    short = raw[raw["ticker"] == "BBB"].tail(60).assign(ticker="DDD")
    pd.concat([raw, short]).to_csv(tmp_path / "more.csv", index=False)
    out = _run("predict", "panel", "--data", "more.csv", "--out", "m.csv", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert re.search(r"netrace: warning: the data has 60 rows of series 'DDD', too few .* it "
                     "has no forecasts", out.stderr), out.stderr
    more = pd.read_csv(tmp_path / "m.csv")
    assert set(more["ticker"]) == {"AAA", "BBB", "CCC"}
    np.testing.assert_array_equal(more["forecast"], pd.read_csv(tmp_path / "p.csv")["forecast"])
    # only series the study never saw: one clear error
    raw[raw["ticker"] == "BBB"].assign(ticker="ZZZ").to_csv(tmp_path / "new.csv", index=False)
    out = _run("predict", "panel", "--data", "new.csv", "--out", "n.csv", cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "series 'ZZZ' has no training rows in the data the study was raced on" in out.stderr
    pred = pd.read_csv(tmp_path / "p.csv", parse_dates=["time"])
    assert list(pred.columns[:3]) == ["time", "ticker", "forecast"]
    assert set(pred["ticker"]) == {"AAA", "BBB", "CCC"} and (pred["forecast"] > 0).all()
    from netrace.evaluate import load_model

    model = load_model(str(tmp_path / "netrace.db"), "panel")
    test = model.test.set_index(["time", "series"])
    got = pred.set_index(["time", "ticker"]).loc[test.index]
    np.testing.assert_allclose(got["forecast"], test[model.name], rtol=1e-6, atol=1e-9)
    # the fold networks forecast CCC from the folds that know it (the second and third)
    assert np.isfinite(model.test[["folds", "best_folds"]].to_numpy()).all()
    # a study whose forecast is the fold networks' forecasts CCC alike, in predict too
    cfg = (tmp_path / "panel.toml").read_text() + '[evaluate]\nforecast = "folds"\n'
    (tmp_path / "folds.toml").write_text(cfg)
    assert _run("run", "folds.toml", "--workers", "1", "--quiet", cwd=tmp_path).returncode == 0
    assert _run("evaluate", "folds", cwd=tmp_path).returncode == 0
    out = _run("predict", "folds", "--data", "panel.csv", "--out", "f.csv", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    folds = load_model(str(tmp_path / "netrace.db"), "folds")
    assert folds.name == "folds" and len(folds.nets) % 3 == 0
    by_folds = pd.read_csv(tmp_path / "f.csv", parse_dates=["time"])
    got = by_folds.set_index(["time", "ticker"]).loc[folds.test.set_index(["time", "series"]).index]
    np.testing.assert_allclose(got["forecast"], folds.test["folds"], rtol=1e-6, atol=1e-9)
    assert (folds.test["series"] == "CCC").sum() > 0
    # the last row of every series forecasts the period after it
    frame = pd.read_csv(tmp_path / "panel.csv", parse_dates=["Date"])
    last = frame.groupby("ticker")["Date"].max()
    assert (pred.groupby("ticker")["time"].max() == last).all()
    # the report draws each series' test forecasts against its own actual values
    from netrace.report import build_report

    rep = build_report(str(tmp_path / "netrace.db"), "panel")
    assert {k for k in rep.figures if k.startswith("forecasts/")} == {
        "forecasts/AAA", "forecasts/BBB", "forecasts/CCC"}
    for name in ("AAA", "BBB", "CCC"):
        actual = next(t for t in rep.figures[f"forecasts/{name}"].data if t.name == "actual")
        np.testing.assert_array_equal(actual.y, model.test.loc[model.test["series"] == name, "y"])
    assert rep.html.count("<h3>Series ") == 3


@pytest.mark.slow
def test_fold_networks_refuse_a_series_no_fold_trained_on(tmp_path: Path) -> None:
    # LATE is listed after every fold's training part: the fold networks cannot forecast its
    # test part, which evaluate says before it trains anything or opens the test part
    panel = make_panel()
    panel["LATE"] = make_series(180, 4, str(panel["AAA"]["Date"].iloc[520].date()), 0.01)
    long_frame(panel).to_csv(tmp_path / "panel.csv", index=False)
    (tmp_path / "late.toml").write_text(
        '[data]\npath = "panel.csv"\ntime = "Date"\nseries = "ticker"\n'
        '[task]\ntarget = "vol_next"\nwindow = 5\nfeatures = ["log_return", "range"]\n'
        '[split]\nscheme = "walk_forward"\nfolds = 3\n'
        '[race]\npopulation = 4\nmax_epochs = 2\nbudget = 16\nrule = "none"\n'
        '[evaluate]\nforecast = "folds"\n')
    assert _run("run", "late.toml", "--workers", "1", "--quiet", cwd=tmp_path).returncode == 0
    out = _run("evaluate", "late", cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert ("forecast = 'folds' averages the fold networks, and no fold trained on series "
            "LATE") in out.stderr
    from netrace.storage import Storage

    s = Storage(tmp_path / "netrace.db")
    assert s.evaluations(s.get_study("late").id) == []  # the test part was not opened


# -- bad inputs -----------------------------------------------------------------------------------
def _inspect(tmp: Path, capsys: pytest.CaptureFixture[str], frame: pd.DataFrame,
             data: str = 'time = "Date"\nseries = "ticker"\n',
             task: str = 'target = "vol_next"\nwindow = 5\n') -> str:
    frame.to_csv(tmp / "panel.csv", index=False)
    cfg = tmp / "c.toml"
    cfg.write_text(f'[data]\npath = "panel.csv"\n{data}[task]\n{task}')
    code = main(["data", "inspect", str(cfg)])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert err.startswith("netrace: error: ") and err.count("\n") == 1 and out == "", err
    return err


def test_unknown_series_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _inspect(tmp_path, capsys, long_frame(make_panel()),
                   data='time = "Date"\nseries = "tickr"\n')
    assert "unknown column 'tickr' in [data] series; did you mean 'ticker'?" in err


@pytest.mark.parametrize("data,task,message", [
    ('time = "Date"\nseries = "Close"\n', 'target = "Close"\nwindow = 5\n',
     "[data] series = 'Close' is also [task] target; the series column labels rows"),
    ('time = "Date"\nseries = "Date"\n', 'target = "vol_next"\n',
     "[data] series = 'Date' is also the time column"),
    ('series = "ticker"\n', 'target = "Close"\n',
     "[data] series = 'ticker' needs rows ordered in time within each series; set [data] "
     "time"),
    ('time = "Date"\nseries = "ticker"\n',
     'target = "vol_next"\nfeatures = ["range", "ticker"]\n',
     "[task] features lists the series column 'ticker'; the series label is not a feature"),
])
def test_series_column_of_its_own(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  data: str, task: str, message: str) -> None:
    err = _inspect(tmp_path, capsys, long_frame(make_panel()), data=data, task=task)
    assert message in err


def test_series_with_builtin_data() -> None:
    with pytest.raises(UserError, match=r"built-in 'sp500' is one series; use \[data\] path"):
        config_from_dict({"data": {"source": "sp500", "series": "ticker"},
                          "task": {"target": "vol_next"}})


def test_unsorted_time_within_a_series(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    frame = long_frame(make_panel(), order="series")
    rows = frame.index[frame["ticker"] == "BBB"][[10, 11]]
    frame.iloc[rows] = frame.iloc[rows[::-1]].to_numpy()
    err = _inspect(tmp_path, capsys, frame)
    assert re.search(r"time column 'Date' is not sorted within series 'BBB': row \d+ "
                     r"\(2001-05-\d\d\) comes after row \d+ \(2001-05-\d\d\); sort the data by "
                     r"'ticker' and 'Date'", err), err


def test_duplicate_series_and_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frame = long_frame(make_panel())
    dup = frame[frame["ticker"] == "CCC"].iloc[[30]]
    frame = pd.concat([frame, dup]).sort_values(["Date", "ticker"], kind="stable")
    err = _inspect(tmp_path, capsys, frame.reset_index(drop=True))
    assert re.search(r"series 'CCC' has a duplicate time in column 'Date': 2001-09-\d\d at "
                     r"rows \d+ and \d+; keep one row per series and time", err), err


def test_empty_series_label(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frame = long_frame(make_panel())
    frame.loc[5, "ticker"] = None
    err = _inspect(tmp_path, capsys, frame)
    assert "series column 'ticker' is empty at row(s) 5; every row needs the name" in err


def test_ffill_never_fills_from_another_series(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    frame = long_frame(make_panel())
    first_b = frame.index[frame["ticker"] == "BBB"][0]
    frame.loc[first_b, "High"] = np.nan  # an earlier row of another series has a value
    err = _inspect(tmp_path, capsys, frame, data='time = "Date"\nseries = "ticker"\n'
                   'fill = "ffill"\n')
    assert "[data] fill = \"ffill\" cannot fill the first row(s)" in err


def test_too_few_samples(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    small = {k: v.iloc[:30] for k, v in make_panel().items()}
    err = _inspect(tmp_path, capsys, long_frame(small))
    assert re.search(r"the panel has \d+ samples in 3 series over \d+ dates, too few", err)


def test_a_panel_with_a_target_transform_stops_the_run(tmp_path: Path) -> None:
    long_frame(make_panel()).to_csv(tmp_path / "panel.csv", index=False)
    (tmp_path / "p.toml").write_text(
        '[data]\npath = "panel.csv"\ntime = "Date"\nseries = "ticker"\n'
        '[task]\ntarget = "vol_next"\nwindow = 5\n[split]\nscheme = "walk_forward"\n'
        'folds = 2\n[race]\nbudget = 8\n[search.space]\ntarget_transform = "log"\n')
    out = _run("run", "p.toml", "--workers", "1", "--quiet", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "a panel with target_transform is not built yet" in out.stderr
