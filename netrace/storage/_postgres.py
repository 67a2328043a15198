"""The study database on a PostgreSQL server, which several machines share.

An epoch's values and decisions go in as arrays (``unnest``): two statements whatever the
population (row-per-statement paths cost ~15 ms per 256 rows). Running trials' states, which
other machines must read, go to an UNLOGGED table (no write-ahead log: a server crash empties
it, and those networks start over), written after the epoch's commit by a background thread on
its own connection while the next epoch trains; the next epoch's commit first waits for it (so
the states of epoch e are stored before anything of epoch e + 1). Storing 26 MB costs the
server ~70 ms, a tenth of an epoch at K=256, which on the worker's clock would have been 10% of
the race's wall time. Heartbeats are stamped and judged by the server's clock, so machines whose
clocks differ agree on how old a heartbeat is.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from netrace.errors import UserError
from netrace.storage import _schema as db
from netrace.storage._records import DecisionRecord, EpochValue, ResumeState, WorkerLost
from netrace.storage._storage import Storage

__all__ = ["PostgresStorage"]


class PostgresStorage(Storage):
    """A study database on a PostgreSQL server (``postgresql://user@host/db``)."""

    dialect = "postgresql"
    local_only = False

    def _connect(self, create: bool) -> tuple[sa.Engine, sa.Engine]:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise UserError("PostgreSQL storage needs psycopg; install it with "
                            "pip install 'netrace[postgres]'") from None
        self._writer: ThreadPoolExecutor | None = None  # stores states in the background
        self._pending: Future[None] | None = None  # the last epoch's states being stored
        engine = sa.create_engine(self.url, pool_pre_ping=True)
        return engine, engine

    def _create_resume_table(self) -> None:
        if sa.inspect(self._write).has_table("resume_states"):
            return
        with self._write.begin() as c:
            db.resume_table(sa.MetaData(), "UNLOGGED").create(c)
            # raw float arrays do not compress: skip pglz, store out of line as is
            c.exec_driver_sql("ALTER TABLE resume_states ALTER COLUMN data SET STORAGE EXTERNAL")

    def _clock(self) -> Any:
        return sa.cast(sa.func.extract("epoch", sa.func.clock_timestamp()), sa.Float)

    def _insert(self, table: sa.Table) -> Any:
        return pg_insert(table)

    def _write_values(self, c: sa.Connection, values: list[EpochValue], direction: str) -> None:
        """Arrays of one value per trial; several epochs of one trial go in rounds, in order
        (one statement cannot update a row twice)."""
        rounds: list[list[EpochValue]] = []
        seen: dict[int, int] = {}
        for v in values:
            k = seen[v.trial_id] = seen.get(v.trial_id, -1) + 1
            if k == len(rounds):
                rounds.append([])
            rounds[k].append(v)
        for part in rounds:
            self._write_round(c, part, direction)

    def _write_round(self, c: sa.Connection, values: list[EpochValue], direction: str) -> None:
        arrays = {"t": [v.trial_id for v in values], "e": [v.epoch for v in values],
                  "v": [db.finite(v.value) for v in values],
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

    def _write_decisions(self, c: sa.Connection, decisions: list[DecisionRecord]) -> None:
        c.exec_driver_sql(
            "INSERT INTO decisions (trial_id, epoch, rule, action, prediction) "
            "SELECT * FROM unnest(%(t)b::integer[], %(e)b::integer[], %(r)b::text[], "
            "%(a)b::text[], %(p)b::text[])",
            {"t": [d.trial_id for d in decisions], "e": [d.epoch for d in decisions],
             "r": [d.rule for d in decisions], "a": [d.action for d in decisions],
             "p": [None if d.prediction is None else json.dumps(d.prediction)
                   for d in decisions]})

    def _upsert_states(self, c: sa.Connection, states: list[ResumeState]) -> None:
        # tens of MB per epoch: the driver's own executemany (pipelined, binary bytea) is
        # several times faster than SQLAlchemy's multi-row INSERT rewriting
        c.exec_driver_sql(
            "INSERT INTO resume_states (trial_id, epochs, data) VALUES (%s, %s, %s) "
            "ON CONFLICT (trial_id) DO UPDATE SET epochs = excluded.epochs, "
            "data = excluded.data", [(r.trial_id, r.epochs, r.data) for r in states])

    def _store_states(self, worker_id: int, states: list[ResumeState]) -> None:
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="netrace-states")
        self._pending = self._writer.submit(self._store_now, worker_id, states)

    def _store_now(self, worker_id: int, states: list[ResumeState]) -> None:
        with self._write.begin() as c:
            try:
                self._fence(c, worker_id)  # one that was declared dead keeps nothing
            except WorkerLost:
                return  # its next epoch's write says so
            self._upsert_states(c, states)

    def flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        super().close()
        if self._writer is not None:
            self._writer.shutdown()
            self._writer = None
