"""The TOML config, validated into frozen dataclasses.

Every section is a frozen dataclass whose fields are the section's keys. A field's metadata says
what values it takes; :func:`load_config` checks each key and value and raises
:class:`~netrace.errors.UserError` with the key, its section, what is allowed and what was given.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netrace.config._space import SearchSpace, parse_space
from netrace.errors import UserError, did_you_mean
from netrace.vocabulary import (
    METRICS,
    PRICE_SOURCES,
    RULE_OPTIONS,
    RULES,
    SOURCES,
    TASKS,
    rule_options,
)

__all__ = [
    "PRICE_SOURCES",
    "SOURCES",
    "Config",
    "DataConfig",
    "TaskConfig",
    "SplitConfig",
    "RaceConfig",
    "SearchConfig",
    "EvaluateConfig",
    "FORECASTS",
    "load_config",
    "config_from_dict",
]

TASK_TYPES = TASKS
SCHEMES = ("holdout", "walk_forward", "purged_kfold", "kfold")
FILLS = ("none", "ffill", "drop")
MODES = ("expanding", "rolling")
# RULES, METRICS, TASKS and the built-in sources are netrace.vocabulary's


def _spec(kind: str, *, choices: tuple[str, ...] = (), low: float | None = None,
          high: float | None = None, low_open: bool = False, high_open: bool = False,
          doc: str = "") -> dict[str, Any]:
    return {"kind": kind, "choices": choices, "low": low, "high": high,
            "low_open": low_open, "high_open": high_open, "doc": doc}


def _rule_doc(rule: str) -> str:
    return f"[race.{rule}]: {', '.join(RULE_OPTIONS[rule])}"


@dataclass(frozen=True)
class DataConfig:
    """``[data]``: where the rows come from."""

    path: str | None = field(default=None, metadata=_spec(
        "str", doc="a CSV or Parquet file, relative to the config file"))
    source: str | None = field(default=None, metadata=_spec(
        "str", choices=SOURCES, doc="built-in data"))
    time: str | None = field(default=None, metadata=_spec(
        "str", doc="the time column; absent for i.i.d. rows"))
    series: str | None = field(default=None, metadata=_spec(
        "str", doc="the column naming each series of a long-format panel (needs time)"))
    fill: str = field(default="none", metadata=_spec(
        "str", choices=FILLS, doc="what to do with NaN/inf inputs"))
    date_format: str | None = field(default=None, metadata=_spec(
        "str", doc="a strptime format for a text time column, e.g. \"%d/%m/%Y\"; default: "
        "ISO and month-first dates"))


@dataclass(frozen=True)
class TaskConfig:
    """``[task]``: what to predict from what."""

    type: str = field(default="regression", metadata=_spec("str", choices=TASK_TYPES))
    target: str | None = field(default=None, metadata=_spec(
        "str", doc="a column, or return_next, vol_next, vol_close_next, direction_next"))
    features: tuple[str, ...] | None = field(default=None, metadata=_spec(
        "strs", doc="columns and feature recipes"))
    categorical: tuple[str, ...] = field(default=(), metadata=_spec(
        "strs", doc="columns to one-hot encode"))
    window: int = field(default=1, metadata=_spec("int", low=1))
    horizon: int = field(default=1, metadata=_spec("int", low=1))


@dataclass(frozen=True)
class SplitConfig:
    """``[split]``: how rows are divided into training, validation and test parts."""

    scheme: str | None = field(default=None, metadata=_spec(
        "str", choices=SCHEMES, doc="default: holdout"))
    test: float = field(default=0.2, metadata=_spec("float", low=0.0, high=1.0, low_open=True,
                                                    high_open=True))
    validation: float = field(default=0.2, metadata=_spec(
        "float", low=0.0, high=1.0, low_open=True, high_open=True))
    folds: int = field(default=5, metadata=_spec("int", low=2))
    embargo: int | None = field(default=None, metadata=_spec(
        "int", low=0, doc="rows between a training part and the part judged on it"))
    mode: str = field(default="expanding", metadata=_spec("str", choices=MODES))
    train_size: int | None = field(default=None, metadata=_spec(
        "int", low=1, doc="training rows per fold for mode = rolling"))
    seed: int = field(default=0, metadata=_spec("int", low=0))


@dataclass(frozen=True)
class RaceConfig:
    """``[race]``: the search (used by ``netrace run``)."""

    target: float | None = field(default=None, metadata=_spec(
        "float", doc="stop when a network's validation score reaches it"))
    budget: int | None = field(default=None, metadata=_spec("int", low=1, doc="network-epochs"))
    max_epochs: int = field(default=100, metadata=_spec("int", low=1))
    population: int = field(default=64, metadata=_spec("int", low=1))
    workers: int | None = field(default=None, metadata=_spec("int", low=1))
    heartbeat_timeout: float = field(default=60.0, metadata=_spec(
        "float", low=0.0, low_open=True,
        doc="seconds without a worker's heartbeat before a run re-queues its networks"))
    rule: str = field(default="lc", metadata=_spec("str", choices=RULES))
    # each rule's options, as a table [race.<rule>] (only the chosen rule's)
    lc: dict[str, Any] | None = field(default=None, metadata=_spec(
        "rule", doc=_rule_doc("lc")))
    median: dict[str, Any] | None = field(default=None, metadata=_spec(
        "rule", doc=_rule_doc("median")))
    hyperband: dict[str, Any] | None = field(default=None, metadata=_spec(
        "rule", doc=_rule_doc("hyperband")))
    topk: dict[str, Any] | None = field(default=None, metadata=_spec(
        "rule", doc=_rule_doc("topk")))
    rule_patience: int | None = field(default=None, metadata=_spec(
        "int", low=0, doc="the rule stops a network only once it has stopped improving "
        "(Optuna's PatientPruner)"))
    metric: str | None = field(default=None, metadata=_spec(
        "str", choices=METRICS, doc="default: r2 (regression), auc (binary), accuracy"))
    storage: str | None = field(default=None, metadata=_spec("str"))


SAMPLERS = ("random", "tpe", "gp")


@dataclass(frozen=True)
class SearchConfig:
    """``[search]``: how hyperparameters are proposed (Optuna samplers via ask/tell)."""

    sampler: str = field(default="tpe", metadata=_spec("str", choices=SAMPLERS))
    seed: int = field(default=0, metadata=_spec("int", low=0))
    startup: int = field(default=16, metadata=_spec(
        "int", low=0, doc="random proposals before the model-based sampler takes over"))
    space: SearchSpace | None = field(default=None, metadata=_spec(
        "space", doc="what to search; absent: netrace's default space"))


#: What a time-series regression target is, for its baselines (``[evaluate] baselines``):
#: ``auto`` reads it from the target (a volatility recipe, ``return_next``, else a level).
BASELINE_KINDS = ("auto", "volatility", "returns", "level")

#: The candidates for netrace's forecast (``[evaluate] forecast``).
FORECASTS = ("blend", "top_k", "greedy", "best", "folds", "best_folds")


@dataclass(frozen=True)
class EvaluateConfig:
    """``[evaluate]``: the final stage (``netrace evaluate``)."""

    finalists: int = field(default=10, metadata=_spec(
        "int", low=1, doc="the best networks on validation that are refit and combined"))
    forecast: str = field(default="blend", metadata=_spec(
        "str", choices=FORECASTS, doc="which candidate is netrace's forecast"))
    coverage: float = field(default=0.9, metadata=_spec(
        "float", low=0.0, high=1.0, low_open=True, high_open=True,
        doc="the prediction intervals' nominal coverage"))
    refit_every: int = field(default=20, metadata=_spec(
        "int", low=1, doc="the baselines are refit every this many test points"))
    seed: int = field(default=0, metadata=_spec("int", low=0))
    baselines: str = field(default="auto", metadata=_spec(
        "str", choices=BASELINE_KINDS,
        doc="which classical baselines judge a time-series regression: auto (from the target)"))


@dataclass(frozen=True)
class Config:
    """A whole, validated netrace config. ``base_dir`` is where relative paths start."""

    data: DataConfig = field(default_factory=DataConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    race: RaceConfig = field(default_factory=RaceConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    base_dir: Path = field(default=Path("."))
    origin: str = "<dict>"

    @property
    def is_time_series(self) -> bool:
        """True when rows are ordered in time (a time column or built-in price data)."""
        return self.data.time is not None or self.data.source in PRICE_SOURCES


_SECTIONS: dict[str, type] = {
    "data": DataConfig, "task": TaskConfig, "split": SplitConfig, "race": RaceConfig,
    "search": SearchConfig, "evaluate": EvaluateConfig,
}


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML config file.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "c.toml")
    >>> _ = open(p, "w").write('[data]\\nsource = "sp500"\\n[task]\\ntarget = "vol_next"\\n')
    >>> load_config(p).task.target
    'vol_next'
    """
    p = Path(path)
    if not p.exists():
        raise UserError(f"config file '{p}' does not exist; give the path of a TOML file "
                        "(examples/ has one per task)")
    if p.is_dir():
        raise UserError(f"config '{p}' is a directory; give the path of a TOML file")
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"config '{p}' is not a text file; give a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"config '{p}' is not valid TOML: {exc}") from None
    return config_from_dict(raw, base_dir=p.resolve().parent, origin=str(p))


def config_from_dict(raw: dict[str, Any], *, base_dir: str | Path = ".",
                     origin: str = "<dict>") -> Config:
    """Validate a parsed config mapping (as from TOML) into a :class:`Config`."""
    sections: dict[str, Any] = {}
    for name, table in raw.items():
        if name not in _SECTIONS:
            raise UserError(f"{origin}: unknown section [{name}]; known sections are "
                            f"{_names(_SECTIONS)}{did_you_mean(name, _SECTIONS)}")
        if not isinstance(table, dict):
            raise UserError(f"{origin}: '{name}' must be a section [{name}] with keys, "
                            f"got a {_kind_name(table)}")
        sections[name] = _section(origin, name, _SECTIONS[name], table)
    cfg = Config(**sections, base_dir=Path(base_dir), origin=origin)
    _check_whole(cfg)
    return cfg


def _section(origin: str, name: str, cls: type, table: dict[str, Any]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in fields:
            raise UserError(f"{origin}: unknown key '{key}' in [{name}]{did_you_mean(key, fields)}"
                            f" (known keys: {_names(fields)})")
        values[key] = _value(origin, name, key, value, fields[key].metadata)
    return cls(**values)


def _value(origin: str, section: str, key: str, value: Any, spec: Any) -> Any:
    where = f"{origin}: [{section}] {key}"
    kind = spec["kind"]
    if kind == "space":
        return parse_space(value, origin=origin)
    if kind == "rule":
        if not isinstance(value, dict):
            raise UserError(f"{origin}: '{key}' in [{section}] must be a table of the {key} "
                            f"rule's options, [{section}.{key}], got {_show(value)}")
        try:
            return rule_options(key, value)
        except UserError as err:
            raise UserError(f"{origin}: [{section}.{key}] {err}") from None
    if kind == "str":
        if not isinstance(value, str):
            raise UserError(f"{where} must be a string, got {_show(value)}; write {key} = \"...\"")
        if spec["choices"] and value not in spec["choices"]:
            raise UserError(f"{where} = {value!r} is not allowed; choose one of "
                            f"{', '.join(spec['choices'])}{did_you_mean(value, spec['choices'])}")
        return value
    if kind == "strs":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UserError(f"{where} must be a list of strings, got {_show(value)}; "
                            f"write {key} = [\"a\", \"b\"]")
        if len(set(value)) != len(value):
            dup = next(v for v in value if value.count(v) > 1)
            raise UserError(f"{where} names {dup!r} twice; list each name once")
        return tuple(value)
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where} must be a whole number, got {_show(value)}; "
                            f"write {key} = {_int_hint(value)}")
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where} must be a number, got {_show(value)}")
        value = float(value)
        if not math.isfinite(value):
            raise UserError(f"{where} must be a finite number, got {value}")
    _check_range(where, value, spec)
    return value


def _check_range(where: str, value: float, spec: Any) -> None:
    low, high = spec["low"], spec["high"]
    bad_low = low is not None and (value <= low if spec["low_open"] else value < low)
    bad_high = high is not None and (value >= high if spec["high_open"] else value > high)
    if bad_low or bad_high:
        lo = "" if low is None else (f"> {low:g}" if spec["low_open"] else f">= {low:g}")
        hi = "" if high is None else (f"< {high:g}" if spec["high_open"] else f"<= {high:g}")
        allowed = " and ".join(s for s in (lo, hi) if s)
        raise UserError(f"{where} must be {allowed}, got {value:g}")


def _check_whole(cfg: Config) -> None:
    d, t, s = cfg.data, cfg.task, cfg.split
    o = cfg.origin
    if d.path is not None and d.source is not None:
        raise UserError(f"{o}: [data] needs exactly one of 'path' (a CSV or Parquet file) or "
                        "'source' (built-in data such as \"sp500\"), got both; remove one")
    if t.target is None:
        raise UserError(f"{o}: [task] target is missing; name the column to predict or a "
                        "recipe such as \"vol_next\"")
    if not cfg.is_time_series:
        if t.window != 1:
            raise UserError(f"{o}: [task] window = {t.window} needs rows ordered in time; set "
                            "[data] time to the time column, or remove window for i.i.d. rows")
        if s.scheme in ("walk_forward", "purged_kfold"):
            raise UserError(f"{o}: [split] scheme = {s.scheme!r} needs rows ordered in time; set "
                            "[data] time, or use scheme = \"holdout\" or \"kfold\" for i.i.d. rows")
    elif s.scheme == "kfold":
        raise UserError(f"{o}: [split] scheme = \"kfold\" shuffles rows and would train on the "
                        "future of time-ordered data; use \"purged_kfold\" or \"walk_forward\"")
    if d.series is not None:
        _check_series(cfg)
    _check_embedding(cfg)
    r = cfg.race
    for name in RULES:
        if getattr(r, name, None) is not None and name != r.rule:
            raise UserError(f"{o}: [race.{name}] sets options of the {name} rule, but the race "
                            f"uses rule = \"{r.rule}\"; set [race] rule = \"{name}\" or remove "
                            f"[race.{name}]")
    if r.rule_patience is not None and r.rule == "none":
        raise UserError(f"{o}: [race] rule_patience makes the rule wait before it stops a "
                        "network, but rule = \"none\" stops none; remove rule_patience or "
                        "choose a rule")
    if s.train_size is not None and s.mode != "rolling":
        raise UserError(f"{o}: [split] train_size only applies to mode = \"rolling\"; set "
                        "mode = \"rolling\" or remove train_size")
    b = cfg.evaluate.baselines
    if b != "auto" and (t.type != "regression" or not cfg.is_time_series):
        raise UserError(f"{o}: [evaluate] baselines = {b!r} names the baselines of a "
                        "time-series regression, but this task is "
                        f"{'i.i.d. ' if not cfg.is_time_series else ''}{t.type}; remove it")
    if s.test + (s.validation if (s.scheme or "holdout") == "holdout" else 0.0) >= 0.9:
        raise UserError(f"{o}: [split] test + validation = {s.test + s.validation:g} leaves "
                        "almost nothing to train on; keep their sum below 0.9")


def _check_embedding(cfg: Config) -> None:
    """A series embedding learns a vector per series: it needs a panel (``[data] series``)."""
    space = cfg.search.space
    if space is None or "series_embedding" not in space or cfg.data.series is not None:
        return
    p = space["series_embedding"]
    if any(v > 0 for v in p.values()) or p.kind == "int" and p.high > 0:
        raise UserError(f"{cfg.origin}: [search.space] series_embedding learns a vector per "
                        "series of a panel, but [data] series is not set, so the data is one "
                        "series; set [data] series to the column naming each row's series (a "
                        "long-format file), or set series_embedding = 0 or remove it")


def _check_series(cfg: Config) -> None:
    """``[data] series`` names a column of its own: not the time, the target or a feature."""
    d, t, o = cfg.data, cfg.task, cfg.origin
    name = d.series
    if d.source is not None:
        raise UserError(f"{o}: [data] series = {name!r} names the series column of a panel "
                        f"file, but built-in '{d.source}' is one series; use [data] path with a "
                        "long-format file (one row per series and time), or remove series")
    if d.time is None:
        raise UserError(f"{o}: [data] series = {name!r} needs rows ordered in time within each "
                        "series; set [data] time to the time column, or remove series")
    if name == d.time:
        raise UserError(f"{o}: [data] series = {name!r} is also the time column; series names "
                        "the column that tells the series apart (such as \"ticker\")")
    if name == t.target:
        raise UserError(f"{o}: [data] series = {name!r} is also [task] target; the series "
                        "column labels rows, it is not predicted; choose another target")
    if name in (t.features or ()) or name in t.categorical:
        raise UserError(f"{o}: [task] features lists the series column {name!r}; the series "
                        "label is not a feature (every series is scaled on its own); remove it "
                        "from features")


def _names(keys: Any) -> str:
    return ", ".join(sorted(keys))


def _kind_name(value: Any) -> str:
    return {str: "string", int: "number", float: "number", bool: "boolean",
            list: "list"}.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    return f"{value!r} (a {_kind_name(value)})"


def _int_hint(value: Any) -> str:
    try:
        return str(int(float(value)))
    except (TypeError, ValueError):
        return "20"
