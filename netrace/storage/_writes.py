"""What workers write: new and claimed trials, whole epochs, ends, resumable states (shared by
both implementations; the bulk writes of values and decisions are each implementation's)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from netrace.storage import _schema as db
from netrace.storage._records import (
    Checkpoint,
    DecisionRecord,
    EpochValue,
    ResumeState,
    TrialEnd,
    TrialRecord,
    TrialState,
)

__all__ = ["WritesMixin"]


class WritesMixin:
    _write: sa.Engine
    _read: sa.Engine

    def add_trials(self, study_id: int, params: Sequence[dict[str, Any]], seeds: Sequence[int],
                   *, worker_id: int | None = None) -> list[TrialRecord]:
        """New trials: QUEUED, or RUNNING on ``worker_id`` when a worker starts them at once."""
        if len(params) != len(seeds):
            raise ValueError("one seed per trial")
        if not params:
            return []
        now = time.time()
        state = TrialState.QUEUED if worker_id is None else TrialState.RUNNING
        t = db.trials.c
        with self._write.begin() as c:
            if worker_id is not None:
                self._fence(c, worker_id)
            # an atomic counter numbers trials per study, whatever the concurrency
            end = c.execute(db.studies.update().where(db.studies.c.id == study_id)
                            .values(n_trials=db.studies.c.n_trials + len(params))
                            .returning(db.studies.c.n_trials)).scalar_one()
            first = end - len(params)
            c.execute(db.trials.insert(), [dict(
                study_id=study_id, number=first + i, state=state.value,
                params=json.dumps(p, sort_keys=True), seed=int(s), worker_id=worker_id,
                attempt=0, epochs=0, created=now, note="") for i, (p, s) in
                enumerate(zip(params, seeds))])
            rows = c.execute(sa.select(db.trials).where(
                (t.study_id == study_id) & (t.number >= first) & (t.number < end))
                .order_by(t.number)).all()
        return [db.trial_record(r) for r in rows]

    def claim_queued(self, study_id: int, worker_id: int, limit: int,
                     matching: dict[str, Any] | None = None) -> list[TrialRecord]:
        """Move up to ``limit`` queued trials to RUNNING on this worker, oldest first; with
        ``matching``, only trials whose parameters include those values. Trials another
        worker is claiming at the same moment are skipped, never shared."""
        if limit <= 0:
            return []
        t = db.trials.c
        with self._write.begin() as c:
            self._fence(c, worker_id)
            q = (sa.select(t.id, t.params)
                 .where((t.study_id == study_id) & (t.state == TrialState.QUEUED.value))
                 .order_by(t.number).with_for_update(skip_locked=True))
            ids = []
            for tid, params in c.execute(q):
                p = json.loads(params)
                if matching is None or all(p.get(k) == v for k, v in matching.items()):
                    ids.append(tid)
                    if len(ids) == limit:
                        break
            if not ids:
                return []
            c.execute(db.trials.update().where(t.id.in_(ids)).values(
                state=TrialState.RUNNING.value, worker_id=worker_id))
            rows = c.execute(sa.select(db.trials).where(t.id.in_(ids)).order_by(t.number)).all()
        return [db.trial_record(r) for r in rows]

    def record_epoch(self, worker_id: int | None, values: Iterable[EpochValue] = (),
                     decisions: Iterable[DecisionRecord] = (), ends: Iterable[TrialEnd] = (),
                     checkpoints: Iterable[Checkpoint] = (),
                     states: Iterable[ResumeState] = ()) -> None:
        """One population epoch in one transaction: values, decisions, ends, checkpoints, and
        the worker's heartbeat. Re-recording an epoch replaces it (never counted twice).
        Raises :class:`WorkerLost`, storing nothing, if the worker was declared dead.

        ``states`` are the worker's running trials' states after this epoch, all of them. They
        are stored once the transaction has committed (each implementation where it costs
        least; see :meth:`flush`), so a kill in between leaves the curve ahead, never behind;
        :meth:`recover_worker` cuts it back. A trial that ends drops its state."""
        values, decisions = list(values), list(decisions)
        ends, checkpoints, states = list(ends), list(checkpoints), list(states)
        if states and worker_id is None:
            raise ValueError("states belong to a worker: pass its worker_id")
        self.flush()  # the previous epoch's states first: an end here must delete them
        with self._write.begin() as c:
            if worker_id is not None:
                self._fence(c, worker_id)
            if values:
                self._write_values(c, values, db.direction_of(c, values[0].trial_id))
            if decisions:
                self._write_decisions(c, decisions)
            if checkpoints:
                ins = self._insert(db.checkpoints)
                c.execute(ins.on_conflict_do_update(
                    index_elements=["trial_id"],
                    set_={"epoch": ins.excluded.epoch, "data": ins.excluded.data}),
                    [dict(trial_id=k.trial_id, epoch=k.epoch, data=k.data) for k in checkpoints])
            if ends:
                self._write_ends(c, ends)
        if states:
            assert worker_id is not None
            self._store_states(worker_id, states)

    def _write_ends(self, c: sa.Connection, ends: list[TrialEnd]) -> None:
        t = db.trials.c
        c.execute(db.trials.update().where(t.id == sa.bindparam("tid")).values(
            state=sa.bindparam("st"), ended=time.time(), note=sa.bindparam("nt"),
            end_reason=sa.bindparam("why")),
            [dict(tid=e.trial_id, st=e.state.value, nt=e.note,
                  why=None if e.reason is None else e.reason.value) for e in ends])
        c.execute(db.resume.delete().where(db.resume.c.trial_id.in_([e.trial_id for e in ends])))

    def unclaim(self, trial_ids: Iterable[int]) -> list[int]:
        """Running trials that have not trained a single epoch go back to the queue (a slot
        refilled just as the race ended): they cost nothing, and a later run (a resume with
        more budget) starts them. Trials that did train are left alone. Returns the ids
        re-queued."""
        ids = [int(t) for t in trial_ids]
        if not ids:
            return []
        self.flush()
        t = db.trials.c
        with self._write.begin() as c:
            mine = t.id.in_(ids) & (t.state == TrialState.RUNNING.value) & (t.epochs == 0)
            back = [r[0] for r in c.execute(sa.select(t.id).where(mine)).all()]
            c.execute(db.trials.update().where(mine).values(
                state=TrialState.QUEUED.value, worker_id=None,
                note="re-queued: the race ended before it trained an epoch"))
        return back

    def resume_state(self, trial_id: int) -> ResumeState | None:
        """The state a re-queued trial continues from (None: it starts over). Its ``epochs``
        equals the trial's kept curve length."""
        self.flush()  # this storage's own last states first
        with self._read.connect() as c:
            row = c.execute(sa.select(db.resume).where(db.resume.c.trial_id == trial_id)).first()
        return None if row is None else ResumeState(row.trial_id, row.epochs, bytes(row.data))

    if TYPE_CHECKING:  # provided by the base, the workers' mixin and the implementations
        def flush(self) -> None: ...
        def _fence(self, c: sa.Connection, worker_id: int) -> None: ...
        def _insert(self, table: sa.Table) -> Any: ...
        def _write_values(self, c: sa.Connection, values: list[EpochValue],
                          direction: str) -> None: ...
        def _write_decisions(self, c: sa.Connection, decisions: list[DecisionRecord]
                             ) -> None: ...
        def _store_states(self, worker_id: int, states: list[ResumeState]) -> None: ...
