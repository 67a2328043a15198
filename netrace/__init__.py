"""netrace: race many neural networks on small, noisy data and keep the ones that generalize."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "load_model"]


def load_model(storage: Any, study: str) -> Any:
    """The final model of an evaluated study (``netrace evaluate``); ``.predict(frame)`` gives
    forecasts in the target's units from raw rows. See :func:`netrace.evaluate.load_model`."""
    from netrace.evaluate import load_model as _load

    return _load(storage, study)
