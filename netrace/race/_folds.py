"""What a race worker trains on: the development folds of the split, loaded once, and each
population's inputs on them (its model's input layout, its training rows, its target)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from netrace.config import Config
from netrace.data import prepare
from netrace.race._build import DataShape, PopulationSettings, model_inputs
from netrace.race._target import FoldTarget, TargetData, level_source
from netrace.train import Population

__all__ = ["Fold", "FoldInputs", "load_folds", "fold_inputs", "start_linear"]


@dataclass(frozen=True)
class Fold:
    """One development fold, as every population of a worker trains on it: training and
    validation tensors (a regression's targets standardized by the training part, with the
    baseline forecast, zero in those units, for R²), the fitted ``preprocessor``; per
    regression, ``target_scaling`` (y = mu + sd * output, per series in a panel) and
    ``valid_scaling``, the (mu, sd) of its validation targets; and ``target_data`` with the raw
    validation targets ``y_valid_raw``, from which a network learning a log or a ratio
    starts. In a panel ``series_train`` and ``series_valid`` name each sample's series (a
    series embedding reads them)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_valid: torch.Tensor
    y_valid: torch.Tensor
    baseline: torch.Tensor | None
    preprocessor: Any
    target_scaling: Any
    valid_scaling: Any
    target_data: TargetData
    y_valid_raw: np.ndarray
    series_train: np.ndarray | None = None
    series_valid: np.ndarray | None = None


@dataclass(frozen=True)
class FoldInputs:
    """What one population trains and is validated on in a fold: its model's inputs, its
    training rows (all, or a rolling window's), and its training target (``target``'s, for a
    network that learns a log or a ratio)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_valid: torch.Tensor
    y_valid: torch.Tensor
    baseline: torch.Tensor | None
    target: FoldTarget | None


def load_folds(config: Config) -> tuple[list[Fold], DataShape]:
    """The development folds of ``config``'s data and split, and the shape of their inputs
    (the test part stays sealed: workers never open it)."""
    p = prepare(config)
    dev, task = p.dev, config.task.type
    source = level_source(p.features, p.target) if task == "regression" else None
    folds = []
    for f in dev.folds:
        d = dev.fold_data(f)
        ydt = torch.long if task == "multiclass" else torch.float32
        ytr = torch.as_tensor(d.y_train, dtype=ydt)
        yva = torch.as_tensor(d.y_valid, dtype=ydt)
        base = None
        if task == "regression":
            # networks learn a standardized target (training statistics only, per series in
            # a panel); R² against the training mean, the baseline, is the same in either unit
            scaling = dev.target_scaling(f)
            ytr, yva = _standardized(ytr, *scaling.train), _standardized(yva, *scaling.valid)
            base = torch.zeros_like(yva)
            kept, valid = scaling.kept, scaling.valid
        else:
            kept, valid = (0.0, 1.0), None
        xtr = torch.as_tensor(d.X_train, dtype=torch.float32)
        s_tr, s_va = (None, None) if dev.series is None else (dev.series[f.train],
                                                               dev.series[f.valid])
        folds.append(Fold(xtr, ytr, torch.as_tensor(d.X_valid, dtype=torch.float32), yva, base,
                          d.preprocessor, kept, valid,
                          TargetData(d.y_train, xtr.numpy(), d.preprocessor, source, s_tr),
                          d.y_valid, s_tr, s_va))
    x0 = folds[0].x_train
    return folds, DataShape(int(x0.shape[1]), int(x0.shape[2]), task, len(dev.classes or ()),
                            tuple(dev.series_names or ()))


def fold_inputs(folds: Sequence[Fold], targets: Sequence[FoldTarget | None],
                settings: PopulationSettings) -> list[FoldInputs]:
    """Each fold's inputs for a population of ``settings`` whose target on it is ``targets``:
    a network that learns a log or a ratio trains on it (its own target, ``z_train``); a rolling
    window (``train_window``) on the most recent training samples alone."""
    out = []
    for fold, tg in zip(folds, targets, strict=True):
        rows = settings.training_rows(len(fold.y_train))
        s_tr = None if fold.series_train is None else fold.series_train[rows]
        out.append(FoldInputs(model_inputs(fold.x_train[rows], settings, s_tr),
                              (fold.y_train if tg is None else tg.z_train)[rows],
                              model_inputs(fold.x_valid, settings, fold.series_valid),
                              fold.y_valid, fold.baseline,
                              None if tg is None else replace(tg, z_train=tg.z_train[rows])))
    return out


def start_linear(pops: Sequence[Population], inputs: Sequence[FoldInputs],
                 settings: PopulationSettings, slots: Any) -> None:
    """New networks with ``linear = "ols"`` start at each fold's least-squares fit (a resumed
    one then takes its saved state over it)."""
    if settings.linear != "ols":
        return
    for pop, inp in zip(pops, inputs, strict=True):
        pop.init_linear(list(slots), inp.x_train, inp.y_train)


def _standardized(y: torch.Tensor, centre: Any, scale: Any) -> torch.Tensor:
    """``(y - centre) / scale`` for scalars, or per sample (a panel's per-series statistics)."""
    if np.ndim(centre) == 0:
        return (y - centre) / scale
    return (y - torch.as_tensor(centre, dtype=y.dtype)) / torch.as_tensor(scale, dtype=y.dtype)
