"""The storage contract: what the race, the CLI and the evaluation may ask of a study database.

Records and enums go in and out (:mod:`netrace.storage._records`), never SQL rows, dicts or
sentences to parse: a trial's state is a :class:`TrialState` and why it ended a
:class:`TrialEndReason`; a race's end is a :class:`RaceEndReason`; a worker is a
:class:`WorkerRecord`. Notes are for people and never steer anything.

The contract comes in five roles, each a small :class:`~typing.Protocol`; :class:`StudyStorage`
is all five. Two implementations keep it (``_sqlite.py``, ``_postgres.py``), over one shared
SQLAlchemy base (``_storage.py``); ``tests/test_storage.py`` runs on both.

Promises every implementation keeps:

- Trials are numbered 0, 1, 2... in their study, whatever the concurrency; a queued trial is
  claimed by one worker only.
- :meth:`TrialWriter.record_epoch` is one transaction: a committed epoch survives any crash,
  re-recording an epoch replaces it (never counted twice), and a running trial's curve and
  its resumable state always agree after a recovery.
- Liveness is by heartbeat: a registered worker is alive while its heartbeat is younger than
  the timeout, whatever machine it runs on. A worker declared dead (:meth:`WorkerBook.
  recover_worker`) has its running trials re-queued with their states, and every later write
  of that worker raises :class:`WorkerLost` and stores nothing. Recovering a worker twice, or
  by two coordinators at once, re-queues its trials once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from netrace.storage._records import (
    Checkpoint,
    DecisionRecord,
    EpochValue,
    EvaluationRecord,
    RaceEndReason,
    ResumeState,
    StudyRecord,
    StudyStatus,
    TrialEnd,
    TrialRecord,
    TrialState,
    WorkerRecord,
)

__all__ = ["StudyBook", "WorkerBook", "TrialWriter", "TrialReader", "EvaluationBook",
           "StudyStorage"]


@runtime_checkable
class StudyBook(Protocol):
    """Studies: one race each, by name."""

    def create_study(self, name: str, *, direction: str, config: dict[str, Any],
                     target: float | None = None, load_if_exists: bool = True
                     ) -> StudyRecord: ...

    def find_study(self, name: str) -> StudyRecord | None: ...

    def get_study(self, name: str) -> StudyRecord: ...

    def study_names(self) -> list[str]: ...

    def set_study_config(self, study_id: int, config: dict[str, Any],
                         target: float | None) -> None: ...

    def study_status(self, study_id: int) -> StudyStatus: ...

    def finish_study(self, study_id: int, reason: RaceEndReason, note: str = "") -> bool: ...

    def reopen_study(self, study_id: int) -> None: ...


@runtime_checkable
class WorkerBook(Protocol):
    """Workers and their liveness."""

    def register_worker(self, study_id: int, *, heartbeat_timeout: float | None = None,
                        host: str | None = None, pid: int | None = None) -> int: ...

    def heartbeat(self, worker_id: int) -> bool: ...

    def workers(self, study_id: int) -> list[WorkerRecord]: ...

    def stale_workers(self, study_id: int, timeout: float) -> list[int]: ...

    def finish_worker(self, worker_id: int) -> None: ...

    def recover_worker(self, worker_id: int, *, max_attempts: int = 3) -> list[int]: ...

    def release_worker(self, worker_id: int) -> list[int]: ...


@runtime_checkable
class TrialWriter(Protocol):
    """What workers write: new and claimed trials, epochs, ends, states."""

    def add_trials(self, study_id: int, params: Sequence[dict[str, Any]], seeds: Sequence[int],
                   *, worker_id: int | None = None) -> list[TrialRecord]: ...

    def claim_queued(self, study_id: int, worker_id: int, limit: int,
                     matching: dict[str, Any] | None = None) -> list[TrialRecord]: ...

    def record_epoch(self, worker_id: int | None, values: Iterable[EpochValue] = (),
                     decisions: Iterable[DecisionRecord] = (), ends: Iterable[TrialEnd] = (),
                     checkpoints: Iterable[Checkpoint] = (),
                     states: Iterable[ResumeState] = ()) -> None: ...

    def unclaim(self, trial_ids: Iterable[int]) -> list[int]: ...

    def resume_state(self, trial_id: int) -> ResumeState | None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class TrialReader(Protocol):
    """What status, the report, the sampler and the evaluation read."""

    def trials(self, study_id: int,
               states: Iterable[TrialState] | None = None) -> list[TrialRecord]: ...

    def trials_changed(self, study_id: int, after_id: int,
                       ids: Iterable[int] = ()) -> list[TrialRecord]: ...

    def trial(self, trial_id: int) -> TrialRecord: ...

    def trial_number(self, study_id: int, number: int) -> TrialRecord: ...

    def curve(self, trial_id: int) -> tuple[list[int], list[float]]: ...

    def curves(self, study_id: int, states: Iterable[TrialState] | None = None
               ) -> dict[int, np.ndarray]: ...

    def curve_metrics(self, study_id: int, trial_ids: Iterable[int] | None = None
                      ) -> dict[int, list[dict[str, float]]]: ...

    def timeline(self, study_id: int) -> list[tuple[float, int, int, float]]: ...

    def decisions_of(self, trial_ids: Iterable[int]) -> dict[int, list[DecisionRecord]]: ...

    def checkpoint(self, trial_id: int) -> Checkpoint | None: ...

    def epochs_spent(self, study_id: int) -> int: ...

    def counts(self, study_id: int) -> dict[TrialState, int]: ...

    def best_trial(self, study_id: int) -> TrialRecord | None: ...


@runtime_checkable
class EvaluationBook(Protocol):
    """The final stage's openings of the test part."""

    def open_evaluation(self, study_id: int) -> int: ...

    def complete_evaluation(self, evaluation_id: int, result: dict[str, Any],
                            model: bytes) -> None: ...

    def evaluations(self, study_id: int) -> list[EvaluationRecord]: ...

    def evaluation_model(self, evaluation_id: int) -> bytes | None: ...


@runtime_checkable
class StudyStorage(StudyBook, WorkerBook, TrialWriter, TrialReader, EvaluationBook, Protocol):
    """The whole contract: what :class:`~netrace.storage.Storage` (either implementation)
    keeps."""
