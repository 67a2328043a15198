"""netrace: race many neural networks on small, noisy data and keep the ones that generalize."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
