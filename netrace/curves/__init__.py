"""Learning-curve extrapolation and termination rules (pure array math).

``extrapolate`` predicts where each validation curve will end (Domhan, Springenberg & Hutter,
IJCAI 2015), with an ensemble sampler or (``method="amortized"``) a network trained on that
sampler's forecasts; rules decide, over a batch of running curves, which networks to stop.
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
    Goal,
    HyperbandRule,
    LCRule,
    MedianRule,
    NoRule,
    Rule,
    TopKRule,
    make_rule,
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
    "Forecast",
    "Goal",
    "HyperbandRule",
    "LCRule",
    "MedianRule",
    "NoRule",
    "Rule",
    "SamplerSettings",
    "TopKRule",
    "extrapolate",
    "make_rule",
    "rule_options",
]
