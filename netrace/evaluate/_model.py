"""A final model: the networks netrace forecasts with, and everything prediction needs.

Each network (:class:`Net`) carries its weights, the preprocessing fitted on the rows it was
trained on, the scaling of the target it learned (regression networks learn a standardized
target) and its input layout; a :class:`FinalModel` combines networks with weights, adds a
prediction interval learned from validation residuals, and answers ``.predict(frame)`` from the
raw rows of a table like the one the study was raced on. It is what ``netrace evaluate`` stores
and ``netrace predict`` and :func:`load_model` give back. A stored model is a pickle: load only
studies you trust.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import torch

from netrace.data import FittedPreprocessor, SeriesScaling
from netrace.errors import UserError
from netrace.models import member_module_from
from netrace.race._build import PopulationSettings, model_inputs
from netrace.race._target import TargetTransform

__all__ = ["Net", "Interval", "Blend", "FinalModel", "combine", "forecast_floor", "dump_model",
           "read_model"]

_FORMAT = "netrace-model-1"


@dataclass
class Net:
    """One trained network: ``weights`` as a population row (``params``, ``buffer.<name>``),
    its architecture and input layout (``settings``), the preprocessing fitted on its training
    rows, and ``scaling``: a regression network's output ``o`` means ``mean + std * o`` in the
    target's units; or ``target``, when it learned a log or a ratio to its window's level
    (:class:`~netrace.race._target.TargetTransform`), which maps its outputs instead."""

    name: str
    settings: PopulationSettings
    weights: dict[str, np.ndarray]
    preprocessor: FittedPreprocessor
    scaling: tuple[float, float] | SeriesScaling = (0.0, 1.0)
    #: a regression forecast never goes below this (see :func:`forecast_floor`; not for a
    #: network with a ``target`` transform)
    floor: float | None = None
    target: TargetTransform | None = None
    _module: torch.nn.Module | None = field(default=None, repr=False, compare=False)

    def module(self) -> torch.nn.Module:
        if self._module is None:
            self._module = member_module_from(self.settings.spec, self.weights).eval()
        return self._module

    def forecast(self, windows: np.ndarray, task: str, series: np.ndarray | None = None
                 ) -> np.ndarray:
        """Forecasts from windows ``(n, window, features)`` already transformed by this net's
        preprocessing: target units for regression (n,), P(class 1) for binary (n,), class
        probabilities (n, C) for multiclass. In a panel (``scaling`` a
        :class:`~netrace.data.SeriesScaling`) ``series`` names each window's series; a
        network with a series embedding reads them too, and a series it never saw is an
        error."""
        x = model_inputs(torch.as_tensor(windows, dtype=torch.float32), self.settings, series)
        with torch.no_grad():
            out = torch.cat([self.module()(x[s:s + 4096]) for s in range(0, len(x), 4096)]) \
                if len(x) else torch.zeros(0, self.settings.spec.n_outputs)
        out = out.double()
        if task == "regression" and self.target is not None:  # from the windows' own levels
            # a log target's forecast is positive; a ratio's scales with its window's level,
            # which a fixed floor would not
            return self.target.forecast(out, self.target.levels(windows)).numpy()
        if task == "regression":
            if isinstance(self.scaling, SeriesScaling):
                if series is None:
                    raise UserError("this network learned a panel's targets, scaled per "
                                    "series; forecasts need each window's series")
                mu, sd = self.scaling.at(series)
            else:
                mu, sd = self.scaling
            f = (mu + sd * out[:, 0].numpy())
            return f if self.floor is None else np.maximum(f, self.floor)
        if task == "binary":
            return torch.sigmoid(out[:, 0]).numpy()
        return torch.softmax(out, dim=1).numpy()

    def knows(self, series: np.ndarray | None) -> np.ndarray | None:
        """In a panel, which windows' series this network's preprocessing was fitted on (a
        fold network has not seen a series that starts after its fold's training part);
        None when it can forecast every window."""
        labels = getattr(self.preprocessor, "labels", None)
        if series is None or not labels:
            return None
        known = np.isin(np.asarray(series), np.asarray(labels, dtype=object))
        return None if known.all() else known

    def forecast_known(self, windows: np.ndarray, task: str, series: np.ndarray | None
                       ) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`forecast` of the windows of the series this network knows (:meth:`knows`),
        NaN for the others, and that mask (None: all of them)."""
        known = self.knows(series)
        if known is None:
            return self.forecast(windows, task, series), None
        if not known.any():  # none: NaN of the forecasts' shape (classes: one per class)
            width = self.settings.spec.n_outputs if task == "multiclass" else 0
            return np.full((len(windows), width) if width else len(windows), np.nan), known
        sub = self.forecast(windows[known], task, None if series is None else series[known])
        out = np.full((len(windows), *sub.shape[1:]), np.nan)
        out[known] = sub
        return out, known

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_module"] = None
        return state


def forecast_floor(task: str, y: np.ndarray) -> float | None:
    """The floor of a regression network's forecasts, from the targets it trained on: a
    target that is never negative there and not always zero (a volatility, a volume) is never
    forecast below its smallest positive training value; ``None`` (no floor) otherwise. A
    network's output is unbounded, and a volatility forecast at or below zero is not a
    forecast (QLIKE, a ratio interval and a log-HAR blend have no meaning for it).

    >>> forecast_floor("regression", np.array([0.0, 0.02, 0.01])), forecast_floor(
    ...     "regression", np.array([-0.01, 0.02]))
    (0.01, None)
    """
    y = np.asarray(y, dtype=np.float64)
    if task != "regression" or not len(y) or (y < 0).any() or not (y > 0).any():
        return None
    return float(y[y > 0].min())


def combine(forecasts: np.ndarray, weights: np.ndarray, present: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """The weighted mean of members' forecasts (members first: (m, n) or (m, n, C)) and their
    weighted standard deviation (the ensemble's spread; for classes, of the probability of the
    predicted class). ``present`` (m, n): which members forecast each point (a panel's fold
    networks that know its series); each point's weights are then renormalized over those.

    >>> combine(np.array([[1.0, 2.0], [3.0, np.nan]]), np.array([1.0, 1.0]),
    ...         np.array([[True, True], [True, False]]))[0].tolist()
    [2.0, 2.0]
    """
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    f = np.asarray(forecasts, dtype=np.float64)
    if present is not None:  # a point no member forecasts stays NaN
        wp = w[:, None] * np.asarray(present, dtype=np.float64)
        total = wp.sum(axis=0, keepdims=True)
        wp = np.divide(wp, total, out=np.full_like(wp, np.nan), where=total > 0)
        if f.ndim == 3:
            wp = wp[:, :, None]
        f0 = np.where(wp > 0, f, 0.0)
        mean = (wp * f0).sum(axis=0)
        var = (wp * (f0 - mean) ** 2).sum(axis=0)
    else:
        mean = np.tensordot(w, f, axes=1)
        var = np.tensordot(w, (f - mean) ** 2, axes=1)
    spread = np.sqrt(np.maximum(var, 0.0))
    if spread.ndim == 2:  # classes: the spread of the chosen class's probability
        spread = np.take_along_axis(spread, mean.argmax(axis=1)[:, None], axis=1)[:, 0]
    return mean, spread


@dataclass(frozen=True)
class Interval:
    """A prediction interval from validation residuals: ``ratio`` intervals (for a target that
    is positive, such as a volatility) multiply the forecast by ``exp(low)`` and ``exp(high)``,
    quantiles of ``log(y / forecast)``; ``additive`` ones add quantiles of ``y - forecast``."""

    kind: str  # "ratio" | "additive"
    low: float
    high: float
    coverage: float

    @staticmethod
    def fit(y: np.ndarray, f: np.ndarray, coverage: float) -> Interval:
        y, f = np.asarray(y, float), np.asarray(f, float)
        ok = np.isfinite(y) & np.isfinite(f)
        y, f = y[ok], f[ok]
        qs = ((1 - coverage) / 2, (1 + coverage) / 2)
        if len(y) and (y > 0).all() and (f > 0).all():
            lo, hi = np.quantile(np.log(y / f), qs)
            return Interval("ratio", float(lo), float(hi), coverage)
        lo, hi = np.quantile(y - f, qs) if len(y) else (np.nan, np.nan)
        return Interval("additive", float(lo), float(hi), coverage)

    def bounds(self, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f = np.asarray(f, float)
        if self.kind == "ratio":
            return f * np.exp(self.low), f * np.exp(self.high)
        return f + self.low, f + self.high


@dataclass(frozen=True)
class Blend:
    """netrace's forecast as a blend: the networks' combined forecast with weight ``share``
    and classical baselines with theirs (``baselines``, name -> weight; the weights sum to 1),
    chosen on nested validation forecasts. Prediction refits the baselines on the target's past
    as the evaluation did: a ``kind`` of target (see :func:`time_series_baselines`),
    ``horizon`` rows ahead, refit every ``refit_every`` origins."""

    share: float
    baselines: dict[str, float]
    kind: str
    horizon: int
    refit_every: int
    n_classes: int = 0
    #: the time of the evaluation's first test origin: refits are counted from it, so that
    #: on the raced file prediction gives the evaluation's forecasts exactly
    first_origin: Any = None
    #: a panel: each series' own blend (weights chosen on its own validation samples)
    by_series: dict[Any, Blend] | None = None

    def of(self, series: Any) -> Blend:
        """The blend of one series (this one for a single series, or a series it has none
        for)."""
        return (self.by_series or {}).get(series, self)

    def blends_baselines(self) -> bool:
        """Whether any series' blend gives a baseline some weight."""
        return bool(self.names())

    def names(self) -> list[str]:
        """The baselines some series' blend gives weight, in order."""
        return list(dict.fromkeys(n for b in [self, *(self.by_series or {}).values()]
                                  for n in b.baselines))

    def past_needed(self) -> int:
        """Rows of the target's past the baselines need before their first forecast origin."""
        from netrace.evaluate._baselines import MIN_GARCH, MIN_PAIRS

        need = 0
        for name in self.names():
            need = max(need, {"har": 22 + MIN_PAIRS + self.horizon,
                              "log_har": 22 + MIN_PAIRS + self.horizon,
                              "ar1": 1 + MIN_PAIRS + self.horizon, "garch": MIN_GARCH,
                              "mean_22": 22}.get(name, 1))
        return need

    def apply(self, nets: np.ndarray, target: np.ndarray, returns: np.ndarray | None,
              anchors: np.ndarray) -> np.ndarray:
        """The blend at ``anchors`` (rows of ``target``, the target's own per-row values,
        class codes for classes), given the networks' forecast there."""
        from netrace.evaluate._baselines import time_series_baselines

        if not self.baselines:
            return nets
        out = time_series_baselines(self.kind, target, anchors, self.horizon, returns=returns,
                                    n_classes=self.n_classes, refit_every=self.refit_every,
                                    only=self.baselines)
        total = self.share * np.asarray(nets, dtype=np.float64)
        for name, w in self.baselines.items():
            b = out[name][:, 1] if self.kind == "binary" else out[name]
            total = total + w * b
        return total / (self.share + sum(self.baselines.values()))


@dataclass
class FinalModel:
    """netrace's forecast for a study: ``nets`` combined with ``weights`` (the candidate
    ``name`` chosen on validation), with a prediction interval for regression. ``test`` holds
    what the evaluation forecast on the test part: per point its origin (``time``), the
    target ``y``, and every candidate's and baseline's forecast (P(class 1) for binary).

    >>> # model = netrace.load_model("runs/vol.db", "sp500_vol")
    >>> # model.predict(frame)   # columns time, forecast, lower, upper, spread
    """

    study: str
    name: str
    description: str
    task: str
    classes: tuple[Any, ...] | None
    config: dict[str, Any]
    nets: list[Net]
    weights: np.ndarray
    interval: Interval | None
    window: int
    time_name: str | None = None
    test: pd.DataFrame | None = field(default=None, repr=False)  # the verdict's forecasts
    features: tuple[str, ...] | None = None  # the inputs the networks read, as raced
    blend: Blend | None = None  # the classical baselines blended in, when there are
    #: the time of the raced data's first row, per series ("" for one series): the blended
    #: baselines refit on the past from there, so a shorter file is worth a warning
    history_start: dict[str, Any] | None = None

    def forecast_windows(self, windows_of: Any, series: np.ndarray | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
        """Combined forecast and spread; ``windows_of(preprocessor)`` gives the inputs
        transformed by a net's preprocessing (computed once per distinct preprocessing);
        ``series``, in a panel, each window's series."""
        cache: dict[int, np.ndarray] = {}
        outs, masks = [], []
        for net in self.nets:
            key = id(net.preprocessor)
            if key not in cache:
                cache[key] = windows_of(net.preprocessor)
            out, known = net.forecast_known(cache[key], self.task, series)
            outs.append(out)
            masks.append(known)
        if all(m is None for m in masks):
            return combine(np.stack(outs), self.weights)
        n = len(outs[0])
        present = np.stack([np.ones(n, bool) if m is None else m for m in masks])
        if not present.any(axis=0).all():
            known = sorted({str(v) for net in self.nets
                            for v in getattr(net.preprocessor, "labels", ())})
            raise UserError(f"series {np.asarray(series)[~present.any(axis=0)][0]!r} has no "
                            "training rows in the data the study was raced on, so its networks "
                            f"cannot forecast it (known series: {', '.join(known)}); forecast "
                            "only those series, or race again on data where it has training "
                            "rows")
        return combine(np.stack(outs), self.weights, present)

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Forecasts from the raw rows of ``frame`` (the columns the study's data had; the
        target column may be absent): one row per forecast origin with a full window, the last
        origin being the frame's last row. Columns: ``time`` (the origin: the time column's
        value, or the row's position for i.i.d. rows), ``forecast`` (target units; for classes
        the predicted class), ``lower``, ``upper`` (the interval; regression only), ``spread``
        (the ensemble members' standard deviation) and, for classes, ``p_<class>``. A panel's
        series with too few rows for the blended baselines gets no rows; why is in
        ``.attrs["warnings"]`` (``netrace predict`` prints it)."""
        from netrace.data import load_rows
        from netrace.race._race import study_config

        config = study_config(self.config, origin="the data to forecast from")
        config = replace(config, data=replace(config.data, source=None, path=None,
                                              time=self.time_name),
                         task=replace(config.task, features=self.features or
                                      config.task.features))
        rows = load_rows(config, frame, need_target=False)
        feats = rows.row_feats
        finite = np.isfinite(feats.select_dtypes("number").to_numpy(dtype=float)).all(axis=1)
        w = self.window
        blocks = _blocks(rows)
        if rows.time is None:
            anchors = np.flatnonzero(finite)
        else:  # every row whose window is complete and finite (within its series)
            anchors = np.concatenate([
                b0 + np.flatnonzero(np.convolve(finite[b0:b1].astype(float), np.ones(w),
                                                mode="full")[:b1 - b0] == w)
                for b0, b1 in blocks])
        if len(anchors) == 0:
            raise UserError(f"the data has {len(feats)} rows, too few to forecast from: a "
                            f"forecast needs a window of {w} rows with every feature defined"
                            f" (features such as rolling_vol_N need N earlier rows too); give "
                            "more rows")
        filled = feats.copy()
        num = filled.select_dtypes("number").columns
        filled[num] = filled[num].fillna(0.0)  # rows outside every used window

        def windows_of(pre: FittedPreprocessor) -> np.ndarray:
            from netrace.data._dataset import _windows

            return _windows(pre.transform_known(filled), anchors, w)  # panel: see Net.knows

        skipped = self._shorter_history(rows, blocks)
        if self.blend is not None and self.blend.blends_baselines():
            anchors = np.concatenate([self._blend_anchors(rows, anchors[(anchors >= b0) &
                                                                        (anchors < b1)], b0, b1,
                                                          skipped)
                                      for b0, b1 in blocks])
            if len(anchors) == 0:  # no series has past enough: say why for the first
                raise UserError(skipped[0])
        series = None if rows.series is None else rows.frame[rows.series].to_numpy()[anchors]
        mean, spread = self.forecast_windows(windows_of, series)
        if self.blend is not None and self.blend.blends_baselines():
            returns = rows.returns  # the close's log returns, computed once for every series
            mean = np.concatenate([self._blended(rows, returns, anchors[sel] - b0, mean[sel],
                                                 b0, b1)
                                   for b0, b1 in blocks
                                   for sel in [(anchors >= b0) & (anchors < b1)] if sel.any()])
        origin = rows.time[anchors] if rows.time is not None else anchors
        out = pd.DataFrame({"time": origin})
        if series is not None:
            out.insert(1, rows.series, series)
        if self.task == "regression":
            out["forecast"] = mean
            lo, hi = self.interval.bounds(mean) if self.interval else (np.nan, np.nan)
            out["lower"], out["upper"] = lo, hi
        else:
            probs = mean if mean.ndim == 2 else np.stack([1 - mean, mean], axis=1)
            classes = list(self.classes or range(probs.shape[1]))
            out["forecast"] = [classes[i] for i in probs.argmax(axis=1)]
            out["lower"], out["upper"] = np.nan, np.nan
            for j, c in enumerate(classes):
                out[f"p_{c}"] = probs[:, j]
        out.insert(4 if "lower" in out else 2, "spread", spread)
        out = out[["time", *([rows.series] if series is not None else []), "forecast",
                   "lower", "upper", "spread", *[c for c in out.columns if c.startswith("p_")]]]
        out.attrs["warnings"] = skipped  # a panel's series that could not be forecast, why
        return out


    def _target_past(self, rows: Any, b0: int, b1: int) -> np.ndarray:
        """The target's own per-row values in rows ``b0:b1`` (class codes for classes)."""
        assert self.blend is not None
        names = ", ".join(self.blend.names())
        if rows.y_row is None:
            raise UserError(f"netrace's forecast for this study blends in classical baselines "
                            f"({names}) that forecast from the target's own past, and the data "
                            f"has no column '{rows.target.name}'; add it (its past values)")
        y = rows.y_row.to_numpy()[b0:b1]
        if self.classes is not None:
            lookup = {c: float(i) for i, c in enumerate(self.classes)}
            return np.array([lookup.get(v, np.nan) for v in y])
        return y.astype(np.float64)

    def _shorter_history(self, rows: Any, blocks: list[tuple[int, int]]) -> list[str]:
        """A warning per series whose rows here start after the raced data's: its blended
        baselines refit on a shorter past than the evaluation's, so its forecasts differ."""
        blends = self.blend is not None and self.blend.blends_baselines()
        if not blends or not self.history_start or rows.time is None:
            return []
        out = []
        for b0, _ in blocks:
            name = "" if rows.series is None else str(rows.frame[rows.series].iloc[b0])
            first, raced = rows.time[b0], self.history_start.get(name)
            try:
                later = raced is not None and pd.Timestamp(first) > pd.Timestamp(raced)
            except (TypeError, ValueError):  # times of another kind: nothing to compare
                later = False
            if later:
                which = f"series {name!r}" if name else "the data"
                out.append(f"{which} starts at {_day(first)} here but at {_day(raced)} in the "
                           "data the study was raced on: the blended baselines refit on a "
                           "shorter past, so its forecasts differ from those the study was "
                           "judged on; give the whole history")
        return out

    def _blend_anchors(self, rows: Any, anchors: np.ndarray, b0: int, b1: int,
                       skipped: list[str]) -> np.ndarray:
        """The origins (of one series' rows ``b0:b1``) with enough of the target's past for
        the blended baselines. A panel's series with too few rows gets none, and why is added
        to ``skipped`` (the other series are forecast); a single series' is an error."""
        assert self.blend is not None
        y = self._target_past(rows, b0, b1)
        finite = np.flatnonzero(np.isfinite(y))
        first = b0 + (int(finite[0]) if len(finite) else len(y))
        need = self.blend.past_needed()
        kept = anchors[anchors >= first + need]
        if len(kept) == 0:
            which = "" if rows.series is None else \
                f" of series {rows.frame[rows.series].iloc[b0]!r}"
            why = (f"the data has {b1 - b0} rows{which}, too few to forecast from: netrace's "
                   f"forecast blends in {', '.join(self.blend.names())}, which need {need} "
                   "rows of the target's past before the first forecast; give more rows")
            if rows.series is None:
                raise UserError(why + " (the whole history, as raced)")
            skipped.append(why + "; it has no forecasts")
        return kept

    def _blended(self, rows: Any, returns: np.ndarray | None, anchors: np.ndarray,
                 nets: np.ndarray, b0: int, b1: int) -> np.ndarray:
        """The blend at ``anchors`` (rows of one series' block ``b0:b1``, counted from b0);
        ``returns`` the table's log returns (``rows.returns``)."""
        assert self.blend is not None
        y = self._target_past(rows, b0, b1)
        cut = 0
        if self.blend.first_origin is not None and rows.time is not None:
            cut = int(np.searchsorted(rows.time[b0:b1][anchors], self.blend.first_origin))
        returns = None if returns is None else returns[b0:b1]
        blend = self.blend.of(None if rows.series is None else
                              rows.frame[rows.series].iloc[b0])
        try:
            return np.concatenate([blend.apply(nets[part], y, returns, anchors[part])
                                   for part in (slice(0, cut), slice(cut, None))
                                   if len(anchors[part])])
        except UserError as exc:
            raise UserError(f"netrace's forecast blends in {', '.join(self.blend.names())}, "
                            f"which forecast from the target's past, and cannot here: {exc}"
                            ) from None


def _day(t: Any) -> Any:
    t = pd.Timestamp(t)
    return t.date() if t == t.normalize() else t


def _blocks(rows: Any) -> list[tuple[int, int]]:
    """The rows of each series (one block for a table of one series)."""
    if getattr(rows, "bounds", None) is None:
        return [(0, len(rows.frame))]
    b = rows.bounds
    return [(int(x), int(y)) for x, y in zip(b[:-1], b[1:], strict=True)]


def dump_model(model: FinalModel) -> bytes:
    return pickle.dumps({"format": _FORMAT, "model": model}, protocol=pickle.HIGHEST_PROTOCOL)


def read_model(data: bytes) -> FinalModel:
    try:
        d = pickle.loads(data)
    except Exception as exc:  # noqa: BLE001 - any unpickling error means the same thing
        raise UserError(f"this study's final model cannot be read ({exc}); it was written by "
                        "another netrace version; run netrace evaluate STUDY --again") from None
    if not isinstance(d, dict) or d.get("format") != _FORMAT:
        raise UserError("this study's final model is not in a format this netrace reads; run "
                        "netrace evaluate STUDY --again")
    return d["model"]
