"""Persistence of studies: trials, validation curves, rule decisions, checkpoints, workers.

SQLite by default (one file, no server); PostgreSQL (``postgresql://``) for several machines.
"""

from __future__ import annotations

from netrace.storage._records import (
    Checkpoint,
    DecisionRecord,
    EpochValue,
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
    "Storage",
    "StudyRecord",
    "TrialEnd",
    "TrialRecord",
    "TrialState",
    "open_storage",
    "storage_url",
]
