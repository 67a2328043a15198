"""What a network learns of a positive target: its log with the lognormal bias correction,
QLIKE as a training loss, and per-window normalization (RevIN) with a ratio target; checked
against NumPy/SciPy references, and end to end through a race, the verdict and predict."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from netrace.config import parse_space
from netrace.data import Preprocessor
from netrace.data._dataset import _windows
from netrace.errors import UserError
from netrace.evaluate import load_model
from netrace.evaluate._model import Net
from netrace.models import build_model
from netrace.race import Proposer, load_checkpoint
from netrace.race._build import DataShape, model_inputs, population_settings
from netrace.race._checkpoint import pack_checkpoint, pack_preprocessors
from netrace.race._target import TargetData, TargetTransform
from netrace.storage import Storage
from netrace.train import member_losses
from netrace.train._losses import sample_losses
from tests.conftest import make_prices
from tests.test_evaluate import cli, raced


def positive_series(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """A volatility-like positive series ``v`` (log AR(1) with a change of regime: its level
    triples two thirds of the way in) and an unrelated input ``x``."""
    rng = np.random.default_rng(seed)
    h = np.zeros(n)
    for t in range(1, n):
        h[t] = 0.9 * h[t - 1] + 0.3 * rng.normal()
    level = np.where(np.arange(n) < 2 * n // 3, 0.01, 0.03)
    return pd.DataFrame({"date": pd.bdate_range("2012-01-02", periods=n),
                         "v": level * np.exp(h), "x": rng.normal(size=n)})


# -- QLIKE as a loss ------------------------------------------------------------------------------

def test_qlike_loss_is_qlike_of_the_exponentiated_output() -> None:
    rng = np.random.default_rng(1)
    y = np.exp(rng.normal(-4, 0.5, 50))
    f = np.exp(rng.normal(-4, 0.5, (3, 50)))
    c = -4.0  # both shifted by one constant: the loss sees log(y / f) only
    out = torch.as_tensor(np.log(f) - c).unsqueeze(-1)
    got = sample_losses(out, torch.as_tensor(np.log(y) - c), "qlike").numpy()
    # (the direct formula loses digits to cancellation near its minimum; expm1 does not)
    np.testing.assert_allclose(got, y / f - np.log(y / f) - 1, rtol=1e-9)
    assert got.min() >= 0
    # at f = y the loss is zero (and exact, not a cancellation)
    zero = sample_losses(torch.zeros(1, 4, 1, dtype=torch.float64),
                         torch.zeros(4, dtype=torch.float64), "qlike")
    assert torch.equal(zero, torch.zeros(1, 4, dtype=torch.float64))


def test_gradient_descent_on_qlike_finds_the_mean_not_the_median() -> None:
    """QLIKE's minimum over a constant forecast is the sample mean of y; for a lognormal y
    that is exp(mu + sigma^2 / 2), above the median exp(mu) that a log-MSE fit would give."""
    rng = np.random.default_rng(2)
    y = np.exp(rng.normal(-4.0, 0.6, 4000))
    z = torch.as_tensor(np.log(y) + 4.0)  # the log target less its (rough) centre
    o = torch.zeros(1, 1, 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([o], lr=0.5)
    for _ in range(300):
        opt.zero_grad()
        member_losses(o.expand(1, len(y), 1), z, None, "qlike").sum().backward()
        opt.step()
    f = float(np.exp(o.item() - 4.0))
    assert f == pytest.approx(y.mean(), rel=1e-6)
    assert f > np.exp(np.log(y).mean()) * 1.1  # well above the median


# -- the back-transform ---------------------------------------------------------------------------

def test_log_forecast_is_the_lognormal_mean() -> None:
    m, s, v = -4.2, 0.45, 0.09
    o = torch.tensor([[-1.0], [0.0], [0.7]], dtype=torch.float64)
    t = TargetTransform(mean=m, std=s, log=True, correction="residual", var=v)
    want = stats.lognorm(s=np.sqrt(v), scale=np.exp(m + s * o[:, 0].numpy())).mean()
    np.testing.assert_allclose(t.forecast(o, torch.ones(3)).numpy(), want, rtol=1e-12)
    # with a level (RevIN), the ratio's forecast times the window's level
    lv = torch.tensor([0.5, 2.0, 10.0], dtype=torch.float64)
    np.testing.assert_allclose(t.forecast(o, lv).numpy(), want * lv.numpy(), rtol=1e-12)
    # one variance per member of a population (K, n, O)
    pop = o.T.unsqueeze(-1).expand(2, 3, 1)
    per = t.forecast(pop, torch.ones(3), var=torch.tensor([0.0, v], dtype=torch.float64))
    np.testing.assert_allclose(per[0].numpy(), np.exp(m + s * o[:, 0].numpy()), rtol=1e-12)
    np.testing.assert_allclose(per[1].numpy(), want, rtol=1e-12)
    # a Gaussian network's own variance (log of the standardized one in its second output)
    g = TargetTransform(mean=m, std=s, log=True, correction="gaussian")
    lv2 = np.array([-3.0, -0.5, 0.4])
    out = torch.tensor(np.column_stack([o[:, 0].numpy(), lv2]))
    want = stats.lognorm(s=s * np.exp(lv2 / 2), scale=np.exp(m + s * o[:, 0].numpy())).mean()
    np.testing.assert_allclose(g.forecast(out, torch.ones(3)).numpy(), want, rtol=1e-12)
    # QLIKE's forecast: exp(mean + o), no correction
    q = TargetTransform(mean=m, std=1.0, log=True, correction="none")
    np.testing.assert_allclose(q.forecast(o, torch.ones(3)).numpy(),
                               np.exp(m + o[:, 0].numpy()), rtol=1e-12)


def _data(frame: pd.DataFrame, window: int, source: str | None = "v") -> TargetData:
    """Windows over ``frame`` (preprocessing fitted on it), each one's target the next v."""
    pre = Preprocessor(("v", "x")).fit(frame)
    anchors = np.arange(window - 1, len(frame) - 1)
    return TargetData(frame["v"].to_numpy()[anchors + 1],
                      _windows(pre.transform(frame), anchors, window), pre, source)


def test_fit_learns_standardized_log_of_the_ratio_to_the_window_level() -> None:
    frame = positive_series(300)
    data = _data(frame, 6)
    shape = DataShape(6, 2, "regression")
    raw_v = frame["v"].to_numpy()
    anchors = np.arange(5, len(frame) - 1)
    for params, w in [({"target_transform": "log", "revin": True, "window": 4}, 4),
                      ({"target_transform": "log"}, 6), ({"revin": True}, 6),
                      ({"loss": "qlike"}, 6)]:
        settings = population_settings(params, shape)
        t = data.fit(settings)
        assert t is not None
        level = np.array([raw_v[a - w + 1:a + 1].mean() for a in anchors]) \
            if params.get("revin") else np.ones(len(anchors))
        np.testing.assert_allclose(t.levels(data.windows).numpy(), level, rtol=1e-12)
        u = raw_v[anchors + 1] / level
        if t.log:
            u = np.log(u)
        assert t.mean == pytest.approx(u.mean(), rel=1e-12)
        assert t.std == (1.0 if params.get("loss") == "qlike" else pytest.approx(u.std()))
        np.testing.assert_allclose(t.learned(data.y, t.levels(data.windows)),
                                   (u - t.mean) / t.std, rtol=1e-9, atol=1e-12)
    # the default target is not transformed here (kept as (mean, std) scaling)
    assert data.fit(population_settings({}, shape)) is None


def test_bias_correction_is_the_training_residual_variance() -> None:
    frame = positive_series(300)
    data = _data(frame, 5)
    settings = population_settings({"target_transform": "log", "width": 4},
                                   DataShape(5, 2, "regression"))
    model = build_model(settings.spec, 1, seeds=[3])
    weights = {"params": model.flat[0].detach().numpy().copy()}
    t = data.fitted(settings, weights)
    assert t is not None and t.correction == "residual"
    x = torch.as_tensor(data.windows, dtype=torch.float32)
    o = model.member_module(0).eval()(model_inputs(x, settings))[:, 0].double().detach().numpy()
    resid = np.log(data.y) - (t.mean + t.std * o)
    assert t.var == pytest.approx(np.mean(resid ** 2), rel=1e-6)
    # a Net with this transform forecasts the lognormal mean of its log forecast
    net = Net("n", settings, weights, data.preprocessor, target=t)
    want = stats.lognorm(s=np.sqrt(t.var), scale=np.exp(t.mean + t.std * o)).mean()
    np.testing.assert_allclose(net.forecast(data.windows, "regression"), want, rtol=1e-5)


@pytest.mark.parametrize("params", [{"revin": True}, {"revin": True, "loss": "qlike"},
                                    {"revin": True, "target_transform": "log",
                                     "model": "gru", "hidden_size": 4}])
def test_revin_forecast_scales_with_the_series(params: dict) -> None:
    """A ratio-form network's forecast of a series 10 times as large is 10 times as large:
    its inputs are the same after per-window normalization, its level 10 times as large."""
    frame = positive_series(200)
    data = _data(frame, 5)
    settings = population_settings({"width": 8, **params}, DataShape(5, 2, "regression"))
    weights = {"params": build_model(settings.spec, 1, seeds=[7]).flat[0].detach().numpy()}
    t = data.fitted(settings, weights)
    net = Net("n", settings, weights, data.preprocessor, target=t)
    anchors = np.arange(4, len(frame))
    big = frame.assign(v=frame["v"] * 10)
    f1 = net.forecast(_windows(data.preprocessor.transform(frame), anchors, 5), "regression")
    f10 = net.forecast(_windows(data.preprocessor.transform(big), anchors, 5), "regression")
    assert (f1 > 0).all() and np.isfinite(f1).all()
    np.testing.assert_allclose(f10, 10 * f1, rtol=2e-5)
    # without RevIN the same network carries the old level: far from 10 times
    plain = population_settings({"width": 8, "target_transform": "log"},
                                DataShape(5, 2, "regression"))
    w2 = {"params": build_model(plain.spec, 1, seeds=[7]).flat[0].detach().numpy()}
    n2 = Net("p", plain, w2, data.preprocessor, target=data.fitted(plain, w2))
    g1 = n2.forecast(_windows(data.preprocessor.transform(frame), anchors, 5), "regression")
    g10 = n2.forecast(_windows(data.preprocessor.transform(big), anchors, 5), "regression")
    assert not np.allclose(g10, 10 * g1, rtol=0.1)


# -- the space and its checks ---------------------------------------------------------------------

def test_qlike_implies_the_log_target_and_the_space_says_so() -> None:
    with pytest.raises(UserError, match=r"target_transform applies only to loss = mse, mae, "
                       r"huber or gaussian_nll, which this space never proposes \(loss: qlike\); "
                       r"remove target_transform"):
        parse_space({"loss": "qlike", "target_transform": "log"})
    space = parse_space({"loss": ["mse", "qlike"], "target_transform": ["none", "log"],
                         "revin": [False, True]})
    p = Proposer(space, "random", seed=0)
    q = p.ask(1, fixed={"loss": "qlike"})[0]
    assert "target_transform" not in q and "revin" in q
    assert "target_transform" in p.ask(1, fixed={"loss": "mse"})[0]
    s = population_settings({"loss": "qlike"}, DataShape(5, 2, "regression"))
    assert (s.target_transform, s.transformed, s.spec.n_outputs) == ("log", True, 1)
    with pytest.raises(UserError, match=r"revin = true changes what a network learns of a "
                       r"regression target; this task is binary: remove it"):
        population_settings({"revin": True}, DataShape(5, 2, "binary"))
    with pytest.raises(UserError, match="revin: 'yes' is not allowed|revin must be true or "
                       "false, got 'yes'"):
        parse_space({"revin": "yes"})


def test_checkpoints_without_targets_load_as_before() -> None:
    settings = population_settings({"width": 4}, DataShape(3, 2, "regression"))
    w = {"params": build_model(settings.spec, 1).flat[0].detach().numpy()}
    blob = pack_checkpoint({}, 0, "mlp", settings.spec, 3, "r2", [w], pack_preprocessors([None]),
                           [(1.0, 2.0)])
    d = pickle.loads(blob)
    del d["targets"]  # as netrace wrote them before
    ck = load_checkpoint(pickle.dumps(d))
    assert ck.targets is None and ck.target(0) is None and ck.target_scaling == [(1.0, 2.0)]
    t = TargetTransform(mean=-4.0, std=0.5, log=True, correction="residual", var=0.1)
    ck2 = load_checkpoint(pack_checkpoint({}, 0, "mlp", settings.spec, 3, "r2", [w],
                                          pack_preprocessors([None]), [(1.0, 2.0)],
                                          [t.as_dict()]))
    assert ck2.target(0) == t


SERIES = """
[data]
path = "series.csv"
time = "date"
[task]
type = "regression"
target = "{target}"
features = {features}
window = 4
[split]
scheme = "walk_forward"
folds = 2
test = 0.25
[race]
rule = "none"
population = 4
max_epochs = 3
budget = 24
[search]
sampler = "random"
[search.space]
model = "mlp"
width = 8
{space}
lr = {{low = 3e-3, high = 3e-2, log = true}}
batch_size = 64
"""


@pytest.mark.parametrize("target, features, space, message", [
    ("y", '["x1", "y"]', 'target_transform = ["none", "log"]',
     r"\[search.space\] target_transform = \"log\" needs a target above zero \(it learns the "
     r"log of it\), but target 'y' has \d+ of \d+ development values at or below zero \(the "
     r"smallest -[\d.]+\); choose a positive target \(a volatility such as vol_next, a price\) "
     r"or remove target_transform from \[search.space\]"),
    ("y", '["x1", "y"]', 'loss = "qlike"',
     r"loss = \"qlike\" needs a target above zero"),
    ("y", '["x1"]', "revin = true",
     r"revin = true maps a network's output back with each window's level of the target's own "
     r"series \('y' for target 'y'\), which is not among the features \(x1\); add \"y\" to "
     r"\[task\] features or remove revin"),
])
def test_bad_combinations_stop_the_run_with_exit_2(tmp_path: Path, target: str, features: str,
                                                   space: str, message: str) -> None:
    from tests.test_evaluate import linear_series

    data = linear_series(300)
    data["y"] = data["y"] if "revin" not in space else np.exp(data["y"])
    data.to_csv(tmp_path / "series.csv", index=False)
    (tmp_path / "c.toml").write_text(SERIES.format(target=target, features=features,
                                                   space=space))
    out = cli("run", "c.toml", "--quiet", "--workers", "1", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    import re
    assert re.search(message, out.stderr), out.stderr


def test_revin_of_vol_next_needs_parkinson(tmp_path: Path) -> None:
    make_prices(300).to_csv(tmp_path / "prices.csv", index=False)
    (tmp_path / "c.toml").write_text(VOL.format(features='["log_return", "range"]',
                                                space="revin = true"))
    out = cli("run", "c.toml", "--quiet", "--workers", "1", cwd=tmp_path)
    assert out.returncode == 2
    assert "('parkinson' for target 'vol_next'), which is not among the features (log_return, " \
        "range); add \"parkinson\" to [task] features" in out.stderr


# -- end to end -----------------------------------------------------------------------------------

VOL = """
[data]
path = "prices.csv"
time = "Date"
[task]
type = "regression"
target = "vol_next"
features = {features}
window = 5
[split]
scheme = "walk_forward"
folds = 2
test = 0.25
[race]
rule = "median"
population = 4
max_epochs = 3
budget = 24
metric = "qlike"
[search]
sampler = "random"
[search.space]
model = "mlp"
width = 8
{space}
lr = {{low = 3e-3, high = 3e-2, log = true}}
batch_size = 64
[evaluate]
finalists = 3
"""


def _verdict_and_forecasts(tmp: Path, study: str, data_file: str) -> tuple[dict, pd.DataFrame]:
    out = cli("evaluate", study, "--json", cwd=tmp)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    # the race scored each network's forecast in target units: re-scored from the fold
    # networks as the evaluation forecasts with them, the same numbers
    for f in r["finalists"]:
        assert f["rescored"] == pytest.approx(f["validation"], rel=1e-4)
    out = cli("predict", study, "--data", data_file, "--out", "pred.csv", cwd=tmp)
    assert out.returncode == 0, out.stderr
    pred = pd.read_csv(tmp / "pred.csv")
    assert np.isfinite(pred[["forecast", "lower", "upper"]].to_numpy()).all()
    assert (pred["forecast"] > 0).all() and (pred["lower"] > 0).all()
    return r, pred


@pytest.mark.slow
def test_a_race_on_the_log_target_evaluates_and_predicts(tmp_path: Path) -> None:
    make_prices(700).to_csv(tmp_path / "prices.csv", index=False)
    raced(tmp_path, VOL.format(features='["log_return", "range", "parkinson"]',
                               space='target_transform = "log"\nloss = ["mse", "gaussian_nll"]'),
          "vol", None, "prices.csv")
    r, _ = _verdict_and_forecasts(tmp_path, "vol", "prices.csv")
    assert {m["name"] for m in r["models"]} >= {"har", "top_k"}
    s = Storage(tmp_path / "netrace.db")
    study = s.get_study("vol")
    kinds = set()
    for t in s.trials(study.id):
        rec = s.checkpoint(t.id)
        if rec is None:
            continue
        ck = load_checkpoint(rec.data)
        for j in range(2):
            tf = ck.target(j)
            assert tf is not None and tf.log and tf.level is None
            kinds.add(tf.correction)
            # the correction's variance: of the training residuals, or the network's own
            assert (tf.var > 0) == (tf.correction == "residual")
    assert kinds <= {"residual", "gaussian"} and kinds


@pytest.mark.slow
def test_a_race_with_revin_and_qlike_evaluates_predicts_and_scales(tmp_path: Path) -> None:
    frame = positive_series()
    frame.to_csv(tmp_path / "series.csv", index=False)
    raced(tmp_path, SERIES.format(target="v", features='["v", "x"]',
                                  space='revin = true\nloss = "qlike"')
          .replace('rule = "none"', 'rule = "none"\nmetric = "qlike"'),
          "series", None, "series.csv")
    _verdict_and_forecasts(tmp_path, "series", "series.csv")
    model = load_model(str(tmp_path / "netrace.db"), "series")
    assert all(n.target is not None and n.target.level is not None for n in model.nets)
    one = model.predict(frame)
    ten = model.predict(frame.assign(v=frame["v"] * 10))
    np.testing.assert_allclose(ten["forecast"], 10 * one["forecast"], rtol=1e-4)
    np.testing.assert_allclose(ten["upper"], 10 * one["upper"], rtol=1e-4)


def test_revin_of_a_classification_task_stops_the_run(tmp_path: Path) -> None:
    from tests.test_evaluate import BINARY

    (tmp_path / "c.toml").write_text(BINARY + "revin = true\n")
    out = cli("run", "c.toml", "--quiet", "--workers", "1", cwd=tmp_path)
    assert out.returncode == 2
    assert "[search.space] revin = true needs a regression target; this task is binary: " \
        "remove revin from [search.space]" in out.stderr
