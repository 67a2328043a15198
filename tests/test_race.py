"""The race end to end on built-in data: real worker processes, a real SQLite file, real
signals (SIGKILL of a worker, of the whole run, Ctrl-C), then resume."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netrace.config import load_config
from netrace.curves import LCRule
from netrace.curves._rules import checkpoints
from netrace.race import NetworkCheckpoint, Proposer, load_checkpoint
from netrace.race._worker import search_space, stop_forecasts
from netrace.storage import (
    RACE_ENDED,
    RaceEndReason,
    Storage,
    TrialEndReason,
    TrialRecord,
    TrialState,
    WorkerRecord,
    WorkerState,
)

EXE = str(Path(sys.executable).parent / "netrace")

BASE = """
[data]
source = "sp500"
[task]
type = "regression"
target = "vol_next"
window = 5
features = ["log_return", "range", "rolling_vol_5"]
[split]
scheme = "holdout"
test = 0.2
[race]
rule = "{rule}"
population = {population}
max_epochs = {epochs}
budget = {budget}
{extra}
[search]
sampler = "tpe"
startup = 4
[search.space]
model = ["mlp", "gru"]
layers = 1
width = [8, 16]
hidden_size = 8
optimizer = ["{optimizer}"]
lr = {lr}
batch_size = 256
"""


def write(tmp: Path, name: str = "race", rule: str = "median", population: int = 4,
          epochs: int = 6, budget: int = 60, extra: str = "", optimizer: str = "adam",
          lr: str = "{low = 1e-3, high = 3e-2, log = true}") -> Path:
    p = tmp / f"{name}.toml"
    p.write_text(BASE.format(rule=rule, population=population, epochs=epochs, budget=budget,
                             extra=extra, optimizer=optimizer, lr=lr))
    return p


def run(cfg: Path, *args: str, timeout: float = 300,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, "run", str(cfg), "--quiet", *args], cwd=cfg.parent,
                          capture_output=True, text=True, timeout=timeout, env=env)


def start(cfg: Path, workers: int, *args: str,
          env: dict[str, str] | None = None) -> subprocess.Popen:
    """`netrace run` in the background, as a user starts it."""
    return subprocess.Popen([EXE, "run", str(cfg), "--quiet", "--workers", str(workers), *args],
                            cwd=cfg.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def settled(t: TrialRecord, storage: Storage | None = None) -> bool:
    """What an ended race leaves: a finished trial, or one refilled into a slot as the race
    ended, back in the queue untrained (a resume with more budget starts it). Given the
    ``storage``, also a dead worker's network handed back to the queue that no worker claimed
    before the budget was spent: it keeps its curve and the state that goes with it."""
    if t.state.finished or (t.state is TrialState.QUEUED and t.epochs == 0):
        return True
    if storage is None or t.state is not TrialState.QUEUED:
        return False
    state = storage.resume_state(t.id)
    return state is not None and state.epochs == len(storage.curve(t.id)[1]) == t.epochs


def check_books(storage: Storage, study: str) -> None:
    """No trial counted twice, every finished trial has its whole curve and a checkpoint."""
    st = storage.get_study(study)
    trials = storage.trials(st.id)
    assert len({t.number for t in trials}) == len(trials)
    for t in trials:
        epochs, values = storage.curve(t.id)
        assert epochs == list(range(len(epochs))), t
        assert t.epochs == len(epochs)
        # a slot refilled as the race ended goes back to the queue, not "cut" untrained
        assert not (t.state is TrialState.CUT and t.epochs == 0), t
        if t.state in (TrialState.COMPLETE, TrialState.STOPPED, TrialState.CUT) and t.epochs > 0:
            ck = storage.checkpoint(t.id)
            assert ck is not None and ck.epoch <= len(epochs) - 1
    assert storage.epochs_spent(st.id) == sum(t.epochs for t in trials)


def best_r2(cfg: Path, ck: NetworkCheckpoint) -> float:
    """The validation R² of a checkpoint's network, from its module alone, as the race scores
    networks: on the standardized target, against the training mean."""
    import numpy as np
    import torch

    from netrace.data import prepare
    from netrace.race._build import DataShape, model_inputs, population_settings

    d = prepare(load_config(cfg)).dev.fold_data(0)
    shape = DataShape(d.X_train.shape[1], d.X_train.shape[2], "regression")
    x = model_inputs(torch.as_tensor(d.X_valid, dtype=torch.float32),
                     population_settings(ck.params, shape))
    with torch.no_grad():
        pred = ck.modules()[0](x)[:, 0].double().numpy()
    y = (d.y_valid - d.y_train.mean()) / d.y_train.std()
    return float(1 - np.sum((y - pred) ** 2) / np.sum(y ** 2))


@pytest.mark.slow
def test_race_two_workers_end_to_end(tmp_path: Path) -> None:
    # long enough that the second worker has started (imports, data) well before the end
    cfg = write(tmp_path, rule="median", population=8, epochs=10, budget=600,
                extra="[race.median]\nmin_observed = 3")  # the rule's option, not its 5
    proc = run(cfg, "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    assert "budget spent" in proc.stdout
    s = Storage(tmp_path / "netrace.db")
    st = s.get_study("race")
    trials = s.trials(st.id)
    assert all(settled(t) for t in trials)
    assert [w.state for w in s.workers(st.id)] == [WorkerState.DONE] * 2
    assert len({t.worker_id for t in trials if t.epochs > 0}) == 2  # both workers trained networks
    check_books(s, "race")
    best = s.best_trial(st.id)
    assert best is not None and best.best_value > 0  # networks beat the historical mean
    judged = [d for d in (s.decisions(t.id) for t in trials) if d]
    assert judged  # every network still running after an epoch was judged by the rule
    assert all(x.rule == "median" and "best" in x.prediction for d in judged for x in d)
    assert min(x.epoch for d in judged for x in d if x.action == "stop") == 2  # 3 observed
    assert "rule      median (min_observed=3)" in proc.stdout
    # the checkpoint holds the best weights and the fitted preprocessing
    ck = load_checkpoint(s.checkpoint_of("race", best.number).data)  # as README says
    assert ck.params == best.params and len(ck.fold_weights) == len(ck.modules()) == 1
    assert ck.preprocessors[0].mean.shape == (3,)
    # ... and its module scores on the validation data what the race recorded as its best
    assert best_r2(cfg, ck) == pytest.approx(best.best_value, abs=1e-5)
    status = subprocess.run([EXE, "status", "race", "--json"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    snap = json.loads(status.stdout)
    assert snap["state"] == "done" and snap["best_trial"] == best.number
    # "stopped early" counts the rule's stops; networks still training at the end are "cut"
    trials = s.trials(st.id)
    by_rule = [t for t in trials if t.state is TrialState.STOPPED]
    at_end = [t for t in trials if t.state is TrialState.CUT]
    assert by_rule and at_end
    assert all(any(d.action == "stop" for d in s.decisions(t.id)) for t in by_rule)
    assert all(t.note == "race ended: budget spent (600 network-epochs)" for t in at_end)
    assert (snap["stopped"], snap["ended_with_race"]) == (len(by_rule), len(at_end))
    assert f"{len(by_rule)} stopped early" in proc.stdout
    assert f"{len(at_end)} cut (training when the race ended)" in proc.stdout
    # notes count epochs from 1, as status does: "after epoch n" means after n epochs
    assert all(t.note == f"median rule stopped it after epoch {t.epochs}" for t in by_rule)
    assert all(t.note in (f"early stopping after epoch {t.epochs}", "trained 10 epochs")
               for t in trials if t.state is TrialState.COMPLETE)
    # why each ended is kept as a value too; so is why the race ended
    assert all(t.reason is TrialEndReason.RACE_ENDED for t in at_end)
    assert all(t.reason is TrialEndReason.RULE_STOP for t in by_rule)
    assert all(t.reason is (TrialEndReason.EPOCH_CAP if t.note == "trained 10 epochs" else
                            TrialEndReason.EARLY_STOPPING)
               for t in trials if t.state is TrialState.COMPLETE)
    assert s.study_status(st.id).reason is RaceEndReason.BUDGET_SPENT
    assert snap["best_epoch"] == best.best_epoch + 1
    assert f"(trial {best.number}, epoch {best.best_epoch + 1}; higher is better)" in proc.stdout
    # the curves of the networks that ran to their end, exported for netrace replay
    export = subprocess.run([EXE, "status", "--top", "0", "--curves", "c.csv.gz"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert export.returncode == 0 and "netrace replay c.csv.gz" in export.stderr
    complete = {t.id: t.number for t in trials if t.state is TrialState.COMPLETE}
    recorded = s.curves(st.id, [TrialState.COMPLETE])
    import numpy as np
    import pandas as pd

    from netrace.replay import main as replay_main

    rows = pd.read_csv(tmp_path / "c.csv.gz")
    assert set(rows["goal"]) == {"max"} and set(rows["workload"]) == {"race"}
    assert set(rows["curve_id"]) == {f"race/{n}" for n in complete.values()}
    for tid, ys in recorded.items():
        got = rows[rows["curve_id"] == f"race/{complete[tid]}"]
        assert list(got["step"]) == list(range(1, len(ys) + 1))
        np.testing.assert_array_equal(got["value"].to_numpy(), ys)
    out = tmp_path / "replay.json"
    assert replay_main([str(tmp_path / "c.csv.gz"), "--rule", "none", "--min-points", "2",
                        "--json", str(out)]) == 0
    assert json.loads(out.read_text())["workloads"][0]["steps_all"] == sum(map(len, recorded.values()))
    table = subprocess.run([EXE, "status", "--top", "3"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=60).stdout.splitlines()
    header = table.index(next(line for line in table if line.startswith("trial")))
    assert len(table) - header - 1 == 3
    assert table[header + 1].split()[0] == str(best.number)


@pytest.mark.slow
def test_lc_race_keeps_the_forecast_behind_each_decision(tmp_path: Path) -> None:
    # the default rule on a metric to minimize, two workers: decisions at lc's checkpoints
    # (3, 4, 7, 10 of 12 epochs) keep the probability, how many finished networks it learned
    # from, and the forecast of the final MSE in the metric's own units
    cfg = write(tmp_path, rule="lc", population=4, epochs=12, budget=240, extra='metric = "mse"',
                lr="{low = 1e-3, high = 1e-1, log = true}")
    proc = run(cfg, "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    s = Storage(tmp_path / "netrace.db")
    st = s.get_study("race")
    check_books(s, "race")
    judged = [(t, d) for t in s.trials(st.id) for d in s.decisions(t.id)]
    forecast = [(t, d) for t, d in judged if "p" in d.prediction]
    assert checkpoints(LCRule().min_observed, LCRule().growth, 12) == [3, 4, 7, 10]
    assert {d.prediction["observed"] for _, d in forecast} <= {3, 4, 7, 10}
    assert {d.epoch + 1 for _, d in judged if "p" not in d.prediction}.isdisjoint({3, 4, 7, 10})
    for t, d in forecast:
        pr = d.prediction
        assert d.rule == "lc" and 0.0 <= pr["p"] <= 1.0
        # no network reached the incumbent's MSE; the leader of its age is kept
        assert (d.action == "stop") == (pr["p"] < 0.05 and not pr["leading"])
        # an MSE forecast (not its negative), never below zero (the rule knows the metric's
        # range)
        assert 0.0 <= pr["q05"] <= pr["mean"] <= pr["q95"]
    learned = [d.prediction["learned_from"] for _, d in forecast]
    assert max(learned) >= 1  # networks that ran all 12 epochs taught the later ones
    assert any(d.action == "stop" for _, d in forecast)
    # the sampler is told where a stopped network was forecast to end (never worse than the
    # best MSE it reached), as Domhan et al. report a terminated run; others, their best
    # (test_proposer gives it forecasts on either side of the best by hand; from 3 epochs of
    # these networks the forecasts are mostly the worse side); networks cut off by the race's
    # end, their best too
    trials = s.trials(st.id)
    told = stop_forecasts(s.decisions_of(t.id for t in trials))
    stopped = {t.id for t, d in forecast if d.action == "stop"}
    assert set(told) == stopped
    assert all(told[t.id] == d.prediction["mean"] for t, d in forecast if d.action == "stop")
    p = Proposer(search_space(load_config(cfg)), "tpe", direction="minimize")
    p.sync(trials, told)
    values = [ft.value for ft in p._study.trials if ft.value is not None]
    want = [min(told[t.id], t.best_value) if t.id in told else t.best_value for t in trials
            if t.state in (TrialState.COMPLETE, TrialState.STOPPED, TrialState.CUT)
            and t.best_value is not None]
    assert values == want and told and any(t.state is TrialState.CUT for t in trials)


def test_lc_learns_from_other_workers_forecasts_without_making_them_again() -> None:
    import numpy as np

    from netrace.curves import CALIBRATED, PAPER, Curves, Goal
    from netrace.curves._forecast import extrapolate_many
    from netrace.race._worker import teach
    from netrace.storage import DecisionRecord

    # six finished MSE curves (lower is better) that worker A judged as they ran
    n_ep = 20
    x = np.arange(1.0, n_ep + 1)
    rng = np.random.default_rng(3)
    finished = {100 + j: 0.2 + 0.1 * rng.uniform() + 0.5 * x ** -0.7 + rng.normal(0, 0.005, n_ep)
                for j in range(6)}
    rows = np.stack(list(finished.values()))
    a, decisions, a_state = LCRule(), {t: [] for t in finished}, None
    for n in checkpoints(a.min_observed, a.growth, n_ep):
        values = np.where(np.arange(n_ep) < n, rows, np.nan)
        d, a_state = a.decide(Curves(values, np.full(6, n_ep), np.ones(6, dtype=bool), Goal.MIN),
                              a_state)
        for r, t in enumerate(finished):  # as worker A stores them
            decisions[t].append(DecisionRecord(t, n - 1, "lc", d[r].value, {
                "observed": n, **d[r].forecast.in_metric_units(Goal.MIN)}))
    # worker B judges a new network against them: it forecasts that network alone
    asked = []

    def forecast(xs, ys, x_target):
        asked.append(len(xs))
        return extrapolate_many(xs, ys, x_target, (CALIBRATED, PAPER), method=a.method)

    b, c = LCRule(forecast=forecast), LCRule()
    b_state = teach(b, b.initial_state(), finished, decisions, Goal.MIN, n_ep)
    values = np.full((7, n_ep), np.nan)
    values[:6] = rows
    values[6, :7] = 0.35 + 0.5 * x[:7] ** -0.7  # 7 evaluations: a checkpoint
    curves = Curves(values, np.full(7, n_ep), np.arange(7) == 6, Goal.MIN)
    (b_verdicts, _), (c_verdicts, _) = b.decide(curves, b_state), c.decide(curves)
    assert [v.value for v in b_verdicts] == [v.value for v in c_verdicts]
    assert asked == [1]
    assert b_verdicts[6].forecast.learned_from == 6
    assert b_verdicts[6].forecast.p == c_verdicts[6].forecast.p


@pytest.mark.slow
def test_target_stops_every_worker(tmp_path: Path) -> None:
    cfg = write(tmp_path, rule="none", budget=10_000, epochs=50, extra="target = -100.0")
    proc = run(cfg, "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    s = Storage(tmp_path / "netrace.db")
    st = s.get_study("race")
    # every network passes -100 after its first epoch: epoch 1, counted as users count
    reason = s.study_state(st.id)[1]
    assert s.study_status(st.id).reason is RaceEndReason.TARGET_REACHED
    assert re.fullmatch(r"target -100 reached by trial (\d+) \(r2 = \S+ at epoch 1\)", reason)
    assert reason in proc.stdout
    # the race's end cut off the networks still training, each named by its number
    cut = [t for t in s.trials(st.id) if t.state is TrialState.CUT]
    assert cut and all(t.note == f"{RACE_ENDED}: {reason}" for t in cut)
    assert not any(t.state is TrialState.STOPPED for t in s.trials(st.id))  # rule "none"
    number = int(re.search(r"trial (\d+)", reason).group(1))
    assert s.trial_number(st.id, number).epochs >= 1
    assert s.epochs_spent(st.id) < 100  # ended long before the budget
    assert all(settled(t) for t in s.trials(st.id))


@pytest.mark.slow
def test_diverging_networks_end_alone(tmp_path: Path) -> None:
    cfg = write(tmp_path, rule="none", budget=40, epochs=5, optimizer="sgd", lr="10.0")
    proc = run(cfg, "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    s = Storage(tmp_path / "netrace.db")
    trials = s.trials(s.get_study("race").id)
    diverged = [t for t in trials if t.state is TrialState.DIVERGED]
    assert diverged and all("NaN or infinite" in t.note for t in diverged)
    # the epoch it diverged in, counted from 1: the last of its curve
    assert all(t.note == f"loss became NaN or infinite in epoch {t.epochs}" for t in diverged)
    assert all(settled(t) for t in trials)


def _wait_epochs(db: Path, study: str, n: int, timeout: float = 200) -> Storage:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.exists():
            try:
                s = Storage(db)
                st = s.find_study(study)
                if st and s.epochs_spent(st.id) >= n:
                    return s
            except Exception:
                pass
        time.sleep(0.3)
    raise AssertionError(f"the race did not reach {n} epochs")


def _finished_before(s: Storage, study: str) -> dict[int, tuple]:
    st = s.get_study(study)
    return {t.id: (t.state, tuple(s.curve(t.id)[1])) for t in s.trials(st.id)
            if t.state in (TrialState.COMPLETE, TrialState.STOPPED)}


def _running(s: Storage, study_id: int, worker_id: int) -> dict[int, list[float]]:
    return {t.id: s.curve(t.id)[1] for t in s.trials(study_id, [TrialState.RUNNING])
            if t.worker_id == worker_id}


def _freeze_victim(s: Storage, study: str, min_epochs: int, timeout: float = 200
                   ) -> tuple[WorkerRecord, dict[int, list[float]]]:
    """SIGSTOP an alive worker whose running networks have all recorded ``min_epochs`` epochs
    or more; returns it and their curves, which stay as they are until it is killed."""
    st = s.get_study(study)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for w in s.workers(st.id):
            mine = _running(s, st.id, w.id)
            if w.state is not WorkerState.ALIVE or not mine or min(map(len, mine.values())) < min_epochs:
                continue
            os.kill(w.pid, signal.SIGSTOP)
            mine = _running(s, st.id, w.id)  # what it had committed when it stopped
            if mine and min(map(len, mine.values())) >= min_epochs:
                return w, mine
            os.kill(w.pid, signal.SIGCONT)
        time.sleep(0.05)
    raise AssertionError(f"no worker ran networks {min_epochs} epochs in")


def check_continued_elsewhere(s: Storage, before: dict, running: dict[int, list[float]],
                              victim: WorkerRecord, killed_at: float, max_epochs: int) -> None:
    """After a worker (``victim``) was killed at ``killed_at`` with ``running`` networks: nothing
    finished ``before`` changed, each of them continued its curve on another worker from its
    saved state, a new worker took the dead one's place, and the race ended."""
    st = s.get_study("race")
    after = _finished_before(s, "race")
    for tid, (state, curve) in before.items():  # nothing completed was lost or changed
        assert after[tid] == (state, curve)
    trials = {t.id: t for t in s.trials(st.id)}
    assert not any(t.state is TrialState.RUNNING for t in trials.values())
    assert {i for i, t in trials.items() if t.attempt == 1} == set(running)
    since: dict[int, list[int]] = {}  # epochs recorded after the kill, per trial
    for recorded, tid, epoch, _ in s.timeline(st.id):
        if recorded > killed_at:
            since.setdefault(tid, []).append(epoch)
    for tid, curve in running.items():
        t, (epochs, values) = trials[tid], s.curve(tid)
        kept = len(curve) - 1  # the state saved after the last epoch, or the one before
        assert values[:kept] == curve[:kept]  # not retrained: the same values, kept
        assert since[tid] and min(since[tid]) >= kept  # it went on from there, elsewhere
        assert t.worker_id != victim.id
        assert t.state in (TrialState.COMPLETE, TrialState.DIVERGED), t
        if t.state is TrialState.COMPLETE:
            assert len(epochs) == max_epochs > len(since[tid])
    workers = s.workers(st.id)
    assert len(workers) == 3  # a new worker took the dead one's place
    dead = [w for w in workers if w.id == victim.id][0]
    assert dead.state is WorkerState.DEAD
    check_books(s, "race")  # every curve whole, every epoch counted once
    assert s.study_state(st.id)[0] == "done"


@pytest.mark.slow
def test_kill_whole_run_then_resume(tmp_path: Path) -> None:
    cfg = write(tmp_path, rule="none", budget=120, epochs=8)
    proc = start(cfg, 2)
    s = _wait_epochs(tmp_path / "netrace.db", "race", 30)
    before = _finished_before(s, "race")
    pids = [w.pid for w in s.workers(s.get_study("race").id)]
    proc.kill()  # SIGKILL the coordinator: its workers die with it
    proc.wait(30)
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(p) for p in pids)
    again = run(cfg, "--workers", "2")
    assert again.returncode == 0, again.stderr
    assert "budget spent" in again.stdout
    after = _finished_before(s, "race")
    for tid, v in before.items():
        assert after[tid] == v
    st = s.get_study("race")
    # the killed run's networks are back in the queue with their states; those no worker
    # claimed before the budget was spent wait there for a resume with more budget
    assert all(settled(t, s) for t in s.trials(st.id))
    check_books(s, "race")


@pytest.mark.slow
def test_ctrl_c_stops_gracefully_and_resumes(tmp_path: Path) -> None:
    # a budget the race cannot spend before the Ctrl-C arrives, however fast the engine
    cfg = write(tmp_path, rule="none", budget=1_000_000, epochs=8)
    proc = start(cfg, 1)
    s = _wait_epochs(tmp_path / "netrace.db", "race", 12)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "run the same command to resume it" in err
    st = s.get_study("race")
    assert s.study_state(st.id)[0] == "running"
    trials = s.trials(st.id)
    assert not any(t.state is TrialState.RUNNING for t in trials)
    assert {w.state for w in s.workers(st.id)} == {WorkerState.DONE}
    # resume with a budget that ends the race: the interrupted networks finish first
    budget = s.epochs_spent(st.id) + 60
    cfg = write(tmp_path, rule="none", budget=budget, epochs=8)
    again = run(cfg, "--workers", "1")
    assert again.returncode == 0, again.stderr
    assert all(settled(t) for t in s.trials(st.id))
    # the study's record follows the config it resumed under: status counts the new budget
    status = subprocess.run([EXE, "status", "race", "--json"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert json.loads(status.stdout)["budget"] == budget
    check_books(s, "race")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purpose
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


@pytest.mark.parametrize("extra, message", [
    ('metric = "auc"', r"\[race\] metric = 'auc' does not apply to a regression task"),
])
def test_bad_race_config(tmp_path: Path, extra: str, message: str) -> None:
    import re

    proc = run(write(tmp_path, extra=extra))
    assert proc.returncode == 2
    assert re.search(message, proc.stderr) and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_unbuildable_networks_fail_alone(tmp_path: Path) -> None:
    """A CNN whose blocks would shrink the window to nothing fails as a trial, not the race."""
    cfg = tmp_path / "cnn.toml"
    cfg.write_text(BASE.format(rule="none", population=2, epochs=2, budget=16, extra="",
                               optimizer="adam", lr="0.01")
                   .replace('model = ["mlp", "gru"]', 'model = ["mlp", "cnn"]\nconv_layers = 4'
                            '\nkernel_size = 3\npool = "max"')
                   .replace("hidden_size = 8\n", ""))  # no LSTM/GRU in this space
    proc = run(cfg, "--workers", "1")
    s = Storage(tmp_path / "netrace.db")
    trials = s.trials(s.get_study("cnn").id)
    failed = [t for t in trials if t.state is TrialState.FAILED]
    if proc.returncode == 2:  # every proposal was a CNN: the race says so
        assert "could not be built" in proc.stderr and "shrink a window" in proc.stderr
    else:
        assert proc.returncode == 0, proc.stderr
        assert any(t.state is TrialState.COMPLETE for t in trials)
    assert failed and all("cannot build this network" in t.note for t in failed)
    assert all(t.params["model"] == "cnn" for t in failed)


def test_a_population_is_compacted_right_after_its_last_refill(tmp_path: Path,
                                                               monkeypatch) -> None:
    """A worker's population that its last refill left at most half full goes on as its
    running members alone from the next epoch on: no epoch is trained with most slots stopped
    (they would be computed, then masked). Run in this process, with a spy on the engine."""
    import threading

    from netrace.backends import WorkerContext
    from netrace.race._race import config_record
    from netrace.race._worker import RacePlan, _Worker
    from netrace.train import MemberState, Population

    # topk keeping a tenth after one epoch stops nearly every new network at once, so the
    # population of 8 is refilled 7 at a time until its 3 x 8 networks are spent
    cfg = load_config(write(tmp_path, rule="topk", population=8, epochs=6, budget=120,
                            extra="[race.topk]\nkeep = 0.1\nmin_observed = 1"))
    url = f"sqlite:///{tmp_path / 'race.db'}"
    Storage(url).create_study("race", direction="maximize", config=config_record(cfg))
    trained: list[tuple[int, int]] = []  # (slots, running members) of every epoch trained
    step = Population.step_epoch

    def spy(self, *args, **kwargs):
        trained.append((self.k, sum(s is MemberState.RUNNING for s in self.states)))
        return step(self, *args, **kwargs)

    monkeypatch.setattr(Population, "step_epoch", spy)
    _Worker(WorkerContext(0, 1, threading.Event()), RacePlan(cfg, url, "race")).run()
    assert any(k < 8 for k, _ in trained)  # populations were compacted
    half_empty = [(k, r) for k, r in trained if r <= k // 2 and r < k]
    assert not half_empty, trained
