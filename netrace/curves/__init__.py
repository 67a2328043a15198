"""Learning-curve extrapolation and termination rules (pure array math).

``extrapolate`` predicts where each validation curve will end (Domhan, Springenberg & Hutter,
IJCAI 2015); rules decide, over a batch of running curves, which networks to stop.
"""

from __future__ import annotations

from netrace.curves._families import FAMILIES, FAMILY_NAMES, Family
from netrace.curves._forecast import CALIBRATED, PAPER, Calibration, Forecast, extrapolate
from netrace.curves._sampler import SamplerSettings

__all__ = [
    "CALIBRATED",
    "FAMILIES",
    "FAMILY_NAMES",
    "PAPER",
    "Calibration",
    "Family",
    "Forecast",
    "SamplerSettings",
    "extrapolate",
]
