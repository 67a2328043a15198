"""The storage contract itself, on both implementations: records and enums in and out, end
reasons as values, workers as records, liveness by heartbeat (a worker declared dead writes
nothing more), and the studies an earlier netrace wrote (schema version 1), upgraded once."""

from __future__ import annotations

import dataclasses
import inspect
import threading
import time

import pytest
import sqlalchemy as sa

from netrace.storage import (
    HEARTBEAT_TIMEOUT,
    Checkpoint,
    EpochValue,
    EvaluationBook,
    RaceEndReason,
    ResumeState,
    Storage,
    StudyBook,
    StudyState,
    StudyStatus,
    StudyStorage,
    TrialEnd,
    TrialEndReason,
    TrialReader,
    TrialState,
    TrialWriter,
    WorkerBook,
    WorkerLost,
    WorkerRecord,
    WorkerState,
    storage_url,
)

ROLES = (StudyBook, WorkerBook, TrialWriter, TrialReader, EvaluationBook)


def _members(protocol: type) -> list[str]:
    return [n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_")]


def test_both_implementations_keep_the_contract(storage_url: str) -> None:
    s = Storage(storage_url)
    assert type(s).__name__ == {"sqlite": "SQLiteStorage",
                                "postgresql": "PostgresStorage"}[s.dialect]
    assert isinstance(s, StudyStorage) and all(isinstance(s, role) for role in ROLES)
    assert s.local_only is (s.dialect == "sqlite")  # other machines reach PostgreSQL only
    for role in ROLES:  # the same names and parameters as the contract says
        for name in _members(role):
            want = inspect.signature(getattr(role, name)).parameters
            got = inspect.signature(getattr(type(s), name)).parameters
            assert list(got) == list(want), (role.__name__, name)
            assert [p.default for p in got.values()] == [p.default for p in want.values()]
    assert sum(len(_members(r)) for r in ROLES) < 45
    s.close()


def test_end_reasons_and_records() -> None:
    # every reason belongs to one final state; every final state has a default reason
    assert {r.state for r in TrialEndReason} == {s for s in TrialState if s.finished}
    for state in TrialState:
        if state.finished:
            assert TrialEndReason.of(state).state is state
        else:
            with pytest.raises(ValueError, match="finished state"):
                TrialEndReason.of(state)
    assert TrialEndReason.of(TrialState.COMPLETE) is TrialEndReason.EPOCH_CAP
    assert TrialEnd(1, TrialState.COMPLETE, "", TrialEndReason.EARLY_STOPPING).reason \
        is TrialEndReason.EARLY_STOPPING
    with pytest.raises(ValueError, match="ends for rule_stop ends stopped, not complete"):
        TrialEnd(1, TrialState.COMPLETE, "", TrialEndReason.RULE_STOP)
    with pytest.raises(ValueError, match="finished state"):
        TrialEnd(1, TrialState.QUEUED)
    assert [r.label for r in RaceEndReason] == ["budget spent", "target reached"]
    assert StudyStatus(StudyState.DONE, RaceEndReason.TARGET_REACHED).over
    assert not StudyStatus(StudyState.RUNNING).over
    w = WorkerRecord(3, 1, "host-b", 77, WorkerState.ALIVE, 10.0, 12.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        w.state = WorkerState.DEAD  # type: ignore[misc]
    # dict-style reads still work for callers written when workers() returned dicts
    assert (w["pid"], w["state"], w["state"] == "alive") == (77, WorkerState.ALIVE, True)
    assert HEARTBEAT_TIMEOUT == 60.0


def test_a_race_ends_for_a_reason(storage_url: str) -> None:
    s = Storage(storage_url)
    st = s.create_study("x", direction="maximize", config={})
    assert s.study_status(st.id) == StudyStatus(StudyState.RUNNING, None, "")
    with pytest.raises(TypeError, match="RaceEndReason"):
        s.finish_study(st.id, "budget spent (10 network-epochs)")  # type: ignore[arg-type]
    assert s.finish_study(st.id, RaceEndReason.BUDGET_SPENT, "budget spent (10 network-epochs)")
    assert not s.finish_study(st.id, RaceEndReason.TARGET_REACHED, "too late")  # first wins
    status = Storage(storage_url).study_status(st.id)
    assert status == StudyStatus(StudyState.DONE, RaceEndReason.BUDGET_SPENT,
                                 "budget spent (10 network-epochs)")
    assert s.study_state(st.id) == ("done", "budget spent (10 network-epochs)")
    s.reopen_study(st.id)
    assert s.study_status(st.id) == StudyStatus(StudyState.RUNNING, None, "")
    assert s.finish_study(st.id, RaceEndReason.TARGET_REACHED)
    assert s.study_status(st.id).note == "target reached"  # the reason in words by default


def test_trial_end_reasons_are_stored_as_values(storage_url: str) -> None:
    s = Storage(storage_url)
    st = s.create_study("x", direction="minimize", config={})
    w = s.register_worker(st.id)
    reasons = list(TrialEndReason)
    t = s.add_trials(st.id, [{}] * (len(reasons) + 1), list(range(len(reasons) + 1)),
                     worker_id=w)
    s.record_epoch(w, [EpochValue(x.id, 0, 1.0) for x in t], ends=[
        TrialEnd(x.id, r.state, f"note {i}", r) for i, (x, r) in enumerate(zip(t, reasons))])
    got = {x.id: x for x in Storage(storage_url).trials(st.id)}
    for i, (x, r) in enumerate(zip(t, reasons)):
        assert (got[x.id].state, got[x.id].reason, got[x.id].note) == (r.state, r, f"note {i}")
    assert got[t[-1].id].reason is None and got[t[-1].id].state is TrialState.RUNNING
    # a trial whose workers died too often fails, for that reason
    assert s.recover_worker(w, max_attempts=1) == [t[-1].id]
    assert s.trial(t[-1].id).reason is TrialEndReason.FAILED


def _age(url: str, worker_id: int, seconds: float) -> None:
    """Make a worker's last heartbeat ``seconds`` older, as if it had been silent that long."""
    engine = sa.create_engine(storage_url(url))
    with engine.begin() as c:
        c.execute(sa.text("UPDATE workers SET heartbeat = heartbeat - :s WHERE id = :i"),
                  {"s": seconds, "i": worker_id})
    engine.dispose()


def _until(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "it did not happen"
        time.sleep(0.02)


def test_workers_are_records_and_alive_by_heartbeat(storage_url: str) -> None:
    s = Storage(storage_url)
    st = s.create_study("x", direction="minimize", config={})
    here = s.register_worker(st.id)
    there = s.register_worker(st.id, host="host-b", pid=4_000_000)
    a, b = s.workers(st.id)
    assert isinstance(a, WorkerRecord) and (a.id, b.id) == (here, there)
    assert (b.host, b.pid, b.state) == ("host-b", 4_000_000, WorkerState.ALIVE)
    assert a.heartbeat >= a.started
    _age(storage_url, here, 100)
    _age(storage_url, there, 100)
    assert s.heartbeat(there)  # a beat: only `here` has been silent for 100 s
    assert s.stale_workers(st.id, timeout=50) == [here]
    assert s.stale_workers(st.id, timeout=500) == []
    s.finish_worker(here)
    assert s.recover_worker(there) == []  # it ran nothing
    assert [w.state for w in s.workers(st.id)] == [WorkerState.DONE, WorkerState.DEAD]
    assert not s.heartbeat(there)  # a dead worker's beat is refused
    _age(storage_url, there, 1000)
    assert s.stale_workers(st.id, timeout=50) == []  # only alive workers go stale


def test_a_heartbeat_timer_keeps_a_quiet_worker_alive(storage_url: str) -> None:
    s = Storage(storage_url)
    st = s.create_study("x", direction="minimize", config={})
    beating = s.register_worker(st.id, heartbeat_timeout=0.6)  # beats every 0.1 s
    silent = s.register_worker(st.id)
    _age(storage_url, beating, 100)
    _age(storage_url, silent, 100)
    # neither writes an epoch; the timer beats for the first
    _until(lambda: s.stale_workers(st.id, timeout=50) == [silent])
    s.finish_worker(beating)  # the timer stops with the worker
    last = s.workers(st.id)[0].heartbeat
    time.sleep(0.3)
    assert s.workers(st.id)[0].heartbeat == last
    # a worker declared dead stops its own timer at its next beat
    again = s.register_worker(st.id, heartbeat_timeout=0.3)
    other = Storage(storage_url)  # a coordinator elsewhere
    other.recover_worker(again)
    _until(lambda: not s._beats[again]._thread.is_alive())
    s.close()
    other.close()


def test_a_worker_declared_dead_writes_nothing_more(storage_url: str) -> None:
    """A worker declared dead while it was only slow (frozen, cut off) finds out at its next
    write: it raises WorkerLost and nothing of that write is stored, so it never overwrites
    the networks another worker now continues."""
    s = Storage(storage_url)
    st = s.create_study("x", direction="minimize", config={})
    w = s.register_worker(st.id)
    a, b = s.add_trials(st.id, [{}, {}], [1, 2], worker_id=w)
    s.record_epoch(w, [EpochValue(a.id, 0, 1.0), EpochValue(b.id, 0, 2.0)],
                   states=[ResumeState(a.id, 1, b"a1"), ResumeState(b.id, 1, b"b1")])
    coordinator = Storage(storage_url)  # another process (or machine) declares it dead
    assert sorted(coordinator.recover_worker(w)) == [a.id, b.id]
    w2 = coordinator.register_worker(st.id)
    assert [t.id for t in coordinator.claim_queued(st.id, w2, 1)] == [a.id]
    spent = s.epochs_spent(st.id)
    with pytest.raises(WorkerLost, match=f"worker {w} was declared dead"):
        s.record_epoch(w, [EpochValue(a.id, 1, 0.5), EpochValue(b.id, 1, 0.5)],
                       ends=[TrialEnd(a.id, TrialState.COMPLETE)],
                       checkpoints=[Checkpoint(a.id, 1, b"late")],
                       states=[ResumeState(a.id, 2, b"a2")])
    with pytest.raises(WorkerLost):
        s.claim_queued(st.id, w, 5)
    with pytest.raises(WorkerLost):
        s.add_trials(st.id, [{}], [3], worker_id=w)
    assert s.epochs_spent(st.id) == spent and s.checkpoint(a.id) is None
    ra = s.trial(a.id)
    assert (ra.state, ra.worker_id, ra.attempt) == (TrialState.RUNNING, w2, 1)
    assert s.resume_state(a.id) == ResumeState(a.id, 1, b"a1")
    assert s.trial(b.id).state is TrialState.QUEUED and len(s.trials(st.id)) == 2
    s.finish_worker(w)  # on its way out: it stays dead, and nothing is re-queued twice
    assert s.release_worker(w) == [] and s.recover_worker(w) == []
    assert s.workers(st.id)[0].state is WorkerState.DEAD
    assert s.trial(b.id).attempt == 1


def test_two_coordinators_recover_a_worker_once(storage_url: str) -> None:
    s = Storage(storage_url)
    st = s.create_study("x", direction="minimize", config={})
    w = s.register_worker(st.id, host="host-b", pid=4_000_000)
    trials = s.add_trials(st.id, [{}] * 20, list(range(20)), worker_id=w)
    s.record_epoch(w, [EpochValue(t.id, 0, 1.0) for t in trials])
    coordinators = [Storage(storage_url) for _ in range(3)]
    got: list[list[int]] = []
    start = threading.Barrier(len(coordinators))

    def recover(c: Storage) -> None:
        start.wait()
        got.append(c.recover_worker(w))

    threads = [threading.Thread(target=recover, args=(c,)) for c in coordinators]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(map(len, got)) == [0, 0, 20]
    assert {t.attempt for t in s.trials(st.id)} == {1}
    for c in coordinators:
        c.close()


# -- a study an earlier netrace wrote (schema version 1) ------------------------------------------

def _v1_tables() -> sa.MetaData:
    """The tables as netrace wrote them before the end reasons (schema version 1)."""
    m = sa.MetaData()
    sa.Table("studies", m, sa.Column("id", sa.Integer, primary_key=True),
             sa.Column("name", sa.String(200), nullable=False, unique=True),
             sa.Column("direction", sa.String(10), nullable=False),
             sa.Column("target", sa.Float), sa.Column("config", sa.Text, nullable=False),
             sa.Column("created", sa.Float, nullable=False),
             sa.Column("n_trials", sa.Integer, nullable=False),
             sa.Column("state", sa.String(10), nullable=False),
             sa.Column("reason", sa.Text, nullable=False))
    sa.Table("workers", m, sa.Column("id", sa.Integer, primary_key=True),
             sa.Column("study_id", sa.Integer, sa.ForeignKey("studies.id"), nullable=False),
             sa.Column("host", sa.String(200), nullable=False),
             sa.Column("pid", sa.Integer, nullable=False),
             sa.Column("state", sa.String(10), nullable=False),
             sa.Column("started", sa.Float, nullable=False),
             sa.Column("heartbeat", sa.Float, nullable=False))
    sa.Table("trials", m, sa.Column("id", sa.Integer, primary_key=True),
             sa.Column("study_id", sa.Integer, sa.ForeignKey("studies.id"), nullable=False),
             sa.Column("number", sa.Integer, nullable=False),
             sa.Column("state", sa.String(10), nullable=False),
             sa.Column("params", sa.Text, nullable=False),
             sa.Column("seed", sa.BigInteger, nullable=False),
             sa.Column("worker_id", sa.Integer, sa.ForeignKey("workers.id")),
             sa.Column("attempt", sa.Integer, nullable=False),
             sa.Column("epochs", sa.Integer, nullable=False),
             sa.Column("best_value", sa.Float), sa.Column("best_epoch", sa.Integer),
             sa.Column("created", sa.Float, nullable=False), sa.Column("ended", sa.Float),
             sa.Column("note", sa.Text, nullable=False),
             sa.UniqueConstraint("study_id", "number"))
    sa.Table("curve", m,
             sa.Column("trial_id", sa.Integer, sa.ForeignKey("trials.id"), primary_key=True),
             sa.Column("epoch", sa.Integer, primary_key=True), sa.Column("value", sa.Float),
             sa.Column("metrics", sa.Text), sa.Column("recorded", sa.Float, nullable=False))
    sa.Table("decisions", m, sa.Column("id", sa.Integer, primary_key=True),
             sa.Column("trial_id", sa.Integer, sa.ForeignKey("trials.id"), nullable=False),
             sa.Column("epoch", sa.Integer, nullable=False),
             sa.Column("rule", sa.String(40), nullable=False),
             sa.Column("action", sa.String(20), nullable=False),
             sa.Column("prediction", sa.Text))
    sa.Table("checkpoints", m,
             sa.Column("trial_id", sa.Integer, sa.ForeignKey("trials.id"), primary_key=True),
             sa.Column("epoch", sa.Integer, nullable=False),
             sa.Column("data", sa.LargeBinary, nullable=False))
    sa.Table("evaluations", m, sa.Column("id", sa.Integer, primary_key=True),
             sa.Column("study_id", sa.Integer, sa.ForeignKey("studies.id"), nullable=False),
             sa.Column("opened", sa.Float, nullable=False),
             sa.Column("epochs_spent", sa.Integer, nullable=False),
             sa.Column("result", sa.Text), sa.Column("model", sa.LargeBinary))
    sa.Table("netrace_info", m, sa.Column("key", sa.String(40), primary_key=True),
             sa.Column("value", sa.Text, nullable=False))
    sa.Table("resume_states", m, sa.Column("trial_id", sa.Integer, primary_key=True),
             sa.Column("epochs", sa.Integer, nullable=False),
             sa.Column("data", sa.LargeBinary, nullable=False))
    return m


#: (state, note) as version 1 stored them, and what they are read as: state, reason
V1_TRIALS = [
    ("stopped", "median rule stopped it after epoch 3", "stopped", "rule_stop"),
    ("stopped", "race ended: budget spent (40 network-epochs)", "cut", "race_ended"),  # < CUT
    ("cut", "race ended: budget spent (40 network-epochs)", "cut", "race_ended"),
    ("complete", "early stopping after epoch 4", "complete", "early_stopping"),
    ("complete", "trained 10 epochs", "complete", "epoch_cap"),
    ("diverged", "loss became NaN or infinite in epoch 2", "diverged", "diverged"),
    ("failed", "cannot build this network: too deep", "failed", "failed"),
    ("running", "", "running", None),  # on worker 1, which died on another machine
    ("queued", "re-queued: the race ended before it trained an epoch", "queued", None),
]


def _write_v1(url: str) -> None:
    engine = sa.create_engine(storage_url(url))
    m = _v1_tables()
    m.create_all(engine)
    t = m.tables
    now = time.time()
    with engine.begin() as c:
        c.execute(t["netrace_info"].insert().values(key="schema", value="1"))
        ids = [c.execute(t["studies"].insert().values(
            name=name, direction="maximize", target=None, config="{}", created=now,
            n_trials=len(V1_TRIALS) if name == "old" else 0, state=state, reason=reason))
            .inserted_primary_key[0] for name, state, reason in [
                ("old", "done", "budget spent (40 network-epochs)"),
                ("hit", "done", "target 0.9 reached by trial 0 (r2 = 0.95 at epoch 1)"),
                ("live", "running", "")]]
        worker = c.execute(t["workers"].insert().values(
            study_id=ids[0], host="host-b", pid=4_000_000, state="alive", started=now - 500,
            heartbeat=now - 400)).inserted_primary_key[0]
        for n, (state, note, _, _) in enumerate(V1_TRIALS):
            trained = state != "queued"
            tid = c.execute(t["trials"].insert().values(
                study_id=ids[0], number=n, state=state, params="{}", seed=n,
                worker_id=worker if state == "running" else None, attempt=0,
                epochs=2 if trained else 0, best_value=0.5 if trained else None,
                best_epoch=1 if trained else None, created=now,
                ended=None if state in ("running", "queued") else now, note=note)
                ).inserted_primary_key[0]
            if trained:
                c.execute(t["curve"].insert(), [dict(trial_id=tid, epoch=e, value=0.4 + e / 10,
                                                     metrics=None, recorded=now)
                                                for e in range(2)])
            if state == "running":
                c.execute(t["checkpoints"].insert().values(trial_id=tid, epoch=0, data=b"ck"))
    engine.dispose()


def test_a_study_of_schema_version_1_is_upgraded_once(storage_url: str) -> None:
    """Studies written before the end reasons open and behave: why each race and trial ended
    is read from its note once (the one place that reads a note), the older netrace's cut
    trials (STOPPED, noted "race ended") become CUT, the notes stay, and its dead worker's
    networks are re-queued like any others."""
    _write_v1(storage_url)
    s = Storage(storage_url)
    old, hit, live = (s.get_study(n).id for n in ("old", "hit", "live"))
    trials = s.trials(old)
    assert [(t.state.value, t.reason) for t in trials] == [(st, r) for _, _, st, r in V1_TRIALS]
    assert [t.note for t in trials] == [note for _, note, _, _ in V1_TRIALS]
    counts = s.counts(old)
    assert (counts[TrialState.STOPPED], counts[TrialState.CUT]) == (1, 2)
    assert s.study_status(old) == StudyStatus(StudyState.DONE, RaceEndReason.BUDGET_SPENT,
                                              "budget spent (40 network-epochs)")
    assert s.study_status(hit).reason is RaceEndReason.TARGET_REACHED
    assert s.study_status(live) == StudyStatus(StudyState.RUNNING, None, "")
    with s._write.begin() as c:
        assert c.execute(sa.text("SELECT value FROM netrace_info")).scalar_one() == "2"
    # opened again: nothing to upgrade, nothing changed
    again = Storage(storage_url)
    assert again.trials(old) == trials
    # its worker on another machine stopped beating long ago: its network goes back to the
    # queue, with its curve up to its checkpoint
    (w,) = again.stale_workers(old, timeout=HEARTBEAT_TIMEOUT)
    running = [t for t in trials if t.state is TrialState.RUNNING]
    assert again.recover_worker(w) == [running[0].id]
    r = again.trial(running[0].id)
    assert (r.state, r.epochs, r.attempt, r.reason) == (TrialState.QUEUED, 1, 1, None)
    # and it goes on as a study of this netrace
    assert again.finish_study(live, RaceEndReason.BUDGET_SPENT)
    new = again.register_worker(old)
    [t] = again.claim_queued(old, new, 1)
    again.record_epoch(new, [EpochValue(t.id, 1, 0.7)],
                       ends=[TrialEnd(t.id, TrialState.COMPLETE, "early stopping after epoch 2",
                                      TrialEndReason.EARLY_STOPPING)])
    assert again.trial(t.id).reason is TrialEndReason.EARLY_STOPPING
    s.close()
    again.close()
