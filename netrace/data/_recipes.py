"""Feature and target recipes for price data, and the resolution of ``[task]`` names.

Every feature is a value per row computed from that row and earlier rows only (trailing), with
no fitted parameters; its ``lookback`` is how many raw rows it reads, counting its own. Targets
are a per-row series read ``horizon`` rows after a window's last row.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from netrace.errors import UserError, did_you_mean

__all__ = [
    "FEATURE_RECIPES",
    "TARGET_RECIPES",
    "Feature",
    "Target",
    "price_columns",
    "resolve_features",
    "resolve_target",
]

_PRICE_FIELDS = ("open", "high", "low", "close", "volume")


_ADJ_CLOSE = ("adj close", "adj_close", "adjclose", "adjusted close", "adjusted_close")


def price_columns(columns: Sequence[str]) -> dict[str, str]:
    """Map open/high/low/close/volume to the frame's own column names (case-insensitive). With
    no close column, an adjusted close (``Adj Close``, ``adj_close``, ...) is the close."""
    found: dict[str, str] = {}
    adjusted = None
    for col in columns:
        key = str(col).strip().lower()
        if key in _PRICE_FIELDS and key not in found:
            found[key] = col
        elif key in _ADJ_CLOSE and adjusted is None:
            adjusted = col
    if "close" not in found and adjusted is not None:
        found["close"] = adjusted
    return found


def adjusted_close_only(columns: Sequence[str]) -> str | None:
    """The adjusted close column standing in for a missing close column, or None."""
    col = price_columns(columns).get("close")
    return col if col is not None and str(col).strip().lower() in _ADJ_CLOSE else None


@dataclass(frozen=True)
class Feature:
    """One model input per row: a column as it is, or a recipe over price columns."""

    name: str
    lookback: int
    categorical: bool = False
    recipe: str | None = None
    time: str | None = None  # the time column, for calendar recipes

    def values(self, frame: pd.DataFrame) -> pd.Series:
        if self.recipe is None:
            return frame[self.name]
        if self.recipe == "day_of_week":
            assert self.time is not None
            return pd.Series(day_of_week(frame, self.time), index=frame.index, name=self.name)
        return pd.Series(_feature_fn(self.recipe)(frame), index=frame.index, name=self.name)


@dataclass(frozen=True)
class Target:
    """What to predict: a per-row series, read ``horizon`` rows after a window's last row."""

    name: str
    kind: str  # "regression" | "binary" | "class"
    recipe: str | None = None
    description: str = ""

    def values(self, frame: pd.DataFrame) -> pd.Series:
        if self.recipe is None:
            return frame[self.name]
        return pd.Series(TARGET_RECIPES[self.recipe][1](frame), index=frame.index, name=self.name)


def _col(frame: pd.DataFrame, field: str) -> np.ndarray:
    return frame[price_columns(frame.columns)[field]].to_numpy(dtype=float)


def _log_positive(frame: pd.DataFrame, field: str) -> np.ndarray:
    x = _col(frame, field)
    bad = np.flatnonzero(~(x > 0))
    if bad.size:
        name = price_columns(frame.columns)[field]
        raise UserError(f"column '{name}' must be positive for log-price recipes, but row "
                        f"{bad[0]} has {x[bad[0]]}; fix or drop such rows")
    return np.log(x)


def log_return(frame: pd.DataFrame) -> np.ndarray:
    """log(close_t / close_{t-1}); NaN on the first row."""
    lc = _log_positive(frame, "close")
    return np.concatenate([[np.nan], np.diff(lc)])


def log_range(frame: pd.DataFrame) -> np.ndarray:
    """log(high_t / low_t): the day's range."""
    return _log_positive(frame, "high") - _log_positive(frame, "low")


def parkinson(frame: pd.DataFrame) -> np.ndarray:
    """Parkinson (1980) volatility from the high/low range: sqrt(log(H/L)^2 / (4 log 2))."""
    return np.sqrt(log_range(frame) ** 2 / (4.0 * math.log(2.0)))


def close_vol(frame: pd.DataFrame) -> np.ndarray:
    """Close-to-close volatility for data without a high and low: sqrt(pi / 2) |log return|,
    whose mean is the return's standard deviation when returns are normal with mean zero;
    NaN on the first row."""
    return math.sqrt(math.pi / 2.0) * np.abs(log_return(frame))


def volume_change(frame: pd.DataFrame) -> np.ndarray:
    """log(1 + volume_t) - log(1 + volume_{t-1}); the 1 keeps zero-volume days finite."""
    v = _col(frame, "volume")
    bad = np.flatnonzero(~(v >= 0))
    if bad.size:
        name = price_columns(frame.columns)["volume"]
        raise UserError(f"column '{name}' must be >= 0, but row {bad[0]} has {v[bad[0]]}")
    return np.concatenate([[np.nan], np.diff(np.log1p(v))])


def rolling_vol(n: int) -> Callable[[pd.DataFrame], np.ndarray]:
    """Realized volatility over the last n log returns: sqrt(mean(r^2))."""

    def fn(frame: pd.DataFrame) -> np.ndarray:
        # each window summed on its own (no running sum as in pandas' rolling), so a value
        # depends on its n returns alone, bit for bit: later rows cannot shift earlier ones
        r2 = log_return(frame) ** 2
        out = np.full(len(r2), np.nan)
        if len(r2) >= n:
            out[n - 1:] = np.sqrt(np.lib.stride_tricks.sliding_window_view(r2, n).mean(axis=1))
        return out

    return fn


def vol_mean(n: int) -> Callable[[pd.DataFrame], np.ndarray]:
    """The mean Parkinson volatility of the last n rows (Corsi's HAR components: n = 1, 5, 22)."""

    def fn(frame: pd.DataFrame) -> np.ndarray:
        v = parkinson(frame)
        out = np.full(len(v), np.nan)
        if len(v) >= n:  # each window on its own, as rolling_vol
            out[n - 1:] = np.lib.stride_tricks.sliding_window_view(v, n).mean(axis=1)
        return out

    return fn


def overnight_gap(frame: pd.DataFrame) -> np.ndarray:
    """log(open_t / close_{t-1}): the move between yesterday's close and today's open."""
    lc = _log_positive(frame, "close")
    return np.concatenate([[np.nan], _log_positive(frame, "open")[1:] - lc[:-1]])


def day_of_week(frame: pd.DataFrame, time: str) -> np.ndarray:
    """The weekday of the time column's dates (0 Monday .. 6 Sunday), one-hot encoded."""
    t = pd.to_datetime(frame[time], errors="coerce")
    if t.isna().any():
        raise UserError(f"recipe 'day_of_week' needs dates in the time column '{time}'; row "
                        f"{int(np.flatnonzero(t.isna().to_numpy())[0])} has none")
    return t.dt.day_of_week.to_numpy()


def direction(frame: pd.DataFrame) -> np.ndarray:
    """1.0 when the close rose (log return > 0), else 0.0; NaN on the first row."""
    r = log_return(frame)
    return np.where(np.isnan(r), np.nan, (r > 0).astype(float))


#: name -> (lookback in rows, price fields needed, description)
FEATURE_RECIPES: dict[str, tuple[int, tuple[str, ...], str]] = {
    "log_return": (2, ("close",), "log close-to-close return"),
    "range": (1, ("high", "low"), "log high/low range"),
    "parkinson": (1, ("high", "low"), "Parkinson high/low volatility"),
    "vol_close": (2, ("close",), "close-to-close volatility, sqrt(pi/2) |log return|"),
    "volume_change": (2, ("volume",), "log change of 1 + volume"),
    "rolling_vol_N": (0, ("close",), "realized volatility of the last N log returns (N >= 2)"),
    "vol_mean_N": (0, ("high", "low"), "mean Parkinson volatility of the last N rows (N >= 1; "
                   "the HAR components are vol_mean_1, vol_mean_5, vol_mean_22)"),
    "gap": (2, ("open", "close"), "overnight gap, log of the open over the previous close"),
    "day_of_week": (1, (), "weekday of the time column's date, one-hot encoded"),
}

#: name -> (task kind, per-row function, lookback, description)
TARGET_RECIPES: dict[str, tuple[str, Callable[[pd.DataFrame], np.ndarray], int, str]] = {
    "return_next": ("regression", log_return, 2, "log return"),
    "vol_next": ("regression", parkinson, 1, "Parkinson high/low volatility"),
    "vol_close_next": ("regression", close_vol, 2,
                       "close-to-close volatility, sqrt(pi/2) |log return|"),
    "direction_next": ("binary", direction, 2, "direction of the close (1 up, 0 not)"),
}
_TARGET_FIELDS = {"return_next": ("close",), "vol_next": ("high", "low"),
                  "vol_close_next": ("close",), "direction_next": ("close",)}
#: the default features of price data with a recipe target, and the price fields each needs
_DEFAULT_RECIPES = {"log_return": ("close",), "range": ("high", "low"),
                    "volume_change": ("volume",), "rolling_vol_20": ("close",)}
_ROLLING = re.compile(r"^rolling_vol_(\d+)$")
_VOL_MEAN = re.compile(r"^vol_mean_(\d+)$")
_WINDOWED = ("rolling_vol_N", "vol_mean_N")
# recipes over the last N rows: pattern -> (smallest N, price fields, rows read beyond N, example)
_WINDOW_RECIPES = {_ROLLING: (2, ("close",), 1, "rolling_vol_20"),
                   _VOL_MEAN: (1, ("high", "low"), 0, "vol_mean_22")}


def _windowed(name: str) -> tuple[int, tuple[int, tuple[str, ...], int, str]] | None:
    """N and the settings of a recipe over the last N rows, or None for another name."""
    for pattern, settings in _WINDOW_RECIPES.items():
        m = pattern.match(name)
        if m:
            return int(m.group(1)), settings
    return None


def _feature_fn(recipe: str) -> Callable[[pd.DataFrame], np.ndarray]:
    m = _ROLLING.match(recipe)
    if m:
        return rolling_vol(int(m.group(1)))
    m = _VOL_MEAN.match(recipe)
    if m:
        return vol_mean(int(m.group(1)))
    return {"log_return": log_return, "range": log_range, "parkinson": parkinson,
            "vol_close": close_vol, "volume_change": volume_change,
            "gap": overnight_gap}[recipe]


def _need_prices(recipe: str, fields: tuple[str, ...], columns: Sequence[str], where: str) -> None:
    have = price_columns(columns)
    missing = [f for f in fields if f not in have]
    if missing:
        raise UserError(f"{where} recipe '{recipe}' needs price column(s) {', '.join(missing)} "
                        f"(any case), which the data lacks; its columns are: "
                        f"{', '.join(map(str, columns))}")


def resolve_features(names: Sequence[str] | None, categorical: Sequence[str],
                     columns: Sequence[str], *, exclude: Sequence[str],
                     default_recipes: bool, time: str | None = None) -> list[Feature]:
    """Turn ``[task] features`` (columns or recipe names) into :class:`Feature` objects.

    A name that is a column is that column; otherwise it must be a recipe. With no list, the
    default is the standard price recipes the columns allow (``log_return``, ``range``,
    ``volume_change``, ``rolling_vol_20``; close-only data gets the first and the last) for price
    data with a recipe target, else every
    column except those in ``exclude`` (the target and the time column).
    """
    cols = [str(c) for c in columns]
    for c in categorical:
        if c not in cols:
            raise UserError(f"unknown column '{c}' in [task] categorical{did_you_mean(c, cols)}; "
                            f"the data has: {', '.join(cols)}")
    if names is None:
        if default_recipes:  # the standard price recipes that the data's columns allow
            have = price_columns(cols)
            names = tuple(n for n, fields in _DEFAULT_RECIPES.items()
                          if all(f in have for f in fields))
        else:
            names = tuple(c for c in cols if c not in exclude)
            if not names:
                raise UserError("no feature columns are left after the target and time columns; "
                                "list [task] features")
    feats = []
    for name in names:
        if name in cols:
            feats.append(Feature(name, 1, categorical=name in categorical))
            continue
        windowed = _windowed(name)
        if windowed is not None:
            n, (smallest, fields, extra, example) = windowed
            if n < smallest:
                raise UserError(f"[task] features: '{name}' needs N >= {smallest} rows (as in "
                                f"{example})")
            _need_prices(name, fields, cols, "[task] features:")
            feats.append(Feature(name, n + extra, recipe=name))
            continue
        if name == "day_of_week":
            if time is None:
                raise UserError("[task] features: recipe 'day_of_week' needs dates: set [data] "
                                "time to the time column")
            feats.append(Feature(name, 1, categorical=True, recipe=name, time=time))
            continue
        if name in FEATURE_RECIPES:
            lookback, fields, _ = FEATURE_RECIPES[name]
            _need_prices(name, fields, cols, "[task] features:")
            feats.append(Feature(name, lookback, recipe=name))
            continue
        known = cols + [r for r in FEATURE_RECIPES if r not in _WINDOWED]
        raise UserError(f"unknown column or recipe '{name}' in [task] features"
                        f"{did_you_mean(name, known)}; the data has columns "
                        f"{', '.join(cols)}; recipes are {', '.join(FEATURE_RECIPES)}")
    for c in categorical:
        if c not in names:
            raise UserError(f"[task] categorical names '{c}', which is not among the features; "
                            "add it to [task] features or remove it from categorical")
    return feats


def resolve_target(name: str, task_type: str, columns: Sequence[str], time: str | None) -> Target:
    """Turn ``[task] target`` into a :class:`Target`, checking it fits the task type."""
    cols = [str(c) for c in columns]
    if name in TARGET_RECIPES and name not in cols:
        kind, _, _, desc = TARGET_RECIPES[name]
        if time is None:
            raise UserError(f"[task] target recipe '{name}' needs rows ordered in time; set "
                            "[data] time to the time column")
        _need_prices(name, _TARGET_FIELDS[name], cols, "[task] target:")
        expected = {"regression": "regression", "binary": "binary"}[kind]
        if task_type != expected:
            raise UserError(f"[task] target '{name}' is a {expected} target, but [task] type = "
                            f"{task_type!r}; set type = \"{expected}\"")
        return Target(name, kind, recipe=name, description=desc)
    if name not in cols:
        raise UserError(f"unknown target column '{name}' in [task] target"
                        f"{did_you_mean(name, cols + list(TARGET_RECIPES))}; the data has "
                        f"columns {', '.join(cols)}; recipes are {', '.join(TARGET_RECIPES)}")
    if name == time:
        raise UserError(f"[task] target '{name}' is the time column; choose another column")
    kind = "regression" if task_type == "regression" else "class"
    return Target(name, kind, description=f"column '{name}'")
