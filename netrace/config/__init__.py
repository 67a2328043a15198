"""The TOML config: sections [data], [task], [split], [race] as frozen dataclasses."""

from __future__ import annotations

from netrace.config._schema import (
    PRICE_SOURCES,
    SOURCES,
    Config,
    DataConfig,
    RaceConfig,
    EvaluateConfig,
    SearchConfig,
    SplitConfig,
    TaskConfig,
    config_from_dict,
    load_config,
)
from netrace.config._space import (
    SPACE_KEYS,
    Param,
    SearchSpace,
    default_space,
    parse_space,
)

__all__ = [
    "SPACE_KEYS",
    "Param",
    "default_space",
    "parse_space",
    "PRICE_SOURCES",
    "SOURCES",
    "Config",
    "DataConfig",
    "RaceConfig",
    "EvaluateConfig",
    "SearchConfig",
    "SearchSpace",
    "SplitConfig",
    "TaskConfig",
    "config_from_dict",
    "load_config",
]
