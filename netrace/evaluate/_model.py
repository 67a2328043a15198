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

from netrace.data import FittedPreprocessor
from netrace.errors import UserError
from netrace.models import member_module_from
from netrace.race._build import PopulationSettings, model_inputs
from netrace.race._target import TargetTransform

__all__ = ["Net", "Interval", "FinalModel", "combine", "dump_model", "read_model"]

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
    scaling: tuple[float, float] = (0.0, 1.0)
    target: TargetTransform | None = None
    _module: torch.nn.Module | None = field(default=None, repr=False, compare=False)

    def module(self) -> torch.nn.Module:
        if self._module is None:
            self._module = member_module_from(self.settings.spec, self.weights).eval()
        return self._module

    def forecast(self, windows: np.ndarray, task: str) -> np.ndarray:
        """Forecasts from windows ``(n, window, features)`` already transformed by this net's
        preprocessing: target units for regression (n,), P(class 1) for binary (n,), class
        probabilities (n, C) for multiclass."""
        x = model_inputs(torch.as_tensor(windows, dtype=torch.float32), self.settings)
        with torch.no_grad():
            out = torch.cat([self.module()(x[s:s + 4096]) for s in range(0, len(x), 4096)]) \
                if len(x) else torch.zeros(0, self.settings.spec.n_outputs)
        out = out.double()
        if task == "regression" and self.target is not None:  # from the windows' own levels
            return self.target.forecast(out, self.target.levels(windows)).numpy()
        if task == "regression":
            mu, sd = self.scaling
            return (mu + sd * out[:, 0]).numpy()
        if task == "binary":
            return torch.sigmoid(out[:, 0]).numpy()
        return torch.softmax(out, dim=1).numpy()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_module"] = None
        return state


def combine(forecasts: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The weighted mean of members' forecasts (members first: (m, n) or (m, n, C)) and their
    weighted standard deviation (the ensemble's spread; for classes, of the probability of the
    predicted class)."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    f = np.asarray(forecasts, dtype=np.float64)
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

    def forecast_windows(self, windows_of: Any) -> tuple[np.ndarray, np.ndarray]:
        """Combined forecast and spread; ``windows_of(preprocessor)`` gives the inputs
        transformed by a net's preprocessing (computed once per distinct preprocessing)."""
        cache: dict[int, np.ndarray] = {}
        outs = []
        for net in self.nets:
            key = id(net.preprocessor)
            if key not in cache:
                cache[key] = windows_of(net.preprocessor)
            outs.append(net.forecast(cache[key], self.task))
        return combine(np.stack(outs), self.weights)

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Forecasts from the raw rows of ``frame`` (the columns the study's data had; the
        target column may be absent): one row per forecast origin with a full window, the last
        origin being the frame's last row. Columns: ``time`` (the origin: the time column's
        value, or the row's position for i.i.d. rows), ``forecast`` (target units; for classes
        the predicted class), ``lower``, ``upper`` (the interval; regression only), ``spread``
        (the ensemble members' standard deviation) and, for classes, ``p_<class>``."""
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
        if rows.time is None:
            anchors = np.flatnonzero(finite)
        else:  # every row whose window is complete and finite
            ok = np.convolve(finite.astype(float), np.ones(w), mode="full")[:len(finite)] == w
            anchors = np.flatnonzero(ok)
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

            return _windows(pre.transform(filled), anchors, w)

        mean, spread = self.forecast_windows(windows_of)
        origin = rows.time[anchors] if rows.time is not None else anchors
        out = pd.DataFrame({"time": origin})
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
        return out[["time", "forecast", "lower", "upper", "spread",
                    *[c for c in out.columns if c.startswith("p_")]]]


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
