"""The study database as one SQLite file: no server, one machine.

Transactions are explicit (``BEGIN IMMEDIATE`` for writers, so two never deadlock upgrading a
read lock), in WAL mode with ``synchronous=NORMAL`` (a committed epoch survives a killed
process). An epoch's values and decisions go through the driver's own ``executemany``
(SQLAlchemy's per-row parameter processing cost more than SQLite's own work: ~6 of ~10 ms per
256 rows). Running trials' states go to one file per worker beside the database
(``race.db-states/``, see ``_files.py``), a new one after each epoch's commit: as BLOBs every
epoch's states would pass through the write-ahead log and a checkpoint. The clock is this
machine's: only this machine opens the file.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from netrace.errors import UserError
from netrace.storage import _schema as db
from netrace.storage._files import StateFiles
from netrace.storage._records import DecisionRecord, EpochValue, ResumeState
from netrace.storage._storage import Storage

__all__ = ["SQLiteStorage"]


class SQLiteStorage(Storage):
    """A study database in a SQLite file (or ``sqlite:///:memory:``)."""

    dialect = "sqlite"
    local_only = True

    def _connect(self, create: bool) -> tuple[sa.Engine, sa.Engine]:
        path = self.url.split("sqlite:///", 1)[-1]
        on_disk = bool(path) and path != ":memory:"
        if not create and on_disk and not Path(path).exists():
            raise UserError(f"no study database exists at '{path}'; check the path, or "
                            f"make one with: netrace run CONFIG --storage {path}")
        if on_disk and not Path(path).resolve().parent.is_dir():
            raise UserError(f"storage folder '{Path(path).resolve().parent}' does not exist; "
                            "create it or give another path")
        # in memory the states stay in the table; on disk, in files per worker
        self._files = (StateFiles(Path(path).resolve().parent / f"{Path(path).name}-states")
                       if on_disk else None)
        return self._engine(immediate=True), self._engine(immediate=False)

    def _engine(self, immediate: bool) -> sa.Engine:
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

    def _create_resume_table(self) -> None:
        # on disk it holds only the states of re-queued trials (moved there from the dead
        # worker's file)
        db.resume.create(self._write, checkfirst=True)

    def _clock(self) -> float:
        return time.time()

    def _insert(self, table: sa.Table) -> Any:
        return sqlite_insert(table)

    def _write_values(self, c: sa.Connection, values: list[EpochValue], direction: str) -> None:
        """Two executemany calls of the driver; rows apply in order, so several epochs of one
        trial in one call keep their books right."""
        now = time.time()
        c.exec_driver_sql(
            "INSERT INTO curve (trial_id, epoch, value, metrics, recorded) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (trial_id, epoch) DO UPDATE SET value = excluded.value, "
            "metrics = excluded.metrics",
            [(v.trial_id, v.epoch, db.finite(v.value),
              None if v.metrics is None else json.dumps(v.metrics), now) for v in values])
        op = ">" if direction == "maximize" else "<"
        improves = f"?2 IS NOT NULL AND (best_value IS NULL OR ?2 {op} best_value)"
        c.exec_driver_sql(
            f"UPDATE trials SET epochs = max(epochs, ?3 + 1), "
            f"best_epoch = CASE WHEN {improves} THEN ?3 ELSE best_epoch END, "
            f"best_value = CASE WHEN {improves} THEN ?2 ELSE best_value END WHERE id = ?1",
            [(v.trial_id, db.finite(v.value), v.epoch) for v in values])

    def _write_decisions(self, c: sa.Connection, decisions: list[DecisionRecord]) -> None:
        c.exec_driver_sql(
            "INSERT INTO decisions (trial_id, epoch, rule, action, prediction) "
            "VALUES (?, ?, ?, ?, ?)",
            [(d.trial_id, d.epoch, d.rule, d.action,
              None if d.prediction is None else json.dumps(d.prediction)) for d in decisions])

    def _upsert_states(self, c: sa.Connection, states: list[ResumeState]) -> None:
        ins = sqlite_insert(db.resume)
        c.execute(ins.on_conflict_do_update(
            index_elements=["trial_id"], set_={"epochs": ins.excluded.epochs,
                                               "data": ins.excluded.data}),
            [dict(trial_id=r.trial_id, epochs=r.epochs, data=r.data) for r in states])

    def _store_states(self, worker_id: int, states: list[ResumeState]) -> None:
        if self._files is not None:
            self._files.write(worker_id, states)
            return
        with self._write.begin() as c:  # in memory
            self._upsert_states(c, states)

    def _saved_states(self, worker_id: int) -> dict[int, ResumeState]:
        return {} if self._files is None else self._files.read(worker_id)

    def _drop_saved_states(self, worker_id: int) -> None:
        if self._files is not None:
            self._files.drop(worker_id)
