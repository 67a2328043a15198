"""Immutable records that cross the storage boundary."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "TrialState",
    "StudyRecord",
    "TrialRecord",
    "EpochValue",
    "DecisionRecord",
    "TrialEnd",
    "Checkpoint",
    "ResumeState",
    "EvaluationRecord",
]


class TrialState(enum.StrEnum):
    """Where a trial (one network with its hyperparameters and seed) is in its life."""

    QUEUED = "queued"        # waiting for a worker: new, or re-queued after its worker died
    RUNNING = "running"      # a worker trains it
    COMPLETE = "complete"    # trained to its epoch cap or stopped by its own early stopping
    STOPPED = "stopped"      # stopped by the termination rule
    CUT = "cut"              # unfinished when the race ended (budget spent or target reached)
    DIVERGED = "diverged"    # its loss became NaN or infinite
    FAILED = "failed"        # an error, or its worker died too often

    @property
    def finished(self) -> bool:
        return self not in (TrialState.QUEUED, TrialState.RUNNING)


#: How the note of a trial cut off by the end of the race (not stopped by the termination
#: rule) begins; the race's end reason follows. Studies of netraces before
#: :attr:`TrialState.CUT` recorded such trials as STOPPED with this note: the storage reads
#: those as CUT.
RACE_ENDED = "race ended"


@dataclass(frozen=True)
class StudyRecord:
    """A study: one race, by name, with its direction and config."""

    id: int
    name: str
    direction: str  # "maximize" | "minimize"
    target: float | None
    config: dict[str, Any]
    created: float


@dataclass(frozen=True)
class TrialRecord:
    """A trial as stored; ``best_value`` follows the study's direction.

    ``number`` is the trial's number in its study, the one netrace shows and users pass;
    ``id`` is the storage's row id. ``best_epoch`` is the curve's 0-based index of the best
    value (users are shown ``best_epoch + 1``, epochs counted from 1); ``epochs`` a count."""

    id: int
    study_id: int
    number: int
    state: TrialState
    params: dict[str, Any]
    seed: int
    worker_id: int | None
    attempt: int
    epochs: int
    best_value: float | None
    best_epoch: int | None
    created: float
    ended: float | None
    note: str = ""


@dataclass(frozen=True)
class EpochValue:
    """A trial's validation value after an epoch (NaN allowed: stored as missing)."""

    trial_id: int
    epoch: int
    value: float
    metrics: dict[str, float] | None = None


@dataclass(frozen=True)
class DecisionRecord:
    """What the termination rule decided for a trial after an epoch, and the prediction
    behind it (for example the forecast's mean, std and probability of reaching the best)."""

    trial_id: int
    epoch: int
    rule: str
    action: str
    prediction: dict[str, Any] | None = None


@dataclass(frozen=True)
class TrialEnd:
    """A trial's final state, with a note (why it stopped, failed or diverged)."""

    trial_id: int
    state: TrialState
    note: str = ""


@dataclass(frozen=True)
class Checkpoint:
    """Serialized state of a trial at an epoch: its best weights and fitted preprocessing.
    ``trial_id`` is the storage's row id; ``epoch`` the curve's 0-based index (epoch
    ``epoch + 1`` as users count)."""

    trial_id: int
    epoch: int
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class ResumeState:
    """A running trial's training state after ``epochs`` epochs, saved after every epoch so
    that another worker can continue it where it was if its worker dies. ``epochs`` is the
    length of the curve it goes with: the storage keeps the two in agreement. ``data`` is
    opaque here (the race encodes the networks' weights, optimizer state and books)."""

    trial_id: int
    epochs: int
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class EvaluationRecord:
    """One opening of a study's test part by the final evaluation: when, after how many
    network-epochs of racing, and its result (``None`` if it did not complete)."""

    id: int
    study_id: int
    opened: float
    epochs_spent: int
    result: dict[str, Any] | None
