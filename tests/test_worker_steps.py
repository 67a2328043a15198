"""The race worker's steps one at a time (train -> score -> judge -> record -> refill), in this
process, on a real population and a real SQLite storage: each does its part and no more."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
import pytest

from netrace.backends import WorkerContext
from netrace.config import load_config
from netrace.curves import Goal, HyperbandRule, LCRule, patient
from netrace.race._judge import Judge, natural_end
from netrace.race._race import config_record
from netrace.race._worker import Judgement, RacePlan, _Worker
from netrace.storage import DecisionRecord, Storage, TrialEnd, TrialEndReason, TrialState
from netrace.train import MemberState
from tests.conftest import make_prices

CONFIG = """
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
test = 0.2
[race]
rule = "median"
population = 4
max_epochs = 5
budget = 1000
[search]
sampler = "random"
[search.space]
model = "mlp"
width = [8, 16]
lr = {low = 1e-3, high = 3e-2, log = true}
batch_size = 64
"""


@pytest.fixture
def worker(tmp_path: Path) -> _Worker:
    make_prices(300).to_csv(tmp_path / "prices.csv", index=False)
    (tmp_path / "race.toml").write_text(CONFIG)
    cfg = load_config(tmp_path / "race.toml")
    url = f"sqlite:///{tmp_path / 'race.db'}"
    Storage(url).create_study("race", direction="maximize", config=config_record(cfg))
    return _Worker(WorkerContext(0, 1, threading.Event()), RacePlan(cfg, url, "race"))


def test_train_then_score_one_epoch(worker: _Worker) -> None:
    heat = worker._start()
    assert heat.started == 4 and heat.running() == [0, 1, 2, 3]
    assert len(heat.pops) == 2  # a population per fold
    assert all(s.curve == [] for s in heat.slots if s)
    worker._train(heat)  # trains, and nothing else
    assert [pop.epoch for pop in heat.pops] == [1, 1]
    assert all(s.curve == [] for s in heat.slots if s)
    assert worker.storage.epochs_spent(worker.study.id) == 0
    values = worker._score(heat)
    # one value per network: its mean over the folds, which its curve gains
    assert [v.trial_id for v in values] == [heat.slot(i).trial.id for i in range(4)]
    for i, v in enumerate(values):
        assert v.epoch == 0 and heat.slot(i).curve == [v.value]
        assert v.value == pytest.approx((v.metrics["fold1"] + v.metrics["fold2"]) / 2)
        assert v.metrics["r2"] == v.value
    assert worker.storage.epochs_spent(worker.study.id) == 0  # the record step writes


def test_networks_end_on_their_own() -> None:
    run, frozen, diverged = MemberState.RUNNING, MemberState.FROZEN, MemberState.DIVERGED
    assert natural_end(3, [0.1, 0.2], [run, run], 5) is None
    assert natural_end(3, [0.1, 0.2], [run, frozen], 5) is None  # one fold still learns
    assert natural_end(3, [0.1, 0.2], [frozen, frozen], 5) == TrialEnd(
        3, TrialState.COMPLETE, "early stopping after epoch 2", TrialEndReason.EARLY_STOPPING)
    assert natural_end(3, [0.1, 0.2], [run, diverged], 5) == TrialEnd(
        3, TrialState.DIVERGED, "loss became NaN or infinite in epoch 2")
    assert natural_end(3, [0.1, math.inf], [run, run], 5).state is TrialState.DIVERGED
    assert natural_end(3, [0.1] * 5, [run, run], 5) == TrialEnd(
        3, TrialState.COMPLETE, "trained 5 epochs")
    assert natural_end(3, [0.1] * 5, [run, run], 5).reason is TrialEndReason.EPOCH_CAP


def test_judge_gives_the_rules_verdicts_on_given_curves() -> None:
    # hyperband at a rung of 3 keeps the top third of every curve there: of the race's six
    # finished curves (0.1 ... 0.6 after 3) and two running ones, the top 2 of 8
    finished = {10 + j: np.array([0.1 * (j + 1)] * 6) for j in range(6)}
    running = [[0.2, 0.5, 0.55], [0.3, 0.6, 0.65]]
    judge = Judge(HyperbandRule(rungs=(3,), keep=1 / 3), Goal.MAX, budget=6)  # no storage
    for tid, c in finished.items():
        judge.ended(tid, c)
    (low, low_pred), (high, high_pred) = judge.verdicts(running)
    assert (low.value, high.value) == ("stop", "continue")
    assert low.reason == "not among the best 2 of 8 curves at the rung of 3 evaluations"
    # what is stored with a decision: evaluations observed and best so far, no forecast
    assert low_pred == {"observed": 3, "best": 0.55} and high_pred == {"observed": 3, "best": 0.65}
    # a metric to minimize: the same curves negated, the same verdicts, the best the lowest
    judge = Judge(HyperbandRule(rungs=(3,), keep=1 / 3), Goal.MIN, budget=6)
    for tid, c in finished.items():
        judge.ended(tid, -c)
    verdicts = judge.verdicts([[-v for v in c] for c in running])
    assert [v.value for v, _ in verdicts] == ["stop", "continue"]
    assert [p["best"] for _, p in verdicts] == [-0.55, -0.65]
    # the patient rule keeps the running curve that still improves
    judge = Judge(patient(HyperbandRule(rungs=(3,), keep=1 / 3), 1), Goal.MAX, budget=6)
    for tid, c in finished.items():
        judge.ended(tid, c)
    assert [v.value for v, _ in judge.verdicts(running)] == ["continue", "continue"]


def test_judge_keeps_the_rules_state_and_stores_its_forecasts() -> None:
    # the lc rule on an MSE (minimized): its state lives in the judge, and the forecast behind
    # each verdict is stored in the metric's units
    x = np.arange(1.0, 13)
    judge = Judge(LCRule(), Goal.MIN, budget=12)
    assert judge.state is not None and len(judge.state) == 0
    for j in range(8):
        judge.ended(100 + j, 0.2 + 0.02 * j + 0.5 * x ** -0.7)
    ((verdict, pred),) = judge.verdicts([list(0.5 + 0.5 * x[:4] ** -0.7)])  # 4: a checkpoint
    assert len(judge.state) > 0  # what the rule learned, kept for the next judgement
    f = verdict.forecast
    assert verdict.stop and f is not None and f.learned_from == 8
    assert pred == {"observed": 4, "best": pytest.approx(0.5 + 0.5 * 4 ** -0.7),
                    **f.in_metric_units(Goal.MIN)}
    assert pred["mean"] == -f.mean > 0 and pred["q05"] <= pred["mean"] <= pred["q95"]


def _epoch(worker: _Worker):
    heat = worker._start()
    worker._train(heat)
    return heat, worker._score(heat)


def test_record_writes_exactly_the_epochs_values_decisions_and_ends(worker: _Worker) -> None:
    heat, values = _epoch(worker)
    t = [heat.slot(i).trial for i in range(4)]
    # slot 1 ends on its own, the rule stops slot 0 and lets 2 and 3 go on
    decisions = [DecisionRecord(t[i].id, 0, "median", a, {"observed": 1, "best": values[i].value})
                 for i, a in ((0, "stop"), (2, "continue"), (3, "continue"))]
    ending = {1: TrialEnd(t[1].id, TrialState.COMPLETE, "trained 1 epochs"),
              0: TrialEnd(t[0].id, TrialState.STOPPED, "median rule stopped it after epoch 1")}
    worker._record(heat, values, Judgement(decisions, ending))
    s = worker.storage
    for i, v in enumerate(values):
        assert s.curve(t[i].id) == ([0], [v.value])
        assert s.curve_metrics(worker.study.id, [t[i].id])[t[i].id] == [v.metrics]
    assert [s.decisions(x.id) for x in t] == [[decisions[0]], [], [decisions[1]], [decisions[2]]]
    after = [s.trial(x.id) for x in t]
    assert [(x.state, x.note) for x in after] == [
        (TrialState.STOPPED, "median rule stopped it after epoch 1"),
        (TrialState.COMPLETE, "trained 1 epochs"), (TrialState.RUNNING, ""),
        (TrialState.RUNNING, "")]
    # the ended networks are kept at their best, the running ones saved to go on elsewhere
    assert [getattr(s.checkpoint(x.id), "epoch", None) for x in t] == [0, 0, None, None]
    assert s.epochs_spent(worker.study.id) == 4
    # (the states are the worker's own until it is gone: then they are there for another)
    assert sorted(s.release_worker(worker.wid)) == [t[2].id, t[3].id]
    assert [getattr(s.resume_state(x.id), "epochs", None) for x in t] == [None, None, 1, 1]
    # the ended slots are free, their networks no longer train, and the judge sees their curves
    assert heat.running() == [2, 3]
    assert all(pop.states[i] is not MemberState.RUNNING for pop in heat.pops for i in (0, 1))
    assert set(worker.judge.finished) == {t[0].id, t[1].id}


def _free(worker: _Worker, heat, slots: list[int]) -> None:
    """End the networks in ``slots`` (as the rule would) through the record step."""
    ending = {i: TrialEnd(heat.slot(i).trial.id, TrialState.STOPPED, "stopped") for i in slots}
    worker._record(heat, [], Judgement([], ending))


def test_refill_asks_the_proposer_for_the_free_slots_within_the_room(worker: _Worker,
                                                                     monkeypatch) -> None:
    asked: list[tuple[int, dict]] = []
    ask = worker.proposer.ask

    def spy(n, fixed=None):
        asked.append((n, fixed))
        return ask(n, fixed=fixed)

    monkeypatch.setattr(worker.proposer, "ask", spy)
    heat, _ = _epoch(worker)
    asked.clear()
    _free(worker, heat, [0, 2])
    worker._refill(heat)
    assert asked == [(2, heat.fixed)] and heat.started == 6 and heat.running() == [0, 1, 2, 3]
    new = [heat.slot(i) for i in (0, 2)]
    assert all(s.curve == [] and s.trial.state is TrialState.RUNNING for s in new)
    # a re-queued network of the population (a dead worker's) goes first, the sampler fills
    # the rest; the population starts at most refill_factor x population networks in all
    (queued,) = worker.storage.add_trials(worker.study.id, [dict(new[0].trial.params)], [5])
    _free(worker, heat, [0, 1, 3])
    heat.started = worker.plan.refill_factor * worker.k - 2  # room for two more
    asked.clear()
    worker._refill(heat)
    assert asked == [(1, heat.fixed)]
    assert heat.slot(0).trial.id == queued.id and heat.running() == [0, 1, 2]
    assert heat.started == worker.plan.refill_factor * worker.k
    # no room left: no proposal, and the population narrows to its running networks once
    # at most half of it runs
    _free(worker, heat, [0, 1])
    asked.clear()
    worker._refill(heat)
    worker._narrow(heat)
    assert asked == [] and len(heat.slots) == 1 and all(pop.k == 1 for pop in heat.pops)
