"""Shared fixtures: synthetic price data made here (tests never read ../shared)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


def make_prices(n: int = 400, seed: int = 0, start: str = "2001-01-01") -> pd.DataFrame:
    """A geometric random walk with consistent OHLCV columns and business-day dates."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = close * np.exp(rng.normal(0, 0.003, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.005, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.005, n)))
    volume = rng.integers(1_000, 10_000, n)
    dates = pd.bdate_range(start, periods=n)
    return pd.DataFrame({"Date": dates, "Open": open_, "High": high, "Low": low,
                         "Close": close, "Volume": volume})


@pytest.fixture
def prices() -> pd.DataFrame:
    return make_prices()
