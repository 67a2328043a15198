"""What a regression network learns, and how its output becomes a forecast in target units.

By default a network learns the standardized target ``(y - mean) / std`` (training statistics
of its fold) and forecasts ``mean + std * o``. Two population keys of ``[search.space]``
change what it learns, for a positive target such as a volatility:

- ``target_transform = "log"``: it learns the standardized ``log y``; its forecast is the
  lognormal mean ``exp(mean + std * o + v / 2)``, where ``v`` is the variance of its residuals
  in log units on its *training* part (never the validation part, which later weighs
  candidates), or, with ``loss = "gaussian_nll"``, the variance it predicts itself.
  ``exp(mean + std * o)`` alone is the median and runs low.
- ``revin = true`` (per-window normalization, after RevIN, Kim et al. ICLR 2022): every
  window's inputs are standardized by their own mean and standard deviation per channel, and
  the network learns the ratio ``y / level`` of the target to the window's *level*, the mean
  over the window (the rows the network reads) of the target's own per-row series (the
  ``parkinson`` feature for ``vol_next``, the target column itself for a column target); its
  forecast is ``level * (...)``. A network so trained carries no volatility level from one
  regime into the next: multiply the series by 10 and its forecast is 10 times as large.

``loss = "qlike"`` reads the output as the log of a positive forecast, ``f = exp(mean + o)``,
and scores it with QLIKE, ``y / f - log(y / f) - 1``, whose minimum is at the conditional mean
itself: no bias correction, and the log target is not divided by its standard deviation
(QLIKE is a function of ``y / f``, which that would rescale). ``target_transform`` does not
apply to it (the space is conditional); ``revin`` does.

Everything here is computed from the windows a network reads (transformed by its fitted
preprocessing) and the statistics of its training part, so that the race, the evaluation's
refit and a stored model's ``.predict`` all use the same code: :class:`TargetData` fits a
:class:`TargetTransform` for a population's settings, and the transform maps outputs to
forecasts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from netrace.errors import UserError
from netrace.race._build import PopulationSettings, model_inputs

__all__ = ["Level", "TargetTransform", "TargetData", "level_source", "check_target_space",
           "residual_variance"]

#: a window whose level is below this share of the training part's mean level counts as it
LEVEL_FLOOR = 0.01
#: the floor of a Gaussian network's predicted variance (standardized units), as its loss's
_GAUSSIAN_FLOOR = 1e-6


@dataclass(frozen=True)
class Level:
    """Where a window's level is read: its ``channel`` of preprocessed inputs, turned back into
    raw values with the preprocessing's ``mean`` and ``scale`` of that column, averaged over
    the last ``window`` rows, and floored at ``floor`` (a share of the training mean level)."""

    name: str
    channel: int
    mean: float
    scale: float
    window: int
    floor: float = 0.0

    def of(self, windows: Tensor) -> Tensor:
        """The level of every window ``(n, rows, features)``: shape (n,), float64."""
        raw = windows[:, -self.window:, self.channel].double() * self.scale + self.mean
        return raw.mean(dim=1).clamp_min(self.floor)


@dataclass(frozen=True)
class TargetTransform:
    """How a regression network's output ``o`` becomes a forecast in the target's units.

    The network learns ``z = (u - mean) / std`` with ``u = y / level`` (``level`` 1 without
    RevIN) or ``u = log(y / level)`` when ``log``; the forecast is ``level * (mean + std * o)``,
    or ``level * exp(mean + std * o + v / 2)`` in log space, where ``v`` is ``var`` for
    ``correction = "residual"``, the network's own predicted variance for ``"gaussian"`` and 0
    for ``"none"`` (QLIKE's forecast needs none).

    >>> import math
    >>> t = TargetTransform(mean=-4.0, std=0.5, log=True, correction="residual", var=0.04)
    >>> out = torch.tensor([[0.2]])
    >>> f = t.forecast(out, torch.ones(1))
    >>> round(float(f[0]), 6) == round(math.exp(-4.0 + 0.5 * 0.2 + 0.02), 6)
    True
    """

    mean: float = 0.0
    std: float = 1.0
    log: bool = False
    correction: str = "none"  # "none" | "residual" | "gaussian"
    var: float = 0.0
    level: Level | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain data, as a checkpoint keeps it (:meth:`from_dict` reads it back)."""
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> TargetTransform:
        level = d.get("level")
        return TargetTransform(**{**d, "level": Level(**level) if level else None})

    def levels(self, windows: Tensor | np.ndarray) -> Tensor:
        """Each window's level (n,), float64; ones without RevIN."""
        w = torch.as_tensor(windows)
        if self.level is None:
            return torch.ones(w.shape[0], dtype=torch.float64)
        return self.level.of(w)

    def learned(self, y: np.ndarray, levels: Tensor) -> np.ndarray:
        """What the network learns for targets ``y`` of windows with these ``levels``."""
        u = np.asarray(y, dtype=np.float64) / levels.numpy()
        if self.log:
            u = np.log(u)
        return (u - self.mean) / self.std

    def forecast(self, out: Tensor, levels: Tensor, var: Tensor | None = None) -> Tensor:
        """Forecasts in target units (float64) from outputs ``(..., n, outputs)``; ``var``
        (one per member, (K,)) replaces ``self.var`` for outputs of a population (K, n, O)."""
        u = self.mean + self.std * out[..., 0].double()
        if self.log:
            if self.correction == "gaussian":
                u = u + 0.5 * self.std ** 2 * out[..., 1].double().exp().clamp_min(
                    _GAUSSIAN_FLOOR)
            elif self.correction == "residual":
                v = torch.as_tensor(self.var if var is None else var, dtype=torch.float64)
                u = u + 0.5 * (v.unsqueeze(-1) if v.dim() else v)
            u = u.exp()
        return u * levels.to(u.device)

    def residual_var(self, out: Tensor, z: Tensor) -> Tensor:
        """The variance of the log residuals, ``mean((std * (z - o))^2)``, of outputs ``out``
        (K, n, O) or (n, O) on the training part's learned targets ``z`` (n,): one per member
        (or a scalar); zero unless ``correction = "residual"``."""
        o = out[..., 0].double()
        if self.correction != "residual":
            return torch.zeros(o.shape[:-1], dtype=torch.float64)
        return residual_variance(o, z.double().to(o.device), self.std)


def residual_variance(o: Tensor, z: Tensor, std: float) -> Tensor:
    """``mean((std * (z - o))^2)`` over the last dimension: the residual variance in log units
    of standardized log forecasts ``o`` of standardized log targets ``z``."""
    return ((std * (z - o)) ** 2).mean(dim=-1)


def level_source(features: Any, target: Any) -> str | None:
    """The name of the feature that holds the target's own per-row series, if any: the
    ``parkinson`` recipe (or ``vol_mean_1``, the same) for ``vol_next``, ``vol_close`` for
    ``vol_close_next``, ``log_return`` for
    ``return_next``, the target column itself for a column target."""
    names = [f.name for f in features if not f.categorical]
    if target.recipe is None:
        return target.name if target.name in names else None
    wanted = {"vol_next": ("parkinson", "vol_mean_1"), "vol_close_next": ("vol_close",),
              "return_next": ("log_return",)}
    return next((n for n in wanted.get(target.recipe, ()) if n in names), None)


@dataclass(frozen=True)
class TargetData:
    """A training part as the target transforms see it: its raw targets ``y``, its windows
    ``(n, rows, features)`` transformed by the fitted ``preprocessor``, and ``source``, the
    feature that holds the target's own series (:func:`level_source`; RevIN needs it); in a
    panel ``series``, each sample's series (a series embedding reads them)."""

    y: np.ndarray
    windows: np.ndarray
    preprocessor: Any
    source: str | None = None
    series: np.ndarray | None = None

    def fit(self, settings: PopulationSettings) -> TargetTransform | None:
        """The transform a population with these settings learns under (``None``: the
        default standardized target, kept as ``(mean, std)`` scaling elsewhere)."""
        if not settings.transformed:
            return None
        log = settings.target_transform == "log" or settings.loss == "qlike"
        y = np.asarray(self.y, dtype=np.float64)
        _check_positive(y, _why(settings))
        level = None
        if settings.revin:
            if self.source is None:
                raise UserError("revin = true maps a network's output back with its window's "
                                "level of the target's own series, which this window does not "
                                "hold; add it to [task] features")
            c = list(self.preprocessor.numeric).index(self.source)
            mean, scale = float(self.preprocessor.mean[c]), float(self.preprocessor.scale[c])
            level = Level(self.source, c, mean, scale, settings.window)
            floor = LEVEL_FLOOR * float(level.of(torch.as_tensor(self.windows)).mean())
            level = replace(level, floor=max(floor, 0.0))
        t = TargetTransform(level=level, log=log)
        u = y / t.levels(self.windows).numpy()
        if log:
            u = np.log(u)
        std = 1.0 if settings.loss == "qlike" else float(u.std()) or 1.0
        correction = "none" if not log or settings.loss == "qlike" else \
            "gaussian" if settings.loss == "gaussian_nll" else "residual"
        return replace(t, mean=float(u.mean()), std=std, correction=correction)

    def fitted(self, settings: PopulationSettings, weights: dict[str, np.ndarray]
               ) -> TargetTransform | None:
        """The transform of one trained network (``weights`` a population row), with the
        variance of its log residuals on this training part for the bias correction."""
        t = self.fit(settings)
        if t is None or t.correction != "residual":
            return t
        from netrace.models import member_module_from

        x = torch.as_tensor(self.windows, dtype=torch.float32)
        z = torch.as_tensor(t.learned(self.y, t.levels(self.windows)))
        module = member_module_from(settings.spec, weights).eval()
        inputs = model_inputs(x, settings, self.series)
        with torch.no_grad():
            out = torch.cat([module(inputs[s:s + 4096]) for s in range(0, len(inputs), 4096)])
        return replace(t, var=float(t.residual_var(out, z)))


@dataclass
class FoldTarget:
    """A population's transform on one fold of the race, with what every epoch needs: the
    learned targets of the training and validation parts and the windows' levels."""

    transform: TargetTransform
    z_train: Tensor
    z_valid: Tensor
    levels_valid: Tensor

    @staticmethod
    def of(data: TargetData, settings: PopulationSettings, x_valid: Tensor,
           y_valid: np.ndarray) -> FoldTarget | None:
        t = data.fit(settings)
        if t is None:
            return None
        _check_positive(np.asarray(y_valid, dtype=np.float64), _why(settings), "validation")
        lv_tr = t.levels(data.windows)
        lv_va = t.levels(x_valid)
        return FoldTarget(t, torch.as_tensor(t.learned(data.y, lv_tr), dtype=torch.float32),
                          torch.as_tensor(t.learned(y_valid, lv_va), dtype=torch.float32), lv_va)

    def measure_kwargs(self, predict: Callable[[Tensor], Tensor], x_train: Tensor,
                       scale: tuple[float, float]) -> dict[str, Any]:
        """What :meth:`~netrace.train.Population.measure` needs to score a population's
        forecasts in the units of the default target, ``(y - mean) / std`` with ``scale`` =
        (mean, std): so that networks with and without a transform compete on one scale.
        ``predict`` gives the population's outputs; on ``x_train`` (model inputs) they give
        each member's residual variance for the bias correction (training part only)."""
        t = self.transform
        var = t.residual_var(predict(x_train), self.z_train) if t.correction == "residual" \
            else None
        mu, sd = scale

        def forecast(out: Tensor) -> Tensor:
            # float64: a forecast near zero must survive the round trip (QLIKE weighs it)
            return (t.forecast(out, self.levels_valid, var) - mu) / sd

        return {"learned": self.z_valid, "forecast": forecast}


def _why(settings: PopulationSettings) -> str:
    if settings.loss == "qlike":
        return "loss = \"qlike\" scores a positive forecast of a positive target"
    if settings.target_transform == "log":
        return "target_transform = \"log\" learns the log of the target"
    return "revin = true learns the ratio of the target to its window's level"


def _check_positive(y: np.ndarray, why: str, part: str = "training") -> None:
    bad = np.flatnonzero(~(y > 0))
    if bad.size:
        raise UserError(f"{why}, which needs a target above zero; the target has {bad.size} of "
                        f"{y.size} {part} values at or below zero (the smallest "
                        f"{float(np.nanmin(y)):g}); use a positive target (a volatility, a "
                        f"price) or remove it from [search.space]")


def check_target_space(space: Any, prepared: Any) -> None:
    """Fail before a race starts when the space can propose a target transform that the data
    does not allow: a log target, QLIKE or RevIN of a target that is not positive on the
    whole development part, or RevIN without the target's own series among the features."""
    def can(name: str, value: Any) -> bool:
        return name in space and value in space[name].values()

    log = can("target_transform", "log") and any(
        can("loss", v) or ("loss" not in space and v == "mse")
        for v in ("mse", "mae", "huber", "gaussian_nll"))
    qlike, revin = can("loss", "qlike"), can("revin", True)
    if not (log or qlike or revin):
        return
    keys = [k for k, on in (("target_transform = \"log\"", log), ("loss = \"qlike\"", qlike),
                            ("revin = true", revin)) if on]
    given, names = " and ".join(keys), " and ".join(k.split(" ")[0] for k in keys)
    verb = "needs" if len(keys) == 1 else "need"
    task = prepared.config.task.type
    if task != "regression":
        raise UserError(f"[search.space] {given} {verb} a regression target; this task is "
                        f"{task}: remove {names} from [search.space]")
    if prepared.config.data.series is not None:
        raise UserError(f"[search.space] {given} {verb} one series' target statistics, and "
                        f"this data is a panel ([data] series = "
                        f"{prepared.config.data.series!r}) whose targets netrace scales per "
                        f"series; a panel with {names} is not built yet: remove {names} from "
                        "[search.space] (or race one series per study)")
    target = prepared.target
    y = np.asarray(prepared.dev.y, dtype=np.float64)
    bad = np.flatnonzero(~(y > 0))
    if bad.size:
        raise UserError(
            f"[search.space] {given} {verb} a target above zero (it learns "
            f"{'the log' if log or qlike else 'a ratio'} of it), but target "
            f"'{target.name}' has {bad.size} of {y.size} development values at or below zero "
            f"(the smallest {float(np.min(y)):g}); choose a positive target (a volatility "
            f"such as vol_next, a price) or remove {names} from [search.space]")
    if revin and level_source(prepared.features, target) is None:
        need = target.name if target.recipe is None else \
            {"vol_next": "parkinson", "vol_close_next": "vol_close",
             "return_next": "log_return"}.get(target.recipe, "?")
        have = ", ".join(f.name for f in prepared.features)
        raise UserError(f"[search.space] revin = true maps a network's output back with each "
                        f"window's level of the target's own series ('{need}' for target "
                        f"'{target.name}'), which is not among the features ({have}); add "
                        f"\"{need}\" to [task] features or remove revin")

