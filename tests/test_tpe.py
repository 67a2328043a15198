"""netrace's cached TPE sampler against Optuna's own: the same proposals, to the bit; and
Optuna's own, with one notice, wherever the cached one's private hooks are missing or wrong."""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest

from netrace.race import _tpe
from netrace.race._tpe import CachedTPESampler, tpe_sampler

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def _suggest(trial: optuna.Trial) -> dict:
    """A conditional space like netrace's: the model decides which keys exist."""
    p = {"model": trial.suggest_categorical("model", ["mlp", "gru", "cnn"]),
         "lr": trial.suggest_float("lr", 1e-4, 1e-1, log=True),
         "batch_size": trial.suggest_categorical("batch_size", [32, 64, 128])}
    if p["model"] == "mlp":
        p["width"] = trial.suggest_int("width", 8, 128, log=True)
        p["layers"] = trial.suggest_int("layers", 1, 3)
    elif p["model"] == "gru":
        p["hidden_size"] = trial.suggest_int("hidden_size", 8, 64)
    else:
        p["channels"] = trial.suggest_int("channels", 4, 32, step=4)
        p["kernel"] = trial.suggest_categorical("kernel", [3, 5])
    p["dropout"] = trial.suggest_float("dropout", 0.0, 0.5)
    return p


def _score(p: dict) -> float:
    x = math.log10(p["lr"]) + 2.5
    return x * x + 0.3 * p["dropout"] + {"mlp": 0.0, "gru": 0.1, "cnn": 0.2}[p["model"]] \
        + 0.001 * p.get("width", 0) + 0.01 * p.get("layers", 0)


def _race(sampler: optuna.samplers.BaseSampler, direction: str, n: int) -> list[dict]:
    """Asks in batches as netrace does (some trials left running while later ones are asked,
    some failed, some pruned, some added from outside), tells deterministic values; returns
    every proposal."""
    study = optuna.create_study(direction=direction, sampler=sampler)
    sign = 1.0 if direction == "minimize" else -1.0
    rng = np.random.default_rng(5)
    proposals, running = [], []
    for i in range(n):
        if i % 7 == 0:  # a trial told by another worker, whole
            dists = {"model": optuna.distributions.CategoricalDistribution(["mlp", "gru", "cnn"]),
                     "lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
                     "batch_size": optuna.distributions.CategoricalDistribution([32, 64, 128]),
                     "hidden_size": optuna.distributions.IntDistribution(8, 64),
                     "dropout": optuna.distributions.FloatDistribution(0.0, 0.5)}
            p = {"model": "gru", "lr": float(10 ** rng.uniform(-4, -1)), "batch_size": 64,
                 "hidden_size": int(rng.integers(8, 65)), "dropout": float(rng.uniform(0, 0.5))}
            study.add_trial(optuna.trial.create_trial(params=p, distributions=dists,
                                                      value=sign * _score(p)))
        if i % 5 == 0:
            study.enqueue_trial({"model": "mlp", "batch_size": 128}, skip_if_exists=False)
        trial = study.ask()
        p = _suggest(trial)
        proposals.append(p)
        running.append((trial, p))
        if len(running) > 6:  # tell the oldest of those running, keep the rest pending
            t, q = running.pop(0)
            if t.number % 11 == 0:
                study.tell(t, state=optuna.trial.TrialState.FAIL)
            elif t.number % 13 == 0:
                t.report(sign * _score(q) + 1.0, 1)
                study.tell(t, state=optuna.trial.TrialState.PRUNED)
            else:
                study.tell(t, sign * _score(q))
    return proposals


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
@pytest.mark.parametrize("group", [True, False])
def test_cached_tpe_proposes_exactly_what_optunas_does(direction: str, group: bool) -> None:
    kw = dict(seed=3, n_startup_trials=8, multivariate=True, group=group, constant_liar=True)
    ours = _race(CachedTPESampler(**kw), direction, 160)
    theirs = _race(optuna.samplers.TPESampler(**kw), direction, 160)
    assert ours == theirs
    assert len({p["model"] for p in ours}) == 3  # the conditional branches were all taken


def test_cached_tpe_without_constant_liar_and_independent() -> None:
    for kw in (dict(seed=1, n_startup_trials=5, multivariate=True, group=True),
               dict(seed=2, n_startup_trials=5)):
        assert _race(CachedTPESampler(**kw), "minimize", 80) == \
            _race(optuna.samplers.TPESampler(**kw), "minimize", 80)


def test_constraints_fall_back_to_optunas_split() -> None:
    """A trial with constraints (never set by netrace): the split is Optuna's own, which puts
    infeasible trials above."""
    def race(sampler):
        study = optuna.create_study(sampler=sampler)
        out = []
        for i in range(40):
            t = study.ask()
            x = t.suggest_float("x", -5, 5)
            t.set_constraint("c", 1.0 if i % 3 == 0 else -1.0)
            study.tell(t, (x - 1) ** 2)
            out.append(x)
        return out

    kw = dict(seed=4, n_startup_trials=5, multivariate=True)
    assert race(CachedTPESampler(**kw)) == race(optuna.samplers.TPESampler(**kw))


def test_tpe_sampler_is_cached_on_the_checked_optuna() -> None:
    s = tpe_sampler(seed=0, n_startup_trials=4, multivariate=True, group=True,
                    constant_liar=True)
    assert isinstance(s, CachedTPESampler) == optuna.__version__.startswith("5.0.")
    assert (_tpe.speedup_problem() is None) == optuna.__version__.startswith("5.0.")


@pytest.fixture
def recheck():
    """The speed-up checked anew in this test (its verdict is kept per process), and again
    after it, with Optuna as it was."""
    def clear():
        for f in (_tpe.speedup_problem, _tpe._hooks, _tpe._incremental_groups):
            f.cache_clear()

    clear()
    yield
    clear()


def _one_notice(caplog: pytest.LogCaptureFixture) -> str:
    notices = [r for r in caplog.records if r.name == "netrace"]
    assert len(notices) == 1 and notices[0].levelno == logging.WARNING
    line = notices[0].getMessage()
    assert "\n" not in line and line.startswith("netrace: notice: ")
    assert line.endswith("; using Optuna's own TPESampler (the same proposals, slower asks "
                         "among many trials)")
    return line


def _stock_tpe_proposes(factory=tpe_sampler) -> None:
    """A sampler from ``factory`` (tpe_sampler) is Optuna's own, twice (one notice in all),
    and proposes as Optuna's own, past its startup trials."""
    kw = dict(seed=3, n_startup_trials=8, multivariate=True, group=True, constant_liar=True)
    for _ in range(2):
        s = factory(**kw)
        assert type(s) is optuna.samplers.TPESampler
    assert _race(s, "minimize", 30) == _race(optuna.samplers.TPESampler(**kw), "minimize", 30)


@pytest.mark.parametrize("how", ["attribute", "module"])
def test_a_missing_private_hook_falls_back_to_stock_tpe_with_one_notice(
        how: str, recheck, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """An Optuna release that moves a private class the speed-up subclasses (simulated: the
    attribute gone from its module, or the module gone): the stock TPE, one notice naming what
    is missing; importing netrace's module still works."""
    caplog.set_level(logging.WARNING, logger="netrace")
    if how == "attribute":
        import optuna.search_space.group_decomposed as gd

        monkeypatch.delattr(gd, "_GroupDecomposedSearchSpace")
    else:
        monkeypatch.setitem(sys.modules, "optuna.search_space.group_decomposed", None)
    import netrace.race

    monkeypatch.delitem(sys.modules, "netrace.race._tpe")  # imported afresh, then restored
    monkeypatch.setattr(netrace.race, "_tpe", _tpe)
    import netrace.race._tpe as fresh

    assert fresh is not _tpe
    _stock_tpe_proposes(fresh.tpe_sampler)
    line = _one_notice(caplog)
    assert f"Optuna {optuna.__version__} lacks a private hook of netrace's TPE speed-up" in line
    assert ("_GroupDecomposedSearchSpace" if how == "attribute" else "group_decomposed") in line
    assert fresh.speedup_problem() is not None


def test_a_speedup_that_fails_its_self_check_is_not_used(
        recheck, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Hooks that exist but no longer mean what they did (simulated: the cached rows lose the
    newest trial): the self-check sees other proposals; the stock TPE, one notice."""
    caplog.set_level(logging.WARNING, logger="netrace")
    rows = CachedTPESampler._get_internal_repr
    monkeypatch.setattr(CachedTPESampler, "_get_internal_repr",
                        lambda self, trials, space, study: rows(self, trials[:-1], space, study))
    _stock_tpe_proposes()
    assert "proposes otherwise than Optuna" in _one_notice(caplog)


def test_another_optuna_release_gets_stock_tpe(recheck, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="netrace")
    monkeypatch.setattr(optuna, "__version__", "5.1.0")
    _stock_tpe_proposes()
    assert "checked against Optuna 5.0.x, not 5.1.0" in _one_notice(caplog)


_BREAK_OPTUNA = """\
# this test's stand-in for an Optuna release that moved the class the TPE speed-up subclasses
import optuna.search_space.group_decomposed as _gd
del _gd._GroupDecomposedSearchSpace
"""


@pytest.mark.slow
def test_a_race_runs_on_stock_tpe_when_a_hook_is_missing(tmp_path: Path) -> None:
    """The whole race, its worker in a process whose Optuna lacks the hook (a sitecustomize on
    the path removes it at start-up): it runs to its end on the stock TPE, and says so in one
    line, not once per process."""
    import os

    from netrace.storage import Storage, TrialState
    from tests.test_race import run, write

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_BREAK_OPTUNA)
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    cfg = write(tmp_path, rule="none", population=4, epochs=2, budget=24)
    # two workers and the coordinator, each checking its Optuna: one notice in all
    proc = run(cfg, "--workers", "2", env={**os.environ, "PYTHONPATH": path})
    assert proc.returncode == 0, proc.stderr
    assert "budget spent" in proc.stdout
    notices = [line for line in proc.stderr.splitlines() if "TPESampler" in line]
    assert len(notices) == 1, proc.stderr
    assert "lacks a private hook of netrace's TPE speed-up" in notices[0]
    s = Storage(tmp_path / "netrace.db")
    trials = s.trials(s.get_study("race").id)
    assert sum(t.state is TrialState.COMPLETE for t in trials) > 4  # past TPE's startup


def test_an_ask_among_many_trials_does_not_redo_every_trial() -> None:
    """With 1,500 trials told, the cached sampler's ask does per-trial work only for the new
    ones: counted as conversions to the internal representation, not timed."""
    sampler = CachedTPESampler(seed=0, n_startup_trials=8, multivariate=True, group=True,
                               constant_liar=True)
    study = optuna.create_study(sampler=sampler)
    dists = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
             "dropout": optuna.distributions.FloatDistribution(0.0, 0.5)}
    rng = np.random.default_rng(0)
    study.add_trials([optuna.trial.create_trial(
        params={"lr": float(10 ** rng.uniform(-4, -1)), "dropout": float(rng.uniform(0, .5))},
        distributions=dists, value=float(rng.normal())) for _ in range(1500)])
    calls = {"n": 0}
    real = optuna.distributions.FloatDistribution.to_internal_repr

    def counting(self, value):
        calls["n"] += 1
        return real(self, value)

    optuna.distributions.FloatDistribution.to_internal_repr = counting
    try:
        t = study.ask()
        t.suggest_float("lr", 1e-4, 1e-1, log=True)
        t.suggest_float("dropout", 0.0, 0.5)
        first = calls["n"]
        study.tell(t, 0.0)
        calls["n"] = 0
        t = study.ask()
        t.suggest_float("lr", 1e-4, 1e-1, log=True)
        t.suggest_float("dropout", 0.0, 0.5)
    finally:
        optuna.distributions.FloatDistribution.to_internal_repr = real
    assert first >= 2 * 1500  # the first ask converts every trial's two params
    assert calls["n"] < 50  # the next converts the one new trial (and the proposal)
