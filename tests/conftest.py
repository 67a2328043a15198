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


@pytest.fixture(scope="session")
def postgres():
    from tests.servers import Postgres

    server = Postgres()
    yield server
    server.stop()


_db_counter = iter(range(10**6))


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """Every storage test runs on both implementations (one contract)."""
    if request.param == "sqlite":
        return str(tmp_path / "race.db")
    server = request.getfixturevalue("postgres")
    return server.new_database(f"t{next(_db_counter)}")
