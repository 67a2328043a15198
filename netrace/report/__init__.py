"""The report: one self-contained HTML file with a study's verdict, its test forecasts against
what happened, the leaderboard, every learning curve with the band the termination rule saw, the
race's timeline, hyperparameter importance, the data summary and the split plan."""

from __future__ import annotations

from netrace.report._report import Report, build_report, report_study

__all__ = ["Report", "build_report", "report_study"]
