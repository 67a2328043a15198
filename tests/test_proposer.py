"""Optuna samplers through ask/tell, fed with every worker's results through storage."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from netrace.config import parse_space
from netrace.race import Proposer, population_key
from netrace.storage import EpochValue, Storage, TrialEnd, TrialState

SPACE = parse_space({"lr": {"low": 1e-5, "high": 1.0, "log": True},
                     "model": ["mlp", "lstm", "gru"], "width": [16, 32, 64],
                     "dropout": {"low": 0.0, "high": 0.5}})


def objective(p: dict) -> float:
    """Best near lr = 1e-2, model lstm (lower is better)."""
    return (math.log10(p["lr"]) + 2) ** 2 + (0 if p["model"] == "lstm" else 1) + p["dropout"]


def _finish(storage: Storage, study_id: int, params: list[dict]) -> None:
    w = storage.register_worker(study_id)
    trials = storage.add_trials(study_id, params, list(range(len(params))), worker_id=w)
    storage.record_epoch(w, [EpochValue(t.id, 0, objective(t.params)) for t in trials],
                         ends=[TrialEnd(t.id, TrialState.COMPLETE) for t in trials])


def test_deterministic_and_fixed_keys() -> None:
    a = Proposer(SPACE, "tpe", seed=5).ask(6, fixed={"model": "gru", "width": 32})
    b = Proposer(SPACE, "tpe", seed=5).ask(6, fixed={"model": "gru", "width": 32})
    assert a == b
    assert all(p["model"] == "gru" and p["width"] == 32 for p in a)
    assert len({p["lr"] for p in a}) == 6  # the free keys still vary
    free = Proposer(SPACE, "random", seed=5).ask(30)
    assert {p["model"] for p in free} == {"mlp", "lstm", "gru"}
    assert all(1e-5 <= p["lr"] <= 1.0 and 0 <= p["dropout"] <= 0.5 for p in free)


@pytest.mark.parametrize("kind", ["tpe", "gp"])
def test_sampler_learns_from_results_of_all_workers(tmp_path: Path, kind: str) -> None:
    storage = Storage(tmp_path / "s.db")
    study = storage.create_study("s", direction="minimize", config={})
    # results from "other workers": 40 random trials
    _finish(storage, study.id, Proposer(SPACE, "random", seed=1).ask(40))
    model = Proposer(SPACE, kind, seed=2, startup=10)
    assert model.sync(storage.trials(study.id)) == 40
    assert model.sync(storage.trials(study.id)) == 0  # nothing told twice
    guided = [objective(model.ask(1)[0]) for _ in range(12 if kind == "tpe" else 5)]
    blind = [objective(p) for p in Proposer(SPACE, "random", seed=3).ask(200)]
    # a model-based sampler proposes better than random once it has seen the results
    assert np.median(guided) < np.percentile(blind, 25)


def test_sync_skips_unfinished_and_fails_diverged(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "s.db")
    study = storage.create_study("s", direction="minimize", config={})
    w = storage.register_worker(study.id)
    ps = Proposer(SPACE, "random", seed=0).ask(3)
    ps.append({"lr": 0.1})  # another search space: skipped
    t = storage.add_trials(study.id, ps, [0, 1, 2, 3], worker_id=w)
    storage.record_epoch(w, [EpochValue(t[0].id, 0, 1.0), EpochValue(t[1].id, 0, math.nan)],
                         ends=[TrialEnd(t[0].id, TrialState.STOPPED),
                               TrialEnd(t[1].id, TrialState.DIVERGED),
                               TrialEnd(t[3].id, TrialState.COMPLETE)])
    p = Proposer(SPACE, "tpe", seed=0)
    assert p.sync(storage.trials(study.id)) == 2  # t0 (stopped, has a value) and t1 (failed)
    from optuna.trial import TrialState as OS

    states = [ft.state for ft in p._study.trials]
    assert states.count(OS.COMPLETE) == 1 and states.count(OS.FAIL) == 1


def test_pending_trials_steer_proposals_as_in_optuna(tmp_path: Path) -> None:
    """Networks still running (another worker's, and this ask's earlier proposals) are pending
    to TPE's constant liar: the proposals equal those of a plain Optuna study holding the same
    finished trials and the same running ones, with the same sampler."""
    import optuna
    from optuna.trial import TrialState as OS

    storage = Storage(tmp_path / "s.db")
    study = storage.create_study("s", direction="minimize", config={})
    done = Proposer(SPACE, "random", seed=1).ask(20)
    _finish(storage, study.id, done)
    other = storage.register_worker(study.id)  # another worker's three running networks
    running = storage.add_trials(study.id, Proposer(SPACE, "random", seed=2).ask(3), [0, 1, 2],
                                 worker_id=other)
    p = Proposer(SPACE, "tpe", seed=7, startup=10)
    assert p.sync(storage.trials(study.id)) == 20  # the running ones are pending, not told
    got = p.ask(4)

    names = [q.name for q in SPACE.ordered()]
    dists = SPACE.distributions()
    ref = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(
        seed=7, n_startup_trials=10, multivariate=True, group=True, constant_liar=True))
    for params in done:
        ref.add_trial(optuna.trial.create_trial(params=params, distributions=dists,
                                                value=objective(params)))
    for t in running:
        ref.add_trial(optuna.trial.create_trial(params=t.params, distributions=dists,
                                                state=OS.RUNNING))
    want = [ref.ask({k: dists[k] for k in names}).params for _ in range(4)]
    assert got == want
    assert len({p["lr"] for p in got}) == 4

    # the proposals become stored trials; once every running network ends, each is told once
    mine = storage.register_worker(study.id)
    asked = storage.add_trials(study.id, got, [3, 4, 5, 6], worker_id=mine)
    p.bind(t.id for t in asked)
    for w, ts in ((other, running), (mine, asked)):
        storage.record_epoch(w, [EpochValue(t.id, 0, objective(t.params)) for t in ts],
                             ends=[TrialEnd(t.id, TrialState.COMPLETE) for t in ts])
    assert p.sync(storage.trials(study.id)) == 7
    assert p.sync(storage.trials(study.id)) == 0
    states = [ft.state for ft in p._study.trials]
    assert len(states) == 27 and states.count(OS.COMPLETE) == 27
    with pytest.raises(ValueError, match="2 trial ids for 0 proposals"):
        p.bind([1, 2])


def test_unbound_proposals_are_failed_at_the_next_ask() -> None:
    from optuna.trial import TrialState as OS

    p = Proposer(SPACE, "tpe", seed=0)
    p.ask(3)  # never bound: the caller failed before storing them
    p.ask(2)
    states = [ft.state for ft in p._study.trials]
    assert states == [OS.FAIL] * 3 + [OS.RUNNING] * 2


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_stopped_trials_count_with_their_forecast(tmp_path: Path, direction: str) -> None:
    storage = Storage(tmp_path / "s.db")
    study = storage.create_study("s", direction=direction, config={})
    w = storage.register_worker(study.id)
    t = storage.add_trials(study.id, Proposer(SPACE, "random", seed=0).ask(4), [0, 1, 2, 3],
                           worker_id=w)
    storage.record_epoch(w, [EpochValue(x.id, 0, 0.5) for x in t], ends=[
        TrialEnd(t[0].id, TrialState.STOPPED), TrialEnd(t[1].id, TrialState.STOPPED),
        TrialEnd(t[2].id, TrialState.STOPPED), TrialEnd(t[3].id, TrialState.COMPLETE)])
    s = 1.0 if direction == "maximize" else -1.0
    # t0's forecast is better than its best, t1's worse (its best stands), t2 has none
    forecasts = {t[0].id: 0.5 + s * 0.2, t[1].id: 0.5 - s * 0.2, t[3].id: 0.9}
    p = Proposer(SPACE, "tpe", seed=0, direction=direction)
    assert p.sync(storage.trials(study.id), forecasts) == 4
    assert [ft.value for ft in p._study.trials] == [0.5 + s * 0.2, 0.5, 0.5, 0.5]


def test_cut_trials_count_with_the_best_they_reached(tmp_path: Path) -> None:
    """A network cut off by the race's end has a real, partial curve: the sampler hears of it
    as of a stopped one, with the best value it reached (no rule's forecast is behind it), as
    of an older netrace's cut trial (stopped, with a RACE_ENDED note)."""
    from optuna.trial import TrialState as OS

    from netrace.storage import RACE_ENDED

    storage = Storage(tmp_path / "s.db")
    study = storage.create_study("s", direction="minimize", config={})
    w = storage.register_worker(study.id)
    t = storage.add_trials(study.id, Proposer(SPACE, "random", seed=0).ask(3), [0, 1, 2],
                           worker_id=w)
    storage.record_epoch(w, [EpochValue(t[0].id, 0, 0.7), EpochValue(t[0].id, 1, 0.4),
                             EpochValue(t[1].id, 0, 0.6), EpochValue(t[2].id, 0, 0.3)])
    ended = f"{RACE_ENDED}: budget spent (5 network-epochs)"
    storage.record_epoch(w, ends=[TrialEnd(t[0].id, TrialState.CUT, ended),
                                  TrialEnd(t[1].id, TrialState.STOPPED, ended),
                                  TrialEnd(t[2].id, TrialState.STOPPED, "median rule")])
    p = Proposer(SPACE, "tpe", seed=0)
    assert p.sync(storage.trials(study.id), {t[2].id: 0.2}) == 3
    assert [(ft.state, ft.value) for ft in p._study.trials] == [
        (OS.COMPLETE, 0.4), (OS.COMPLETE, 0.6), (OS.COMPLETE, 0.2)]


def test_population_key() -> None:
    p = {"lr": 0.1, "model": "lstm", "width": 32, "dropout": 0.2}
    assert population_key(p, SPACE) == (("model", "lstm"), ("width", 32))


COND = parse_space({"model": ["mlp", "cnn", "gru"], "hidden_size": [8, 16], "channels": [4, 8],
                    "optimizer": ["adam", "nesterov"], "momentum": {"low": 0.5, "high": 0.99},
                    "beta1": {"low": 0.8, "high": 0.95}, "lr": {"low": 1e-4, "high": 1e-1,
                                                                "log": True}})


def cond_objective(p: dict) -> float:
    """Lower is better: a GRU with 16 hidden units, Adam with beta1 near 0.9, lr near 1e-2."""
    v = (math.log10(p["lr"]) + 2) ** 2
    v += 0.0 if p["model"] == "gru" and p["hidden_size"] == 16 else 1.0
    return v + (abs(p["beta1"] - 0.9) * 10 if p["optimizer"] == "adam" else 1.0)


@pytest.mark.parametrize("kind", ["random", "tpe", "gp"])
def test_conditional_keys_only_where_they_apply(kind: str) -> None:
    proposer = Proposer(COND, kind, seed=0, startup=4)
    seen = set()
    for p in proposer.ask(40):
        seen.add((p["model"], p["optimizer"]))
        assert ("hidden_size" in p) == (p["model"] == "gru"), p
        assert ("channels" in p) == (p["model"] == "cnn"), p
        assert ("momentum" in p) == (p["optimizer"] == "nesterov"), p
        assert ("beta1" in p) == (p["optimizer"] == "adam"), p
        assert {"model", "optimizer", "lr"} <= set(p)
    assert len(seen) == 6  # every branch proposed
    fixed = proposer.ask(5, fixed={"model": "gru", "hidden_size": 8, "optimizer": "adam"})
    assert all(p["hidden_size"] == 8 and "channels" not in p and "beta1" in p for p in fixed)


@pytest.mark.parametrize("kind", ["tpe", "gp"])
def test_sampler_learns_conditional_space(tmp_path: Path, kind: str) -> None:
    storage = Storage(tmp_path / "s.db")
    study = storage.create_study("s", direction="minimize", config={})
    w = storage.register_worker(study.id)
    params = Proposer(COND, "random", seed=1).ask(60)
    # an older netrace recorded every key, applicable or not: the sampler takes what applies
    params[0] = {**params[0], "hidden_size": 8, "channels": 4, "momentum": 0.9, "beta1": 0.9}
    trials = storage.add_trials(study.id, params, list(range(len(params))), worker_id=w)
    storage.record_epoch(w, [EpochValue(t.id, 0, cond_objective(t.params)) for t in trials],
                         ends=[TrialEnd(t.id, TrialState.COMPLETE) for t in trials])
    model = Proposer(COND, kind, seed=2, startup=10)
    assert model.sync(storage.trials(study.id)) == 60
    told = model._study.trials[0].params
    assert set(told) == {k for k in params[0] if COND.applies(k, params[0])}
    # one at a time (each unbound proposal is failed at the next ask): what the sampler learned,
    # without the spread that pending proposals of one batch add
    guided = [cond_objective(model.ask(1)[0]) for _ in range(12 if kind == "tpe" else 5)]
    blind = [cond_objective(p) for p in Proposer(COND, "random", seed=3).ask(200)]
    assert np.median(guided) < np.percentile(blind, 25)


def test_population_key_ignores_keys_that_do_not_apply() -> None:
    mlps = [p for p in Proposer(COND, "random", seed=4).ask(60) if p["model"] == "mlp"]
    keys = {population_key(p, COND) for p in mlps}
    # MLPs differ only in their optimizer here: nothing else of the space applies to them
    assert keys == {(("model", "mlp"), ("optimizer", o)) for o in ("adam", "nesterov")}
