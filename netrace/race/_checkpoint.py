"""A finished network as bytes: what it is, its best weights per fold, its fitted preprocessing.

The race ends hundreds of networks a second when the rule stops them after a few epochs, and
keeps each one's best state. So a checkpoint holds each fold's member row as the population
keeps it (:meth:`~netrace.train.Population.best_weights`), not a torch module: no module is
built and no zip archive written per network, and the preprocessing, the same for every network
of a worker, is pickled once. :func:`load_checkpoint` turns the bytes back into torch modules
(:func:`~netrace.models.member_module_from`) and the fitted preprocessors.

A checkpoint is a pickle (as ``torch.load`` of a full checkpoint is): load only studies you
trust.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from netrace.errors import UserError
from netrace.models import CNNSpec, MLPSpec, ModelSpec, RNNSpec, build_model, member_module_from
from netrace.race._target import TargetTransform

__all__ = ["NetworkCheckpoint", "pack_checkpoint", "load_checkpoint"]

_FORMAT = "netrace-checkpoint-2"
_SPECS = {c.__name__: c for c in (MLPSpec, CNNSpec, RNNSpec)}


@dataclass
class NetworkCheckpoint:
    """A finished network: its hyperparameters and seed, its architecture (``model``, ``spec``,
    ``window``: rows of history it reads), the metric it was judged by, and per fold its best
    weights (``fold_weights``, population rows) and the preprocessing fitted on that fold's
    training part; ``target_scaling`` per fold the ``(mean, std)`` of the training targets
    that a regression network's output is in units of (``y = mean + std * output``; ``None``
    in checkpoints written before netrace kept it, and for classification); for a panel
    (``[data] series``) a :class:`~netrace.data.SeriesScaling` per fold instead, whose
    ``at(series)`` gives the per-sample ``(mean, std)`` arrays. ``targets`` per fold the
    :class:`~netrace.race._target.TargetTransform` (as plain data) of a network that learned a
    log or a ratio instead (``None``: the standardized target, as before netrace had them)."""

    params: dict[str, Any]
    seed: int
    model: str
    spec: ModelSpec
    window: int
    metric: str
    fold_weights: list[dict[str, np.ndarray]]
    preprocessors: list[Any]
    target_scaling: list[Any] | None = None
    targets: list[dict[str, Any]] | None = None
    _state_dicts: list[dict[str, torch.Tensor]] | None = field(default=None, repr=False)

    def modules(self) -> list[nn.Module]:
        """The network of each fold as a torch module in evaluation mode."""
        if self._state_dicts is not None:  # the earlier format kept state dicts
            out = []
            for sd in self._state_dicts:
                m = build_model(self.spec, 1).member_module(0)
                m.load_state_dict(sd)
                out.append(m.eval())
            return out
        return [member_module_from(self.spec, w).eval() for w in self.fold_weights]

    def target(self, fold: int) -> TargetTransform | None:
        """What fold ``fold``'s network learned, if not the standardized target."""
        return TargetTransform.from_dict(self.targets[fold]) if self.targets else None


def pack_preprocessors(preprocessors: list[Any]) -> bytes:
    """A worker's fitted preprocessors (one per fold), pickled once for all its checkpoints."""
    return pickle.dumps(preprocessors, protocol=pickle.HIGHEST_PROTOCOL)


def pack_checkpoint(params: dict[str, Any], seed: int, model: str, spec: ModelSpec, window: int,
                    metric: str, fold_weights: list[dict[str, np.ndarray]],
                    preprocessors: bytes,
                    target_scaling: list[Any] | None = None,
                    targets: list[dict[str, Any]] | None = None) -> bytes:
    """A finished network as bytes; ``preprocessors`` from :func:`pack_preprocessors`."""
    return pickle.dumps({"format": _FORMAT, "params": params, "seed": seed, "model": model,
                         "spec": asdict(spec), "spec_type": type(spec).__name__,
                         "window": window, "metric": metric, "fold_weights": fold_weights,
                         "preprocessors": preprocessors, "target_scaling": target_scaling,
                         "targets": targets},
                        protocol=pickle.HIGHEST_PROTOCOL)


def load_checkpoint(data: bytes) -> NetworkCheckpoint:
    """The network that :func:`pack_checkpoint` packed (or an earlier netrace's checkpoint,
    a ``torch.save`` archive)."""
    if data[:2] == b"PK":  # the earlier format: torch.save of the state dicts
        d = torch.load(io.BytesIO(data), weights_only=False)
        return NetworkCheckpoint(d["params"], d["seed"], d["model"], _spec(d), d["window"],
                                 d["metric"], [], list(d["preprocessors"]),
                                 _state_dicts=d["fold_states"])
    try:
        d = pickle.loads(data)
    except Exception as exc:  # noqa: BLE001 - any unpickling error means the same thing
        raise UserError(f"this checkpoint cannot be read ({exc}); it was not written by "
                        "netrace, or by a version whose classes this one lacks") from None
    if not isinstance(d, dict) or d.get("format") != _FORMAT:
        raise UserError("this checkpoint is not in a format this netrace reads; was it written "
                        "by a newer version?")
    return NetworkCheckpoint(d["params"], d["seed"], d["model"], _spec(d), d["window"],
                             d["metric"], d["fold_weights"], pickle.loads(d["preprocessors"]),
                             d.get("target_scaling"), d.get("targets"))


def _spec(d: dict[str, Any]) -> ModelSpec:
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in d["spec"].items()}
    return _SPECS[d["spec_type"]](**fields)
