"""Workers and their liveness: registered, heartbeating, finished, or declared dead with their
running trials re-queued (shared by both implementations).

A worker is alive while its heartbeat is younger than the timeout, whatever machine it runs
on: every epoch it writes is a heartbeat, and a timer (``_heartbeat.py``) beats between them.
Whoever declares it dead (:meth:`recover_worker`) takes its row from ``alive`` to ``dead`` in
the transaction that re-queues its trials; every write of a worker first checks, in its own
transaction, that its row is still ``alive`` (:meth:`_fence`), so a worker declared dead while
it was only slow (a frozen process, a machine cut off from the database) stores nothing more
and stops with :class:`WorkerLost`, and two coordinators never re-queue the same trials twice.
"""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from netrace.storage import _schema as db
from netrace.storage._heartbeat import Heartbeat
from netrace.storage._records import (
    ResumeState,
    TrialEndReason,
    TrialState,
    WorkerLost,
    WorkerRecord,
    WorkerState,
)

__all__ = ["WorkersMixin"]

_ALIVE = WorkerState.ALIVE.value


class WorkersMixin:
    _write: sa.Engine
    _read: sa.Engine
    _beats: dict[int, Heartbeat]

    def register_worker(self, study_id: int, *, heartbeat_timeout: float | None = None,
                        host: str | None = None, pid: int | None = None) -> int:
        """A new worker of the study, alive, on this machine and process unless ``host`` and
        ``pid`` say otherwise. With ``heartbeat_timeout`` (seconds), a timer keeps its
        heartbeat well inside that timeout until :meth:`finish_worker` or
        :meth:`release_worker` (or until it is declared dead). Returns its id."""
        now = self._clock()
        with self._write.begin() as c:
            wid = int(c.execute(db.workers.insert().values(
                study_id=study_id, host=host or socket.gethostname(),
                pid=os.getpid() if pid is None else pid, state=_ALIVE, started=now,
                heartbeat=now)).inserted_primary_key[0])
        if heartbeat_timeout is not None:
            self._beats[wid] = Heartbeat(lambda: self.heartbeat(wid), heartbeat_timeout)
        return wid

    def heartbeat(self, worker_id: int) -> bool:
        """The worker is alive now. False if it was declared dead (nothing is written)."""
        with self._write.begin() as c:
            return self._beat(c, worker_id)

    def _beat(self, c: sa.Connection, worker_id: int) -> bool:
        w = db.workers.c
        return c.execute(db.workers.update().where((w.id == worker_id) & (w.state == _ALIVE))
                         .values(heartbeat=self._clock())).rowcount == 1

    def _fence(self, c: sa.Connection, worker_id: int) -> None:
        """A write of this worker begins here: its heartbeat, and :class:`WorkerLost` (the
        transaction rolls back) if it has been declared dead."""
        if not self._beat(c, worker_id):
            raise WorkerLost(f"worker {worker_id} was declared dead (its heartbeat stopped for "
                             "longer than the timeout, or its process looked gone) and its "
                             "networks were re-queued; it stops here")

    def workers(self, study_id: int) -> list[WorkerRecord]:
        """The study's workers, oldest first."""
        with self._read.connect() as c:
            rows = c.execute(sa.select(db.workers).where(db.workers.c.study_id == study_id)
                             .order_by(db.workers.c.id)).all()
        return [db.worker_record(r) for r in rows]

    def stale_workers(self, study_id: int, timeout: float) -> list[int]:
        """Workers marked alive whose last heartbeat is older than ``timeout`` seconds, by the
        storage's clock, on any machine."""
        w = db.workers.c
        with self._read.connect() as c:
            rows = c.execute(sa.select(w.id).where(
                (w.study_id == study_id) & (w.state == _ALIVE)
                & (w.heartbeat < self._clock() - timeout)).order_by(w.id))
            return [r[0] for r in rows]

    def finish_worker(self, worker_id: int) -> None:
        """The worker is done (a worker declared dead stays dead)."""
        self._stop_beat(worker_id)
        self.flush()
        w = db.workers.c
        with self._write.begin() as c:
            c.execute(db.workers.update().where((w.id == worker_id) & (w.state == _ALIVE))
                      .values(state=WorkerState.DONE.value, heartbeat=self._clock()))
        self._drop_saved_states(worker_id)

    def recover_worker(self, worker_id: int, *, max_attempts: int = 3) -> list[int]:
        """A worker died (its process is gone, or its heartbeat stopped): it is declared dead
        and its running trials go back to the queue (or fail after ``max_attempts``). A
        re-queued trial keeps its id, its :class:`ResumeState` and its curve up to that
        state's epoch (without a state: up to its checkpoint; with neither, the curve is
        cleared), so no epoch is ever counted twice and a worker that claims it continues it
        from there. Returns their ids; none if the worker was no longer alive (finished, or
        recovered already by this or another coordinator)."""
        return self._requeue(worker_id, WorkerState.DEAD, died=True, max_attempts=max_attempts)

    def release_worker(self, worker_id: int) -> list[int]:
        """A worker stops early on request (Ctrl-C): its running trials go back to the queue,
        for a later run to train them, and the worker is done."""
        return self._requeue(worker_id, WorkerState.DONE, died=False, max_attempts=0)

    def _requeue(self, worker_id: int, state: WorkerState, *, died: bool,
                 max_attempts: int) -> list[int]:
        self._stop_beat(worker_id)
        self.flush()
        saved = self._saved_states(worker_id)
        w, t = db.workers.c, db.trials.c
        ids = []
        with self._write.begin() as c:
            took = c.execute(db.workers.update().where((w.id == worker_id) & (w.state == _ALIVE))
                             .values(state=state.value)).rowcount
            if took:
                rows = c.execute(sa.select(t.id, t.attempt).where(
                    (t.worker_id == worker_id) & (t.state == TrialState.RUNNING.value))).all()
                for trial_id, attempt in rows:
                    ids.append(trial_id)
                    attempts = attempt + 1 if died else attempt
                    failed = died and attempts >= max_attempts
                    note = (f"its worker died {attempts} times" if failed else
                            f"re-queued after its worker {worker_id} died" if died else
                            "re-queued: the run was stopped before it finished")
                    self._requeue_trial(c, trial_id, attempts, saved.get(trial_id), note,
                                        failed=failed)
        if took:
            self._drop_saved_states(worker_id)  # its states are in the table now
        return ids

    def _requeue_trial(self, c: sa.Connection, trial_id: int, attempts: int,
                       newest: ResumeState | None, note: str, *, failed: bool) -> None:
        keep = self._resume_point(c, trial_id, newest)
        c.execute(db.curve.delete().where((db.curve.c.trial_id == trial_id)
                                          & (db.curve.c.epoch > keep)))
        c.execute(db.decisions.delete().where((db.decisions.c.trial_id == trial_id)
                                              & (db.decisions.c.epoch > keep)))
        best = self._best_from_curve(c, trial_id)
        state, reason = TrialState.QUEUED, None
        if failed:
            c.execute(db.resume.delete().where(db.resume.c.trial_id == trial_id))
            state, reason = TrialState.FAILED, TrialEndReason.FAILED.value
        c.execute(db.trials.update().where(db.trials.c.id == trial_id).values(
            state=state.value, worker_id=None, attempt=attempts, epochs=keep + 1,
            best_value=best[0], best_epoch=best[1], ended=time.time() if failed else None,
            note=note, end_reason=reason))

    def _resume_point(self, c: sa.Connection, trial_id: int, newest: ResumeState | None) -> int:
        """The last epoch a re-queued trial keeps: its saved state's (the newer of the dead
        worker's own and the table's), else its checkpoint's, else none (-1)."""
        r = db.resume.c
        if newest is not None:
            row = c.execute(sa.select(r.epochs).where(r.trial_id == trial_id)).first()
            if row is None or row[0] < newest.epochs:
                self._upsert_states(c, [newest])
        row = c.execute(sa.select(r.epochs).where(r.trial_id == trial_id)).first()
        if row is not None:
            recorded = c.execute(sa.select(sa.func.count()).select_from(db.curve).where(
                (db.curve.c.trial_id == trial_id) & (db.curve.c.epoch < row[0]))).scalar_one()
            if recorded == row[0]:  # the curve reaches the state (it is never behind it)
                return int(row[0]) - 1
            c.execute(db.resume.delete().where(r.trial_id == trial_id))
        ck = c.execute(sa.select(db.checkpoints.c.epoch)
                       .where(db.checkpoints.c.trial_id == trial_id)).first()
        return -1 if ck is None else int(ck[0])

    def _best_from_curve(self, c: sa.Connection, trial_id: int) -> tuple[float | None, int | None]:
        v = db.curve.c
        order = v.value.desc() if db.direction_of(c, trial_id) == "maximize" else v.value.asc()
        row = c.execute(sa.select(v.value, v.epoch).where(
            (v.trial_id == trial_id) & v.value.is_not(None))
            .order_by(order, v.epoch).limit(1)).first()
        return (None, None) if row is None else (float(row[0]), int(row[1]))

    def _stop_beat(self, worker_id: int) -> None:
        beat = self._beats.pop(worker_id, None)
        if beat is not None:
            beat.stop()

    if TYPE_CHECKING:  # provided by the base and the implementations
        def _clock(self) -> Any: ...
        def flush(self) -> None: ...
        def _saved_states(self, worker_id: int) -> dict[int, ResumeState]: ...
        def _drop_saved_states(self, worker_id: int) -> None: ...
        def _upsert_states(self, c: sa.Connection, states: list[ResumeState]) -> None: ...
