"""Studies: created, found, configured, ended with a reason, reopened (shared by both
implementations)."""

from __future__ import annotations

import json
import time
from typing import Any

import sqlalchemy as sa

from netrace.errors import UserError, did_you_mean
from netrace.storage import _schema as db
from netrace.storage._records import RaceEndReason, StudyRecord, StudyState, StudyStatus

__all__ = ["StudiesMixin"]


class StudiesMixin:
    url: str
    _write: sa.Engine
    _read: sa.Engine

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
                c.execute(db.studies.insert().values(
                    name=name, direction=direction, target=target,
                    config=json.dumps(config, sort_keys=True), created=time.time(),
                    n_trials=0, state=StudyState.RUNNING.value, reason=""))
        except sa.exc.IntegrityError:  # another process created it first
            pass
        study = self.find_study(name)
        assert study is not None
        return study

    def find_study(self, name: str) -> StudyRecord | None:
        with self._read.connect() as c:
            row = c.execute(sa.select(db.studies).where(db.studies.c.name == name)).first()
        return None if row is None else db.study_record(row)

    def get_study(self, name: str) -> StudyRecord:
        study = self.find_study(name)
        if study is None:
            names = self.study_names()
            raise UserError(f"no study '{name}' in {self.url}{did_you_mean(name, names)}"
                            + (f"; studies: {', '.join(names)}" if names else "; it is empty"))
        return study

    def study_names(self) -> list[str]:
        with self._read.connect() as c:
            return [r[0] for r in c.execute(sa.select(db.studies.c.name)
                                            .order_by(db.studies.c.id))]

    def set_study_config(self, study_id: int, config: dict[str, Any],
                         target: float | None) -> None:
        """The config a resumed study now runs under (a larger budget, another rule...)."""
        with self._write.begin() as c:
            c.execute(db.studies.update().where(db.studies.c.id == study_id)
                      .values(config=json.dumps(config, sort_keys=True), target=target))

    def study_status(self, study_id: int) -> StudyStatus:
        """Whether the race is over, why, and the note that says so to people."""
        s = db.studies.c
        with self._read.connect() as c:
            row = c.execute(sa.select(s.state, s.end_reason, s.reason)
                            .where(s.id == study_id)).one()
        return db.study_status(row)

    def study_state(self, study_id: int) -> tuple[StudyState, str]:
        """The study's state and its note (``study_status`` has why it ended, as a value)."""
        status = self.study_status(study_id)
        return status.state, status.note

    def finish_study(self, study_id: int, reason: RaceEndReason, note: str = "") -> bool:
        """Mark the race over for ``reason``, with a note for people (by default the reason in
        words); the first reason wins. True if this call ended it."""
        if not isinstance(reason, RaceEndReason):
            raise TypeError(f"a race ends for a RaceEndReason, not {reason!r}")
        s = db.studies.c
        with self._write.begin() as c:
            n = c.execute(db.studies.update().where(
                (s.id == study_id) & (s.state == StudyState.RUNNING.value))
                .values(state=StudyState.DONE.value, end_reason=reason.value,
                        reason=note or reason.label)).rowcount
        return n == 1

    def reopen_study(self, study_id: int) -> None:
        """The race goes on (a resume with more budget)."""
        with self._write.begin() as c:
            c.execute(db.studies.update().where(db.studies.c.id == study_id)
                      .values(state=StudyState.RUNNING.value, reason="", end_reason=None))

    def _study_by_id(self, study_id: int) -> StudyRecord:
        with self._read.connect() as c:
            return db.study_record(c.execute(sa.select(db.studies)
                                             .where(db.studies.c.id == study_id)).one())
