"""netrace evaluate and predict, end to end as a user runs them: a race on a synthetic series
with a known linear law, the verdict on its test part (opened once, counted), the final model
forecasting the same numbers from the raw file, in this process and in a fresh one."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from netrace.config import load_config
from netrace.evaluate import load_model
from netrace.race._race import config_record
from netrace.storage import Storage
from tests.conftest import make_prices

EXE = str(Path(sys.executable).parent / "netrace")
pytestmark = pytest.mark.slow  # every test races, then evaluates

LEVEL = """
[data]
path = "series.csv"
time = "date"
[task]
type = "regression"
target = "y"
window = 4
[split]
scheme = "walk_forward"
folds = 2
test = 0.25
[race]
rule = "median"
population = 6
max_epochs = 5
budget = 60
[search]
sampler = "random"
[search.space]
model = "mlp"
width = 8
lr = {low = 3e-3, high = 3e-2, log = true}
batch_size = 64
[evaluate]
finalists = 4
"""

VOL = """
[data]
path = "prices.csv"
time = "Date"
[task]
type = "regression"
target = "vol_next"
features = ["log_return", "range", "rolling_vol_5"]
window = 5
[split]
scheme = "walk_forward"
folds = 2
test = 0.25
[race]
rule = "median"
population = 6
max_epochs = 4
budget = 48
[search]
sampler = "random"
[search.space]
model = ["mlp", "gru"]
width = 8
hidden_size = 4
linear = "ols"
lr = {low = 3e-3, high = 3e-2, log = true}
batch_size = 64
[evaluate]
finalists = 3
forecast = "greedy"
"""

BINARY = """
[data]
source = "breast_cancer"
[task]
type = "binary"
target = "target"
[split]
scheme = "kfold"
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
lr = {low = 3e-3, high = 3e-2, log = true}
batch_size = 64
"""


def linear_series(n: int = 700, seed: int = 0) -> pd.DataFrame:
    """y follows a known linear law of x's and its own past, plus noise."""
    rng = np.random.default_rng(seed)
    x1 = np.zeros(n)
    y = np.zeros(n)
    for t in range(1, n):
        x1[t] = 0.7 * x1[t - 1] + rng.normal()
        y[t] = 0.6 * x1[t - 1] + 0.3 * y[t - 1] + 0.5 * rng.normal()
    return pd.DataFrame({"date": pd.bdate_range("2010-01-01", periods=n), "x1": x1,
                         "x2": rng.normal(size=n), "y": y})


def cli(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def raced(tmp: Path, text: str, name: str, data: pd.DataFrame | None, file: str) -> Path:
    if data is not None:
        data.to_csv(tmp / file, index=False)
    cfg = tmp / f"{name}.toml"
    cfg.write_text(text)
    out = cli("run", str(cfg), "--quiet", "--workers", "1", cwd=tmp)
    assert out.returncode == 0, out.stderr
    return cfg


@pytest.fixture(scope="module")
def level(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("level")
    raced(tmp, LEVEL, "level", linear_series(), "series.csv")
    return tmp


def test_evaluate_once_then_the_stored_verdict_and_counted_openings(level: Path) -> None:
    out = cli("evaluate", "level", "--json", cwd=level)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert set(r) >= {"study", "task", "target", "test", "forecast", "models", "spa_pvalue",
                      "verdict", "openings"}
    assert (r["study"], r["task"], r["target"], r["openings"]) == ("level", "regression", "y", 1)
    assert r["forecast"] == "blend"
    names = {m["name"]: m for m in r["models"]}
    assert {"persistence", "mean", "ar1"} <= set(names)  # a level series' baselines
    assert {n for n, m in names.items() if m["kind"] == "netrace"} == \
        {"blend", "top_k", "greedy", "best", "folds", "best_folds"}
    # the blend: top_k and the baselines, weighed on nested validation forecasts of both folds
    b = r["blend"]
    assert b["nested"] and b["why_not"] is None and b["folds"] == [1, 2]
    assert set(b["weights"]) == {"top_k", "persistence", "mean", "ar1"}
    assert sum(b["weights"].values()) == pytest.approx(1.0)
    assert set(b["mse"]) == {"blend", "top_k", "best", "persistence", "mean", "ar1"}
    assert b["mse"]["blend"] <= min(b["mse"].values()) * 1.05  # greedy: near the best column
    data = linear_series()
    assert r["test"]["n"] == 174 and r["test"]["last"] == data["date"].iloc[-1].date().isoformat()
    for m in r["models"]:
        assert set(m["metrics"]) >= {"mse", "mae", "r2"}
        if m["kind"] == "baseline":
            assert set(m["dm_pvalue"]) == {"mse", "mae"}
            assert all(0 <= p <= 1 for p in m["dm_pvalue"].values())
    assert 0 <= r["spa_pvalue"] <= 1 and r["verdict"].endswith(".")
    # the baselines on the validation samples the candidates were weighed on, for the record
    v = r["validation"]
    assert set(v["baselines"]) == {"persistence", "mean", "ar1"} and v["samples"] > 100
    assert all(x > 0 for x in v["baselines"].values()) and v["top_k"] > 0
    # a network's fold weights are those of the epoch at which its mean over the folds (what
    # the race selected on) peaked: re-scored, they give the race's recorded best
    for f in r["finalists"]:
        assert f["rescored"] == pytest.approx(f["validation"], abs=1e-5)
    # the second call shows the stored result and does not open the test part
    again = cli("evaluate", "level", "--json", cwd=level)
    stored = json.loads(again.stdout)
    assert stored["stored"] and stored["openings"] == 1 and stored["models"] == r["models"]
    text = cli("evaluate", "level", cwd=level)
    assert "opened 1 time" in text.stdout and r["verdict"] in text.stdout
    s = Storage(level / "netrace.db")
    assert len(s.evaluations(s.get_study("level").id)) == 1


def test_predict_reproduces_the_verdicts_forecasts_and_the_next_period(level: Path) -> None:
    assert cli("evaluate", "level", cwd=level).returncode == 0  # evaluated (once) here too
    out = cli("predict", "level", "--data", "series.csv", "--out", "pred.csv", cwd=level)
    assert out.returncode == 0, out.stderr
    pred = pd.read_csv(level / "pred.csv", parse_dates=["time"])
    assert list(pred.columns) == ["time", "forecast", "lower", "upper", "spread"]
    data = linear_series()
    assert pred["time"].iloc[-1] == data["date"].iloc[-1]  # the forecast of the next period
    model = load_model(str(level / "netrace.db"), "level")
    # every origin with a full window of 4 rows and, as the forecast blends in baselines, with
    # the past they fit on
    assert model.blend is not None and model.blend.baselines
    assert len(pred) == len(data) - max(3, model.blend.past_needed())
    test = model.test
    got = pred.set_index("time").loc[pd.to_datetime(test["time"])]
    # the same float32 networks, run on other batches of rows: equal to float32 rounding
    np.testing.assert_allclose(got["forecast"], test[model.name], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got["lower"], test["lower"], rtol=1e-6, atol=1e-7)
    assert (pred["lower"] <= pred["forecast"]).all() and (pred["forecast"] <= pred["upper"]).all()
    # the model in a fresh process forecasts the same numbers
    code = ("import sys, pandas as pd, netrace; m = netrace.load_model('netrace.db', 'level'); "
            "m.predict(pd.read_csv('series.csv', parse_dates=['date'])).to_csv('fresh.csv', "
            "index=False)")
    fresh = subprocess.run([sys.executable, "-c", code], cwd=level, capture_output=True,
                           text=True, timeout=120)
    assert fresh.returncode == 0, fresh.stderr
    np.testing.assert_array_equal(pd.read_csv(level / "fresh.csv")["forecast"], pred["forecast"])
    # a file that starts later than the raced data: forecasts, and a warning that the
    # blended baselines refit on a shorter past
    data.tail(300).to_csv(level / "late.csv", index=False)
    out = cli("predict", "level", "--data", "late.csv", "--out", "late_p.csv", cwd=level)
    assert out.returncode == 0, out.stderr
    assert re.search(r"netrace: warning: the data starts at \d{4}-\d\d-\d\d here but at "
                     r"2010-01-01 in the data the study was raced on", out.stderr), out.stderr
    assert "warning" not in cli("predict", "level", "--data", "series.csv", "--out",
                                "again.csv", cwd=level).stderr
    # the target column is not needed to forecast
    data.drop(columns="y").to_csv(level / "no_target.csv", index=False)
    # ... unless it is an input, as here (the target's past is a feature by default)
    bad = cli("predict", "level", "--data", "no_target.csv", "--out", "p.csv", cwd=level)
    assert bad.returncode == 2 and "'y'" in bad.stderr and "Traceback" not in bad.stderr


def test_again_opens_the_test_part_once_more_and_says_so(level: Path) -> None:
    cli("evaluate", "level", cwd=level)
    out = cli("evaluate", "level", "--again", "--json", cwd=level)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["openings"] == 2 and not r.get("stored")
    assert "opened 2 times" in cli("evaluate", "level", cwd=level).stdout
    status = cli("status", "level", "--top", "0", cwd=level)
    assert "test      opened 2 times by netrace evaluate" in status.stdout
    assert json.loads(cli("status", "level", "--json", cwd=level).stdout)["openings"] == 2


def test_volatility_baselines_and_intervals(tmp_path: Path) -> None:
    raced(tmp_path, VOL, "vol", make_prices(700, seed=3), "prices.csv")
    s = Storage(tmp_path / "netrace.db")
    trials = s.trials(s.get_study("vol").id)
    assert {t.params.get("linear") for t in trials if t.epochs} == {"ols"}  # linear paths
    out = cli("evaluate", "vol", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    names = {m["name"]: m for m in r["models"]}
    assert {"har", "log_har", "garch", "ewma", "mean_22", "persistence"} <= set(names)
    assert r["forecast"] == "greedy"
    for m in r["models"]:
        assert "qlike" in m["metrics"]
        if m["kind"] == "baseline":
            assert set(m["dm_pvalue"]) == {"mse", "mae", "qlike"}
        else:
            assert 0 <= m["metrics"]["coverage"] <= 1
    assert set(r["spa"]) == {"mse", "qlike"}
    assert sum(x for x in r["weights"]["greedy"]) == pytest.approx(1.0)
    pred = cli("predict", "vol", "--data", "prices.csv", "--out", "p.csv", cwd=tmp_path)
    assert pred.returncode == 0, pred.stderr
    p = pd.read_csv(tmp_path / "p.csv")
    assert (p["lower"] > 0).all() and (p["forecast"] > 0).all()  # a ratio interval
    # a volatility is never forecast below the smallest positive one the networks trained on
    model = load_model(str(tmp_path / "netrace.db"), "vol")
    floor = min(n.floor for n in model.nets)
    assert floor > 0 and all(n.floor is not None for n in model.nets)
    cands = model.test[["blend", "top_k", "greedy", "best", "folds", "best_folds"]]
    assert (cands.to_numpy() >= floor - 1e-15).all()


def test_classification_on_iid_rows(tmp_path: Path) -> None:
    raced(tmp_path, BINARY, "bc", None, "")
    out = cli("evaluate", "bc", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    names = {m["name"]: m for m in r["models"]}
    assert {"majority", "logistic"} <= set(names)
    assert set(names["logistic"]["metrics"]) >= {"accuracy", "log_loss", "auc"}
    assert names["logistic"]["metrics"]["accuracy"] > 0.9  # a real model, fitted
    from netrace.data import prepare

    n = prepare(load_config(tmp_path / "bc.toml")).holdout.n
    assert r["test"] == {"first": 0, "last": n - 1, "n": n}  # positions: rows have no time
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    frame.drop(columns="target").to_csv(tmp_path / "rows.csv", index=False)
    pred = cli("predict", "bc", "--data", "rows.csv", "--out", "p.csv", cwd=tmp_path)
    assert pred.returncode == 0, pred.stderr
    p = pd.read_csv(tmp_path / "p.csv")
    assert list(p.columns) == ["time", "forecast", "lower", "upper", "spread", "p_0", "p_1"]
    assert len(p) == len(frame) and set(p["forecast"]) <= {0, 1}
    np.testing.assert_allclose(p["p_0"] + p["p_1"], 1.0)


def test_bad_input_says_what_and_how(tmp_path: Path, level: Path,
                                     capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from netrace.cli import main

    def fails(*args: str, cwd: Path = tmp_path) -> str:
        monkeypatch.chdir(cwd)
        capsys.readouterr()
        code = main(list(args))
        err = capsys.readouterr().err
        assert code == 2, (args, err)
        assert err.startswith("netrace: error: ") and err.count("\n") == 1, err
        return err

    assert "no study database exists at 'nowhere.db'" in fails("evaluate", "x", "--storage",
                                                          "nowhere.db")
    assert not (tmp_path / "nowhere.db").exists()
    assert "no study 'levle'" in fails("evaluate", "levle", cwd=level)
    cfg = load_config(level / "level.toml")
    s = Storage(tmp_path / "empty.db")
    st = s.create_study("empty", direction="maximize", config=config_record(cfg))
    assert "has no finished network" in fails("evaluate", "empty", "--storage", "empty.db")
    assert "has not been evaluated yet" in fails("predict", "empty", "--storage", "empty.db",
                                                 "--data", "x.csv", "--out", "p.csv")
    # an evaluation that opened the test part and did not complete is counted
    s.open_evaluation(st.id)
    assert "did not complete" in fails("evaluate", "empty", "--storage", "empty.db")
    assert cli("evaluate", "level", cwd=level).returncode == 0
    data = linear_series()
    data.drop(columns="x1").to_csv(tmp_path / "no_x1.csv", index=False)
    db = str(level / "netrace.db")
    assert "'x1'" in fails("predict", "level", "--storage", db, "--data", "no_x1.csv",
                           "--out", "p.csv")
    data.head(3).to_csv(tmp_path / "short.csv", index=False)
    assert "too few to forecast from" in fails("predict", "level", "--storage", db, "--data",
                                               "short.csv", "--out", "p.csv")
    # windows enough for the networks, not the past the blended baselines fit on
    data.head(20).to_csv(tmp_path / "short20.csv", index=False)
    assert "rows of the target's past before the first forecast" in fails(
        "predict", "level", "--storage", db, "--data", "short20.csv", "--out", "p.csv")
    assert "does not exist" in fails("predict", "level", "--storage", db, "--data",
                                     "missing.csv", "--out", "p.csv")
    # a new row whose input is not known yet: the fix is in the file, not the study's config
    data.assign(x1=data["x1"].where(data.index < len(data) - 1)).to_csv(
        tmp_path / "nan.csv", index=False)
    assert "drop or fill those rows in the file to forecast from" in fails(
        "predict", "level", "--storage", db, "--data", "nan.csv", "--out", "p.csv")
    # the data changed since the race (rows appended): the test part moved; refused
    changed = tmp_path / "changed"
    changed.mkdir()
    (changed / "level.toml").write_text(LEVEL)
    linear_series(760).to_csv(changed / "series.csv", index=False)
    import shutil

    shutil.copy(level / "netrace.db", changed / "netrace.db")
    s2 = Storage(changed / "netrace.db")
    rec = s2.get_study("level")
    config = dict(rec.config)
    config["data"] = {**config["data"], "path": str(changed / "series.csv")}
    s2.set_study_config(rec.id, config, None)
    assert "changed since its race" in fails("evaluate", "level", "--again", cwd=changed)
    # ... and running the finished race again on the new data neither goes on nor hides the
    # change from evaluate
    before = Storage(changed / "netrace.db").get_study("level").config
    assert "changed since its race" in fails("run", "level.toml", cwd=changed)
    assert Storage(changed / "netrace.db").get_study("level").config == before
    assert "changed since its race" in fails("evaluate", "level", "--again", cwd=changed)
    assert "could not write the forecasts" in fails(
        "predict", "level", "--storage", db, "--data", str(level / "series.csv"), "--out",
        str(tmp_path / "no" / "such" / "p.csv"))


def test_evaluate_and_predict_on_a_postgresql_study(tmp_path: Path, postgres) -> None:  # noqa: ANN001
    url = postgres.new_database("evaluate_pg")
    linear_series(500, seed=2).to_csv(tmp_path / "series.csv", index=False)
    cfg = tmp_path / "pg.toml"
    cfg.write_text(LEVEL.replace("budget = 60", "budget = 30"))
    run = cli("run", str(cfg), "--quiet", "--workers", "1", "--storage", url, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    out = cli("evaluate", "pg", "--storage", url, "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["openings"] == 1 and r["forecast"] == "blend"
    again = json.loads(cli("evaluate", "pg", "--storage", url, "--json", cwd=tmp_path).stdout)
    assert again["stored"] and again["models"] == r["models"]
    model = load_model(url, "pg")
    pred = model.predict(pd.read_csv(tmp_path / "series.csv", parse_dates=["date"]))
    got = pred.set_index("time").loc[pd.to_datetime(model.test["time"])]
    np.testing.assert_allclose(got["forecast"], model.test[model.name], rtol=1e-6, atol=1e-7)


def test_the_blend_is_mostly_the_baseline_when_the_networks_see_nothing(tmp_path: Path) -> None:
    """Networks that read only noise cannot forecast a persistent series; nested validation
    sees it and the blend leans on the baselines, so netrace's forecast is not worse than AR(1)
    on the test part, while the networks alone are."""
    rng = np.random.default_rng(5)
    n = 700
    y = np.zeros(n)
    for t in range(1, n):
        y[t] = 0.95 * y[t - 1] + rng.normal()
    frame = pd.DataFrame({"date": pd.bdate_range("2010-01-01", periods=n), "x2": rng.normal(size=n),
                          "y": y})
    text = LEVEL.replace('window = 4', 'window = 4\nfeatures = ["x2"]').replace("folds = 2",
                                                                                "folds = 3")
    raced(tmp_path, text, "noise", frame, "series.csv")
    out = cli("evaluate", "noise", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    b = r["blend"]
    assert b["nested"] and b["folds"] == [1, 2, 3]
    assert b["weights"]["top_k"] <= 0.2, b["weights"]
    assert b["mse"]["top_k"] > 2 * b["mse"]["ar1"]  # the networks alone: far behind
    m = {x["name"]: x for x in r["models"]}
    assert m["blend"]["metrics"]["mse"] < 0.5 * m["top_k"]["metrics"]["mse"]
    assert m["ar1"]["dm_pvalue"]["mse"] > 0.05 or \
        m["blend"]["metrics"]["mse"] < m["ar1"]["metrics"]["mse"]
    assert "% ar1" in r["verdict"] or "% persistence" in r["verdict"]


def test_a_race_without_per_fold_scores_is_weighed_without_nesting_and_says_so(
        tmp_path: Path, level: Path) -> None:
    import shutil
    import sqlite3

    shutil.copy(level / "netrace.db", tmp_path / "old.db")
    with sqlite3.connect(tmp_path / "old.db") as c:  # as a race of an older netrace left it
        c.execute("UPDATE curve SET metrics = json_remove(metrics, '$.fold1', '$.fold2')")
    out = cli("evaluate", "level", "--storage", "old.db", "--again", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    b = json.loads(out.stdout)["blend"]
    assert not b["nested"] and "older netrace" in b["why_not"]
    assert sum(b["weights"].values()) == pytest.approx(1.0)
    text = cli("evaluate", "level", "--storage", "old.db", cwd=tmp_path).stdout
    assert "not nested: the race kept no per-fold scores" in text


def test_close_only_volatility_and_a_column_judged_as_a_volatility(tmp_path: Path) -> None:
    # a file with dates and closes only: vol_close_next is a volatility, judged against HAR,
    # GARCH (on the close's returns) and the rest, on MSE and QLIKE
    prices = make_prices(700, seed=5)[["Date", "Close"]]
    raced(tmp_path, VOL.replace('"vol_next"', '"vol_close_next"')
          .replace('["log_return", "range", "rolling_vol_5"]', '["log_return", "vol_close"]'),
          "close", prices, "prices.csv")
    out = cli("evaluate", "close", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["baselines"]["kind"] == "volatility"
    assert {"har", "log_har", "garch", "ewma", "mean_22", "persistence"} <= \
        {m["name"] for m in r["models"]}
    # a positive column (a realized volatility the user computed) is a level by default and a
    # volatility when [evaluate] baselines says so: HAR and the rest, no GARCH (no close)
    rv = prices.assign(rv=np.sqrt(np.pi / 2) * np.abs(np.log(prices.Close).diff())).iloc[1:]
    rv = rv.drop(columns="Close")
    column = VOL.replace('"vol_next"', '"rv"').replace(
        '["log_return", "range", "rolling_vol_5"]', '["rv"]').replace(
        'path = "prices.csv"', 'path = "rv.csv"').replace('"greedy"', '"blend"')
    raced(tmp_path, column, "level_rv", rv, "rv.csv")
    raced(tmp_path, column + 'baselines = "volatility"\n', "vol_rv", None, "rv.csv")
    kinds = {}
    for study in ("level_rv", "vol_rv"):
        out = cli("evaluate", study, "--json", cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        r = json.loads(out.stdout)
        kinds[study] = (r["baselines"]["kind"], {m["name"] for m in r["models"]
                                                 if m["kind"] == "baseline"},
                        set(r["spa"]))
    assert kinds["level_rv"] == ("level", {"persistence", "mean", "ar1"}, {"mse"})
    assert kinds["vol_rv"] == ("volatility", {"har", "log_har", "ewma", "mean_22",
                                              "persistence"}, {"mse", "qlike"})
    pred = cli("predict", "vol_rv", "--data", "rv.csv", "--out", "p.csv", cwd=tmp_path)
    assert pred.returncode == 0, pred.stderr
    model = load_model(str(tmp_path / "netrace.db"), "vol_rv")
    assert model.blend is not None and model.blend.kind == "volatility"
    got = pd.read_csv(tmp_path / "p.csv", parse_dates=["time"]).set_index("time")
    got = got.loc[pd.to_datetime(model.test["time"])]
    np.testing.assert_allclose(got["forecast"], model.test[model.name], rtol=1e-6, atol=1e-7)
