"""netrace's cached TPE sampler against Optuna's own: the same proposals, to the bit."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest

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
