"""The TOML config: sections [data], [task], [split], [race] as frozen dataclasses."""

from __future__ import annotations

from netrace.config._schema import (
    PRICE_SOURCES,
    SOURCES,
    Config,
    DataConfig,
    RaceConfig,
    SplitConfig,
    TaskConfig,
    config_from_dict,
    load_config,
)

__all__ = [
    "PRICE_SOURCES",
    "SOURCES",
    "Config",
    "DataConfig",
    "RaceConfig",
    "SplitConfig",
    "TaskConfig",
    "config_from_dict",
    "load_config",
]
