"""From a trial's parameters to a network: its architecture, its member settings, its inputs.

Population keys (shape, optimizer, batch size, window, loss) become the population's
:class:`~netrace.models.ModelSpec` and settings; member keys become a
:class:`~netrace.train.MemberSpec`. Anything the space does not fix takes a default here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from netrace.errors import UserError
from netrace.models import CNNSpec, MLPSpec, ModelSpec, RNNSpec
from netrace.train import MemberSpec, Schedule
from netrace.vocabulary import DEFAULT_METRIC, MAXIMIZED

__all__ = ["DataShape", "PopulationSettings", "population_settings", "member_spec", "schedule_for",
           "model_inputs", "series_codes", "DEFAULT_METRIC", "MAXIMIZED"]

# DEFAULT_METRIC and MAXIMIZED: the vocabulary's, re-exported


@dataclass(frozen=True)
class DataShape:
    """What the data gives every network: window rows x features, task, classes; for a
    panel, ``series``, the series of the development part (a series embedding's codes are
    their places here)."""

    window: int
    features: int
    task: str
    classes: int = 0
    series: tuple[object, ...] = ()

    @property
    def outputs(self) -> int:
        return self.classes if self.task == "multiclass" else 1

    def outputs_for(self, loss: str | None) -> int:
        """A Gaussian network has two outputs: the mean and the log of the variance."""
        return 2 if loss == "gaussian_nll" else self.outputs


@dataclass(frozen=True)
class PopulationSettings:
    """Everything that must be equal across a population's members."""

    model: str
    spec: ModelSpec
    optimizer: str
    batch_size: int
    window: int
    loss: str | None
    linear: str = "none"  # the linear path: none, on (from zero), ols (from the least squares)
    target_transform: str = "none"  # "log": the target is learned in log space
    revin: bool = False  # per-window normalization of the inputs, a ratio target
    #: train on the most recent this many training samples (a rolling window); 0: on all of
    #: them (an expanding window)
    train_window: int = 0
    #: numbers per series of a learned series embedding (0: none), and the series whose
    #: codes are their places in ``series`` (the development part's, fixed at the race)
    series_embedding: int = 0
    series: tuple[object, ...] = ()

    @property
    def transformed(self) -> bool:
        """Whether the network learns something else than the standardized target (a log,
        a ratio to its window's level): see :mod:`netrace.race._target`."""
        return self.target_transform == "log" or self.revin or self.loss == "qlike"

    def training_rows(self, n: int) -> slice:
        """The training samples (of ``n``, in time order) this population trains on.

        >>> s = PopulationSettings("mlp", None, "adam", 32, 5, None, train_window=3)
        >>> s.training_rows(10), s.training_rows(2)
        (slice(7, 10, None), slice(0, 2, None))
        """
        return slice(max(n - self.train_window, 0), n) if self.train_window else slice(0, n)


def population_settings(params: dict[str, Any], shape: DataShape) -> PopulationSettings:
    model = params.get("model", "mlp")
    window = min(int(params.get("window", shape.window)), shape.window)
    layers, width = int(params.get("layers", 1)), int(params.get("width", 32))
    linear = params.get("linear", "none")
    if linear == "ols" and shape.task != "regression":
        raise UserError(f"linear = \"ols\" starts a network at the least-squares fit of a "
                        f"regression target; this task is {shape.task}: use linear = \"on\"")
    loss = params.get("loss")
    transform = "log" if loss == "qlike" else params.get("target_transform", "none")
    revin = bool(params.get("revin", False))
    if (transform != "none" or revin) and shape.task != "regression":
        what = "revin = true" if revin else f"target_transform = \"{transform}\""
        raise UserError(f"{what} changes what a network learns of a regression target; this "
                        f"task is {shape.task}: remove it from [search.space]")
    head = dict(activation=params.get("activation", "relu"), norm=params.get("norm", "none"),
                task=shape.task, n_outputs=shape.outputs_for(params.get("loss")),
                linear_inputs=0 if linear == "none" else window * shape.features,
                **_embedding(params, shape))
    spec: ModelSpec
    if model == "mlp" or window == 1 and model == "cnn":
        model = "mlp"
        spec = MLPSpec(in_features=window * shape.features, hidden=(width,) * max(layers, 1),
                       **head)
    elif model == "cnn":
        kernel = min(int(params.get("kernel_size", 3)), window)
        spec = CNNSpec(length=window, in_channels=shape.features,
                       channels=(int(params.get("channels", 16)),)
                       * int(params.get("conv_layers", 1)),
                       kernel_size=kernel, pool=params.get("pool", "max") if window >= 2 * kernel
                       else "none", hidden=(width,) * layers, **head)
    else:
        spec = RNNSpec(in_features=shape.features, cell=model,
                       hidden_size=int(params.get("hidden_size", 32)),
                       layers=int(params.get("rnn_layers", 1)), hidden=(width,) * layers, **head)
    return PopulationSettings(model, spec, params.get("optimizer", "adam"),
                              int(params.get("batch_size", 128)), window, loss, linear,
                              transform, revin, int(params.get("train_window", 0)),
                              spec.embedding, shape.series if spec.embedding else ())


def _embedding(params: dict[str, Any], shape: DataShape) -> dict[str, int]:
    """A spec's series embedding: none unless ``series_embedding`` > 0, which needs a panel."""
    d = int(params.get("series_embedding", 0))
    if not d:
        return {}
    if not shape.series:
        raise UserError(f"series_embedding = {d} learns a vector per series of a panel; this "
                        "data is one series: set [data] series to the series column, or remove "
                        "series_embedding from [search.space]")
    return {"series": len(shape.series), "embedding": d}


def series_codes(known: tuple[object, ...], series: Any) -> np.ndarray:
    """Each sample's series code: its series' place in ``known``. A series not among them
    is an error: the network learned a vector only for the series it was trained on.

    >>> series_codes(("A", "B"), np.array(["B", "A", "B"])).tolist()
    [1, 0, 1]
    """
    if series is None:
        raise UserError("these networks learned a vector per series (series_embedding); "
                        "their inputs need each window's series")
    lookup = {v: i for i, v in enumerate(known)}
    labels = np.asarray(series)
    codes = np.array([lookup.get(v, -1) for v in labels.tolist()], dtype=np.int64)
    if (codes < 0).any():
        unknown = sorted({str(v) for v, c in zip(labels.tolist(), codes) if c < 0})
        raise UserError(f"series {', '.join(map(repr, unknown))} not in the data these networks "
                        f"were raced on (they learned a vector for each of {len(known)} series: "
                        f"{', '.join(map(str, known))}); forecast only those series, or race "
                        "again on data that holds the new ones (series_embedding)")
    return codes


def schedule_for(params: dict[str, Any], epochs: int) -> Schedule:
    """A network's learning-rate schedule over its epoch budget (``[race] max_epochs``):
    ``cosine`` anneals to zero at the last epoch; ``step`` multiplies the rate by 0.1 after
    each third of the budget; ``exponential`` decays it by the same factor per epoch, to a
    hundredth of the base rate at the end, as ``step`` reaches after two thirds."""
    epochs = max(int(epochs), 1)
    kind = params.get("schedule", "constant")
    return Schedule(kind, warmup=int(params.get("warmup", 0)), t_max=epochs,
                    step_size=max(1, math.ceil(epochs / 3)),
                    gamma=0.01 ** (1.0 / epochs) if kind == "exponential" else 0.1)


def member_spec(params: dict[str, Any], seed: int, optimizer: str, epochs: int) -> MemberSpec:
    """A network's member settings; ``epochs`` is its epoch budget, which its learning-rate
    schedule runs over (:func:`schedule_for`)."""
    momentum = float(params.get("momentum", 0.9 if optimizer in ("momentum", "nesterov")
                                else 0.0))
    return MemberSpec(
        seed=seed, lr=params.get("lr"),
        schedule=schedule_for(params, epochs),
        momentum=momentum, beta1=float(params.get("beta1", 0.9)),
        beta2=float(params.get("beta2", 0.999)), weight_decay=params.get("weight_decay"),
        l1=float(params.get("l1", 0.0)), dropout=float(params.get("dropout", 0.0)),
        clip_norm=params.get("clip_norm"), init=params.get("init", "kaiming"),
        init_dist=params.get("init_dist", "uniform"), bagging=bool(params.get("bagging", False)),
        patience=params.get("patience"))


def model_inputs(x: torch.Tensor, settings: PopulationSettings, series: Any = None
                 ) -> torch.Tensor:
    """Windows ``(n, window, features)`` as the model reads them: the last ``window`` rows,
    flattened for an MLP, channels first for a CNN. With ``revin``, every window's channels
    are first standardized by their own mean and standard deviation over those rows (a
    standard deviation below 1e-5, a constant channel, counts as 1e-5): the inputs are then the
    same for any positive multiple of a series, or of its preprocessing. With a series
    embedding, ``series`` names each window's series, whose code (:func:`series_codes`) the
    input carries as its last feature (an MLP's, every step's) or channel (a CNN's)."""
    x = x[:, -settings.window:, :]
    if settings.revin:
        mean = x.mean(dim=1, keepdim=True)
        std = x.std(dim=1, correction=0, keepdim=True).clamp_min(1e-5)
        x = (x - mean) / std
    if settings.series_embedding:
        code = torch.as_tensor(series_codes(settings.series, series), dtype=x.dtype)
        x = torch.cat([x, code[:, None, None].expand(-1, x.shape[1], 1)], dim=2)
    if settings.model == "mlp":
        if settings.series_embedding:  # the code once, after the flattened window
            return torch.cat([x[:, :, :-1].reshape(x.shape[0], -1), x[:, 0, -1:]], dim=1)
        return x.reshape(x.shape[0], -1)
    if settings.model == "cnn":
        return x.transpose(1, 2).contiguous()
    return x.contiguous()
