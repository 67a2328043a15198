"""What status, the report, the sampler and the evaluation read, and the final stage's openings
of the test part (shared by both implementations)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa

from netrace.errors import UserError
from netrace.storage import _schema as db
from netrace.storage._records import (
    Checkpoint,
    DecisionRecord,
    EvaluationRecord,
    StudyRecord,
    TrialRecord,
    TrialState,
)

__all__ = ["ReadsMixin", "EvaluationsMixin"]


class ReadsMixin:
    _read: sa.Engine

    def trials(self, study_id: int,
               states: Iterable[TrialState] | None = None) -> list[TrialRecord]:
        q = sa.select(db.trials).where(db.trials.c.study_id == study_id)
        if states is not None:
            q = q.where(db.in_states(states))
        with self._read.connect() as c:
            return [db.trial_record(r) for r in c.execute(q.order_by(db.trials.c.number))]

    def trials_changed(self, study_id: int, after_id: int,
                       ids: Iterable[int] = ()) -> list[TrialRecord]:
        """The study's trials added after trial id ``after_id``, and the trials ``ids`` (those
        a caller saw unfinished last time: whatever changed since is among them), by id: what
        a worker's sampler has not seen yet, read in time that does not grow with the study."""
        q = sa.select(db.trials).where(db.trials.c.study_id == study_id)
        ids = sorted(set(ids))
        out: dict[int, TrialRecord] = {}
        with self._read.connect() as c:
            for r in c.execute(q.where(db.trials.c.id > after_id)):
                out[r.id] = db.trial_record(r)
            for i in range(0, len(ids), 500):
                for r in c.execute(q.where(db.trials.c.id.in_(ids[i:i + 500]))):
                    out[r.id] = db.trial_record(r)
        return [out[k] for k in sorted(out)]

    def trial(self, trial_id: int) -> TrialRecord:
        """A trial by its row id (users know trials by number: :meth:`trial_number`)."""
        with self._read.connect() as c:
            row = c.execute(sa.select(db.trials).where(db.trials.c.id == trial_id)).one()
        return db.trial_record(row)

    def trial_number(self, study_id: int, number: int) -> TrialRecord:
        """The trial numbered ``number`` in the study: the number ``netrace status`` shows.

        >>> import tempfile, os
        >>> from netrace.storage import Storage
        >>> s = Storage(os.path.join(tempfile.mkdtemp(), "race.db"))
        >>> a, b = (s.create_study(n, direction="maximize", config={}) for n in "ab")
        >>> _ = s.add_trials(a.id, [{}], [1]); _ = s.add_trials(b.id, [{}, {}], [2, 3])
        >>> t = s.trial_number(b.id, 1)
        >>> t.number, t.seed, t.id
        (1, 3, 3)
        >>> s.trial_number(b.id, 2)
        Traceback (most recent call last):
        ...
        netrace.errors.UserError: study 'b' has no trial 2; its trials are numbered 0 to 1
        """
        with self._read.connect() as c:
            row = c.execute(sa.select(db.trials).where(
                (db.trials.c.study_id == study_id) & (db.trials.c.number == number))).first()
            if row is not None:
                return db.trial_record(row)
            low, high = c.execute(sa.select(sa.func.min(db.trials.c.number),
                                            sa.func.max(db.trials.c.number))
                                  .where(db.trials.c.study_id == study_id)).one()
        name = self._study_by_id(study_id).name
        valid = ("it has no trials yet" if low is None else
                 f"its trials are numbered {low} to {high}")
        raise UserError(f"study '{name}' has no trial {number!r}; {valid}")

    def curve(self, trial_id: int) -> tuple[list[int], list[float]]:
        """A trial's validation curve: epochs and values (NaN where not finite)."""
        with self._read.connect() as c:
            v = db.curve.c
            rows = c.execute(sa.select(v.epoch, v.value).where(v.trial_id == trial_id)
                             .order_by(v.epoch)).all()
        return [r[0] for r in rows], [math.nan if r[1] is None else float(r[1]) for r in rows]

    def curves(self, study_id: int, states: Iterable[TrialState] | None = None
               ) -> dict[int, np.ndarray]:
        """Validation curves of a study's trials (in these states), in one query."""
        q = (sa.select(db.curve.c.trial_id, db.curve.c.epoch, db.curve.c.value)
             .join(db.trials, db.trials.c.id == db.curve.c.trial_id)
             .where(db.trials.c.study_id == study_id))
        if states is not None:
            q = q.where(db.in_states(states))
        with self._read.connect() as c:
            rows = c.execute(q.order_by(db.curve.c.trial_id, db.curve.c.epoch)).all()
        out: dict[int, list[float]] = {}
        for trial_id, _epoch, value in rows:
            out.setdefault(trial_id, []).append(math.nan if value is None else float(value))
        return {k: np.asarray(v) for k, v in out.items()}

    def curve_metrics(self, study_id: int, trial_ids: Iterable[int] | None = None
                      ) -> dict[int, list[dict[str, float]]]:
        """Every recorded epoch's metrics of a study's trials (all, or these), in epoch order:
        ``{trial id: [metrics of epoch 0, of epoch 1, ...]}``; an epoch recorded without
        metrics gives ``{}``, a metric that was not a number ``nan``."""
        q = (sa.select(db.curve.c.trial_id, db.curve.c.epoch, db.curve.c.metrics)
             .join(db.trials, db.trials.c.id == db.curve.c.trial_id)
             .where(db.trials.c.study_id == study_id))
        if trial_ids is not None:
            q = q.where(db.curve.c.trial_id.in_(list(trial_ids)))
        with self._read.connect() as c:
            rows = c.execute(q.order_by(db.curve.c.trial_id, db.curve.c.epoch)).all()
        out: dict[int, list[dict[str, float]]] = {}
        for trial_id, _epoch, metrics in rows:
            m = json.loads(metrics) if metrics else {}
            out.setdefault(trial_id, []).append(
                {k: math.nan if v is None else float(v) for k, v in m.items()})
        return out

    def timeline(self, study_id: int) -> list[tuple[float, int, int, float]]:
        """Every recorded epoch of the study in the order it was recorded:
        (time, trial id, epoch, value)."""
        with self._read.connect() as c:
            rows = c.execute(sa.select(db.curve.c.recorded, db.curve.c.trial_id, db.curve.c.epoch,
                                       db.curve.c.value)
                             .join(db.trials, db.trials.c.id == db.curve.c.trial_id)
                             .where(db.trials.c.study_id == study_id)
                             .order_by(db.curve.c.recorded, db.curve.c.trial_id, db.curve.c.epoch))
            return [(r[0], r[1], r[2], math.nan if r[3] is None else float(r[3])) for r in rows]

    def decisions(self, trial_id: int) -> list[DecisionRecord]:
        return self.decisions_of([trial_id]).get(trial_id, [])

    def decisions_of(self, trial_ids: Iterable[int]) -> dict[int, list[DecisionRecord]]:
        """The decisions of several trials (those with none are left out), in few queries."""
        ids, out = list(trial_ids), {}
        with self._read.connect() as c:
            for i in range(0, len(ids), 500):
                d = db.decisions.c
                rows = c.execute(sa.select(db.decisions).where(
                    d.trial_id.in_(ids[i : i + 500])).order_by(d.id)).all()
                for r in rows:
                    out.setdefault(r.trial_id, []).append(DecisionRecord(
                        r.trial_id, r.epoch, r.rule, r.action,
                        None if r.prediction is None else json.loads(r.prediction)))
        return out

    def checkpoint(self, trial_id: int) -> Checkpoint | None:
        """The checkpoint of a trial by its row id (users: :meth:`checkpoint_of`)."""
        with self._read.connect() as c:
            row = c.execute(sa.select(db.checkpoints).where(db.checkpoints.c.trial_id == trial_id)
                            ).first()
        return None if row is None else Checkpoint(row.trial_id, row.epoch, bytes(row.data))

    def checkpoint_of(self, study: str, number: int) -> Checkpoint:
        """The checkpoint of trial ``number`` of the study named ``study`` (the study and
        trial ``netrace status`` shows): its best weights and fitted preprocessing, which
        :func:`netrace.race.load_checkpoint` turns back into a network. Kept for every network
        that ended after training at least an epoch, unless it diverged."""
        st = self.get_study(study)
        t = self.trial_number(st.id, number)
        ck = self.checkpoint(t.id)
        if ck is not None:
            return ck
        why = {TrialState.QUEUED: "it has not finished (queued): a network's checkpoint is "
                                  "stored when it ends",
               TrialState.RUNNING: "it has not finished (running): a network's checkpoint is "
                                   "stored when it ends",
               TrialState.DIVERGED: "it diverged (its loss became NaN or infinite)",
               TrialState.FAILED: f"it failed ({t.note})"}.get(t.state, "it trained no epoch")
        raise UserError(f"trial {number} of study '{study}' has no checkpoint: {why}; "
                        f"netrace status {study} --top 10 lists the best networks")

    def epochs_spent(self, study_id: int) -> int:
        """Network-epochs recorded in the study (the race's budget is counted in these)."""
        with self._read.connect() as c:
            return int(c.execute(sa.select(sa.func.count()).select_from(db.curve).join(
                db.trials, db.trials.c.id == db.curve.c.trial_id).where(
                db.trials.c.study_id == study_id)).scalar_one())

    def counts(self, study_id: int) -> dict[TrialState, int]:
        """Trials per state (every state, 0 if none)."""
        with self._read.connect() as c:
            rows = c.execute(sa.select(db.trials.c.state, sa.func.count()).where(
                db.trials.c.study_id == study_id).group_by(db.trials.c.state)).all()
        out = {s: 0 for s in TrialState}
        out.update({TrialState(r[0]): int(r[1]) for r in rows})
        return out

    def ended_with_race(self, study_id: int) -> int:
        """Trials cut off unfinished when the race ended (:attr:`TrialState.CUT`), as opposed
        to those the termination rule stopped."""
        return self.counts(study_id)[TrialState.CUT]

    def best_trial(self, study_id: int) -> TrialRecord | None:
        study = self._study_by_id(study_id)
        order = (db.trials.c.best_value.desc() if study.direction == "maximize"
                 else db.trials.c.best_value.asc())
        with self._read.connect() as c:
            row = c.execute(sa.select(db.trials).where(
                (db.trials.c.study_id == study_id) & db.trials.c.best_value.is_not(None))
                .order_by(order, db.trials.c.number).limit(1)).first()
        return None if row is None else db.trial_record(row)

    if TYPE_CHECKING:  # provided by the studies' mixin
        def get_study(self, name: str) -> StudyRecord: ...
        def _study_by_id(self, study_id: int) -> StudyRecord: ...


class EvaluationsMixin:
    _write: sa.Engine
    _read: sa.Engine

    def open_evaluation(self, study_id: int) -> int:
        """Count an opening of the study's test part, before it happens; returns its id, for
        :meth:`complete_evaluation`."""
        spent = self.epochs_spent(study_id)
        with self._write.begin() as c:
            return int(c.execute(db.evaluations.insert().values(
                study_id=study_id, opened=time.time(), epochs_spent=spent)).inserted_primary_key[0])

    def complete_evaluation(self, evaluation_id: int, result: dict[str, Any],
                            model: bytes) -> None:
        """Store an opening's result (JSON-able) and the final model it made (bytes)."""
        with self._write.begin() as c:
            c.execute(db.evaluations.update().where(db.evaluations.c.id == evaluation_id).values(
                result=json.dumps(result), model=model))

    def evaluations(self, study_id: int) -> list[EvaluationRecord]:
        """Every opening of the study's test part, oldest first (``result`` is ``None`` for
        one that did not complete); the model's bytes are not read here."""
        e = db.evaluations.c
        with self._read.connect() as c:
            rows = c.execute(sa.select(e.id, e.study_id, e.opened, e.epochs_spent, e.result)
                             .where(e.study_id == study_id).order_by(e.id)).all()
        return [EvaluationRecord(r.id, r.study_id, r.opened, r.epochs_spent,
                                 None if r.result is None else json.loads(r.result))
                for r in rows]

    def evaluation_model(self, evaluation_id: int) -> bytes | None:
        """The final model an opening stored."""
        with self._read.connect() as c:
            row = c.execute(sa.select(db.evaluations.c.model).where(
                db.evaluations.c.id == evaluation_id)).first()
        return None if row is None or row[0] is None else bytes(row[0])

    if TYPE_CHECKING:  # provided by the reads' mixin
        def epochs_spent(self, study_id: int) -> int: ...
