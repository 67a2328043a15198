"""Learning-curve extrapolation and termination rules (pure array math).

``extrapolate`` predicts where each validation curve will end (Domhan, Springenberg & Hutter,
IJCAI 2015), with an ensemble sampler or (``method="amortized"``) a network trained on that
sampler's forecasts; rules decide, over a batch of running curves, which networks to stop: a
verdict per curve, with the rule's learned state passed in and out by the caller.
"""

from __future__ import annotations

from netrace.curves._families import FAMILIES, FAMILY_NAMES, Family
from netrace.curves._forecast import (
    CALIBRATED,
    PAPER,
    RAW,
    Calibration,
    Forecast,
    extrapolate,
)
from netrace.curves._rules import (
    RULES,
    Curves,
    Decision,
    FinalForecast,
    Goal,
    HyperbandRule,
    LCRule,
    LCState,
    MedianRule,
    NoRule,
    PatientRule,
    Rule,
    TopKRule,
    Verdict,
    make_rule,
    patient,
    rule_options,
)
from netrace.curves._sampler import SamplerSettings

__all__ = [
    "CALIBRATED",
    "FAMILIES",
    "FAMILY_NAMES",
    "PAPER",
    "RAW",
    "RULES",
    "Calibration",
    "Curves",
    "Decision",
    "Family",
    "FinalForecast",
    "Forecast",
    "Goal",
    "HyperbandRule",
    "LCRule",
    "LCState",
    "MedianRule",
    "NoRule",
    "PatientRule",
    "Rule",
    "SamplerSettings",
    "TopKRule",
    "Verdict",
    "extrapolate",
    "make_rule",
    "patient",
    "rule_options",
]
