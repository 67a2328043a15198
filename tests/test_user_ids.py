"""What users see names trials by their number in the study (never a storage row id) and counts
epochs from 1: status text, status --json, status --curves, progress JSON lines. The storage
here holds another study first, so that row ids and trial numbers differ."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from netrace.race import Progress, snapshot
from netrace.storage import RACE_ENDED, Checkpoint, EpochValue, Storage, TrialEnd, TrialState

EXE = str(Path(sys.executable).parent / "netrace")

#: number -> (validation curve, how it ended); the best is trial 1's 0.7 after its 2nd epoch
CURVES = {
    0: ([0.1, 0.3, 0.2], TrialEnd(0, TrialState.STOPPED, "median rule stopped it after epoch 3")),
    1: ([0.5, 0.7, 0.6, 0.4], TrialEnd(0, TrialState.COMPLETE, "trained 4 epochs")),
    2: ([0.2], TrialEnd(0, TrialState.CUT, f"{RACE_ENDED}: budget spent (11 network-epochs)")),
    # (a netrace before the CUT state recorded these as STOPPED: read as CUT since, see
    # tests/test_storage_contract.py)
    3: ([0.65, 0.6], TrialEnd(0, TrialState.CUT, f"{RACE_ENDED}: budget spent")),
    4: ([0.05], None),  # still running
}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "race.db"
    s = Storage(path)
    other = s.create_study("other", direction="minimize", config={})
    s.add_trials(other.id, [{}] * 5, list(range(5)))  # rows 1-5
    st = s.create_study("s", direction="maximize", config={})
    w = s.register_worker(st.id)
    trials = s.add_trials(st.id, [{"lr": 0.1 * (n + 1)} for n in CURVES], list(CURVES),
                          worker_id=w)
    assert [t.id for t in trials] == [6, 7, 8, 9, 10]  # not the numbers
    for t in trials:
        curve, end = CURVES[t.number]
        s.record_epoch(w, [EpochValue(t.id, e, v) for e, v in enumerate(curve)])
        if end is not None:
            s.record_epoch(w, ends=[TrialEnd(t.id, end.state, end.note)],
                           checkpoints=[Checkpoint(t.id, len(curve) - 1, b"%d" % t.number)])
    return path


def status(db: Path, *args: str) -> subprocess.CompletedProcess:
    out = subprocess.run([EXE, "status", "s", "--storage", str(db), *args], cwd=db.parent,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out


@pytest.mark.slow  # three netrace commands
def test_status_json_names_trials_by_number_and_lists_the_top(db: Path) -> None:
    snap = json.loads(status(db, "--json", "--top", "3").stdout)
    assert (snap["best_trial"], snap["best_value"], snap["best_epoch"]) == (1, 0.7, 2)
    assert (snap["running"], snap["complete"], snap["stopped"], snap["ended_with_race"]) == \
        (1, 1, 1, 2)
    assert snap["top"] == [
        {"trial": 1, "state": "complete", "best_value": 0.7, "best_epoch": 2, "epochs": 4,
         "params": {"lr": 0.2}},
        {"trial": 3, "state": "cut", "best_value": 0.65, "best_epoch": 1, "epochs": 2,
         "params": {"lr": 0.4}},
        {"trial": 0, "state": "stopped", "best_value": 0.3, "best_epoch": 2, "epochs": 3,
         "params": {"lr": 0.1}},
    ]
    assert len(json.loads(status(db, "--json").stdout)["top"]) == 5  # --top 10, the default
    assert json.loads(status(db, "--json", "--top", "0").stdout)["top"] == []


def test_status_text_names_trials_by_number(db: Path) -> None:
    lines = status(db, "--top", "2").stdout.splitlines()
    assert "best      0.7 (trial 1, epoch 2; higher is better)" in lines
    assert ("networks  1 running, 0 queued, 1 finished, 1 stopped early, 0 diverged, 0 failed, "
            "2 cut (training when the race ended)") in lines
    header = lines.index(next(line for line in lines if line.startswith("trial")))
    assert header == len(lines) - 3
    assert [line.split() for line in lines[header + 1:]] == [
        ["1", "complete", "0.7", "2", "4", "lr=0.2"], ["3", "cut", "0.65", "1", "2", "lr=0.4"]]


def test_status_curves_are_named_by_number(db: Path) -> None:
    out = status(db, "--top", "0", "--curves", "c.csv")
    assert "wrote 1 curves" in out.stderr
    rows = pd.read_csv(db.parent / "c.csv")
    assert set(rows["curve_id"]) == {"s/1"}  # only the network that ran to its end
    assert list(rows["value"]) == CURVES[1][0] and list(rows["step"]) == [1, 2, 3, 4]


def test_progress_json_lines_name_trials_by_number(db: Path) -> None:
    s = Storage(db)
    out = io.StringIO()
    p = Progress("json", out=out)
    p.update(snapshot(s, "s"))
    p.finish(snapshot(s, "s"))
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["progress", "finished"]
    for e in events:
        assert (e["best_trial"], e["best_epoch"], e["stopped"], e["ended_with_race"]) == \
            (1, 2, 1, 2)


def test_checkpoints_by_study_and_number(db: Path) -> None:
    s = Storage(db)
    assert [s.checkpoint_of("s", n).data for n in (0, 1, 2, 3)] == [b"0", b"1", b"2", b"3"]
    assert s.checkpoint(1) is None  # the row id 1 is a trial of the other study
