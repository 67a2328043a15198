"""Finance feature recipes: the HAR components (mean Parkinson volatility over 1, 5, 22 days),
the overnight gap, the day of the week; computed from past rows only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from netrace.config import config_from_dict
from netrace.data import prepare
from netrace.errors import UserError
from tests.conftest import make_prices


def _config(features: list[str], **task: object) -> object:
    return config_from_dict({"data": {"time": "Date"},
                             "task": {"target": "vol_next", "features": features, "window": 3,
                                      **task},
                             "split": {"scheme": "walk_forward", "folds": 2}})


def test_har_components_and_the_gap_equal_pandas() -> None:
    df = make_prices(300, seed=4)
    p = prepare(_config(["vol_mean_1", "vol_mean_5", "vol_mean_22", "gap", "range"]), frame=df)
    rows = p.dev.rows
    park = np.sqrt(np.log(df["High"] / df["Low"]) ** 2 / (4 * np.log(2)))
    n = len(rows)
    for k in (1, 5, 22):
        want = park.rolling(k).mean().to_numpy()[:n]
        np.testing.assert_allclose(rows[f"vol_mean_{k}"], want, rtol=1e-12, equal_nan=True)
    gap = np.log(df["Open"] / df["Close"].shift(1)).to_numpy()[:n]
    np.testing.assert_allclose(rows["gap"], gap, rtol=1e-9, atol=1e-15, equal_nan=True)
    # the first usable sample waits for the 22-day mean (a lookback of 22 rows)
    assert p.first_anchor_row == 22 + 3 - 2


def test_recipes_read_no_future_row() -> None:
    df = make_prices(200, seed=5)
    cfg = _config(["vol_mean_5", "gap", "day_of_week"])
    base = prepare(cfg, frame=df).dev.rows
    later = df.copy()
    later.loc[150:, ["Open", "High", "Low", "Close"]] *= 1.7  # the future changes
    changed = prepare(cfg, frame=later).dev.rows
    pd.testing.assert_frame_equal(base.iloc[:150], changed.iloc[:150])


def test_day_of_week_is_one_hot_from_the_training_rows() -> None:
    df = make_prices(200, seed=6)
    p = prepare(_config(["log_return", "day_of_week"]), frame=df)
    fitted = p.dev.fold_data(0).preprocessor
    assert fitted.feature_names == ("log_return", *(f"day_of_week={d}" for d in range(5)))
    X = p.dev.fold_data(0).X_train
    assert set(np.unique(X[:, :, 1:])) == {0.0, 1.0} and (X[:, :, 1:].sum(axis=2) == 1).all()
    # Mondays are 0
    assert (p.dev.rows["day_of_week"] == pd.to_datetime(df["Date"]).dt.day_of_week.iloc[
        :len(p.dev.rows)].to_numpy()).all()


def test_recipe_errors_say_what_and_how() -> None:
    df = make_prices(200, seed=7)
    with pytest.raises(UserError, match=r"'vol_mean_0' needs N >= 1 rows \(as in vol_mean_22\)"):
        prepare(_config(["vol_mean_0"]), frame=df)
    with pytest.raises(UserError, match=r"'rolling_vol_1' needs N >= 2 rows \(as in "
                       r"rolling_vol_20\)"):
        prepare(_config(["rolling_vol_1"]), frame=df)
    with pytest.raises(UserError, match=r"recipe 'gap' needs price column\(s\) open"):
        prepare(_config(["gap"]), frame=df.drop(columns="Open"))
    iid = config_from_dict({"task": {"target": "y", "features": ["x", "day_of_week"]}})
    frame = pd.DataFrame({"x": np.arange(100.0), "y": np.arange(100.0)})
    with pytest.raises(UserError, match="'day_of_week' needs dates: set \\[data\\] time"):
        prepare(iid, frame=frame)
