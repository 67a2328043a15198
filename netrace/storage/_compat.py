"""COMPATIBILITY: studies written by an earlier netrace (schema version 1).

Version 1 kept why a race or a trial ended in its note alone (``budget spent (600
network-epochs)``, ``early stopping after epoch 7``...), and the netrace before
:attr:`TrialState.CUT` recorded a trial cut off by the race's end as STOPPED with a note that
begins with ``race ended``. Opening such a database upgrades it once, in one transaction: the
new ``end_reason`` columns are added and filled from the notes, and those old STOPPED trials
become CUT. This is the only place where netrace reads meaning out of a note; everything else
reads ``end_reason``. The notes stay as they were, for people.
"""

from __future__ import annotations

import sqlalchemy as sa

from netrace.storage._records import RACE_ENDED, RaceEndReason, TrialEndReason, TrialState

__all__ = ["upgrade_from_notes"]


def upgrade_from_notes(c: sa.Connection) -> None:
    """Schema version 1 -> 2, inside the caller's transaction (which holds the schema row)."""
    c.exec_driver_sql("ALTER TABLE studies ADD COLUMN end_reason VARCHAR(20)")
    c.exec_driver_sql("ALTER TABLE trials ADD COLUMN end_reason VARCHAR(20)")
    t = sa.table("trials", sa.column("state"), sa.column("note"), sa.column("end_reason"))
    s = sa.table("studies", sa.column("state"), sa.column("reason"), sa.column("end_reason"))
    stopped, complete = TrialState.STOPPED.value, TrialState.COMPLETE.value
    # a netrace before TrialState.CUT: cut trials were STOPPED, noted "race ended: ..."
    c.execute(t.update().where((t.c.state == stopped) & t.c.note.like(RACE_ENDED + "%"))
              .values(state=TrialState.CUT.value))
    c.execute(t.update().where((t.c.state == complete) & t.c.note.like("early stopping%"))
              .values(end_reason=TrialEndReason.EARLY_STOPPING.value))
    for state in (TrialState.STOPPED, TrialState.COMPLETE, TrialState.CUT, TrialState.DIVERGED,
                  TrialState.FAILED):  # the rest: the one reason of their state
        c.execute(t.update().where((t.c.state == state.value) & t.c.end_reason.is_(None))
                  .values(end_reason=TrialEndReason.of(state).value))
    done = s.c.state == "done"
    c.execute(s.update().where(done & s.c.reason.like("budget spent%"))
              .values(end_reason=RaceEndReason.BUDGET_SPENT.value))
    c.execute(s.update().where(done & s.c.reason.like("target %"))
              .values(end_reason=RaceEndReason.TARGET_REACHED.value))
