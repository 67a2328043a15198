"""Shared fixtures: synthetic price data made here (tests never read ../shared); the servers
(PostgreSQL, a Ray head), whose tests are marked slow here."""

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


#: Fixtures that start a server: a test using one is slow (``pytest -m "not slow"`` skips it).
SERVERS = ("postgres", "ray_head")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(name in SERVERS for name in getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def postgres():
    from tests.servers import Postgres

    server = Postgres()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ray_head(request: pytest.FixtureRequest):
    """``ray start --head`` on 127.0.0.1 for the tests of one module: two CPUs, or the module's
    ``RAY_HEAD_CPUS``."""
    from tests.servers import RayHead

    server = RayHead(cpus=getattr(request.module, "RAY_HEAD_CPUS", 2))
    yield server
    server.stop()


_db_counter = iter(range(10**6))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def storage_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """Every storage test runs on both implementations (one contract)."""
    if request.param == "sqlite":
        return str(tmp_path / "race.db")
    server = request.getfixturevalue("postgres")
    return server.new_database(f"t{next(_db_counter)}")
