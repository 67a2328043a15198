"""One contract for every storage (SQLite file, real PostgreSQL server on 127.0.0.1)."""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from netrace.errors import UserError
from netrace.storage import (
    RACE_ENDED,
    Checkpoint,
    DecisionRecord,
    EpochValue,
    ResumeState,
    Storage,
    TrialEnd,
    TrialEndReason,
    TrialState,
)

ROOT = Path(__file__).resolve().parents[1]


def test_study_create_and_resume(storage_url: str) -> None:
    s = Storage(storage_url)
    a = s.create_study("vol", direction="minimize", config={"task": {"window": 20}}, target=0.1)
    b = s.create_study("vol", direction="minimize", config={})
    assert a == b and a.config == {"task": {"window": 20}} and a.target == 0.1
    with pytest.raises(UserError, match="study 'vol' already exists"):
        s.create_study("vol", direction="minimize", config={}, load_if_exists=False)
    with pytest.raises(UserError, match="exists with direction minimize, not maximize"):
        s.create_study("vol", direction="maximize", config={})
    with pytest.raises(UserError, match=r"no study 'vl' in .*; did you mean 'vol'\?"):
        s.get_study("vl")
    assert s.study_names() == ["vol"]
    # a resume under another config records it (status reads the budget and rule there)
    s.set_study_config(a.id, {"race": {"budget": 80, "lc": {"prior_weight": float("inf")}}}, None)
    c = Storage(storage_url).get_study("vol")
    assert c.config == {"race": {"budget": 80, "lc": {"prior_weight": float("inf")}}}
    assert c.target is None and (c.id, c.name, c.direction) == (a.id, "vol", "minimize")


def test_trials_numbered_and_queued(storage_url: str) -> None:
    s = Storage(storage_url)
    st = s.create_study("x", direction="maximize", config={})
    t = s.add_trials(st.id, [{"lr": 0.1}, {"lr": 0.2}, {"lr": 0.3}], [7, 8, 9])
    assert [x.number for x in t] == [0, 1, 2]
    assert all(x.state is TrialState.QUEUED and x.worker_id is None for x in t)
    assert [x.params["lr"] for x in t] == [0.1, 0.2, 0.3] and [x.seed for x in t] == [7, 8, 9]
    w = s.register_worker(st.id)
    t2 = s.add_trials(st.id, [{"lr": 1.0}], [1], worker_id=w)
    assert t2[0].number == 3 and t2[0].state is TrialState.RUNNING and t2[0].worker_id == w
    claimed = s.claim_queued(st.id, w, 2)
    assert [x.number for x in claimed] == [0, 1]
    assert all(x.state is TrialState.RUNNING for x in claimed)
    assert [x.number for x in s.claim_queued(st.id, w, 5)] == [2]
    assert s.claim_queued(st.id, w, 5) == []


def test_trials_changed_reads_only_what_a_sampler_has_not_seen(storage_url: str) -> None:
    s = Storage(storage_url)
    st = s.create_study("x", direction="maximize", config={})
    other = s.create_study("y", direction="maximize", config={})
    w = s.register_worker(st.id)
    first = s.add_trials(st.id, [{"lr": 0.1}, {"lr": 0.2}, {"lr": 0.3}], [1, 2, 3], worker_id=w)
    seen = s.trials_changed(st.id, 0)
    assert [t.id for t in seen] == [t.id for t in first]  # all three, running
    s.record_epoch(w, [EpochValue(first[1].id, 0, 0.5)],
                   ends=[TrialEnd(first[1].id, TrialState.COMPLETE, "done")])
    s.add_trials(other.id, [{"lr": 9.0}], [9])  # another study's trial: never included
    later = s.add_trials(st.id, [{"lr": 0.4}], [4], worker_id=w)
    # the sampler saw ids up to first[-1] and first[0], first[1] unfinished
    changed = s.trials_changed(st.id, first[-1].id, [first[0].id, first[1].id])
    assert [t.id for t in changed] == [first[0].id, first[1].id, later[0].id]
    assert [t.state for t in changed] == [TrialState.RUNNING, TrialState.COMPLETE,
                                          TrialState.RUNNING]
    assert changed[1].best_value == 0.5
    assert s.trials_changed(st.id, later[0].id) == []


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_record_epoch_keeps_books(storage_url: str, direction: str) -> None:
    s = Storage(storage_url)
    st = s.create_study("x", direction=direction, config={})
    w = s.register_worker(st.id)
    a, b = s.add_trials(st.id, [{}, {}], [1, 2], worker_id=w)
    curve_a = [0.5, 0.7, math.nan, 0.6, 0.9]
    curve_b = [0.4, 0.3, 0.35, math.inf, 0.2]
    for e, (va, vb) in enumerate(zip(curve_a, curve_b)):
        s.record_epoch(w, [EpochValue(a.id, e, va, {"mae": 1.0 + e}), EpochValue(b.id, e, vb)],
                       [DecisionRecord(a.id, e, "lc", "continue", {"p": 0.5, "mean": va})])
    ra, rb = s.trial(a.id), s.trial(b.id)
    pick = max if direction == "maximize" else min
    for r, curve in ((ra, curve_a), (rb, curve_b)):
        finite = [(v, i) for i, v in enumerate(curve) if math.isfinite(v)]
        best = pick(finite, key=lambda t: t[0])
        assert r.epochs == 5 and r.best_value == pytest.approx(best[0]) and r.best_epoch == best[1]
    epochs, values = s.curve(a.id)
    assert epochs == [0, 1, 2, 3, 4]
    assert values[:2] == [0.5, 0.7] and math.isnan(values[2])
    assert math.isnan(s.curve(b.id)[1][3])  # inf is stored as missing
    d = s.decisions(a.id)
    assert len(d) == 5 and d[1].prediction == {"p": 0.5, "mean": 0.7}
    assert d[2].action == "continue" and d[2].rule == "lc"
    assert s.epochs_spent(st.id) == 10
    # re-recording an epoch (a resumed trial redoing it) is idempotent: never counted twice
    s.record_epoch(w, [EpochValue(a.id, 4, 0.9)])
    assert s.epochs_spent(st.id) == 10 and s.curve(a.id)[1][4] == 0.9
    assert s.trial(a.id) == ra
    best = s.best_trial(st.id)
    assert best is not None and best.id == (a.id if direction == "maximize" else b.id)


def test_several_epochs_of_one_trial_in_one_write(storage_url: str) -> None:
    """Several epochs of one trial in one write keep their order (PostgreSQL's arrays take one
    value per trial: it writes them in rounds)."""
    s = Storage(storage_url)
    st = s.create_study("x", direction="maximize", config={})
    w = s.register_worker(st.id)
    a, b = s.add_trials(st.id, [{}, {}], [1, 2], worker_id=w)
    s.record_epoch(w, [EpochValue(a.id, 0, 0.2), EpochValue(b.id, 0, 0.1),
                       EpochValue(a.id, 1, 0.6), EpochValue(b.id, 1, 0.3),
                       EpochValue(a.id, 2, 0.4)])
    r = s.trial(a.id)
    assert (r.epochs, r.best_value, r.best_epoch) == (3, 0.6, 1)
    assert s.curve(a.id) == ([0, 1, 2], [0.2, 0.6, 0.4])
    r = s.trial(b.id)
    assert (r.epochs, r.best_value, r.best_epoch) == (2, 0.3, 1)
    assert s.curve(b.id) == ([0, 1], [0.1, 0.3])


def test_ends_and_checkpoints(storage_url: str) -> None:
    s = Storage(storage_url)
    st = s.create_study("x", direction="minimize", config={})
    w = s.register_worker(st.id)
    t = s.add_trials(st.id, [{}, {}, {}], [1, 2, 3], worker_id=w)
    blob = os.urandom(100_000)
    s.record_epoch(w, [EpochValue(t[0].id, 0, 1.0)], checkpoints=[Checkpoint(t[0].id, 0, blob)])
    s.record_epoch(w, [EpochValue(t[0].id, 1, 0.5)],
                   checkpoints=[Checkpoint(t[0].id, 1, blob[::-1])],
                   ends=[TrialEnd(t[0].id, TrialState.COMPLETE),
                         TrialEnd(t[1].id, TrialState.DIVERGED, "loss became nan at epoch 3"),
                         TrialEnd(t[2].id, TrialState.STOPPED, "lc: p=0.01 < 0.05")])
    ck = s.checkpoint(t[0].id)
    assert ck is not None and ck.epoch == 1 and ck.data == blob[::-1]
    assert s.checkpoint(t[1].id) is None
    states = {r.id: (r.state, r.note) for r in s.trials(st.id)}
    assert states[t[1].id] == (TrialState.DIVERGED, "loss became nan at epoch 3")
    assert states[t[2].id][0] is TrialState.STOPPED
    assert s.counts(st.id)[TrialState.COMPLETE] == 1
    assert s.trial(t[0].id).ended is not None
    with pytest.raises(ValueError, match="finished state"):
        s.record_epoch(w, ends=[TrialEnd(t[0].id, TrialState.RUNNING)])


def test_trials_and_checkpoints_by_number(storage_url: str) -> None:
    """Users know a trial by its number in its study (what netrace status shows); the row ids
    differ as soon as a storage holds two studies."""
    s = Storage(storage_url)
    first = s.create_study("first", direction="maximize", config={})
    s.add_trials(first.id, [{}] * 3, [1, 2, 3])  # rows 1-3: numbers 0-2 of another study
    st = s.create_study("vol", direction="maximize", config={})
    w = s.register_worker(st.id)
    t = s.add_trials(st.id, [{"lr": 0.1}, {"lr": 0.2}, {"lr": 0.3}, {}], [4, 5, 6, 7],
                     worker_id=w)
    assert [x.number for x in t] == [0, 1, 2, 3] and t[1].id != 1
    s.record_epoch(w, [EpochValue(t[1].id, 0, 0.5), EpochValue(t[2].id, 0, math.nan)],
                   checkpoints=[Checkpoint(t[1].id, 0, b"trial 1 of vol")],
                   ends=[TrialEnd(t[1].id, TrialState.COMPLETE),
                         TrialEnd(t[2].id, TrialState.DIVERGED, "loss became NaN")])
    assert s.trial_number(st.id, 1) == s.trial(t[1].id)
    assert s.trial_number(st.id, 1).params == {"lr": 0.2}
    assert s.checkpoint_of("vol", 1).data == b"trial 1 of vol"
    assert s.checkpoint(1) is None  # row id 1 is trial 0 of the other study
    with pytest.raises(UserError, match=r"^study 'vol' has no trial 4; its trials are numbered "
                                        r"0 to 3$"):
        s.trial_number(st.id, 4)
    with pytest.raises(UserError, match=r"^study 'vol' has no trial -1; its trials are"):
        s.checkpoint_of("vol", -1)
    empty = s.create_study("empty", direction="maximize", config={})
    with pytest.raises(UserError, match=r"^study 'empty' has no trial 0; it has no trials yet$"):
        s.trial_number(empty.id, 0)
    with pytest.raises(UserError, match=r"^no study 'vl' in .*; did you mean 'vol'\?"):
        s.checkpoint_of("vl", 1)
    with pytest.raises(UserError, match=r"^trial 2 of study 'vol' has no checkpoint: it diverged "
                                        r"\(its loss became NaN or infinite\); netrace status "
                                        r"vol --top 10 lists the best networks$"):
        s.checkpoint_of("vol", 2)
    with pytest.raises(UserError, match=r"^trial 3 of study 'vol' has no checkpoint: it has not "
                                        r"finished \(running\)"):
        s.checkpoint_of("vol", 3)


def test_cut_trials_apart_from_stopped_ones(storage_url: str) -> None:
    """A network the rule stopped and one cut off by the race's end are different states, and
    each end keeps its reason as a value; the notes are for people. (An older netrace's cut
    trials, STOPPED with a RACE_ENDED note: tests/test_storage_contract.py.)"""
    s = Storage(storage_url)
    st = s.create_study("x", direction="maximize", config={})
    w = s.register_worker(st.id)
    t = s.add_trials(st.id, [{}] * 4, [1, 2, 3, 4], worker_id=w)
    s.record_epoch(w, [EpochValue(x.id, 0, 0.1 * (i + 1)) for i, x in enumerate(t)], ends=[
        TrialEnd(t[0].id, TrialState.STOPPED, "median rule stopped it after epoch 1"),
        TrialEnd(t[1].id, TrialState.CUT, f"{RACE_ENDED}: budget spent (4 network-epochs)"),
        TrialEnd(t[2].id, TrialState.CUT, "any words at all"),
        TrialEnd(t[3].id, TrialState.COMPLETE)])
    assert TrialState.CUT.finished
    trials = s.trials(st.id)
    assert [x.state for x in trials] == [TrialState.STOPPED, TrialState.CUT, TrialState.CUT,
                                         TrialState.COMPLETE]
    assert [x.reason for x in trials] == [TrialEndReason.RULE_STOP, TrialEndReason.RACE_ENDED,
                                          TrialEndReason.RACE_ENDED, TrialEndReason.EPOCH_CAP]
    assert trials[2].note == "any words at all"
    counts = s.counts(st.id)
    assert (counts[TrialState.STOPPED], counts[TrialState.CUT]) == (1, 2)
    assert s.ended_with_race(st.id) == 2
    assert [x.number for x in s.trials(st.id, [TrialState.CUT])] == [1, 2]
    assert [x.number for x in s.trials(st.id, [TrialState.STOPPED])] == [0]
    assert len(s.trials(st.id, [TrialState.STOPPED, TrialState.CUT])) == 3
    assert sorted(s.curves(st.id, [TrialState.CUT])) == [t[1].id, t[2].id]
    assert sorted(s.curves(st.id, [TrialState.STOPPED])) == [t[0].id]
    assert sorted(s.curves(st.id, [TrialState.COMPLETE])) == [t[3].id]


def test_unclaim_requeues_only_untrained_running_trials(storage_url: str) -> None:
    s = Storage(storage_url)
    st = s.create_study("x", direction="maximize", config={})
    w = s.register_worker(st.id)
    trained, fresh, done = s.add_trials(st.id, [{}, {}, {}], [1, 2, 3], worker_id=w)
    s.record_epoch(w, [EpochValue(trained.id, 0, 0.5), EpochValue(done.id, 0, 0.7)],
                   ends=[TrialEnd(done.id, TrialState.COMPLETE)])
    assert s.unclaim([trained.id, fresh.id, done.id]) == [fresh.id]
    assert s.trial(fresh.id).state is TrialState.QUEUED and s.trial(fresh.id).worker_id is None
    assert "before it trained an epoch" in s.trial(fresh.id).note
    assert s.trial(trained.id).state is TrialState.RUNNING
    assert s.trial(done.id).state is TrialState.COMPLETE
    assert s.epochs_spent(st.id) == 2
    w2 = s.register_worker(st.id)
    assert [t.id for t in s.claim_queued(st.id, w2, 5)] == [fresh.id]


def test_recover_dead_worker(storage_url: str) -> None:
    s = Storage(storage_url)
    st = s.create_study("x", direction="minimize", config={})
    w = s.register_worker(st.id)
    a, b, done = s.add_trials(st.id, [{}, {}, {}], [1, 2, 3], worker_id=w)
    for e in range(4):
        s.record_epoch(w, [EpochValue(a.id, e, 1.0 / (e + 1)), EpochValue(b.id, e, 2.0 - e),
                           EpochValue(done.id, e, 3.0)],
                       checkpoints=[Checkpoint(a.id, e, b"w")] if e == 1 else [],
                       ends=[TrialEnd(done.id, TrialState.COMPLETE)] if e == 3 else [])
    assert s.epochs_spent(st.id) == 12
    time.sleep(0.05)
    assert s.stale_workers(st.id, timeout=0.01) == [w]
    assert sorted(s.recover_worker(w)) == sorted([a.id, b.id])
    ra, rb = s.trial(a.id), s.trial(b.id)
    # a resumes after its checkpoint at epoch 1; b starts over; the finished trial is untouched
    assert ra.state is TrialState.QUEUED and ra.epochs == 2 and ra.attempt == 1
    assert s.curve(a.id)[0] == [0, 1] and ra.best_value == 0.5 and ra.best_epoch == 1
    assert rb.epochs == 0 and s.curve(b.id)[0] == [] and rb.best_value is None
    assert s.trial(done.id).state is TrialState.COMPLETE and s.curve(done.id)[0] == [0, 1, 2, 3]
    assert s.epochs_spent(st.id) == 2 + 4
    assert s.stale_workers(st.id, timeout=0.0) == []
    # a trial whose workers keep dying fails after max_attempts
    w2 = s.register_worker(st.id)
    assert [t.id for t in s.claim_queued(st.id, w2, 1)] == [a.id]
    s.recover_worker(w2, max_attempts=2)
    r = s.trial(a.id)
    assert r.state is TrialState.FAILED and "died 2 times" in r.note


def _blob(trial_id: int, epochs: int) -> bytes:
    return f"{trial_id}:{epochs};".encode() * 2000  # ~15 KB, telling what it is


def test_requeued_trials_keep_their_state_and_the_curve_that_goes_with_it(
        storage_url: str) -> None:
    s = Storage(storage_url)
    st = s.create_study("x", direction="minimize", config={})
    w = s.register_worker(st.id)
    a, b, done = s.add_trials(st.id, [{}, {}, {}], [1, 2, 3], worker_id=w)
    for e in range(4):
        running = [a, b] if e == 3 else [a, b, done]
        s.record_epoch(w, [EpochValue(t.id, e, 1.0 / (e + 1)) for t in (a, b, done)],
                       ends=[TrialEnd(done.id, TrialState.COMPLETE)] if e == 3 else [],
                       states=[ResumeState(t.id, e + 1, _blob(t.id, e + 1)) for t in running])
    # the worker is killed after committing epoch 4 but before saving the states after it
    s.record_epoch(w, [EpochValue(a.id, 4, 0.2), EpochValue(b.id, 4, 0.1)])
    assert s.epochs_spent(st.id) == 14
    assert sorted(s.recover_worker(w)) == sorted([a.id, b.id])
    for t in (a, b):  # the curve is cut back to the state, never the other way round
        r, saved = s.trial(t.id), s.resume_state(t.id)
        assert r.state is TrialState.QUEUED and r.epochs == 4 and s.curve(t.id)[0] == [0, 1, 2, 3]
        assert saved is not None and saved.epochs == 4 and saved.data == _blob(t.id, 4)
    assert s.resume_state(done.id) is None and s.trial(done.id).epochs == 4
    assert s.epochs_spent(st.id) == 12
    # another worker continues both; it saves a's state after its epoch, then dies before
    # saving b's: b goes back to the state it was claimed with
    w2 = s.register_worker(st.id)
    assert [t.epochs for t in s.claim_queued(st.id, w2, 5)] == [4, 4]
    s.record_epoch(w2, [EpochValue(a.id, 4, 0.3), EpochValue(b.id, 4, 0.3)],
                   states=[ResumeState(a.id, 5, _blob(a.id, 5))])
    s.record_epoch(w2, [EpochValue(a.id, 5, 0.3), EpochValue(b.id, 5, 0.3)])
    s.recover_worker(w2)
    assert s.trial(a.id).epochs == 5 and s.resume_state(a.id).data == _blob(a.id, 5)
    assert s.trial(b.id).epochs == 4 and s.resume_state(b.id).data == _blob(b.id, 4)
    assert s.trial(b.id).attempt == 2 and s.epochs_spent(st.id) == 4 + 5 + 4
    # a trial that ends drops its state; so does one whose workers died too often
    w3 = s.register_worker(st.id)
    s.claim_queued(st.id, w3, 5)
    s.record_epoch(w3, [EpochValue(a.id, 5, 0.3)], ends=[TrialEnd(a.id, TrialState.STOPPED)],
                   states=[ResumeState(b.id, 4, _blob(b.id, 4))])
    assert s.resume_state(a.id) is None
    s.recover_worker(w3, max_attempts=3)
    assert s.trial(b.id).state is TrialState.FAILED and s.resume_state(b.id) is None
    with pytest.raises(ValueError, match="states belong to a worker"):
        s.record_epoch(None, states=[ResumeState(b.id, 1, b"x")])


def test_released_worker_keeps_states(storage_url: str) -> None:
    s = Storage(storage_url)
    st = s.create_study("x", direction="minimize", config={})
    w = s.register_worker(st.id)
    (t,) = s.add_trials(st.id, [{}], [1], worker_id=w)
    for e in range(3):
        s.record_epoch(w, [EpochValue(t.id, e, 1.0)], states=[ResumeState(t.id, e + 1, b"s")])
    assert s.release_worker(w) == [t.id]
    r = s.trial(t.id)
    assert r.state is TrialState.QUEUED and r.epochs == 3 and r.attempt == 0
    assert s.resume_state(t.id) == ResumeState(t.id, 3, b"s")


def _claim(url: str, study_id: int, out: mp.Queue) -> None:
    s = Storage(url)
    w = s.register_worker(study_id)
    got = []
    while True:
        batch = s.claim_queued(study_id, w, 3)
        if not batch:
            break
        got += [t.id for t in batch]
    out.put(got)


def _add(url: str, study_id: int, out: mp.Queue) -> None:
    s = Storage(url)
    nums = []
    for _ in range(10):
        nums += [t.number for t in s.add_trials(study_id, [{}, {}], [0, 0])]
    out.put(nums)


def test_concurrent_processes_never_share_a_trial(storage_url: str) -> None:
    s = Storage(storage_url)
    st = s.create_study("x", direction="minimize", config={})
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()
    procs = [ctx.Process(target=_add, args=(storage_url, st.id, q)) for _ in range(3)]
    for p in procs:
        p.start()
    numbers = sum((q.get(timeout=120) for _ in procs), [])
    for p in procs:
        p.join(60)
    assert sorted(numbers) == list(range(60))  # unique, contiguous
    procs = [ctx.Process(target=_claim, args=(storage_url, st.id, q)) for _ in range(3)]
    for p in procs:
        p.start()
    claimed = sum((q.get(timeout=120) for _ in procs), [])
    for p in procs:
        p.join(60)
    assert sorted(claimed) == sorted(t.id for t in s.trials(st.id))
    assert len(set(claimed)) == 60


WRITER = textwrap.dedent("""
    import sys
    from netrace.storage import Storage, EpochValue, Checkpoint
    s = Storage(sys.argv[1])
    st = s.create_study("kill", direction="minimize", config={})
    w = s.register_worker(st.id)
    trials = s.add_trials(st.id, [{"i": i} for i in range(64)], list(range(64)), worker_id=w)
    epoch = 0
    while True:
        s.record_epoch(w, [EpochValue(t.id, epoch, 1.0 / (epoch + 1) + t.number) for t in trials],
                       checkpoints=[Checkpoint(trials[0].id, epoch, bytes(20000))])
        print(epoch, flush=True)   # acknowledged only after the commit returned
        epoch += 1
""")


def _kill_writer(script: str, storage_url: str, after: int,
                 args: tuple[str, ...] = ()) -> tuple[int, int | None]:
    """Run a writer process, SIGKILL it once it has acknowledged epoch ``after``; returns the
    last acknowledged epoch and its exit code."""
    proc = subprocess.Popen([sys.executable, "-c", script, storage_url, *args], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    acked = -1
    assert proc.stdout is not None
    for line in proc.stdout:
        acked = int(line)
        if acked >= after:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    return acked, proc.returncode


def test_sigkill_loses_no_committed_epoch(storage_url: str) -> None:
    """A real writer process killed with SIGKILL mid-write: every acknowledged epoch is there,
    nothing is half-written, and the study resumes."""
    acked, returncode = _kill_writer(WRITER, storage_url, after=25)
    assert returncode == -signal.SIGKILL
    s = Storage(storage_url)
    st = s.get_study("kill")
    trials = s.trials(st.id)
    assert len(trials) == 64
    spent = s.epochs_spent(st.id)
    assert spent % 64 == 0  # whole epochs only: a batch commits entirely or not at all
    assert spent // 64 >= acked + 1
    for t in trials[:3]:
        epochs, values = s.curve(t.id)
        assert epochs == list(range(len(epochs)))
        assert t.epochs == len(epochs) and t.best_epoch == len(epochs) - 1
    if s.dialect == "sqlite":
        import sqlite3

        con = sqlite3.connect(storage_url)
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        con.close()
    (w,) = s.stale_workers(st.id, timeout=0.0)
    assert len(s.recover_worker(w)) == 64
    assert s.epochs_spent(st.id) == s.checkpoint(trials[0].id).epoch + 1  # only its curve stays


STATE_WRITER = textwrap.dedent("""
    import sys
    from netrace.storage import Storage, EpochValue, ResumeState
    s = Storage(sys.argv[1])
    st = s.create_study("kill", direction="minimize", config={})
    w = s.register_worker(st.id)
    trials = s.add_trials(st.id, [{"i": i} for i in range(64)], list(range(64)), worker_id=w)
    epoch = 0
    while True:
        s.record_epoch(w, [EpochValue(t.id, epoch, 1.0 / (epoch + 1)) for t in trials],
                       states=[ResumeState(t.id, epoch + 1,
                                           (epoch + 1).to_bytes(4, "little") * 25_000)
                               for t in trials])
        if sys.argv[2] == "flush":
            s.flush()  # PostgreSQL stores the states in the background: wait for them
        print(epoch, flush=True)   # acknowledged after the commit (and the flush)
        epoch += 1
""")


@pytest.mark.parametrize("flush", [True, False])
def test_sigkill_leaves_curves_and_states_in_agreement(storage_url: str, flush: bool) -> None:
    """A writer of 64 trials' curves and 100 KB states per epoch, killed with SIGKILL at any
    moment: after recovery every trial's curve length is its state's epoch count, whatever the
    moment of the kill. The states of the last acknowledged epoch are there if the writer
    flushed before acknowledging; without it (PostgreSQL stores them in the background while
    the next epoch trains) those of the epoch before at least."""
    acked, _ = _kill_writer(STATE_WRITER, storage_url, after=12,
                            args=("flush" if flush else "-",))
    s = Storage(storage_url)
    st = s.get_study("kill")
    (w,) = s.stale_workers(st.id, timeout=0.0)
    assert len(s.recover_worker(w)) == 64
    for t in s.trials(st.id):
        saved = s.resume_state(t.id)
        assert saved is not None and saved.epochs >= acked + (1 if flush else 0)
        assert t.epochs == saved.epochs and s.curve(t.id)[0] == list(range(saved.epochs))
        assert saved.data == saved.epochs.to_bytes(4, "little") * 25_000
    epochs = {s.trial(t.id).epochs for t in s.trials(st.id)}
    assert len(epochs) == 1  # one epoch's states are saved together
    assert s.epochs_spent(st.id) == 64 * epochs.pop()


def test_bad_storage_locations(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"unknown scheme 'mysql'; use a file path"):
        Storage("mysql://x/y")
    with pytest.raises(UserError, match=r"storage folder '.*nowhere' does not exist"):
        Storage(tmp_path / "nowhere" / "race.db")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(UserError, match=r"junk.db"):
        Storage(junk)


def test_open_only_an_existing_sqlite_file(tmp_path: Path) -> None:
    """create=False (netrace status) never makes a database where a path has none."""
    for path in (tmp_path / "nope.db", tmp_path / "nowhere" / "nope.db"):
        with pytest.raises(UserError, match=rf"^no study database exists at '{path}'; check the "
                                            rf"path, or make one with: netrace run CONFIG "
                                            rf"--storage {path}$"):
            Storage(path, create=False)
    with pytest.raises(UserError, match=r"no study database exists at 'nope.db'"):
        Storage("sqlite:///nope.db", create=False)
    assert sorted(os.listdir(tmp_path)) == []  # no file, no -wal, no -states folder
    Storage(tmp_path / "race.db").create_study("x", direction="maximize", config={})
    assert Storage(tmp_path / "race.db", create=False).study_names() == ["x"]


def test_timeline_in_recording_order(storage_url: str) -> None:
    s = Storage(storage_url)
    st = s.create_study("x", direction="minimize", config={})
    w = s.register_worker(st.id)
    a, b = s.add_trials(st.id, [{}, {}], [1, 2], worker_id=w)
    s.record_epoch(w, [EpochValue(b.id, 0, 2.0)])
    time.sleep(0.01)
    s.record_epoch(w, [EpochValue(a.id, 0, 1.0), EpochValue(b.id, 1, 3.0)])
    tl = s.timeline(st.id)
    assert [(r[1], r[2], r[3]) for r in tl] == [(b.id, 0, 2.0), (a.id, 0, 1.0), (b.id, 1, 3.0)]
    assert tl[0][0] < tl[1][0] == tl[2][0]


def test_an_epoch_states_are_stored_before_the_next_epoch(storage_url: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL stores an epoch's states in the background; the next epoch's write waits for
    them, so a trial that ends in it is left without a state, not with a stale one stored late;
    a worker stopping on request leaves the newest states.

    Checked by order, not by speed: the background write of epoch 1's states is held until the
    writer waits for it (a ``Future.result``), or until epoch 2's first statement (which then
    finds it not stored: the failure), or for at most 5 seconds if the writer waits otherwise."""
    import concurrent.futures
    import threading

    import sqlalchemy as sa

    s = Storage(storage_url)
    st = s.create_study("x", direction="minimize", config={})
    w = s.register_worker(st.id)
    a, b = s.add_trials(st.id, [{}, {}], [1, 2], worker_id=w)
    me = threading.get_ident()
    release, stored = threading.Event(), threading.Event()
    held: list[str] = []  # background writes of states, held back
    in_second = threading.Event()  # epoch 2 is being recorded
    second: list[bool] = []  # at epoch 2's first statement: were epoch 1's states stored?

    def before(conn, cursor, statement, parameters, context, executemany):
        if threading.get_ident() != me:
            if "INSERT INTO resume_states" in statement and not held:
                held.append(statement)
                release.wait(5)
        elif in_second.is_set() and not second:
            second.append(stored.is_set())
            release.set()

    def after(conn, cursor, statement, parameters, context, executemany):
        if threading.get_ident() != me and "INSERT INTO resume_states" in statement:
            stored.set()

    result = concurrent.futures.Future.result

    def waited(self, timeout=None):
        release.set()  # the writer waits for the background write: let it go on
        return result(self, timeout)

    monkeypatch.setattr(concurrent.futures.Future, "result", waited)
    sa.event.listen(sa.Engine, "before_cursor_execute", before)
    sa.event.listen(sa.Engine, "after_cursor_execute", after)
    try:
        s.record_epoch(w, [EpochValue(a.id, 0, 1.0), EpochValue(b.id, 0, 1.0)],
                       states=[ResumeState(a.id, 1, b"a1"), ResumeState(b.id, 1, b"b1")])
        in_second.set()
        s.record_epoch(w, [EpochValue(a.id, 1, 0.5), EpochValue(b.id, 1, 0.5)],
                       ends=[TrialEnd(a.id, TrialState.COMPLETE)],
                       states=[ResumeState(b.id, 2, b"b2")])
    finally:
        release.set()
        sa.event.remove(sa.Engine, "before_cursor_execute", before)
        sa.event.remove(sa.Engine, "after_cursor_execute", after)
    if storage_url.startswith("postgresql"):  # SQLite writes states before record_epoch returns
        assert held  # epoch 1's states went to the background, and were held there
        assert second == [True]  # and were stored before anything of epoch 2 was written
    assert s.release_worker(w) == [b.id]
    other = Storage(storage_url)
    assert other.resume_state(a.id) is None
    assert other.resume_state(b.id) == ResumeState(b.id, 2, b"b2")
    other.close()
    s.close()
