"""netrace report: one self-contained HTML file whose figures hold what the storage holds (the
verdict's test forecasts, every curve and the rule's forecast at each stop, the race's best
score, Optuna's fANOVA importances, the split plan), and a real headless Chromium that renders
it without errors and without asking the network for anything."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from netrace.config import load_config
from netrace.data import prepare
from netrace.evaluate import load_model
from netrace.report import build_report
from netrace.storage import Storage, TrialState
from tests.conftest import make_prices

pytestmark = pytest.mark.slow  # a race (or more) behind every report

ROOT = Path(__file__).resolve().parents[1]

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
rule = "lc"
population = 8
max_epochs = 8
budget = 160
[search]
sampler = "random"
[search.space]
model = ["mlp", "gru"]
width = [8, 16]
hidden_size = 4
lr = {low = 1e-4, high = 3e-2, log = true}
dropout = {low = 0.0, high = 0.3}
batch_size = 64
[evaluate]
finalists = 3
"""


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "netrace.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A raced and evaluated volatility study (SQLite file ``netrace.db`` in the folder)."""
    tmp = tmp_path_factory.mktemp("report")
    make_prices(700, seed=5).to_csv(tmp / "prices.csv", index=False)
    (tmp / "vol.toml").write_text(VOL)
    for args in (("run", "vol.toml", "--quiet", "--workers", "1"), ("evaluate", "vol")):
        out = _cli(*args, cwd=tmp)
        assert out.returncode == 0, out.stderr
    return tmp


def test_the_figures_hold_what_the_storage_holds(study: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(study)
    rep = build_report("netrace.db", "vol", top=5)
    assert rep.evaluated
    assert rep.sections == ["verdict", "forecasts", "leaderboard", "curves", "timeline",
                            "importance", "data"]
    assert set(rep.figures) == {"forecasts", "curves", "timeline", "importance", "split"}
    s = Storage("netrace.db", create=False)
    rec = s.get_study("vol")
    result = s.evaluations(rec.id)[-1].result

    # the test forecasts: the actual values, netrace's forecast and its interval, the best
    # baseline, as the evaluation forecast them
    test = load_model("netrace.db", "vol").test
    traces = {t.name: t for t in rep.figures["forecasts"].data}
    chosen = result["forecast"]
    bench = result["spa"]["mse"]["benchmark"]
    np.testing.assert_array_equal(traces["actual"].y, test["y"])
    np.testing.assert_array_equal(traces[f"netrace ({chosen})"].y, test[chosen])
    np.testing.assert_array_equal(traces[f"{bench} (baseline)"].y, test[bench])
    lower = next(t for t in traces.values() if (t.name or "").startswith("interval"))
    np.testing.assert_array_equal(lower.y, test["lower"])
    assert (np.asarray(traces["actual"].x) == test["time"].to_numpy()).all()
    # every other candidate and baseline is one click away
    np.testing.assert_array_equal(traces["upper"].y, test["upper"])
    assert {m["name"] for m in result["models"]} == {n.split(" (")[0] for n in traces} - {
        "actual", "interval", "netrace", "upper"} | {chosen}

    # the verdict's text and every model's MSE are in the page
    assert result["verdict"].split(" (")[0] in rep.html
    for m in result["models"]:
        assert f"{m['metrics']['mse']:.4g}" in rep.html

    # the leaderboard: the five best networks, best first
    trials = s.trials(rec.id)
    best = sorted((t for t in trials if t.best_value is not None),
                  key=lambda t: (-t.best_value, t.number))[:5]
    board = rep.html.split("id='leaderboard'")[1].split("</table>")[0]
    numbers = [int(n) for n in re.findall(r"<tr><td>\d+</td><td>(\d+)</td>", board)]
    assert numbers == [t.number for t in best]

    # every stored curve point, per state, and the rule's band at every lc stop
    curves = s.curves(rec.id)
    by_state: dict[str, int] = {}
    for t in trials:
        by_state[t.state.value] = by_state.get(t.state.value, 0) + int(
            np.isfinite(curves.get(t.id, [])).sum())
    drawn = {t.name.split(" (")[0]: sum(v is not None for v in t.y)
             for t in rep.figures["curves"].data if t.name.split(" (")[0] in by_state}
    assert drawn == {k: v for k, v in by_state.items() if v}
    decisions = s.decisions_of([t.id for t in trials if t.state is TrialState.STOPPED])
    stops = [d for ds in decisions.values() for d in ds
             if d.action == "stop" and d.prediction and "q05" in d.prediction]
    assert stops, "the race should have stopped networks with the lc rule"
    bands = [t for t in rep.figures["curves"].data if t.fill == "toself"]
    polygons = sum(sum(v is None for v in t.y) for t in bands)
    assert polygons == len(stops)
    ends = sorted(v for t in bands for v in t.y[1::5] if v is not None)  # the q95 corners
    assert ends == pytest.approx(sorted(d.prediction["q95"] for d in stops))

    # the timeline ends at the race's best score, after every network-epoch it spent
    line = next(t for t in rep.figures["timeline"].data if t.name == "best of the race")
    assert line.x[-1] == s.epochs_spent(rec.id) == len(s.timeline(rec.id))
    assert line.y[-1] == pytest.approx(max(t.best_value for t in trials
                                           if t.best_value is not None))

    # the importances are Optuna's fANOVA over the same trials
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    from netrace.race._worker import search_space

    dists = {k: d for k, d in search_space(load_config("vol.toml")).distributions().items()
             if not d.single()}
    ref = optuna.create_study(direction="maximize")
    for t in trials:
        if t.state.finished and t.best_value is not None and math.isfinite(t.best_value) \
                and t.state in (TrialState.COMPLETE, TrialState.STOPPED, TrialState.CUT):
            params = {k: v for k, v in t.params.items() if k in dists}
            ref.add_trial(optuna.trial.create_trial(
                params=params, distributions={k: dists[k] for k in params}, value=t.best_value))
    want = get_param_importances(ref, evaluator=FanovaImportanceEvaluator(seed=0))
    bar = rep.figures["importance"].data[0]
    assert dict(zip(bar.y, bar.x, strict=True)) == pytest.approx(dict(want))
    assert len(want) >= 3

    # the split plan: each fold's training and validation samples span the dates they span
    p = prepare(load_config("vol.toml"))
    segs = {t.name: t for t in rep.figures["split"].data}
    for part in ("train", "valid"):
        xs = [x for x in segs[part].x if x is not None]
        want_spans = []
        for f in p.dev.folds:
            idx = f.train if part == "train" else f.valid
            want_spans += [p.dev.time[idx].min(), p.dev.time[idx].max()]
        assert [np.datetime64(x) for x in xs] == [np.datetime64(w) for w in want_spans]
    test_x = [x for x in segs["test"].x if x is not None]
    assert [np.datetime64(x) for x in test_x] == [np.datetime64(p.holdout.first_time),
                                                  np.datetime64(p.holdout.last_time)]


class _Refs(HTMLParser):
    """Every tag's address attributes (src, href, ...) outside scripts' text."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for k, v in attrs:
            if k in ("src", "href", "action", "data", "poster", "srcset"):
                self.refs.append((tag, k, v or ""))


def test_the_file_is_self_contained(study: Path) -> None:
    out = _cli("report", "vol", "--out", "r.html", cwd=study)
    assert out.returncode == 0, out.stderr
    assert "wrote the report of 'vol' to r.html (5 figures)" in out.stderr
    text = (study / "r.html").read_text()
    refs = _Refs()
    refs.feed(text)
    assert refs.refs and all(v.startswith("#") for _, _, v in refs.refs), refs.refs
    assert "<link" not in text.split("<script", 1)[0]
    assert text.count("<script") == text.count("</script>")
    assert not re.search(r"<script[^>]*\bsrc=", text)
    assert text.count("class=\"plotly-graph-div\"") == 5


def test_a_study_not_evaluated_yet(tmp_path: Path) -> None:
    make_prices(400, seed=6).to_csv(tmp_path / "prices.csv", index=False)
    (tmp_path / "vol.toml").write_text(VOL.replace("budget = 160", "budget = 24")
                                       .replace('rule = "lc"', 'rule = "none"'))
    out = _cli("run", "vol.toml", "--quiet", "--workers", "1", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    out = _cli("report", "vol", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "not evaluated yet: netrace evaluate vol adds the verdict" in out.stderr
    text = (tmp_path / "vol_report.html").read_text()
    assert "has not been evaluated yet" in text and "id='forecasts'" not in text
    s = Storage(tmp_path / "netrace.db", create=False)
    assert s.evaluations(s.get_study("vol").id) == []  # the report never opens the test part
    assert "Not computed: only" in text  # fANOVA needs 10 networks; this race had 6


def test_bad_input(study: Path, tmp_path: Path) -> None:
    for args, says in [
        (("report", "nope", "--storage", str(study / "netrace.db")), "nope"),
        (("report", "vol", "--storage", str(tmp_path / "missing.db")), "missing.db"),
        (("report", "vol", "--storage", str(study / "netrace.db"), "--out",
          str(tmp_path / "no" / "r.html")), "does not exist"),
        (("report", "vol", "--storage", str(study / "netrace.db"), "--top", "0"), "--top"),
    ]:
        out = _cli(*args, cwd=tmp_path)
        assert out.returncode == 2, (args, out.stderr)
        err = out.stderr
        assert err.startswith("netrace: error: ") and err.count("\n") == 1 and says in err, err
    assert not (tmp_path / "missing.db").exists() and not (tmp_path / "no").exists()
    assert list(tmp_path.iterdir()) == []  # nothing half-written


# -- in a real browser ------------------------------------------------------------------------

def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _artifacts() -> Path:
    folder = Path(os.environ.get("NETRACE_ARTIFACTS", ROOT / "test-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def open_in_chromium(page_path: Path, screenshot: Path) -> dict:
    """Open a file in headless Chromium (the system's, driven by Playwright) with every
    request but the file itself refused; what it logged and asked for, and what rendered."""
    exe = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        exe = None
    if exe is None:
        if os.environ.get("NETRACE_REQUIRE_BROWSER"):
            pytest.fail("NETRACE_REQUIRE_BROWSER is set but chromium or playwright is missing")
        pytest.skip("no chromium (Debian package 'chromium') or playwright here; .ci/run "
                    "installs both")
    url = page_path.resolve().as_uri()
    seen: dict = {"requests": [], "console": [], "errors": []}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()

            def route(r) -> None:  # noqa: ANN001
                seen["requests"].append(r.request.url)
                if r.request.url == url:
                    r.continue_()
                else:
                    r.abort()
            page.route("**/*", route)
            page.on("console", lambda m: seen["console"].append((m.type, m.text)))
            page.on("pageerror", lambda e: seen["errors"].append(str(e)))
            page.on("requestfailed", lambda r: seen["errors"].append(f"failed: {r.url}"))
            page.goto(url, wait_until="load")
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length > 0 && "
                                   "[...document.querySelectorAll('.js-plotly-plot')].every("
                                   "d => d.querySelector('.main-svg'))", timeout=30000)
            seen["plots"] = page.evaluate("""() => [...document.querySelectorAll(
                '.js-plotly-plot')].map(d => ({
                  key: d.closest('[data-figure]')?.dataset.figure,
                  svgs: d.querySelectorAll('svg.main-svg').length,
                  marks: d.querySelectorAll('.scatterlayer .trace path, .barlayer .point path')
                           .length,
                  width: d.getBoundingClientRect().width,
                  height: d.getBoundingClientRect().height}))""")
            seen["visible"] = {sel: page.locator(sel).first.is_visible()
                               for sel in ("#verdict table", "#forecasts .js-plotly-plot")}
            page.locator("#verdict").scroll_into_view_if_needed()
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return seen


def test_chromium_renders_the_report(study: Path) -> None:
    out = _cli("report", "vol", "--out", "browser.html", cwd=study)
    assert out.returncode == 0, out.stderr
    shot = _artifacts() / "report.png"
    seen = open_in_chromium(study / "browser.html", shot)
    assert seen["errors"] == []
    assert [m for m in seen["console"] if m[0] in ("error", "warning")] == []
    assert seen["requests"] == [(study / "browser.html").resolve().as_uri()]  # nothing else
    keys = [p["key"] for p in seen["plots"]]
    assert sorted(keys) == ["curves", "forecasts", "importance", "split", "timeline"]
    for p in seen["plots"]:
        assert p["svgs"] >= 1 and p["marks"] > 0 and p["width"] > 300 and p["height"] > 150, p
    assert seen["visible"] == {"#verdict table": True, "#forecasts .js-plotly-plot": True}
    assert shot.stat().st_size > 50_000  # a page of figures, not a blank one
