"""The tables both implementations share, and their rows as records.

Schema version 2 keeps why a race or a trial ended as a value (``end_reason``: a
:class:`RaceEndReason` or :class:`TrialEndReason`) beside the note people read; version 1 (the
netrace before it) kept the note alone and is upgraded once when opened (``_compat.py``).
"""

from __future__ import annotations

import json
import math
from typing import Any

import sqlalchemy as sa

from netrace.storage._records import (
    RaceEndReason,
    StudyRecord,
    StudyState,
    StudyStatus,
    TrialEndReason,
    TrialRecord,
    TrialState,
    WorkerRecord,
    WorkerState,
)

SCHEMA_VERSION = 2

meta = sa.MetaData()
studies = sa.Table(
    "studies", meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("direction", sa.String(10), nullable=False),
    sa.Column("target", sa.Float, nullable=True),
    sa.Column("config", sa.Text, nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("n_trials", sa.Integer, nullable=False, default=0),
    sa.Column("state", sa.String(10), nullable=False, default="running"),  # a StudyState
    sa.Column("reason", sa.Text, nullable=False, default=""),  # the note, for people
    sa.Column("end_reason", sa.String(20), nullable=True),  # a RaceEndReason (version 2)
)
workers = sa.Table(
    "workers", meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("study_id", sa.Integer, sa.ForeignKey("studies.id"), nullable=False, index=True),
    sa.Column("host", sa.String(200), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("state", sa.String(10), nullable=False),  # a WorkerState
    sa.Column("started", sa.Float, nullable=False),
    sa.Column("heartbeat", sa.Float, nullable=False),
)
trials = sa.Table(
    "trials", meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("study_id", sa.Integer, sa.ForeignKey("studies.id"), nullable=False),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("state", sa.String(10), nullable=False),
    sa.Column("params", sa.Text, nullable=False),
    sa.Column("seed", sa.BigInteger, nullable=False),
    sa.Column("worker_id", sa.Integer, sa.ForeignKey("workers.id"), nullable=True),
    sa.Column("attempt", sa.Integer, nullable=False, default=0),
    sa.Column("epochs", sa.Integer, nullable=False, default=0),
    sa.Column("best_value", sa.Float, nullable=True),
    sa.Column("best_epoch", sa.Integer, nullable=True),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("ended", sa.Float, nullable=True),
    sa.Column("note", sa.Text, nullable=False, default=""),
    sa.Column("end_reason", sa.String(20), nullable=True),  # a TrialEndReason (version 2)
    sa.UniqueConstraint("study_id", "number"),
    sa.Index("ix_trials_study_state", "study_id", "state"),
)
curve = sa.Table(
    "curve", meta,
    sa.Column("trial_id", sa.Integer, sa.ForeignKey("trials.id"), primary_key=True),
    sa.Column("epoch", sa.Integer, primary_key=True),
    sa.Column("value", sa.Float, nullable=True),  # NULL: NaN or infinite
    sa.Column("metrics", sa.Text, nullable=True),
    sa.Column("recorded", sa.Float, nullable=False, default=0.0),  # when (Unix time)
)
decisions = sa.Table(
    "decisions", meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("trial_id", sa.Integer, sa.ForeignKey("trials.id"), nullable=False, index=True),
    sa.Column("epoch", sa.Integer, nullable=False),
    sa.Column("rule", sa.String(40), nullable=False),
    sa.Column("action", sa.String(20), nullable=False),
    sa.Column("prediction", sa.Text, nullable=True),
)
checkpoints = sa.Table(
    "checkpoints", meta,
    sa.Column("trial_id", sa.Integer, sa.ForeignKey("trials.id"), primary_key=True),
    sa.Column("epoch", sa.Integer, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
)
# The final stage (netrace evaluate): one row per opening of the test part, inserted before
# the test part is opened (so an evaluation that fails after opening it is still counted),
# completed with the result and the final model.
evaluations = sa.Table(
    "evaluations", meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("study_id", sa.Integer, sa.ForeignKey("studies.id"), nullable=False, index=True),
    sa.Column("opened", sa.Float, nullable=False),
    sa.Column("epochs_spent", sa.Integer, nullable=False),
    sa.Column("result", sa.Text, nullable=True),  # JSON, NULL until it is complete
    sa.Column("model", sa.LargeBinary, nullable=True),
)
info = sa.Table(
    "netrace_info", meta,
    sa.Column("key", sa.String(40), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)


def resume_table(metadata: sa.MetaData, *prefixes: str) -> sa.Table:
    """The running trials' resumable states: created apart from the others, by each
    implementation as it needs (PostgreSQL: UNLOGGED)."""
    return sa.Table(
        "resume_states", metadata,
        sa.Column("trial_id", sa.Integer, primary_key=True),
        sa.Column("epochs", sa.Integer, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        prefixes=list(prefixes))


resume = resume_table(sa.MetaData())


def finite(x: float | None) -> float | None:
    """A value as stored: NaN and infinities are missing."""
    return None if x is None or not math.isfinite(x) else float(x)


def study_record(r: Any) -> StudyRecord:
    return StudyRecord(r.id, r.name, r.direction, r.target, json.loads(r.config), r.created)


def study_status(r: Any) -> StudyStatus:
    return StudyStatus(StudyState(r.state),
                       None if r.end_reason is None else RaceEndReason(r.end_reason),
                       r.reason or "")


def trial_record(r: Any) -> TrialRecord:
    return TrialRecord(r.id, r.study_id, r.number, TrialState(r.state), json.loads(r.params),
                       int(r.seed), r.worker_id, r.attempt, r.epochs, r.best_value, r.best_epoch,
                       r.created, r.ended, r.note or "",
                       None if r.end_reason is None else TrialEndReason(r.end_reason))


def worker_record(r: Any) -> WorkerRecord:
    return WorkerRecord(r.id, r.study_id, r.host, r.pid, WorkerState(r.state), r.started,
                        r.heartbeat)


def in_states(states: Any) -> Any:
    """The condition "a trial in one of ``states``"."""
    return trials.c.state.in_([TrialState(s).value for s in states])


def direction_of(c: sa.Connection, trial_id: int) -> str:
    """The direction (maximize | minimize) of the study a trial belongs to."""
    return c.execute(sa.select(studies.c.direction).join(
        trials, trials.c.study_id == studies.c.id)
        .where(trials.c.id == trial_id)).scalar_one()
