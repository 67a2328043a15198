"""The verdict: finalists chosen on validation, refit and combined, judged once on the test part
next to the classical baselines with Diebold-Mariano and SPA p-values; the final model that
``netrace predict`` and :func:`load_model` use."""

from __future__ import annotations

from netrace.evaluate._evaluate import CANDIDATES, evaluate_study, load_model, result_lines
from netrace.evaluate._model import FinalModel, Interval, Net

__all__ = ["CANDIDATES", "FinalModel", "Interval", "Net", "evaluate_study", "load_model",
           "result_lines"]
