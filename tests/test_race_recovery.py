"""Recovery across machines, end to end: a worker of another machine ("host-b", a pid that does
not exist here) whose heartbeat stopped has its networks re-queued by a `netrace run` on this
machine, at its start or while it runs, and they continue from their saved states; a worker
whose heartbeat is fresh keeps its networks, though its process is nowhere to be seen here. And
a study written before the end reasons (schema version 1) resumes under a larger budget."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from netrace.storage import Storage, TrialState, WorkerState, storage_url
from tests.test_race import EXE, _alive, _running, check_books, settled, write

TIMEOUT = 5  # [race] heartbeat_timeout of these races, in seconds
ELSEWHERE = ("host-b", 4_000_000)  # above this machine's pid_max: no such process here


def _run(cfg: Path, url: str, workers: int = 1) -> subprocess.Popen:
    return subprocess.Popen([EXE, "run", str(cfg), "--quiet", "--workers", str(workers),
                             "--storage", url], cwd=cfg.parent, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_study(url: str, timeout: float = 300) -> Storage:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            s = Storage(url, create=False)
            if s.find_study("race") is not None:
                return s
            s.close()
        except Exception:  # not there yet
            pass
        time.sleep(0.3)
    raise AssertionError("the run made no study")


def _two_workers_mid_race(cfg: Path, url: str) -> Storage:
    """A run of two workers, SIGKILLed (the coordinator, its workers with it) once each worker
    runs networks that have saved states: a study with two 'alive' workers whose processes are
    gone, their networks running with states and curves."""
    proc = _run(cfg, url, workers=2)
    s = _wait_study(url)
    st = s.get_study("race")

    def both_mid_race() -> bool:
        ws = [w for w in s.workers(st.id) if w.state is WorkerState.ALIVE]
        runs = [_running(s, st.id, w.id) for w in ws]
        return len(ws) == 2 and all(r and min(map(len, r.values())) >= 2 for r in runs)

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if both_mid_race():
            ws = [w for w in s.workers(st.id) if w.state is WorkerState.ALIVE]
            for w in ws:
                os.kill(w.pid, signal.SIGSTOP)  # frozen as they were: still mid-race?
            if both_mid_race():
                break
            for w in ws:
                os.kill(w.pid, signal.SIGCONT)
        time.sleep(0.05)
    else:
        raise AssertionError("the two workers did not both train networks")
    pids = [w.pid for w in ws]
    proc.kill()
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(p) for p in pids)
    return s


def _move_elsewhere(url: str, worker_id: int, heartbeat: float) -> None:
    """The worker's row as if it ran on another machine, last heard of at ``heartbeat``."""
    engine = sa.create_engine(storage_url(url))
    with engine.begin() as c:
        c.execute(sa.text("UPDATE workers SET host = :h, pid = :p, heartbeat = :b WHERE id = :i"),
                  {"h": ELSEWHERE[0], "p": ELSEWHERE[1], "b": heartbeat, "i": worker_id})
    engine.dispose()


class _Beating:
    """Another machine's live worker: its heartbeat, every half second, until stopped."""

    def __init__(self, url: str, worker_id: int) -> None:
        self.storage, self.worker_id = Storage(url), worker_id
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)
        self.thread.start()

    def _beat(self) -> None:
        while not self.stop.wait(0.5):
            self.storage.heartbeat(self.worker_id)

    def end(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.storage.close()


def _continued(s: Storage, before: dict[int, list[float]], since: float) -> None:
    """Each of these networks, re-queued with ``before`` its curve, finished elsewhere going on
    from its saved state (after the last epoch, or the one before): the epochs it kept are the
    same values, and it trained none of them again."""
    st = s.get_study("race")
    after: dict[int, list[int]] = {}
    for recorded, tid, epoch, _ in s.timeline(st.id):
        if recorded > since:
            after.setdefault(tid, []).append(epoch)
    for tid, curve in before.items():
        t, (_, values) = s.trial(tid), s.curve(tid)
        kept = len(curve) - 1
        assert t.state.finished and t.attempt == 1, t
        assert values[:kept] == curve[:kept]
        assert after[tid] and min(after[tid]) >= kept, (t, after.get(tid))


def _run_until(cfg: Path, url: str, done: Callable[[], bool],
               started: Callable[[], None] = lambda: None) -> str:
    """A run on this machine (one worker, a budget it does not spend), stopped with Ctrl-C once
    ``done()``; ``started()`` is called once its worker has registered. Returns its messages."""
    s = Storage(url)
    st = s.get_study("race")
    registered = len(s.workers(st.id))
    proc = _run(cfg, url)
    deadline = time.monotonic() + 600
    while len(s.workers(st.id)) == registered and time.monotonic() < deadline:
        time.sleep(0.1)
    started()
    while not done() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert done(), "the run did not do it"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    s.close()
    return err


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_silent_worker_elsewhere_is_recovered_and_a_live_one_is_not(
        tmp_path: Path, kind: str, request: pytest.FixtureRequest) -> None:
    db = tmp_path / "netrace.db"
    url = str(db) if kind == "sqlite" else request.getfixturevalue("postgres").new_database(
        "recovery")
    cfg = write(tmp_path, rule="none", budget=100_000, epochs=4,
                extra=f"heartbeat_timeout = {TIMEOUT}")
    s = _two_workers_mid_race(cfg, url)
    st = s.get_study("race")
    silent, live = (w.id for w in s.workers(st.id))
    # the silent one was last heard of long ago on host-b; the live one beats there still
    _move_elsewhere(url, silent, time.time() - 1000)
    _move_elsewhere(url, live, time.time())
    beating = _Beating(url, live)
    lost = _running(s, st.id, silent)
    kept = _running(s, st.id, live)

    def finished(trials: dict[int, list[float]]) -> Callable[[], bool]:
        return lambda: all(s.trial(t).state.finished for t in trials)

    # 1. a run on this machine re-queues the silent worker's networks as it starts, and they
    # continue from their states; the live worker's stay where they are
    since = time.time()
    err = _run_until(cfg, url, finished(lost))
    assert f"re-queued {len(lost)} trial(s) of worker {silent} on host-b: no heartbeat" in err
    _continued(s, {t: c for t, c in lost.items() if len(c) >= 2}, since)
    assert all(s.trial(t).worker_id != silent for t in lost)
    assert _running(s, st.id, live) == kept  # a fresh heartbeat: nothing of it was touched
    assert {t.attempt for t in s.trials(st.id) if t.id in kept} == {0}
    states = {w.id: w.state for w in s.workers(st.id)}
    assert (states[silent], states[live]) == (WorkerState.DEAD, WorkerState.ALIVE)
    check_books(s, "race")
    # 2. a run already going re-queues the live worker's networks once its heartbeat stops
    since = time.time()
    err = _run_until(cfg, url, finished(kept), started=beating.end)
    assert f"re-queued {len(kept)} trial(s) of worker {live} on host-b: no heartbeat" in err
    _continued(s, {t: c for t, c in kept.items() if len(c) >= 2}, since)
    assert {w.id: w.state for w in s.workers(st.id)}[live] is WorkerState.DEAD
    assert not any(t.state is TrialState.RUNNING for t in s.trials(st.id))
    check_books(s, "race")
    s.close()


def _as_version_1(db: Path) -> None:
    """Rewrite a study database as the netrace before the end reasons left it: no
    ``end_reason`` columns, schema version 1, its cut trials STOPPED with their note."""
    import sqlite3

    con = sqlite3.connect(db)
    con.execute("UPDATE trials SET state = 'stopped' WHERE state = 'cut'")
    con.execute("ALTER TABLE trials DROP COLUMN end_reason")
    con.execute("ALTER TABLE studies DROP COLUMN end_reason")
    con.execute("UPDATE netrace_info SET value = '1' WHERE key = 'schema'")
    con.commit()
    con.close()


@pytest.mark.slow
def test_a_study_of_an_earlier_netrace_resumes(tmp_path: Path) -> None:
    """Its race ended with its budget spent, which it kept only in a note: a run with a larger
    budget reads that once (the upgrade) and goes on, as with a study of this netrace."""
    db = tmp_path / "netrace.db"
    cfg = write(tmp_path, rule="none", budget=40, epochs=4)
    out, err = _run(cfg, str(db)).communicate(timeout=600)
    assert "budget spent" in out, err
    s = Storage(db)
    cut = [t.id for t in s.trials(s.get_study("race").id) if t.state is TrialState.CUT]
    s.close()
    _as_version_1(db)
    cfg = write(tmp_path, rule="none", budget=80, epochs=4)
    out, err = _run(cfg, str(db)).communicate(timeout=600)
    assert "resuming study 'race' with a budget of 80" in err and "budget spent" in out, err
    s = Storage(db)
    st = s.get_study("race")
    assert all(s.trial(t).state is TrialState.CUT for t in cut)
    assert s.epochs_spent(st.id) >= 80 and all(settled(t, s) for t in s.trials(st.id))
    check_books(s, "race")


def test_which_workers_a_coordinator_recovers(storage_url: str) -> None:
    """By heartbeat on any machine; by pid only on its own machine, and only as it starts
    (an earlier run's workers); never a worker elsewhere whose heartbeat is fresh."""
    import os
    import socket

    from netrace.race._recovery import recover_silent, release_vanished
    from netrace.storage import EpochValue
    from tests.test_storage_contract import _age

    s = Storage(storage_url)
    st = s.create_study("race", direction="maximize", config={})
    here, gone = socket.gethostname(), ELSEWHERE[1]
    workers = {name: s.register_worker(st.id, host=host, pid=pid) for name, host, pid in [
        ("silent elsewhere", "host-b", gone), ("live elsewhere", "host-b", gone),
        ("vanished here", here, gone), ("frozen here", here, os.getpid())]}
    trials = {}
    for name, w in workers.items():
        trials[name] = [t.id for t in s.add_trials(st.id, [{}, {}], [1, 2], worker_id=w)]
        s.record_epoch(w, [EpochValue(t, 0, 0.5) for t in trials[name]])
    for name in ("silent elsewhere", "frozen here"):
        _age(storage_url, workers[name], 1000)
    said: list[str] = []
    # while it runs: heartbeats only
    got = recover_silent(s, st.id, TIMEOUT, said.append)
    assert sorted(got) == sorted(trials["silent elsewhere"] + trials["frozen here"])
    assert said == [f"re-queued 2 trial(s) of worker {workers[n]} on {h}: no heartbeat for "
                    f"over {TIMEOUT} s" for n, h in [("silent elsewhere", "host-b"),
                                                     ("frozen here", here)]]
    # as it starts: also this machine's workers whose process is gone
    assert sorted(recover_silent(s, st.id, TIMEOUT, said.append, local_pids=True)) == \
        sorted(trials["vanished here"])
    assert said[-1] == "re-queued 2 trial(s) left running by an earlier run"
    states = {w.id: w.state for w in s.workers(st.id)}
    assert states[workers["live elsewhere"]] is WorkerState.ALIVE
    assert all(s.trial(t).state is TrialState.RUNNING for t in trials["live elsewhere"])
    # after a second Ctrl-C, only this machine's vanished workers hand their networks back
    killed = s.register_worker(st.id, host=here, pid=gone)
    (t,) = s.add_trials(st.id, [{}], [3], worker_id=killed)
    release_vanished(s, st.id)
    states = {w.id: w.state for w in s.workers(st.id)}
    assert states[killed] is WorkerState.DONE and s.trial(t.id).state is TrialState.QUEUED
    assert states[workers["live elsewhere"]] is WorkerState.ALIVE
    s.close()
