"""Persistence of studies: trials, validation curves, rule decisions, checkpoints, the
resumable states of running trials, workers.

SQLite by default (one file, no server); PostgreSQL (``postgresql://``) for several machines.
"""

from __future__ import annotations

from netrace.storage._records import (
    RACE_ENDED,
    Checkpoint,
    DecisionRecord,
    EpochValue,
    EvaluationRecord,
    ResumeState,
    StudyRecord,
    TrialEnd,
    TrialRecord,
    TrialState,
)
from netrace.storage._storage import Storage, open_storage, storage_url

__all__ = [
    "Checkpoint",
    "DecisionRecord",
    "EpochValue",
    "EvaluationRecord",
    "RACE_ENDED",
    "ResumeState",
    "Storage",
    "StudyRecord",
    "TrialEnd",
    "TrialRecord",
    "TrialState",
    "open_storage",
    "storage_url",
]
