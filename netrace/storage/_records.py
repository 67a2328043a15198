"""Immutable records and enums that cross the storage boundary: what callers hand the storage
and what it hands back (see :mod:`netrace.storage._contract`). Nothing here knows SQL."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "HEARTBEAT_TIMEOUT",
    "RACE_ENDED",
    "TrialState",
    "StudyState",
    "WorkerState",
    "RaceEndReason",
    "TrialEndReason",
    "StudyRecord",
    "StudyStatus",
    "WorkerRecord",
    "TrialRecord",
    "EpochValue",
    "DecisionRecord",
    "TrialEnd",
    "Checkpoint",
    "ResumeState",
    "EvaluationRecord",
    "WorkerLost",
]

#: Seconds without a heartbeat after which a worker counts as dead, whatever machine it ran
#: on, unless a caller says otherwise (``[race] heartbeat_timeout``).
HEARTBEAT_TIMEOUT = 60.0


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


class StudyState(enum.StrEnum):
    """A study's race: still running (or resumable), or over."""

    RUNNING = "running"
    DONE = "done"


class WorkerState(enum.StrEnum):
    """A worker as the storage knows it."""

    ALIVE = "alive"  # registered and not finished: its heartbeat says whether it still runs
    DONE = "done"    # finished, or released its networks on request
    DEAD = "dead"    # declared dead (its process gone or its heartbeat stopped): its networks
                     # went back to the queue


class _Reason(enum.StrEnum):
    @property
    def label(self) -> str:
        """The reason in words (``budget spent``)."""
        return self.value.replace("_", " ")


class RaceEndReason(_Reason):
    """Why a race (a study) ended; the study keeps a note for people beside it.

    >>> RaceEndReason.BUDGET_SPENT.label
    'budget spent'
    """

    BUDGET_SPENT = "budget_spent"      # the network-epochs of the budget are spent
    TARGET_REACHED = "target_reached"  # a network reached ``[race] target``


class TrialEndReason(_Reason):
    """Why a trial ended. Each reason belongs to one final :class:`TrialState`
    (:attr:`state`); COMPLETE has two.

    >>> TrialEndReason.EARLY_STOPPING.state
    <TrialState.COMPLETE: 'complete'>
    >>> TrialEndReason.of(TrialState.CUT)
    <TrialEndReason.RACE_ENDED: 'race_ended'>
    """

    RULE_STOP = "rule_stop"            # the termination rule stopped it (STOPPED)
    EARLY_STOPPING = "early_stopping"  # its own early stopping ended it (COMPLETE)
    EPOCH_CAP = "epoch_cap"            # it trained ``max_epochs`` epochs (COMPLETE)
    DIVERGED = "diverged"              # its loss became NaN or infinite (DIVERGED)
    RACE_ENDED = "race_ended"          # still training when the race ended (CUT)
    FAILED = "failed"                  # it could not be built or resumed, or its workers
                                       # died too often (FAILED)

    @property
    def state(self) -> TrialState:
        return _REASON_STATE[self]

    @classmethod
    def of(cls, state: TrialState) -> TrialEndReason:
        """The reason of a trial ended in ``state`` when none is given (COMPLETE: its epoch
        cap)."""
        if not state.finished:
            raise ValueError(f"a trial ends in a finished state, not {state}")
        return _DEFAULT_REASON[state]


_REASON_STATE = {
    TrialEndReason.RULE_STOP: TrialState.STOPPED,
    TrialEndReason.EARLY_STOPPING: TrialState.COMPLETE,
    TrialEndReason.EPOCH_CAP: TrialState.COMPLETE,
    TrialEndReason.DIVERGED: TrialState.DIVERGED,
    TrialEndReason.RACE_ENDED: TrialState.CUT,
    TrialEndReason.FAILED: TrialState.FAILED,
}
_DEFAULT_REASON = {
    TrialState.STOPPED: TrialEndReason.RULE_STOP,
    TrialState.COMPLETE: TrialEndReason.EPOCH_CAP,
    TrialState.DIVERGED: TrialEndReason.DIVERGED,
    TrialState.CUT: TrialEndReason.RACE_ENDED,
    TrialState.FAILED: TrialEndReason.FAILED,
}

#: How the note of a trial cut off by the end of the race begins; the race's end note follows.
#: For people only: the storage keeps why a trial ended as :class:`TrialEndReason`. (Studies of
#: netraces before :attr:`TrialState.CUT` recorded such trials as STOPPED with this note; the
#: storage migrates them once, see ``_compat.py``.)
RACE_ENDED = "race ended"


class WorkerLost(RuntimeError):
    """A worker wrote after it had been declared dead (its heartbeat stopped for longer than
    the timeout, or its process looked gone) and its networks were re-queued: nothing of the
    write was stored, and the worker must stop."""


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
class StudyStatus:
    """Whether a study's race is over, why (``None`` while it runs) and a note for people
    (for example ``budget spent (600 network-epochs)``)."""

    state: StudyState
    reason: RaceEndReason | None = None
    note: str = ""

    @property
    def over(self) -> bool:
        return self.state is StudyState.DONE


@dataclass(frozen=True)
class WorkerRecord:
    """A worker as registered: where it runs (``host``, ``pid``), its state, and when it
    started and last gave a heartbeat (Unix time by the storage's clock: the database server's
    for PostgreSQL, so machines whose clocks differ still agree on how old a heartbeat is)."""

    id: int
    study_id: int
    host: str
    pid: int
    state: WorkerState
    started: float
    heartbeat: float

    def __getitem__(self, key: str) -> Any:
        """Compatibility: ``w["pid"]`` as when :meth:`Storage.workers` returned dicts; new code
        reads the attributes."""
        return getattr(self, key)


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
    reason: TrialEndReason | None = None  # why it ended (None while it has not)


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
    """A trial's final state, why it ended (by default the usual reason of that state, see
    :meth:`TrialEndReason.of`) and a note for people.

    >>> TrialEnd(3, TrialState.COMPLETE, "early stopping after epoch 4",
    ...          TrialEndReason.EARLY_STOPPING).reason.label
    'early stopping'
    >>> TrialEnd(3, TrialState.STOPPED).reason
    <TrialEndReason.RULE_STOP: 'rule_stop'>
    """

    trial_id: int
    state: TrialState
    note: str = ""
    reason: TrialEndReason | None = None

    def __post_init__(self) -> None:
        reason = self.reason or TrialEndReason.of(self.state)
        if reason.state is not self.state:
            raise ValueError(f"a trial that ends for {reason} ends {reason.state}, "
                             f"not {self.state}")
        object.__setattr__(self, "reason", reason)


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
