"""Rolling training windows (``train_window``): a network trains on the most recent samples of
each training part, in the race and in the evaluation's refit alike."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from netrace.evaluate._refit import RefitJob, refit
from netrace.race._build import DataShape, population_settings
from netrace.storage import Storage

EXE = str(Path(sys.executable).parent / "netrace")

CONFIG = """
[data]
path = "series.csv"
time = "date"
[task]
type = "regression"
target = "y"
features = ["x"]
window = 1
[split]
scheme = "walk_forward"
folds = 2
test = 0.2
[race]
rule = "none"
metric = "r2"
population = 2
max_epochs = 3
budget = 48
[search]
sampler = "random"
[search.space]
model = "mlp"
width = 4
linear = "ols"
lr = 1e-4
batch_size = 64
train_window = [0, 60]
"""


def test_refit_on_a_rolling_window_is_a_refit_on_the_last_samples() -> None:
    shape = DataShape(window=2, features=3, task="regression")
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(200, 2, 3)), rng.normal(size=200)
    params = {"model": "mlp", "width": 8, "lr": 1e-2, "batch_size": 32, "linear": "ols",
              "train_window": 70}
    rolling = population_settings(params, shape)
    assert rolling.train_window == 70
    expanding = dataclasses.replace(rolling, train_window=0)
    a = refit([RefitJob(rolling, params, 3, 4, 10)], X, y, task="regression", monitor="loss",
              device="cpu")[0]
    b = refit([RefitJob(expanding, params, 3, 4, 10)], X[-70:], y[-70:], task="regression",
              monitor="loss", device="cpu")[0]
    np.testing.assert_array_equal(a["params"], b["params"])
    c = refit([RefitJob(expanding, params, 3, 4, 10)], X, y, task="regression",
              monitor="loss", device="cpu")[0]
    assert not np.allclose(a["params"], c["params"])


@pytest.mark.slow
def test_a_race_finds_that_only_recent_samples_hold_the_law(tmp_path: Path) -> None:
    """y = x up to sample 100, y = -x after: networks that train on the last 60 samples
    (after the break, in both folds) validate well; those on every sample do not."""
    rng = np.random.default_rng(1)
    n = 700
    x = rng.normal(size=n)
    sign = np.where(np.arange(n) < 100, 1.0, -1.0)
    y = np.zeros(n)
    y[1:] = sign[1:] * x[:-1] + 0.1 * rng.normal(size=n - 1)  # the next row's y from this x
    pd.DataFrame({"date": pd.bdate_range("2012-01-02", periods=n), "x": x, "y": y}).to_csv(
        tmp_path / "series.csv", index=False)
    (tmp_path / "tw.toml").write_text(CONFIG)
    out = subprocess.run([EXE, "run", "tw.toml", "--quiet", "--workers", "1"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    s = Storage(tmp_path / "netrace.db")
    trials = [t for t in s.trials(s.get_study("tw").id) if t.best_value is not None]
    by = {w: [t.best_value for t in trials if t.params["train_window"] == w] for w in (0, 60)}
    assert by[0] and by[60], json.dumps({k: len(v) for k, v in by.items()})
    assert min(by[60]) > 0.9 and max(by[0]) < 0.6, by
