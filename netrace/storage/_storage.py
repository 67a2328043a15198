"""The study database: one SQLAlchemy base shared by SQLite (one file, no server) and PostgreSQL
(several machines), which keep the contract of ``_contract.py``.

``Storage(url)`` opens the implementation the URL names (:class:`~netrace.storage._sqlite.
SQLiteStorage` or :class:`~netrace.storage._postgres.PostgresStorage`). This base does what both
do the same way over SQLAlchemy Core; each implementation supplies what its database does
differently (its engines, how it writes an epoch's values and decisions in bulk, where it keeps
running trials' states, its clock), and nothing here asks which database it is.

Writes are batched: a worker writes a whole epoch of its population (validation values, rule
decisions, finished trials, checkpoints and its heartbeat) in one transaction, so storage costs
one commit per population epoch, not one per network. A committed epoch survives a crash of any
process (SQLite in WAL mode with ``synchronous=NORMAL``; PostgreSQL's own log).

Running trials are resumable: with each epoch a worker saves every running network's whole
training state (:class:`ResumeState`, ~100 KB for an MLP 32-64-64-1 with Adam), so a dead
worker's networks continue where they were instead of starting over. Those bytes are most of
what a worker writes, so each implementation keeps them where they cost least (see theirs). In
both a kill just after an epoch's commit (before its states are stored) loses that epoch too,
not only the one in training. When a worker dies its trials go back to the queue with their
states, and their curves are cut back to the epoch of the state (a kill between the commit and
the states leaves the curve one epoch ahead), so a trial's curve and its state always agree.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Any

import sqlalchemy as sa

from netrace.errors import UserError
from netrace.storage import _schema as db
from netrace.storage._compat import upgrade_from_notes
from netrace.storage._reads import EvaluationsMixin, ReadsMixin
from netrace.storage._records import DecisionRecord, EpochValue, ResumeState
from netrace.storage._studies import StudiesMixin
from netrace.storage._workers import WorkersMixin
from netrace.storage._writes import WritesMixin

__all__ = ["Storage", "open_storage", "storage_url"]


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


def _implementation(url: str) -> type[Storage]:
    if url.startswith("sqlite"):
        from netrace.storage._sqlite import SQLiteStorage

        return SQLiteStorage
    from netrace.storage._postgres import PostgresStorage

    return PostgresStorage


class Storage(StudiesMixin, WorkersMixin, WritesMixin, ReadsMixin, EvaluationsMixin, ABC):
    """Reads and writes studies, trials, curves, decisions and checkpoints.

    >>> import tempfile, os
    >>> s = Storage(os.path.join(tempfile.mkdtemp(), "race.db"))
    >>> type(s).__name__, s.dialect
    ('SQLiteStorage', 'sqlite')
    >>> study = s.create_study("demo", direction="minimize", config={})
    >>> [t.number for t in s.add_trials(study.id, [{"lr": 0.1}, {"lr": 0.01}], [1, 2])]
    [0, 1]

    Trials have a number in their study (the one netrace shows and users pass: see
    :meth:`trial_number`, :meth:`checkpoint_of`) and a row id (``TrialRecord.id``), which the
    other methods take. ``create=False`` opens only an existing SQLite file (PostgreSQL: the
    database must exist anyway).
    """

    #: "sqlite" or "postgresql": which implementation this is
    dialect: str = ""
    #: only this machine can open the study (a file), so its workers cannot be elsewhere
    local_only: bool = True

    def __new__(cls, url: str | os.PathLike[str] | None = None, *, create: bool = True
                ) -> Storage:
        if cls is Storage:
            if url is None:
                raise TypeError("Storage() needs the storage's path or URL")
            cls = _implementation(storage_url(url))
        return super().__new__(cls)

    def __init__(self, url: str | os.PathLike[str], *, create: bool = True) -> None:
        self.url = storage_url(url)
        self._beats = {}
        self._write, self._read = self._connect(create)
        try:
            db.meta.create_all(self._write)
            self._create_resume_table()
            with self._write.begin() as c:
                self._check_schema(c, url)
        except sa.exc.OperationalError as exc:
            raise UserError(f"cannot open storage '{url}': {exc.orig}") from None
        except sa.exc.DatabaseError as exc:
            raise UserError(f"storage '{url}' is not a netrace database: {exc.orig}") from None

    def _check_schema(self, c: sa.Connection, url: Any) -> None:
        """Mark a new database with the schema version; upgrade one of version 1 (once: the
        schema row is locked until the upgrade commits); refuse any other."""
        row = c.execute(sa.select(db.info.c.value).where(db.info.c.key == "schema")
                        .with_for_update()).first()
        if row is None:  # a new database (another process may be marking it too)
            c.execute(self._insert(db.info).values(key="schema", value=str(db.SCHEMA_VERSION))
                      .on_conflict_do_nothing(index_elements=["key"]))
        elif int(row[0]) == 1:
            upgrade_from_notes(c)
            c.execute(db.info.update().where(db.info.c.key == "schema")
                      .values(value=str(db.SCHEMA_VERSION)))
        elif int(row[0]) != db.SCHEMA_VERSION:
            raise UserError(f"storage '{url}' has schema version {row[0]}, this netrace "
                            f"reads versions 1 and {db.SCHEMA_VERSION}; use a new storage file "
                            "or the netrace that wrote it")

    def close(self) -> None:
        for worker_id in list(self._beats):
            self._stop_beat(worker_id)
        self.flush()
        self._write.dispose()
        self._read.dispose()

    def flush(self) -> None:
        """Wait until the states of the last recorded epoch are stored (an implementation may
        store them in the background); a failure to store them is raised here."""

    # -- what each implementation does its own way --------------------------------------------
    @abstractmethod
    def _connect(self, create: bool) -> tuple[sa.Engine, sa.Engine]:
        """The engines that write and read (they may be one)."""

    @abstractmethod
    def _create_resume_table(self) -> None:
        """Create the ``resume_states`` table if it is missing."""

    @abstractmethod
    def _clock(self) -> Any:
        """Now, as a value or SQL expression, for workers' heartbeats: one clock for every
        machine that shares the study."""

    @abstractmethod
    def _insert(self, table: sa.Table) -> Any:
        """An INSERT that supports ``on_conflict_do_update``."""

    @abstractmethod
    def _write_values(self, c: sa.Connection, values: list[EpochValue], direction: str) -> None:
        """Curve rows (replacing a re-recorded epoch), and per trial the epochs seen and the
        best value and its epoch in ``direction``; several epochs of one trial in order."""

    @abstractmethod
    def _write_decisions(self, c: sa.Connection, decisions: list[DecisionRecord]) -> None:
        """Insert the rule's decisions."""

    @abstractmethod
    def _upsert_states(self, c: sa.Connection, states: list[ResumeState]) -> None:
        """Insert or replace rows of ``resume_states``."""

    @abstractmethod
    def _store_states(self, worker_id: int, states: list[ResumeState]) -> None:
        """Keep a worker's running trials' states of the epoch just committed (replacing its
        earlier ones), where other processes find them when it dies."""

    def _saved_states(self, worker_id: int) -> dict[int, ResumeState]:
        """States a worker kept outside the ``resume_states`` table, by trial id."""
        return {}

    def _drop_saved_states(self, worker_id: int) -> None:
        """Forget the states a worker kept outside the table (it is done, or they moved)."""


def open_storage(url: str | os.PathLike[str]) -> Storage:
    """Open (creating if needed) the storage at a path or URL."""
    return Storage(url)
