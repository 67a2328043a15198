"""From a config to a development part with its folds, and a sealed test part.

:func:`prepare` loads and checks the rows, computes the per-row features and the target, turns
time series into windows, and cuts the samples into a *development* part (what the race sees)
and a *test* part. The development part is a copy of only the rows its samples read: no test
input or label row is in it, so nothing built on it can read the test part. The test part
lives in a :class:`Holdout` that hands out its data once, at the final evaluation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from netrace.data._checks import (
    check_columns,
    check_finite,
    check_numeric,
    check_panel,
    check_time,
    data_warnings,
    fill_warnings,
)
from netrace.data._preprocess import FittedPreprocessor, Preprocessor
from netrace.data._recipes import (
    TARGET_RECIPES,
    Feature,
    Target,
    log_return,
    price_columns,
    resolve_features,
    resolve_target,
)
from netrace.data._settings import DataSettings, SplitSettings, TaskSettings
from netrace.data._sources import load_raw
from netrace.data._splits import (
    DateSplit,
    HoldoutSplit,
    KFold,
    PurgedKFold,
    Splitter,
    WalkForward,
    split_test,
    split_test_dates,
)
from netrace.errors import UserError

__all__ = [
    "MIN_TRAIN",
    "Rows",
    "load_rows",
    "MIN_EVAL",
    "Fold",
    "FoldData",
    "DevData",
    "Holdout",
    "TestData",
    "Prepared",
    "prepare",
    "FoldScaling",
    "SeriesScaling",
]

#: The smallest training part and evaluated (validation or test) part netrace accepts.
MIN_TRAIN = 20
MIN_EVAL = 5


@dataclass(frozen=True)
class Fold:
    """One training part and the validation part it is judged on (development indices)."""

    index: int
    train: np.ndarray
    valid: np.ndarray


@dataclass(frozen=True)
class FoldData:
    """A fold's arrays: inputs ``(samples, window, features)``, targets, and the preprocessing
    fitted on its training rows alone."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_valid: np.ndarray
    y_valid: np.ndarray
    preprocessor: FittedPreprocessor


@dataclass(frozen=True, repr=False)
class SeriesScaling:
    """A regression target's mean and std per series (``labels``), from one training part."""

    labels: tuple[object, ...]
    mean: np.ndarray
    std: np.ndarray

    def at(self, series: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-sample ``(mean, std)`` arrays for samples of these series."""
        lookup = {v: i for i, v in enumerate(self.labels)}
        code = np.array([lookup.get(v, -1) for v in np.asarray(series)], dtype=np.intp)
        if (code < 0).any():
            unknown = np.asarray(series)[np.flatnonzero(code < 0)[0]]
            raise UserError(f"series {unknown!r} has no training targets to be scaled by; "
                            f"known series: {', '.join(map(str, self.labels))}")
        return self.mean[code], self.std[code]

    def __repr__(self) -> str:
        return f"SeriesScaling({len(self.labels)} series)"


@dataclass(frozen=True)
class FoldScaling:
    """A fold's target standardization: ``(centre, scale)`` of its training and of its
    validation samples (floats for one series, per-sample arrays for a panel), and what a
    checkpoint keeps: ``(mean, std)``, or a :class:`SeriesScaling` for a panel."""

    train: tuple[Any, Any]
    valid: tuple[Any, Any]
    kept: tuple[float, float] | SeriesScaling


@dataclass(frozen=True, repr=False)
class DevData:
    """The development part: every sample the race may train or validate on, and nothing else.

    ``rows`` holds the per-row features of the raw rows these samples read (inputs and labels),
    ``anchors`` the row of each sample's last input, ``y`` its target.
    """

    rows: pd.DataFrame
    anchors: np.ndarray
    y: np.ndarray
    time: np.ndarray | None
    window: int
    horizon: int
    lookback: int
    preprocessor: Preprocessor
    splitter: Splitter
    classes: tuple[object, ...] | None
    folds: tuple[Fold, ...] = field(default=())
    #: time series: per row of ``rows``, the target's own row value (class codes for classes),
    #: the close's log return (with prices) and the time: what baselines forecast from; in a
    #: panel also ``series``, the row's series
    history: pd.DataFrame | None = None
    #: a panel: each sample's series (its label in the series column), and the series present
    series: np.ndarray | None = None
    series_names: tuple[object, ...] | None = None

    @property
    def n(self) -> int:
        return len(self.anchors)

    def target_scaling(self, fold: Fold | int) -> FoldScaling:
        """The standardization of a regression target in a fold, from its training targets
        alone: their mean and std (1 where they are constant), per series in a panel. What the
        race's networks learn is ``(y - centre) / scale``."""
        f = self.folds[fold] if isinstance(fold, int) else fold
        y = self.y[f.train]
        if self.series is None:
            mu, sd = float(y.mean()), float(y.std()) or 1.0
            return FoldScaling((mu, sd), (mu, sd), (mu, sd))
        names = tuple(pd.unique(self.series[f.train]))
        stats = [(float(y[self.series[f.train] == v].mean()),
                  float(y[self.series[f.train] == v].std()) or 1.0) for v in names]
        kept = SeriesScaling(names, np.array([m for m, _ in stats]),
                             np.array([sd for _, sd in stats]))
        return FoldScaling(kept.at(self.series[f.train]), kept.at(self.series[f.valid]), kept)

    def input_rows(self, samples: np.ndarray) -> np.ndarray:
        """The rows (of ``rows``) read as model inputs by these samples' windows."""
        mark = np.zeros(len(self.rows) + 1, dtype=np.int64)
        a = self.anchors[samples]
        np.add.at(mark, a - self.window + 1, 1)
        np.add.at(mark, a + 1, -1)
        return np.flatnonzero(np.cumsum(mark)[:-1] > 0)

    def fit_preprocessor(self, train: np.ndarray) -> FittedPreprocessor:
        """Preprocessing fitted on exactly the rows the training windows read."""
        return self.preprocessor.fit(self.rows.iloc[self.input_rows(train)])

    def windows(self, samples: np.ndarray, fitted: FittedPreprocessor) -> np.ndarray:
        """Inputs of these samples, ``(len(samples), window, features)``."""
        return _windows(fitted.transform(self.rows), self.anchors[samples], self.window)

    def fold_data(self, fold: Fold | int) -> FoldData:
        """Arrays of one fold, preprocessing fitted on its training part."""
        f = self.folds[fold] if isinstance(fold, int) else fold
        fitted = self.fit_preprocessor(f.train)
        # a panel's series that starts after this fold's training part has no samples in the
        # fold (none trained, so none validated): its rows are left out, as NaN
        z = fitted.transform_known(self.rows)
        x_train = _windows(z, self.anchors[f.train], self.window)
        x_valid = _windows(z, self.anchors[f.valid], self.window)
        assert not (np.isnan(x_train).any() or np.isnan(x_valid).any()), \
            "a fold's window reads a row its preprocessing did not fit"
        return FoldData(x_train, self.y[f.train], x_valid, self.y[f.valid], fitted)

    def __repr__(self) -> str:
        return (f"DevData(samples={self.n}, rows={len(self.rows)}, window={self.window}, "
                f"horizon={self.horizon}, folds={len(self.folds)})")


@dataclass(frozen=True, repr=False)
class TestData:
    """The test part, handed out once by :meth:`Holdout.open`: inputs ``X`` (transformed by
    the preprocessing ``open`` was given; :meth:`windows` transforms them by another, e.g. a
    fold network's own), targets ``y`` and the time of each sample's last input row. For
    time series also ``anchors``, each sample's last input row in the table, and
    ``history``, per row of the table up to the last label: ``target`` (the target's own
    row value, class codes for classes), ``returns`` (the close's log return, with prices)
    and ``time``: the past that the classical baselines forecast from. In a panel, ``series``
    is each sample's series and ``history`` has a ``series`` column too; samples are ordered
    by series, then time."""

    X: np.ndarray | None
    y: np.ndarray
    time: np.ndarray | None
    anchors: np.ndarray | None = None
    history: pd.DataFrame | None = None
    _rows: pd.DataFrame | None = None
    _local: np.ndarray | None = None
    _window: int = 1
    series: np.ndarray | None = None

    def windows(self, fitted: FittedPreprocessor) -> np.ndarray:
        """The test inputs ``(samples, window, features)`` transformed by ``fitted``."""
        assert self._rows is not None and self._local is not None
        # a panel: NaN rows for a series the preprocessing was not fitted on (a fold's that
        # starts after the fold's training part), whose windows that fold's networks skip
        return _windows(fitted.transform_known(self._rows), self._local, self._window)

    def __repr__(self) -> str:
        return f"TestData(samples={len(self.y)})"


class Holdout:
    """The test part, held apart until the final evaluation.

    It keeps its rows private and gives them out once: :meth:`open` transforms them with the
    preprocessing fitted on a training part and returns a :class:`TestData`; a second call is an
    error. Its size, position and fingerprint can be read any time without opening it.
    """

    def __init__(self, rows: pd.DataFrame, anchors: np.ndarray, y: np.ndarray,
                 time: np.ndarray | None, window: int, *, history: pd.DataFrame | None = None,
                 table_anchors: np.ndarray | None = None,
                 series: np.ndarray | None = None) -> None:
        self.__rows = rows
        self.__anchors = anchors
        self.__y = y
        self.__time = time
        self.__history = history
        self.__table_anchors = table_anchors
        self.__series = series
        self._window = window
        self._opened = False
        self.n = len(anchors)
        self.first_time = None if time is None or not len(time) else time[0]
        self.last_time = None if time is None or not len(time) else time[-1]
        if series is not None and len(anchors):  # a panel: ordered by series, then time
            self.first_time, self.last_time = time.min(), time.max()
        digest = hashlib.sha256(np.ascontiguousarray(y).tobytes())
        digest.update(pd.util.hash_pandas_object(rows, index=False).to_numpy().tobytes())
        self.fingerprint = digest.hexdigest()[:16]

    @property
    def opened(self) -> bool:
        return self._opened

    def open(self, fitted: FittedPreprocessor | None = None) -> TestData:
        """Hand out the test data, once, transformed by ``fitted`` (``X`` is ``None``
        without it; :meth:`TestData.windows` transforms by any fitted preprocessing)."""
        if self._opened:
            raise UserError("the test part was already opened once; netrace evaluates on it "
                            "a single time, after selection on validation data alone")
        self._opened = True
        X = None if fitted is None else _windows(fitted.transform(self.__rows), self.__anchors,
                                                 self._window)
        return TestData(X, self.__y.copy(), None if self.__time is None else self.__time.copy(),
                        None if self.__table_anchors is None else self.__table_anchors.copy(),
                        None if self.__history is None else self.__history.copy(),
                        self.__rows, self.__anchors, self._window,
                        None if self.__series is None else self.__series.copy())

    def __repr__(self) -> str:
        state = "opened" if self._opened else "sealed"
        return f"Holdout({state}, samples={self.n}, fingerprint={self.fingerprint})"

    def __reduce__(self) -> object:  # no pickling: the test part must not travel to workers
        raise TypeError("Holdout cannot be pickled: the test part stays with the caller")


@dataclass(frozen=True, repr=False)
class Prepared:
    """What :func:`prepare` returns: the development part, the sealed test part, and facts for
    the data summary and split plan."""

    config: DataSettings
    dev: DevData
    holdout: Holdout
    origin: str
    rows_total: int
    rows_dropped: int
    time_name: str | None
    features: tuple[Feature, ...]
    target: Target
    first_anchor_row: int
    embargo: int
    scheme: str
    time_span: tuple[object, object] | None = None  # first and last time of the whole table
    test_range: tuple[int, int] = (0, 0)  # first and last sample index of the test part
    #: a panel: the series column, its series (in the order of their blocks), and per series
    #: its rows, development samples and test samples
    series_name: str | None = None
    series_names: tuple[object, ...] = ()
    series_counts: tuple[tuple[int, int, int], ...] = ()
    #: warnings about the data, from :func:`~netrace.data.data_warnings`
    warnings: tuple[str, ...] = ()


def _windows(z: np.ndarray, anchors: np.ndarray, window: int) -> np.ndarray:
    if len(anchors) == 0:
        return np.zeros((0, window, z.shape[1]))
    view = np.lib.stride_tricks.sliding_window_view(z, window, axis=0)  # (T-w+1, F, w)
    return np.ascontiguousarray(view[anchors - window + 1].transpose(0, 2, 1))


def _splitter(split: SplitSettings, time_series: bool, lookback: int, horizon: int) -> Splitter:
    s = split
    scheme = s.scheme or "holdout"
    if not time_series:
        if scheme == "kfold":
            return KFold(s.folds, seed=s.seed)
        return HoldoutSplit(s.validation, shuffle=True, seed=s.seed)
    kw = dict(lookback=lookback, horizon=horizon, embargo=s.embargo)
    if scheme == "walk_forward":
        return WalkForward(s.folds, mode=s.mode, train_size=s.train_size, **kw)
    if scheme == "purged_kfold":
        return PurgedKFold(s.folds, **kw)
    return HoldoutSplit(s.validation, **kw)


def _plan_ok(n: int, split: SplitSettings, time_series: bool, lookback: int,
             horizon: int) -> tuple[bool, str]:
    """Whether ``n`` samples are enough for the test part and every fold; why not."""
    s = split
    dev, test = split_test(n, s.test, lookback=lookback, horizon=horizon, embargo=s.embargo,
                           shuffle=not time_series, seed=s.seed)
    if len(test) < MIN_EVAL:
        return False, f"the test part would have {len(test)} samples"
    splitter = _splitter(split, time_series, lookback, horizon)
    for i, (tr, va) in enumerate(splitter.split(len(dev))):
        if len(tr) < MIN_TRAIN:
            return False, f"fold {i + 1}'s training part would have {len(tr)} samples"
        if len(va) < MIN_EVAL:
            return False, f"fold {i + 1}'s validation part would have {len(va)} samples"
    return True, ""


def _rows_needed(split: SplitSettings, time_series: bool, lookback: int, horizon: int,
                 overhead: int) -> int:
    lo, hi = 1, 64
    while not _plan_ok(hi, split, time_series, lookback, horizon)[0]:
        lo, hi = hi, hi * 2
        if hi > 10**9:
            return -1
    while lo < hi:  # smallest feasible n (feasibility grows with n for these splits)
        mid = (lo + hi) // 2
        if _plan_ok(mid, split, time_series, lookback, horizon)[0]:
            hi = mid
        else:
            lo = mid + 1
    return hi + overhead


@dataclass(frozen=True, repr=False)
class Rows:
    """A table's rows after the checks, as every later step reads them: the per-row features
    (trailing, parameter-free), the per-row target (``None`` when the table has no target,
    as a file to forecast from may not), the time values, and the rows dropped by
    ``[data] fill``."""

    frame: pd.DataFrame
    features: tuple[Feature, ...]
    target: Target
    row_feats: pd.DataFrame
    y_row: pd.Series | None
    time_name: str | None
    time: np.ndarray | None
    origin: str
    rows_dropped: int
    #: a panel: the series column, the series in block order, and the blocks' boundaries
    #: (rows ``bounds[i]`` to ``bounds[i + 1]`` are series ``series_names[i]``, in time order)
    series: str | None = None
    series_names: tuple[object, ...] = ()
    bounds: np.ndarray | None = None
    #: warnings about the data (suspected splits, zero-range bars, an adjusted close used as
    #: the close), each naming its dates; :func:`~netrace.data.data_warnings`
    warnings: tuple[str, ...] = ()

    @property
    def returns(self) -> np.ndarray | None:
        """The close's log return per row, when the table has prices (GARCH's input)."""
        if "close" not in price_columns(self.frame.columns):
            return None
        return _per_series(log_return, self.frame, self.bounds)


def _per_series(fn: Any, frame: pd.DataFrame, bounds: np.ndarray | None) -> Any:
    """``fn`` of the whole frame, or of each series' block alone, concatenated: no value of
    one series reads another's rows."""
    if bounds is None:
        return fn(frame)
    parts = [fn(frame.iloc[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    return pd.concat(parts) if isinstance(parts[0], pd.Series) else np.concatenate(parts)


def load_rows(config: DataSettings, frame: pd.DataFrame | None = None, *,
              need_target: bool = True) -> Rows:
    """Load and check the rows of a config (``frame`` replaces ``[data]`` as the source) and
    compute their features and target. With ``need_target=False`` a target column (not a
    price recipe) may be absent or missing on some rows, as in a file to forecast from."""
    raw = load_raw(config.data, frame, origin=config.origin, base_dir=config.base_dir)
    t = config.task
    time = raw.time
    df = raw.frame
    df.columns = [str(c) for c in df.columns]
    time_series = time is not None
    series = config.data.series
    names: tuple[object, ...] = ()
    if time_series and series is not None:
        df, names = check_panel(df, time, series, config.data.date_format)
    elif time_series:
        df = check_time(df, time, config.data.date_format)
    columns = list(df.columns)
    if not need_target and t.target not in TARGET_RECIPES and t.target not in columns:
        columns.append(t.target or "")  # resolvable; its values are never read
    target = resolve_target(t.target or "", t.type, columns, time)
    has_prices = {"close"} <= set(price_columns(df.columns))
    features = resolve_features(
        t.features, t.categorical, columns,
        # in time, the target's past is a fair input (windows end before the label row)
        exclude=[c for c in (time, None if time_series else target.name, series) if c],
        default_recipes=time_series and has_prices and target.recipe is not None, time=time)
    if not time_series and target.recipe is None and any(f.name == target.name
                                                         for f in features):
        raise UserError(f"[task] features includes the target column '{target.name}'; on "
                        "i.i.d. rows that is the answer itself; remove it from features")
    if series is not None and any(f.name == series for f in features):
        raise UserError(f"[task] features includes '{series}', the name of the series column "
                        "([data] series); the series label is not a feature; remove it or "
                        "rename the column")
    if time is not None and any(f.name == time for f in features):
        raise UserError(f"[task] features includes the time column '{time}'; remove it "
                        "(time is the order of rows, not an input)")

    # the raw columns used: feature columns, price columns for recipes, the target column
    used: list[str] = []
    prices = price_columns(df.columns)
    for f in features:
        if f.recipe is None:
            used.append(f.name)
    if any(f.recipe for f in features) or target.recipe:
        used += [prices[k] for k in ("open", "high", "low", "close", "volume") if k in prices]
    target_used = target.recipe is None and (need_target or target.name in {
        f.name for f in features})
    if target_used:
        used.append(target.name)
    used = list(dict.fromkeys(used))
    check_columns(df, used, "[task]")
    numeric_cols = [c for c in used if c not in t.categorical
                    and not (c == target.name and target.kind == "class")]
    check_numeric(df, [c for c in numeric_cols if c != target.name], time, "feature")
    if target.kind == "regression" and target_used:
        check_numeric(df, [target.name], time, "target")
    rows_before = len(df)
    filled = fill_warnings(df, used, time, series) if config.data.fill == "ffill" else []
    df = check_finite(df, used, time, config.data.fill, series, advice=None if need_target else
                      "drop or fill those rows in the file to forecast from (the study was "
                      "raced with [data] fill = \"none\", which stays)")
    rows_dropped = rows_before - len(df)
    bounds = None
    if series is not None:  # the blocks of the series left after fill = "drop"
        names = tuple(v for v in names if (df[series] == v).any())
        code = pd.Categorical(df[series], categories=list(names)).codes
        bounds = np.searchsorted(code, np.arange(len(names) + 1))

    # per-row features (trailing, parameter-free) and the per-row target, per series
    row_feats = pd.DataFrame({f.name: _per_series(f.values, df, bounds) for f in features})
    y_row = _per_series(target.values, df, bounds) \
        if target.recipe or target.name in df.columns else None
    if series is not None:
        row_feats[series] = df[series].to_numpy()
    return Rows(df, tuple(features), target, row_feats, y_row, time,
                df[time].to_numpy() if time_series else None, raw.origin, rows_dropped,
                series, names, bounds, tuple(filled + data_warnings(df, time, series)))


def prepare(config: DataSettings, frame: pd.DataFrame | None = None) -> Prepared:
    """Load, check and cut the data of a config; ``frame`` replaces ``[data]`` as the source.

    >>> from netrace.config import config_from_dict
    >>> cfg = config_from_dict({"data": {"source": "sp500"},
    ...     "task": {"target": "vol_next", "window": 20},
    ...     "split": {"scheme": "walk_forward", "folds": 3}})
    >>> p = prepare(cfg)
    >>> p.dev.n, p.holdout.n, len(p.dev.folds)
    (3953, 998, 3)
    """
    rows = load_rows(config, frame)
    if rows.series is not None:
        return _prepare_panel(config, rows)
    return _prepare_table(config, rows)


@dataclass(frozen=True)
class _Reach:
    """How far a sample reads: ``window`` input rows ending at its anchor, whose features
    look back ``feature_lookback`` rows each (``lookback`` rows in all), and its label
    ``horizon`` rows after the anchor; ``first`` is the first row that can be an anchor."""

    window: int
    horizon: int
    feature_lookback: int
    lookback: int
    first: int


def _reach(task: TaskSettings, rows: Rows, time_series: bool) -> _Reach:
    t, target = task, rows.target
    lookback_feat = max(f.lookback for f in rows.features)
    horizon = t.horizon if time_series else 0
    y_lookback = TARGET_RECIPES[target.recipe][2] if target.recipe else 1
    lookback = t.window + lookback_feat - 1
    first = max(lookback - 1, y_lookback - 1 - horizon, 0)
    return _Reach(t.window, horizon, lookback_feat, lookback, first)


def _sample_targets(rows: Rows, anchors: np.ndarray, horizon: int) -> np.ndarray:
    """The target of every sample: its label row's value."""
    assert rows.y_row is not None
    y_all = rows.y_row.to_numpy()[anchors + horizon]
    if rows.target.kind == "regression":
        y_all = y_all.astype(np.float64)
    elif rows.target.recipe is not None:  # direction_next: 0/1 as whole numbers
        y_all = y_all.astype(np.int64)
    if pd.isna(y_all).any():  # recipe targets are finite past warm-up; columns were checked
        raise AssertionError("a target is missing after the checks")
    return y_all


def _preprocessor(features: Sequence[Feature], series: str | None = None) -> Preprocessor:
    numeric = tuple(f.name for f in features if not f.categorical)
    categorical = tuple(f.name for f in features if f.categorical)
    return Preprocessor(numeric, categorical, series=series)


def _class_codes(y: np.ndarray, classes: tuple[object, ...] | None) -> np.ndarray:
    """Row targets as the baselines read them: class codes (as floats) for classes."""
    if classes is None:
        return y
    lookup = {c: float(i) for i, c in enumerate(classes)}
    return np.array([lookup.get(v, np.nan) for v in y])


def _prepare_table(config: DataSettings, rows: Rows) -> Prepared:
    """:func:`prepare` for one table: a time series (cut in time) or i.i.d. rows."""
    time = rows.time_name
    time_series = time is not None
    r = _reach(config.task, rows, time_series)
    T = len(rows.frame)
    anchors_all = np.arange(r.first, T - r.horizon)
    _check_plan(config.split, time_series, r, T, len(anchors_all))
    y_all = _sample_targets(rows, anchors_all, r.horizon)
    dev_idx, test_idx = split_test(len(anchors_all), config.split.test, lookback=r.lookback,
                                   horizon=r.horizon, embargo=config.split.embargo,
                                   shuffle=not time_series, seed=config.split.seed)
    classes = None
    if rows.target.kind != "regression":
        classes, y_all = _encode_classes(y_all, dev_idx, config.task.type, rows.target)
    splitter = _splitter(config.split, time_series, r.lookback, r.horizon)
    time_values = rows.frame[time].to_numpy() if time_series else None
    dev = _table_dev(rows, r, anchors_all[dev_idx], y_all[dev_idx], time_values, splitter,
                     classes)
    test_anchors = anchors_all[test_idx]
    history = None
    if time_series:  # what the baselines read: the target's and the close's own past
        history = _table_history(rows, time_values, classes,
                                 int(test_anchors[-1]) + r.horizon + 1)
        # the development part's own: its rows and nothing after them
        object.__setattr__(dev, "history", history.iloc[:len(dev.rows)].copy())
    holdout = _table_holdout(rows, r, test_anchors, y_all[test_idx], time_values, history)
    embargo = getattr(splitter, "embargo", 0)
    return Prepared(config, dev, holdout, rows.origin, T + rows.rows_dropped, rows.rows_dropped,
                    time, tuple(rows.features), rows.target, r.first, embargo,
                    config.split.scheme or "holdout",
                    time_span=(time_values[0], time_values[-1]) if time_series else None,
                    test_range=(int(test_idx[0]), int(test_idx[-1])), warnings=rows.warnings)


def _check_plan(split: SplitSettings, time_series: bool, r: _Reach, rows: int, n: int) -> None:
    """A :class:`UserError` naming the rows needed when ``n`` samples (of a table of ``rows``
    usable rows) are too few for the test part and every fold."""
    ok, why = (_plan_ok(n, split, time_series, r.lookback, r.horizon) if n > 0
               else (False, "there would be no samples"))
    if ok:
        return
    need = _rows_needed(split, time_series, r.lookback, r.horizon, r.first + r.horizon)
    scheme = split.scheme or "holdout"
    shape = (f"window = {r.window}, horizon = {r.horizon}, feature lookback "
             f"{r.feature_lookback}, " if time_series else "")
    raise UserError(
        f"the data has {rows} usable rows, too few: {why} (netrace needs at least {MIN_TRAIN} "
        f"training and {MIN_EVAL} validation/test samples per part); {shape}scheme = "
        f"{scheme!r} with test = {split.test:g}"
        + (f" and {split.folds} folds" if scheme != "holdout" else "")
        + f" need at least {need} rows; use more data, fewer folds, or a smaller window")


def _table_dev(rows: Rows, r: _Reach, dev_anchors: np.ndarray, y: np.ndarray,
               time_values: np.ndarray | None, splitter: Splitter,
               classes: tuple[object, ...] | None) -> DevData:
    """The development part of one table, with its folds: a copy of only the rows its samples
    read."""
    if time_values is not None:
        last_row = int(dev_anchors[-1]) + r.horizon
        dev_rows = rows.row_feats.iloc[: last_row + 1].reset_index(drop=True)
        local_anchors = dev_anchors
    else:
        dev_rows = rows.row_feats.iloc[dev_anchors].reset_index(drop=True)
        local_anchors = np.arange(len(dev_anchors))
    dev_time = time_values[dev_anchors] if time_values is not None else None
    dev = DevData(dev_rows, local_anchors, y, dev_time, r.window, r.horizon, r.lookback,
                  _preprocessor(rows.features), splitter, classes)
    folds = tuple(Fold(i, tr, va) for i, (tr, va) in enumerate(splitter.split(dev.n)))
    object.__setattr__(dev, "folds", folds)
    return dev


def _table_history(rows: Rows, time_values: np.ndarray, classes: tuple[object, ...] | None,
                   end: int) -> pd.DataFrame:
    """Per row of a time series up to row ``end`` (excluded): the target's own value, the
    time, and the close's log return (with prices)."""
    assert rows.y_row is not None
    y_hist = _class_codes(rows.y_row.to_numpy()[:end], classes)
    columns = {"target": y_hist.astype(np.float64), "time": time_values[:end]}
    ret = rows.returns  # computed from the close on each call: once
    if ret is not None:
        columns["returns"] = ret[:end]
    return pd.DataFrame(columns)


def _table_holdout(rows: Rows, r: _Reach, test_anchors: np.ndarray, y: np.ndarray,
                   time_values: np.ndarray | None, history: pd.DataFrame | None) -> Holdout:
    """The test part of one table: its own rows (the inputs its windows read and nothing of
    the future)."""
    if time_values is not None:
        lo = int(test_anchors[0]) - r.window + 1
        test_rows = rows.row_feats.iloc[lo: int(test_anchors[-1]) + 1].reset_index(drop=True)
        test_local = test_anchors - lo
    else:
        test_rows = rows.row_feats.iloc[test_anchors].reset_index(drop=True)
        test_local = np.arange(len(test_anchors))
    time_series = time_values is not None
    return Holdout(test_rows, test_local, y,
                   time_values[test_anchors] if time_series else None, r.window,
                   history=history, table_anchors=test_anchors if time_series else None)


@dataclass(frozen=True)
class _PanelSamples:
    """A panel's samples, ordered by series then time: each one's anchor row in the table,
    its series (``code``, an index into the series' blocks), the time of its anchor
    (``date``), of its first input row (``reads_from``) and of its label row."""

    anchors: np.ndarray
    code: np.ndarray
    date: np.ndarray
    reads_from: np.ndarray
    label_date: np.ndarray

    @property
    def n(self) -> int:
        return len(self.anchors)


def _panel_samples(rows: Rows, r: _Reach) -> _PanelSamples:
    """Within each series, every row with a full window and its label in the same series."""
    bounds, times = rows.bounds, rows.time
    assert bounds is not None and times is not None
    anchors_all = np.concatenate([np.arange(a + r.first, b - r.horizon, dtype=np.intp)
                                  for a, b in zip(bounds[:-1], bounds[1:])])
    code = np.searchsorted(bounds, anchors_all, side="right") - 1
    return _PanelSamples(anchors_all, code, times[anchors_all],
                         times[anchors_all - r.lookback + 1], times[anchors_all + r.horizon])


def _panel_too_few(split: SplitSettings, rows: Rows, r: _Reach, p: _PanelSamples,
                   why: str) -> UserError:
    s = split
    return UserError(
        f"the panel has {p.n} samples in {len(rows.series_names)} series over "
        f"{len(np.unique(p.date))} dates, too few: {why} (netrace needs at least {MIN_TRAIN} "
        f"training and {MIN_EVAL} validation/test samples per part); window = {r.window}, "
        f"horizon = {r.horizon}, feature lookback {r.feature_lookback}, scheme = "
        f"{s.scheme or 'holdout'!r} with test = {s.test:g}; use more data, fewer folds, "
        "or a smaller window")


def _prepare_panel(config: DataSettings, rows: Rows) -> Prepared:
    """:func:`prepare` for a panel: samples within each series, cut at the same dates."""
    time, series = rows.time_name, rows.series
    assert time is not None and series is not None and rows.bounds is not None
    assert rows.time is not None and rows.y_row is not None
    r = _reach(config.task, rows, True)
    p = _panel_samples(rows, r)
    if p.n == 0:
        raise _panel_too_few(config.split, rows, r, p, "there would be no samples")
    dev_idx, test_idx = _panel_split(config.split, rows, r, p)
    y_all = _sample_targets(rows, p.anchors, r.horizon)
    classes = None
    if rows.target.kind != "regression":
        classes, y_all = _encode_classes(y_all, dev_idx, config.task.type, rows.target)
    dev, dev_table = _panel_dev(config.split, rows, r, p, dev_idx, y_all[dev_idx], classes)
    # the test part: per series, the rows its windows read, and the past baselines read
    bounds, labels = rows.bounds, rows.frame[series].to_numpy()
    test_anchors, test_code = p.anchors[test_idx], p.code[test_idx]
    test_table, test_local = _series_rows(test_anchors, test_code, bounds, r.window, 0)
    test_rows = rows.row_feats.iloc[test_table].reset_index(drop=True)
    hist_table, hist_anchors = _series_rows(test_anchors, test_code, bounds, None, r.horizon)
    y_hist = _class_codes(rows.y_row.to_numpy(), classes)
    ret = rows.returns
    object.__setattr__(dev, "history", _panel_history(rows, y_hist, ret, labels, dev_table))
    holdout = Holdout(test_rows, test_local, y_all[test_idx], p.date[test_idx], r.window,
                      history=_panel_history(rows, y_hist, ret, labels, hist_table),
                      table_anchors=hist_anchors, series=labels[test_anchors])
    counts = tuple((int(b - a), int((p.code[dev_idx] == i).sum()),
                    int((p.code[test_idx] == i).sum()))
                   for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])))
    return Prepared(config, dev, holdout, rows.origin, len(rows.frame) + rows.rows_dropped,
                    rows.rows_dropped, time, tuple(rows.features), rows.target, r.first,
                    dev.splitter.embargo, config.split.scheme or "holdout",
                    time_span=(rows.time.min(), rows.time.max()),
                    test_range=(int(test_idx[0]), int(test_idx[-1])), series_name=series,
                    series_names=rows.series_names, series_counts=counts,
                    warnings=rows.warnings)


def _panel_split(split: SplitSettings, rows: Rows, r: _Reach, p: _PanelSamples
                 ) -> tuple[np.ndarray, np.ndarray]:
    """A panel's development and test samples: every series cut at the same dates."""
    s = split
    dev_idx, test_idx = split_test_dates(p.date, p.reads_from, p.label_date, s.test,
                                         lookback=r.lookback, horizon=r.horizon,
                                         embargo=s.embargo)
    # a series with no development samples cannot be scaled by its own training rows
    test_idx = test_idx[np.isin(p.code[test_idx], p.code[dev_idx])]
    if len(test_idx) < MIN_EVAL:
        raise _panel_too_few(split, rows, r, p,
                             f"the test part would have {len(test_idx)} samples")
    if len(dev_idx) < MIN_TRAIN + MIN_EVAL:
        raise _panel_too_few(split, rows, r, p,
                             f"the development part would have {len(dev_idx)} samples")
    return dev_idx, test_idx


def _panel_dev(split: SplitSettings, rows: Rows, r: _Reach, p: _PanelSamples, dev_idx: np.ndarray,
               y: np.ndarray, classes: tuple[object, ...] | None
               ) -> tuple[DevData, np.ndarray]:
    """A panel's development part, with its folds (each checked for size), and the table rows
    it copies: per series, from the series' first row to its last label."""
    series, bounds = rows.series, rows.bounds
    assert series is not None and bounds is not None
    dev_anchors = p.anchors[dev_idx]
    dev_table, dev_local = _series_rows(dev_anchors, p.code[dev_idx], bounds, None, r.horizon)
    dev_rows = rows.row_feats.iloc[dev_table].reset_index(drop=True)
    splitter = DateSplit(_splitter(split, True, r.lookback, r.horizon), p.date[dev_idx],
                         p.reads_from[dev_idx], p.label_date[dev_idx], p.code[dev_idx])
    dev_series = rows.frame[series].to_numpy()[dev_anchors]
    dev = DevData(dev_rows, dev_local, y, p.date[dev_idx], r.window, r.horizon, r.lookback,
                  _preprocessor(rows.features, series), splitter, classes, series=dev_series,
                  series_names=tuple(pd.unique(dev_series)))
    folds = tuple(Fold(i, tr, va) for i, (tr, va) in enumerate(splitter.split(dev.n)))
    for f in folds:
        if len(f.train) < MIN_TRAIN:
            raise _panel_too_few(split, rows, r, p, f"fold {f.index + 1}'s training part "
                                 f"would have {len(f.train)} samples")
        if len(f.valid) < MIN_EVAL:
            raise _panel_too_few(split, rows, r, p, f"fold {f.index + 1}'s validation part "
                                 f"would have {len(f.valid)} samples")
    object.__setattr__(dev, "folds", folds)
    return dev, dev_table


def _panel_history(rows: Rows, y_hist: np.ndarray, ret: np.ndarray | None,
                   labels: np.ndarray, table: np.ndarray) -> pd.DataFrame:
    """What the baselines read at these table rows: the target's own row value (``y_hist``),
    the time, the close's log return (``ret``, with prices) and the series."""
    assert rows.time is not None
    columns = {"target": y_hist[table].astype(np.float64), "time": rows.time[table]}
    if ret is not None:
        columns["returns"] = ret[table]
    columns["series"] = labels[table]
    return pd.DataFrame(columns)


def _series_rows(anchors: np.ndarray, code: np.ndarray, bounds: np.ndarray,
                 window: int | None, after: int) -> tuple[np.ndarray, np.ndarray]:
    """The table rows that samples (ordered by series, then time) read, one block per series:
    from ``window`` rows before its first anchor (``None``: from the series' first row) to
    ``after`` rows past its last; and each sample's anchor in those rows."""
    parts, local = [], np.empty(len(anchors), dtype=np.intp)
    offset = 0
    for c in np.unique(code):
        idx = np.flatnonzero(code == c)
        lo = int(bounds[c]) if window is None else int(anchors[idx[0]]) - window + 1
        hi = int(anchors[idx[-1]]) + after + 1
        parts.append(np.arange(lo, hi))
        local[idx] = anchors[idx] - lo + offset
        offset += hi - lo
    return np.concatenate(parts), local


def _encode_classes(y: np.ndarray, dev_idx: np.ndarray, task_type: str,
                    target: Target) -> tuple[tuple[object, ...], np.ndarray]:
    """Class labels to 0..C-1, classes taken from the development part."""
    dev_classes = sorted(pd.unique(y[dev_idx]).tolist(), key=lambda v: (str(type(v)), v))
    if task_type == "binary" and len(dev_classes) != 2:
        shown = ", ".join(map(repr, dev_classes[:10]))
        raise UserError(f"[task] type = \"binary\" needs exactly 2 classes in target "
                        f"'{target.name}', found {len(dev_classes)}: {shown}; use type = "
                        f"\"{'multiclass' if len(dev_classes) > 2 else 'regression'}\" or "
                        "another target")
    if task_type == "multiclass" and len(dev_classes) < 2:
        raise UserError(f"[task] type = \"multiclass\" needs at least 2 classes in target "
                        f"'{target.name}', found {len(dev_classes)}")
    lookup = {c: i for i, c in enumerate(dev_classes)}
    codes = np.array([lookup.get(v, -1) for v in y], dtype=np.int64)
    return tuple(dev_classes), codes


def describe_classes(classes: Sequence[object] | None) -> str:
    return "" if classes is None else ", ".join(map(str, classes))
