"""Persistence of studies: trials, validation curves, rule decisions, checkpoints, the
resumable states of running trials, workers and their heartbeats.

One contract (``_contract.py``: :class:`StudyStorage` and its roles), records and enums in
and out (``_records.py``), two implementations over one shared SQLAlchemy base:
SQLite by default (one file, no server); PostgreSQL (``postgresql://``) for several machines.
``Storage(url)`` opens the one the URL names.
"""

from __future__ import annotations

from netrace.storage._contract import (
    EvaluationBook,
    StudyBook,
    StudyStorage,
    TrialReader,
    TrialWriter,
    WorkerBook,
)
from netrace.storage._records import (
    HEARTBEAT_TIMEOUT,
    RACE_ENDED,
    Checkpoint,
    DecisionRecord,
    EpochValue,
    EvaluationRecord,
    RaceEndReason,
    ResumeState,
    StudyRecord,
    StudyState,
    StudyStatus,
    TrialEnd,
    TrialEndReason,
    TrialRecord,
    TrialState,
    WorkerLost,
    WorkerRecord,
    WorkerState,
)
from netrace.storage._storage import Storage, open_storage, storage_url

__all__ = [
    "Checkpoint",
    "DecisionRecord",
    "EpochValue",
    "EvaluationBook",
    "EvaluationRecord",
    "HEARTBEAT_TIMEOUT",
    "RACE_ENDED",
    "RaceEndReason",
    "ResumeState",
    "Storage",
    "StudyBook",
    "StudyRecord",
    "StudyState",
    "StudyStatus",
    "StudyStorage",
    "TrialEnd",
    "TrialEndReason",
    "TrialReader",
    "TrialRecord",
    "TrialState",
    "TrialWriter",
    "WorkerBook",
    "WorkerLost",
    "WorkerRecord",
    "WorkerState",
    "open_storage",
    "storage_url",
]
