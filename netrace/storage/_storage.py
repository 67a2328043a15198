"""The study database: SQLite (one file, no server) or PostgreSQL (several machines).

One implementation over SQLAlchemy Core serves both. Writes are batched: a worker writes a whole
epoch of its population (validation values, rule decisions, finished trials, checkpoints and its
heartbeat) in one transaction with ``executemany``, so storage costs one commit per population
epoch, not one per network. A committed epoch survives a crash of any process (SQLite in WAL mode
with ``synchronous=NORMAL``; PostgreSQL's own log).

Running trials are resumable: with each epoch a worker saves every running network's whole
training state (:class:`ResumeState`, ~100 KB for an MLP 32-64-64-1 with Adam), so a dead
worker's networks continue where they were instead of starting over. Those bytes are most of
what a worker writes, so they go where they cost least: with SQLite, one file per worker next to
the database (``race.db-states/``, see ``_files.py``), a new one after each epoch's commit; with
PostgreSQL (other machines must read them), an UNLOGGED table (no write-ahead log: a server
crash empties it, and those networks start over), written after the epoch's commit by a
background thread on its own connection while the next epoch trains; the next epoch's commit
first waits for it (so the states of epoch e are stored before anything of epoch e + 1).
Storing 26 MB costs the server ~70 ms, a tenth of an epoch at K=256, which on the worker's
clock would have been 10% of the race's wall time. In both cases a kill just after an epoch's
commit (before its states are stored) loses that epoch too, not only the one in training.
When a worker dies its trials go back to the queue with their states, and their curves are cut
back to the epoch of the state (a kill between the commit and the states leaves the curve one
epoch ahead), so a trial's curve and its state always agree.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy import event

from netrace.errors import UserError
from netrace.storage._files import StateFiles
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

__all__ = ["Storage", "open_storage", "storage_url"]

SCHEMA_VERSION = 1

_meta = sa.MetaData()
_studies = sa.Table(
    "studies", _meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("direction", sa.String(10), nullable=False),
    sa.Column("target", sa.Float, nullable=True),
    sa.Column("config", sa.Text, nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("n_trials", sa.Integer, nullable=False, default=0),
    sa.Column("state", sa.String(10), nullable=False, default="running"),  # running | done
    sa.Column("reason", sa.Text, nullable=False, default=""),
)
_workers = sa.Table(
    "workers", _meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("study_id", sa.Integer, sa.ForeignKey("studies.id"), nullable=False, index=True),
    sa.Column("host", sa.String(200), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("state", sa.String(10), nullable=False),  # alive | done | dead
    sa.Column("started", sa.Float, nullable=False),
    sa.Column("heartbeat", sa.Float, nullable=False),
)
_trials = sa.Table(
    "trials", _meta,
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
    sa.UniqueConstraint("study_id", "number"),
    sa.Index("ix_trials_study_state", "study_id", "state"),
)
_curve = sa.Table(
    "curve", _meta,
    sa.Column("trial_id", sa.Integer, sa.ForeignKey("trials.id"), primary_key=True),
    sa.Column("epoch", sa.Integer, primary_key=True),
    sa.Column("value", sa.Float, nullable=True),  # NULL: NaN or infinite
    sa.Column("metrics", sa.Text, nullable=True),
    sa.Column("recorded", sa.Float, nullable=False, default=0.0),  # when (Unix time)
)
_decisions = sa.Table(
    "decisions", _meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("trial_id", sa.Integer, sa.ForeignKey("trials.id"), nullable=False, index=True),
    sa.Column("epoch", sa.Integer, nullable=False),
    sa.Column("rule", sa.String(40), nullable=False),
    sa.Column("action", sa.String(20), nullable=False),
    sa.Column("prediction", sa.Text, nullable=True),
)
_checkpoints = sa.Table(
    "checkpoints", _meta,
    sa.Column("trial_id", sa.Integer, sa.ForeignKey("trials.id"), primary_key=True),
    sa.Column("epoch", sa.Integer, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
)


def _resume_table(meta: sa.MetaData, *prefixes: str) -> sa.Table:
    return sa.Table(
        "resume_states", meta,
        sa.Column("trial_id", sa.Integer, primary_key=True),
        sa.Column("epochs", sa.Integer, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        prefixes=list(prefixes))


# Created apart from _meta: UNLOGGED on PostgreSQL. With SQLite it holds only the states of
# re-queued trials (moved there from the dead worker's file).
_resume = _resume_table(sa.MetaData())

# The final stage (netrace evaluate): one row per opening of the test part, inserted before
# the test part is opened (so an evaluation that fails after opening it is still counted),
# completed with the result and the final model.
_evaluations = sa.Table(
    "evaluations", _meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("study_id", sa.Integer, sa.ForeignKey("studies.id"), nullable=False, index=True),
    sa.Column("opened", sa.Float, nullable=False),
    sa.Column("epochs_spent", sa.Integer, nullable=False),
    sa.Column("result", sa.Text, nullable=True),  # JSON, NULL until it is complete
    sa.Column("model", sa.LargeBinary, nullable=True),
)
_info = sa.Table(
    "netrace_info", _meta,
    sa.Column("key", sa.String(40), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)


def storage_url(url: str | os.PathLike[str]) -> str:
    """Normalize a storage location: a file path means SQLite; ``postgresql://`` uses psycopg.

    >>> storage_url("runs/race.db")
    'sqlite:///runs/race.db'
    >>> storage_url("postgresql://u@127.0.0.1:5432/db")
    'postgresql+psycopg://u@127.0.0.1:5432/db'
    """
    text = os.fspath(url)
    if text.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + text.split("://", 1)[1]
    if text.startswith(("sqlite://", "postgresql+")):
        return text
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise UserError(f"storage '{text}' has an unknown scheme '{scheme}'; use a file path or "
                        "sqlite:///path.db for SQLite, postgresql://user@host/db for PostgreSQL")
    return f"sqlite:///{text}"


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _direction(c: sa.Connection, trial_id: int) -> str:
    """The direction (maximize | minimize) of the study a trial belongs to."""
    return c.execute(sa.select(_studies.c.direction).join(
        _trials, _trials.c.study_id == _studies.c.id)
        .where(_trials.c.id == trial_id)).scalar_one()


class Storage:
    """Reads and writes studies, trials, curves, decisions and checkpoints.

    >>> import tempfile, os
    >>> s = Storage(os.path.join(tempfile.mkdtemp(), "race.db"))
    >>> study = s.create_study("demo", direction="minimize", config={})
    >>> [t.number for t in s.add_trials(study.id, [{"lr": 0.1}, {"lr": 0.01}], [1, 2])]
    [0, 1]

    Trials have a number in their study (the one netrace shows and users pass: see
    :meth:`trial_number`, :meth:`checkpoint_of`) and a row id (``TrialRecord.id``), which the
    other methods take. ``create=False`` opens only an existing SQLite file (PostgreSQL: the
    database must exist anyway).
    """

    def __init__(self, url: str | os.PathLike[str], *, create: bool = True) -> None:
        self.url = storage_url(url)
        self.dialect = "sqlite" if self.url.startswith("sqlite") else "postgresql"
        self._files: StateFiles | None = None  # SQLite: running trials' states, per worker
        self._writer: ThreadPoolExecutor | None = None  # PostgreSQL: states in the background
        self._pending: Future[None] | None = None  # the last epoch's states being stored
        if self.dialect == "sqlite":
            path = self.url.split("sqlite:///", 1)[-1]
            if not create and path != ":memory:" and not (path and Path(path).exists()):
                raise UserError(f"no study database exists at '{path}'; check the path, or "
                                f"make one with: netrace run CONFIG --storage {path}")
            if path and path != ":memory:":
                parent = Path(path).resolve().parent
                if not parent.is_dir():
                    raise UserError(f"storage folder '{parent}' does not exist; create it or "
                                    "give another path")
            self._write = self._sqlite_engine(immediate=True)
            self._read = self._sqlite_engine(immediate=False)
            if path and path != ":memory:":
                self._files = StateFiles(Path(path).resolve().parent / f"{Path(path).name}-states")
        else:
            try:
                import psycopg  # noqa: F401
            except ImportError:
                raise UserError("PostgreSQL storage needs psycopg; install it with "
                                "pip install 'netrace[postgres]'") from None
            self._write = sa.create_engine(self.url, pool_pre_ping=True)
            self._read = self._write
        try:
            _meta.create_all(self._write)
            if self.dialect == "sqlite":
                _resume.create(self._write, checkfirst=True)
            elif not sa.inspect(self._write).has_table("resume_states"):
                with self._write.begin() as c:
                    _resume_table(sa.MetaData(), "UNLOGGED").create(c)
                    # raw float arrays do not compress: skip pglz, store out of line as is
                    c.exec_driver_sql("ALTER TABLE resume_states ALTER COLUMN data "
                                      "SET STORAGE EXTERNAL")
            with self._write.begin() as c:
                row = c.execute(sa.select(_info.c.value).where(_info.c.key == "schema")).first()
                if row is None:
                    c.execute(_info.insert().values(key="schema", value=str(SCHEMA_VERSION)))
                elif int(row[0]) != SCHEMA_VERSION:
                    raise UserError(f"storage '{url}' has schema version {row[0]}, this netrace "
                                    f"reads version {SCHEMA_VERSION}; use a new storage file")
        except sa.exc.OperationalError as exc:
            raise UserError(f"cannot open storage '{url}': {exc.orig}") from None
        except sa.exc.DatabaseError as exc:
            raise UserError(f"storage '{url}' is not a netrace database: {exc.orig}") from None

    def _sqlite_engine(self, immediate: bool) -> sa.Engine:
        engine = sa.create_engine(self.url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # transactions begin where we say, as we say
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable if a process dies
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: sa.Connection) -> None:
            # writers take the lock up front, so two never deadlock upgrading a read lock
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine

    def flush(self) -> None:
        """Wait until the states of the last recorded epoch are stored (PostgreSQL stores them
        in the background); a failure to store them is raised here."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def _store_states(self, states: list[ResumeState]) -> None:
        with self._write.begin() as c:
            self._upsert_states(c, states)

    def close(self) -> None:
        self.flush()
        if self._writer is not None:
            self._writer.shutdown()
            self._writer = None
        self._write.dispose()
        self._read.dispose()

    # -- studies ---------------------------------------------------------------------------
    def create_study(self, name: str, *, direction: str, config: dict[str, Any],
                     target: float | None = None, load_if_exists: bool = True) -> StudyRecord:
        """Create a study, or return the existing one of that name (to resume it)."""
        if direction not in ("maximize", "minimize"):
            raise ValueError(f"direction must be 'maximize' or 'minimize', got {direction!r}")
        existing = self.find_study(name)
        if existing is not None:
            if not load_if_exists:
                raise UserError(f"study '{name}' already exists in {self.url}; choose another "
                                "name or resume it")
            if existing.direction != direction:
                raise UserError(f"study '{name}' exists with direction {existing.direction}, "
                                f"not {direction}; use a new study name")
            return existing
        try:
            with self._write.begin() as c:
                c.execute(_studies.insert().values(
                    name=name, direction=direction, target=target,
                    config=json.dumps(config, sort_keys=True), created=time.time(),
                    n_trials=0, state="running", reason=""))
        except sa.exc.IntegrityError:  # another process created it first
            pass
        study = self.find_study(name)
        assert study is not None
        return study

    def find_study(self, name: str) -> StudyRecord | None:
        with self._read.connect() as c:
            row = c.execute(sa.select(_studies).where(_studies.c.name == name)).first()
        return None if row is None else _study(row)

    def get_study(self, name: str) -> StudyRecord:
        study = self.find_study(name)
        if study is None:
            names = self.study_names()
            from netrace.errors import did_you_mean

            raise UserError(f"no study '{name}' in {self.url}{did_you_mean(name, names)}"
                            + (f"; studies: {', '.join(names)}" if names else "; it is empty"))
        return study

    def study_names(self) -> list[str]:
        with self._read.connect() as c:
            return [r[0] for r in c.execute(sa.select(_studies.c.name).order_by(_studies.c.id))]

    # -- workers ---------------------------------------------------------------------------
    def register_worker(self, study_id: int) -> int:
        now = time.time()
        with self._write.begin() as c:
            return int(c.execute(_workers.insert().values(
                study_id=study_id, host=socket.gethostname(), pid=os.getpid(), state="alive",
                started=now, heartbeat=now)).inserted_primary_key[0])

    def heartbeat(self, worker_id: int) -> None:
        with self._write.begin() as c:
            c.execute(_workers.update().where(_workers.c.id == worker_id)
                      .values(heartbeat=time.time()))

    def finish_worker(self, worker_id: int) -> None:
        self.flush()
        with self._write.begin() as c:
            c.execute(_workers.update().where(_workers.c.id == worker_id)
                      .values(state="done", heartbeat=time.time()))
        if self._files is not None:
            self._files.drop(worker_id)

    def stale_workers(self, study_id: int, timeout: float) -> list[int]:
        """Workers marked alive whose last heartbeat is older than ``timeout`` seconds."""
        with self._read.connect() as c:
            rows = c.execute(sa.select(_workers.c.id).where(
                (_workers.c.study_id == study_id) & (_workers.c.state == "alive")
                & (_workers.c.heartbeat < time.time() - timeout)))
            return [r[0] for r in rows]

    def recover_worker(self, worker_id: int, *, max_attempts: int = 3) -> list[int]:
        """A worker died: its running trials go back to the queue (or fail after
        ``max_attempts``). A re-queued trial keeps its id, its :class:`ResumeState` and its
        curve up to that state's epoch (without a state: up to its checkpoint; with neither,
        the curve is cleared), so no epoch is ever counted twice and a worker that claims it
        continues it from there. Returns their ids."""
        return self._requeue(worker_id, "dead", died=True, max_attempts=max_attempts)

    def release_worker(self, worker_id: int) -> list[int]:
        """A worker stops early on request (Ctrl-C): its running trials go back to the queue,
        for a later run to train them, and the worker is done."""
        return self._requeue(worker_id, "done", died=False, max_attempts=0)

    def _requeue(self, worker_id: int, worker_state: str, *, died: bool,
                 max_attempts: int) -> list[int]:
        self.flush()
        saved = {} if self._files is None else self._files.read(worker_id)
        with self._write.begin() as c:
            c.execute(_workers.update().where(_workers.c.id == worker_id)
                      .values(state=worker_state))
            rows = c.execute(sa.select(_trials.c.id, _trials.c.attempt).where(
                (_trials.c.worker_id == worker_id)
                & (_trials.c.state == TrialState.RUNNING.value))).all()
            ids = []
            for trial_id, attempt in rows:
                ids.append(trial_id)
                keep = self._resume_point(c, trial_id, saved.get(trial_id))
                c.execute(_curve.delete().where((_curve.c.trial_id == trial_id)
                                                & (_curve.c.epoch > keep)))
                c.execute(_decisions.delete().where((_decisions.c.trial_id == trial_id)
                                                    & (_decisions.c.epoch > keep)))
                best = self._best_from_curve(c, trial_id)
                attempts = attempt + 1 if died else attempt
                failed = died and attempts >= max_attempts
                if failed:
                    c.execute(_resume.delete().where(_resume.c.trial_id == trial_id))
                note = (f"its worker died {attempts} times" if failed else
                        f"re-queued after its worker {worker_id} died" if died else
                        "re-queued: the run was stopped before it finished")
                c.execute(_trials.update().where(_trials.c.id == trial_id).values(
                    state=(TrialState.FAILED if failed else TrialState.QUEUED).value,
                    worker_id=None, attempt=attempts, epochs=keep + 1,
                    best_value=best[0], best_epoch=best[1],
                    ended=time.time() if failed else None, note=note))
        if self._files is not None:
            self._files.drop(worker_id)  # its states are in the table now
        return ids

    def unclaim(self, trial_ids: Iterable[int]) -> list[int]:
        """Running trials that have not trained a single epoch go back to the queue (a slot
        refilled just as the race ended): they cost nothing, and a later run (a resume with
        more budget) starts them. Trials that did train are left alone. Returns the ids
        re-queued."""
        ids = [int(t) for t in trial_ids]
        if not ids:
            return []
        self.flush()
        with self._write.begin() as c:
            mine = (_trials.c.id.in_(ids) & (_trials.c.state == TrialState.RUNNING.value)
                    & (_trials.c.epochs == 0))
            back = [r[0] for r in c.execute(sa.select(_trials.c.id).where(mine)).all()]
            c.execute(_trials.update().where(mine).values(
                state=TrialState.QUEUED.value, worker_id=None,
                note="re-queued: the race ended before it trained an epoch"))
        return back

    def _resume_point(self, c: sa.Connection, trial_id: int, newest: ResumeState | None) -> int:
        """The last epoch a re-queued trial keeps: its saved state's (the newer of the dead
        worker's file and the table), else its checkpoint's, else none (-1)."""
        if newest is not None:
            row = c.execute(sa.select(_resume.c.epochs)
                            .where(_resume.c.trial_id == trial_id)).first()
            if row is None or row[0] < newest.epochs:
                self._upsert_states(c, [newest])
        row = c.execute(sa.select(_resume.c.epochs).where(_resume.c.trial_id == trial_id)).first()
        if row is not None:
            recorded = c.execute(sa.select(sa.func.count()).select_from(_curve).where(
                (_curve.c.trial_id == trial_id) & (_curve.c.epoch < row[0]))).scalar_one()
            if recorded == row[0]:  # the curve reaches the state (it is never behind it)
                return int(row[0]) - 1
            c.execute(_resume.delete().where(_resume.c.trial_id == trial_id))
        ck = c.execute(sa.select(_checkpoints.c.epoch)
                       .where(_checkpoints.c.trial_id == trial_id)).first()
        return -1 if ck is None else int(ck[0])

    def _upsert_states(self, c: sa.Connection, states: list[ResumeState]) -> None:
        if self.dialect == "postgresql":
            # tens of MB per epoch: the driver's own executemany (pipelined, binary bytea) is
            # several times faster than SQLAlchemy's multi-row INSERT rewriting
            c.exec_driver_sql(
                "INSERT INTO resume_states (trial_id, epochs, data) VALUES (%s, %s, %s) "
                "ON CONFLICT (trial_id) DO UPDATE SET epochs = excluded.epochs, "
                "data = excluded.data", [(r.trial_id, r.epochs, r.data) for r in states])
            return
        ins = self._insert(_resume)
        c.execute(ins.on_conflict_do_update(
            index_elements=["trial_id"], set_={"epochs": ins.excluded.epochs,
                                               "data": ins.excluded.data}),
            [dict(trial_id=r.trial_id, epochs=r.epochs, data=r.data) for r in states])

    def resume_state(self, trial_id: int) -> ResumeState | None:
        """The state a re-queued trial continues from (None: it starts over). Its ``epochs``
        equals the trial's kept curve length."""
        self.flush()  # this storage's own last states first
        with self._read.connect() as c:
            row = c.execute(sa.select(_resume).where(_resume.c.trial_id == trial_id)).first()
        return None if row is None else ResumeState(row.trial_id, row.epochs, bytes(row.data))

    def workers(self, study_id: int) -> list[dict[str, Any]]:
        """The study's workers: id, host, pid, state, started, heartbeat."""
        with self._read.connect() as c:
            rows = c.execute(sa.select(_workers).where(_workers.c.study_id == study_id)
                             .order_by(_workers.c.id)).all()
        return [dict(r._mapping) for r in rows]

    def finish_study(self, study_id: int, reason: str) -> bool:
        """Mark the race over (the first reason wins); True if this call ended it."""
        with self._write.begin() as c:
            n = c.execute(_studies.update().where((_studies.c.id == study_id)
                                                  & (_studies.c.state == "running"))
                          .values(state="done", reason=reason)).rowcount
        return n == 1

    def set_study_config(self, study_id: int, config: dict[str, Any],
                         target: float | None) -> None:
        """The config a resumed study now runs under (a larger budget, another rule...)."""
        with self._write.begin() as c:
            c.execute(_studies.update().where(_studies.c.id == study_id)
                      .values(config=json.dumps(config, sort_keys=True), target=target))

    def reopen_study(self, study_id: int) -> None:
        with self._write.begin() as c:
            c.execute(_studies.update().where(_studies.c.id == study_id)
                      .values(state="running", reason=""))

    def study_state(self, study_id: int) -> tuple[str, str]:
        with self._read.connect() as c:
            row = c.execute(sa.select(_studies.c.state, _studies.c.reason)
                            .where(_studies.c.id == study_id)).one()
        return row[0], row[1]

    def _best_from_curve(self, c: sa.Connection, trial_id: int) -> tuple[float | None, int | None]:
        direction = c.execute(sa.select(_studies.c.direction).join(
            _trials, _trials.c.study_id == _studies.c.id).where(_trials.c.id == trial_id)
        ).scalar_one()
        order = (_curve.c.value.desc() if direction == "maximize" else _curve.c.value.asc())
        row = c.execute(sa.select(_curve.c.value, _curve.c.epoch).where(
            (_curve.c.trial_id == trial_id) & _curve.c.value.is_not(None))
            .order_by(order, _curve.c.epoch).limit(1)).first()
        return (None, None) if row is None else (float(row[0]), int(row[1]))

    # -- trials ----------------------------------------------------------------------------
    def add_trials(self, study_id: int, params: Sequence[dict[str, Any]], seeds: Sequence[int],
                   *, worker_id: int | None = None) -> list[TrialRecord]:
        """New trials: QUEUED, or RUNNING on ``worker_id`` when a worker starts them at once."""
        if len(params) != len(seeds):
            raise ValueError("one seed per trial")
        if not params:
            return []
        now = time.time()
        state = TrialState.QUEUED if worker_id is None else TrialState.RUNNING
        with self._write.begin() as c:
            # an atomic counter numbers trials per study, whatever the concurrency
            end = c.execute(_studies.update().where(_studies.c.id == study_id)
                            .values(n_trials=_studies.c.n_trials + len(params))
                            .returning(_studies.c.n_trials)).scalar_one()
            first = end - len(params)
            c.execute(_trials.insert(), [dict(
                study_id=study_id, number=first + i, state=state.value,
                params=json.dumps(p, sort_keys=True), seed=int(s), worker_id=worker_id,
                attempt=0, epochs=0, created=now, note="") for i, (p, s) in
                enumerate(zip(params, seeds))])
            rows = c.execute(sa.select(_trials).where(
                (_trials.c.study_id == study_id) & (_trials.c.number >= first)
                & (_trials.c.number < end)).order_by(_trials.c.number)).all()
        return [_trial(r) for r in rows]

    def claim_queued(self, study_id: int, worker_id: int, limit: int,
                     matching: dict[str, Any] | None = None) -> list[TrialRecord]:
        """Move up to ``limit`` queued trials to RUNNING on this worker, oldest first; with
        ``matching``, only trials whose parameters include those values."""
        if limit <= 0:
            return []
        with self._write.begin() as c:
            q = (sa.select(_trials.c.id, _trials.c.params)
                 .where((_trials.c.study_id == study_id)
                        & (_trials.c.state == TrialState.QUEUED.value))
                 .order_by(_trials.c.number))
            if self.dialect == "postgresql":
                q = q.with_for_update(skip_locked=True)
            ids = []
            for tid, params in c.execute(q):
                p = json.loads(params)
                if matching is None or all(p.get(k) == v for k, v in matching.items()):
                    ids.append(tid)
                    if len(ids) == limit:
                        break
            if not ids:
                return []
            c.execute(_trials.update().where(_trials.c.id.in_(ids)).values(
                state=TrialState.RUNNING.value, worker_id=worker_id))
            rows = c.execute(sa.select(_trials).where(_trials.c.id.in_(ids))
                             .order_by(_trials.c.number)).all()
        return [_trial(r) for r in rows]

    def record_epoch(self, worker_id: int | None, values: Iterable[EpochValue] = (),
                     decisions: Iterable[DecisionRecord] = (), ends: Iterable[TrialEnd] = (),
                     checkpoints: Iterable[Checkpoint] = (),
                     states: Iterable[ResumeState] = ()) -> None:
        """One population epoch in one transaction: values, decisions, ends, checkpoints, and
        the worker's heartbeat. Re-recording an epoch replaces it (never counted twice).

        ``states`` are the worker's running trials' states after this epoch, all of them. They
        are stored once the transaction has committed (SQLite: a new file of the worker;
        PostgreSQL: by a background thread, waited for by the next write or :meth:`flush`), so
        a kill in between leaves the curve ahead, never behind; :meth:`recover_worker` cuts it
        back. A trial that ends drops its state."""
        values, decisions = list(values), list(decisions)
        ends, checkpoints, states = list(ends), list(checkpoints), list(states)
        if states and worker_id is None:
            raise ValueError("states belong to a worker: pass its worker_id")
        self.flush()  # the previous epoch's states first: an end here must delete them
        with self._write.begin() as c:
            fast = self.dialect == "postgresql" and len({v.trial_id for v in values}) == len(values)
            if values and fast:
                self._pg_values(c, values)
            elif values and self.dialect == "sqlite":
                self._sqlite_values(c, values)
            elif values:
                now = time.time()
                rows = [dict(trial_id=v.trial_id, epoch=v.epoch, value=_finite(v.value),
                             metrics=None if v.metrics is None else json.dumps(v.metrics),
                             recorded=now) for v in values]
                ins = self._insert(_curve)
                c.execute(ins.on_conflict_do_update(
                    index_elements=["trial_id", "epoch"],
                    set_={"value": ins.excluded.value, "metrics": ins.excluded.metrics}), rows)
                self._update_books(c, values)
            if decisions and self.dialect == "postgresql":
                c.exec_driver_sql(
                    "INSERT INTO decisions (trial_id, epoch, rule, action, prediction) "
                    "SELECT * FROM unnest(%(t)b::integer[], %(e)b::integer[], %(r)b::text[], "
                    "%(a)b::text[], %(p)b::text[])",
                    {"t": [d.trial_id for d in decisions], "e": [d.epoch for d in decisions],
                     "r": [d.rule for d in decisions], "a": [d.action for d in decisions],
                     "p": [None if d.prediction is None else json.dumps(d.prediction)
                           for d in decisions]})
            elif decisions:  # SQLite
                c.exec_driver_sql(
                    "INSERT INTO decisions (trial_id, epoch, rule, action, prediction) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [(d.trial_id, d.epoch, d.rule, d.action,
                      None if d.prediction is None else json.dumps(d.prediction))
                     for d in decisions])
            if checkpoints:
                ins = self._insert(_checkpoints)
                c.execute(ins.on_conflict_do_update(
                    index_elements=["trial_id"],
                    set_={"epoch": ins.excluded.epoch, "data": ins.excluded.data}),
                    [dict(trial_id=k.trial_id, epoch=k.epoch, data=k.data) for k in checkpoints])
            if ends:
                now = time.time()
                for e in ends:
                    if not e.state.finished:
                        raise ValueError(f"a trial ends in a finished state, not {e.state}")
                c.execute(_trials.update().where(_trials.c.id == sa.bindparam("tid"))
                          .values(state=sa.bindparam("st"), ended=now, note=sa.bindparam("nt")),
                          [dict(tid=e.trial_id, st=e.state.value, nt=e.note) for e in ends])
                c.execute(_resume.delete().where(_resume.c.trial_id.in_(
                    [e.trial_id for e in ends])))
            if states and self._files is None and self.dialect == "sqlite":  # in memory
                self._upsert_states(c, states)
            if worker_id is not None:
                c.execute(_workers.update().where(_workers.c.id == worker_id)
                          .values(heartbeat=time.time()))
        if states and self._files is not None:
            self._files.write(worker_id, states)
        elif states and self.dialect == "postgresql":
            if self._writer is None:
                self._writer = ThreadPoolExecutor(1, thread_name_prefix="netrace-states")
            self._pending = self._writer.submit(self._store_states, states)

    def _insert(self, table: sa.Table) -> Any:
        if self.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        return insert(table)

    def _pg_values(self, c: sa.Connection, values: list[EpochValue]) -> None:
        """PostgreSQL, one value per trial: the curve rows and the trials' books as two
        statements over arrays (row-per-statement paths cost ~15 ms per 256 rows here)."""
        direction = _direction(c, values[0].trial_id)
        arrays = {"t": [v.trial_id for v in values], "e": [v.epoch for v in values],
                  "v": [_finite(v.value) for v in values],
                  "m": [None if v.metrics is None else json.dumps(v.metrics) for v in values],
                  "now": time.time()}
        c.exec_driver_sql(
            "INSERT INTO curve (trial_id, epoch, value, metrics, recorded) "
            "SELECT u.t, u.e, u.v, u.m, %(now)s FROM unnest(%(t)b::integer[], %(e)b::integer[], "
            "%(v)b::float8[], %(m)b::text[]) AS u(t, e, v, m) "
            "ON CONFLICT (trial_id, epoch) DO UPDATE SET value = excluded.value, "
            "metrics = excluded.metrics", arrays)
        op = ">" if direction == "maximize" else "<"
        improves = f"u.v IS NOT NULL AND (t.best_value IS NULL OR u.v {op} t.best_value)"
        c.exec_driver_sql(
            "UPDATE trials AS t SET epochs = GREATEST(t.epochs, u.e + 1), "
            f"best_epoch = CASE WHEN {improves} THEN u.e ELSE t.best_epoch END, "
            f"best_value = CASE WHEN {improves} THEN u.v ELSE t.best_value END "
            "FROM unnest(%(t)b::integer[], %(v)b::float8[], %(e)b::integer[]) AS u(tid, v, e) "
            "WHERE t.id = u.tid", arrays)

    def _sqlite_values(self, c: sa.Connection, values: list[EpochValue]) -> None:
        """SQLite: the curve rows and the trials' books as two plain executemany calls of the
        driver (SQLAlchemy's per-row parameter processing cost more than SQLite's own work:
        ~6 of ~10 ms per 256 rows). Rows are applied in order, so several epochs of one trial
        in one call keep their books right."""
        direction = _direction(c, values[0].trial_id)
        now = time.time()
        c.exec_driver_sql(
            "INSERT INTO curve (trial_id, epoch, value, metrics, recorded) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (trial_id, epoch) DO UPDATE SET value = excluded.value, "
            "metrics = excluded.metrics",
            [(v.trial_id, v.epoch, _finite(v.value),
              None if v.metrics is None else json.dumps(v.metrics), now) for v in values])
        op = ">" if direction == "maximize" else "<"
        improves = f"?2 IS NOT NULL AND (best_value IS NULL OR ?2 {op} best_value)"
        c.exec_driver_sql(
            f"UPDATE trials SET epochs = max(epochs, ?3 + 1), "
            f"best_epoch = CASE WHEN {improves} THEN ?3 ELSE best_epoch END, "
            f"best_value = CASE WHEN {improves} THEN ?2 ELSE best_value END WHERE id = ?1",
            [(v.trial_id, _finite(v.value), v.epoch) for v in values])

    def _update_books(self, c: sa.Connection, values: list[EpochValue]) -> None:
        """Per trial: epochs seen, and the best value and its epoch, in the study's direction."""
        direction = _direction(c, values[0].trial_id)
        # explicit casts: PostgreSQL cannot infer a parameter's type inside CASE
        v = sa.cast(sa.bindparam("v", type_=sa.Float), sa.Float)
        n = sa.cast(sa.bindparam("n", type_=sa.Integer), sa.Integer)
        better = (v > _trials.c.best_value) if direction == "maximize" else \
            (v < _trials.c.best_value)
        improves = sa.and_(v.is_not(None), sa.or_(_trials.c.best_value.is_(None), better))
        c.execute(_trials.update().where(_trials.c.id == sa.bindparam("tid")).values(
            epochs=sa.func.max(_trials.c.epochs, n) if self.dialect == "sqlite"
            else sa.func.greatest(_trials.c.epochs, n),
            best_epoch=sa.case((improves, sa.cast(sa.bindparam("e", type_=sa.Integer),
                                                  sa.Integer)), else_=_trials.c.best_epoch),
            best_value=sa.case((improves, v), else_=_trials.c.best_value)),
            [dict(tid=x.trial_id, v=_finite(x.value), e=x.epoch, n=x.epoch + 1)
             for x in values])

    # -- reading ---------------------------------------------------------------------------
    def trials(self, study_id: int,
               states: Iterable[TrialState] | None = None) -> list[TrialRecord]:
        q = sa.select(_trials).where(_trials.c.study_id == study_id)
        if states is not None:
            q = q.where(_in_states(states))
        with self._read.connect() as c:
            return [_trial(r) for r in c.execute(q.order_by(_trials.c.number))]

    def trials_changed(self, study_id: int, after_id: int,
                       ids: Iterable[int] = ()) -> list[TrialRecord]:
        """The study's trials added after trial id ``after_id``, and the trials ``ids`` (those
        a caller saw unfinished last time: whatever changed since is among them), by id: what
        a worker's sampler has not seen yet, read in time that does not grow with the study."""
        q = sa.select(_trials).where(_trials.c.study_id == study_id)
        ids = sorted(set(ids))
        out: dict[int, TrialRecord] = {}
        with self._read.connect() as c:
            for r in c.execute(q.where(_trials.c.id > after_id)):
                out[r.id] = _trial(r)
            for i in range(0, len(ids), 500):
                for r in c.execute(q.where(_trials.c.id.in_(ids[i:i + 500]))):
                    out[r.id] = _trial(r)
        return [out[k] for k in sorted(out)]

    def trial(self, trial_id: int) -> TrialRecord:
        """A trial by its row id (users know trials by number: :meth:`trial_number`)."""
        with self._read.connect() as c:
            return _trial(c.execute(sa.select(_trials).where(_trials.c.id == trial_id)).one())

    def trial_number(self, study_id: int, number: int) -> TrialRecord:
        """The trial numbered ``number`` in the study: the number ``netrace status`` shows.

        >>> import tempfile, os
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
            row = c.execute(sa.select(_trials).where(
                (_trials.c.study_id == study_id) & (_trials.c.number == number))).first()
            if row is not None:
                return _trial(row)
            low, high = c.execute(sa.select(sa.func.min(_trials.c.number),
                                            sa.func.max(_trials.c.number))
                                  .where(_trials.c.study_id == study_id)).one()
        name = self._study_by_id(study_id).name
        valid = ("it has no trials yet" if low is None else
                 f"its trials are numbered {low} to {high}")
        raise UserError(f"study '{name}' has no trial {number!r}; {valid}")

    def curve(self, trial_id: int) -> tuple[list[int], list[float]]:
        """A trial's validation curve: epochs and values (NaN where not finite)."""
        with self._read.connect() as c:
            rows = c.execute(sa.select(_curve.c.epoch, _curve.c.value)
                             .where(_curve.c.trial_id == trial_id).order_by(_curve.c.epoch)).all()
        return [r[0] for r in rows], [math.nan if r[1] is None else float(r[1]) for r in rows]

    def curves(self, study_id: int, states: Iterable[TrialState] | None = None
               ) -> dict[int, np.ndarray]:
        """Validation curves of a study's trials (in these states), in one query."""
        q = (sa.select(_curve.c.trial_id, _curve.c.epoch, _curve.c.value)
             .join(_trials, _trials.c.id == _curve.c.trial_id)
             .where(_trials.c.study_id == study_id))
        if states is not None:
            q = q.where(_in_states(states))
        with self._read.connect() as c:
            rows = c.execute(q.order_by(_curve.c.trial_id, _curve.c.epoch)).all()
        out: dict[int, list[float]] = {}
        for trial_id, _epoch, value in rows:
            out.setdefault(trial_id, []).append(math.nan if value is None else float(value))
        return {k: np.asarray(v) for k, v in out.items()}

    def curve_metrics(self, study_id: int, trial_ids: Iterable[int] | None = None
                      ) -> dict[int, list[dict[str, float]]]:
        """Every recorded epoch's metrics of a study's trials (all, or these), in epoch order:
        ``{trial id: [metrics of epoch 0, of epoch 1, ...]}``; an epoch recorded without
        metrics gives ``{}``, a metric that was not a number ``nan``."""
        q = (sa.select(_curve.c.trial_id, _curve.c.epoch, _curve.c.metrics)
             .join(_trials, _trials.c.id == _curve.c.trial_id)
             .where(_trials.c.study_id == study_id))
        if trial_ids is not None:
            q = q.where(_curve.c.trial_id.in_(list(trial_ids)))
        with self._read.connect() as c:
            rows = c.execute(q.order_by(_curve.c.trial_id, _curve.c.epoch)).all()
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
            rows = c.execute(sa.select(_curve.c.recorded, _curve.c.trial_id, _curve.c.epoch,
                                       _curve.c.value)
                             .join(_trials, _trials.c.id == _curve.c.trial_id)
                             .where(_trials.c.study_id == study_id)
                             .order_by(_curve.c.recorded, _curve.c.trial_id, _curve.c.epoch))
            return [(r[0], r[1], r[2], math.nan if r[3] is None else float(r[3])) for r in rows]

    def decisions(self, trial_id: int) -> list[DecisionRecord]:
        return self.decisions_of([trial_id]).get(trial_id, [])

    def decisions_of(self, trial_ids: Iterable[int]) -> dict[int, list[DecisionRecord]]:
        """The decisions of several trials (those with none are left out), in few queries."""
        ids, out = list(trial_ids), {}
        with self._read.connect() as c:
            for i in range(0, len(ids), 500):
                rows = c.execute(sa.select(_decisions).where(
                    _decisions.c.trial_id.in_(ids[i : i + 500])).order_by(_decisions.c.id)).all()
                for r in rows:
                    out.setdefault(r.trial_id, []).append(DecisionRecord(
                        r.trial_id, r.epoch, r.rule, r.action,
                        None if r.prediction is None else json.loads(r.prediction)))
        return out

    def checkpoint(self, trial_id: int) -> Checkpoint | None:
        """The checkpoint of a trial by its row id (users: :meth:`checkpoint_of`)."""
        with self._read.connect() as c:
            row = c.execute(sa.select(_checkpoints).where(_checkpoints.c.trial_id == trial_id)
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
            return int(c.execute(sa.select(sa.func.count()).select_from(_curve).join(
                _trials, _trials.c.id == _curve.c.trial_id).where(
                _trials.c.study_id == study_id)).scalar_one())

    def counts(self, study_id: int) -> dict[TrialState, int]:
        """Trials per state (an older netrace's cut trials counted as CUT)."""
        with self._read.connect() as c:
            rows = c.execute(sa.select(_trials.c.state, sa.func.count()).where(
                _trials.c.study_id == study_id).group_by(_trials.c.state)).all()
            legacy = int(c.execute(sa.select(sa.func.count()).where(
                (_trials.c.study_id == study_id) & _LEGACY_CUT)).scalar_one())
        out = {s: 0 for s in TrialState}
        out.update({TrialState(r[0]): int(r[1]) for r in rows})
        out[TrialState.STOPPED] -= legacy
        out[TrialState.CUT] += legacy
        return out

    def ended_with_race(self, study_id: int) -> int:
        """Trials cut off unfinished when the race ended (:attr:`TrialState.CUT`, and an older
        netrace's STOPPED trials whose note begins with RACE_ENDED), as opposed to those the
        termination rule stopped."""
        with self._read.connect() as c:
            return int(c.execute(sa.select(sa.func.count()).where(
                (_trials.c.study_id == study_id) & _in_states([TrialState.CUT]))).scalar_one())

    def best_trial(self, study_id: int) -> TrialRecord | None:
        study = self._study_by_id(study_id)
        order = (_trials.c.best_value.desc() if study.direction == "maximize"
                 else _trials.c.best_value.asc())
        with self._read.connect() as c:
            row = c.execute(sa.select(_trials).where(
                (_trials.c.study_id == study_id) & _trials.c.best_value.is_not(None))
                .order_by(order, _trials.c.number).limit(1)).first()
        return None if row is None else _trial(row)

    # -- the final evaluation ------------------------------------------------------------------
    def open_evaluation(self, study_id: int) -> int:
        """Count an opening of the study's test part, before it happens; returns its id, for
        :meth:`complete_evaluation`."""
        spent = self.epochs_spent(study_id)
        with self._write.begin() as c:
            return int(c.execute(_evaluations.insert().values(
                study_id=study_id, opened=time.time(), epochs_spent=spent)).inserted_primary_key[0])

    def complete_evaluation(self, evaluation_id: int, result: dict[str, Any],
                            model: bytes) -> None:
        """Store an opening's result (JSON-able) and the final model it made (bytes)."""
        with self._write.begin() as c:
            c.execute(_evaluations.update().where(_evaluations.c.id == evaluation_id).values(
                result=json.dumps(result), model=model))

    def evaluations(self, study_id: int) -> list[EvaluationRecord]:
        """Every opening of the study's test part, oldest first (``result`` is ``None`` for
        one that did not complete); the model's bytes are not read here."""
        e = _evaluations.c
        with self._read.connect() as c:
            rows = c.execute(sa.select(e.id, e.study_id, e.opened, e.epochs_spent, e.result)
                             .where(e.study_id == study_id).order_by(e.id)).all()
        return [EvaluationRecord(r.id, r.study_id, r.opened, r.epochs_spent,
                                 None if r.result is None else json.loads(r.result))
                for r in rows]

    def evaluation_model(self, evaluation_id: int) -> bytes | None:
        """The final model an opening stored."""
        with self._read.connect() as c:
            row = c.execute(sa.select(_evaluations.c.model).where(
                _evaluations.c.id == evaluation_id)).first()
        return None if row is None or row[0] is None else bytes(row[0])

    def _study_by_id(self, study_id: int) -> StudyRecord:
        with self._read.connect() as c:
            return _study(c.execute(sa.select(_studies).where(_studies.c.id == study_id)).one())


def _study(r: Any) -> StudyRecord:
    return StudyRecord(r.id, r.name, r.direction, r.target, json.loads(r.config), r.created)


#: A trial an older netrace recorded as STOPPED when the race ended (before TrialState.CUT).
_LEGACY_CUT = ((_trials.c.state == TrialState.STOPPED.value)
               & _trials.c.note.like(RACE_ENDED + "%"))


def _in_states(states: Iterable[TrialState]) -> Any:
    """The condition "a trial in one of ``states``", reading an older netrace's cut trials
    (STOPPED, with a note that begins with RACE_ENDED) as CUT."""
    wanted = set(states)
    cond = _trials.c.state.in_([s.value for s in wanted])
    if TrialState.STOPPED in wanted and TrialState.CUT not in wanted:
        return cond & ~_LEGACY_CUT
    if TrialState.CUT in wanted and TrialState.STOPPED not in wanted:
        return cond | _LEGACY_CUT
    return cond


def _state(state: str, note: str | None) -> TrialState:
    if state == TrialState.STOPPED.value and (note or "").startswith(RACE_ENDED):
        return TrialState.CUT  # recorded by a netrace before TrialState.CUT
    return TrialState(state)


def _trial(r: Any) -> TrialRecord:
    return TrialRecord(r.id, r.study_id, r.number, _state(r.state, r.note), json.loads(r.params),
                       int(r.seed), r.worker_id, r.attempt, r.epochs, r.best_value, r.best_epoch,
                       r.created, r.ended, r.note or "")


def open_storage(url: str | os.PathLike[str]) -> Storage:
    """Open (creating if needed) the storage at a path or URL."""
    return Storage(url)
