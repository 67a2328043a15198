"""Refitting finalists on the whole development part, trained together as populations.

Each finalist is trained again from its own seed and hyperparameters on every development
sample (the most recent included), with the preprocessing and the target's scaling fitted on
those samples, for as many epochs as it had trained when its mean validation score over the
folds peaked (its best epoch, counted from 1): the epoch count chosen on validation. Finalists
that share a population's settings (architecture, optimizer, batch size, window, loss) train as
one population, each stopped after its own epoch count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from netrace.race._build import PopulationSettings, member_spec, model_inputs
from netrace.race._target import TargetData
from netrace.train import Population

__all__ = ["RefitJob", "refit"]


@dataclass(frozen=True)
class RefitJob:
    """One finalist to refit: its settings, hyperparameters, seed, the epochs to train and
    ``budget``, the race's epoch budget its learning-rate schedule ran over (and runs over
    again, so that its first ``epochs`` epochs follow the same rates)."""

    settings: PopulationSettings
    params: dict
    seed: int
    epochs: int
    budget: int


def refit(jobs: Sequence[RefitJob], X: np.ndarray, y: np.ndarray, *, task: str,
          monitor: str, seed: int = 0, device: str = "auto",
          target: TargetData | None = None, series: np.ndarray | None = None
          ) -> list[dict[str, np.ndarray]]:
    """Train every job on ``(X, y)`` (windows already preprocessed; ``y`` standardized for
    regression) and return each one's final weights as a population row, in ``jobs``' order.
    A job whose network learns a log or a ratio (:mod:`netrace.race._target`) learns it from
    ``target``, the same samples' raw targets, instead of ``y``. In a panel ``series`` names
    each sample's series, which a network with a series embedding reads."""
    groups: dict[PopulationSettings, list[int]] = {}
    for i, job in enumerate(jobs):
        groups.setdefault(job.settings, []).append(i)
    out: list[dict[str, np.ndarray] | None] = [None] * len(jobs)
    ydt = torch.long if task == "multiclass" else torch.float32
    yt = torch.as_tensor(y, dtype=ydt)
    for settings, index in groups.items():
        members = [member_spec(jobs[i].params, jobs[i].seed, settings.optimizer,
                               jobs[i].budget) for i in index]
        pop = Population(settings.spec, members, optimizer=settings.optimizer,
                         loss=settings.loss, batch_size=settings.batch_size, monitor=monitor,
                         seed=seed, device=device)
        x = model_inputs(torch.as_tensor(X, dtype=torch.float32), settings, series)
        learn = yt
        if settings.transformed:
            if target is None:
                raise ValueError("a network that learns a log or a ratio needs target=")
            tf = target.fit(settings)
            assert tf is not None
            learn = torch.as_tensor(tf.learned(target.y, tf.levels(target.windows)),
                                    dtype=torch.float32)
        rows = settings.training_rows(len(learn))  # a rolling window: the most recent samples
        x, learn = x[rows], learn[rows]
        if settings.linear == "ols":  # as in the race: from the least-squares fit
            pop.init_linear(list(range(len(index))), x, learn)
        epochs = np.array([jobs[i].epochs for i in index])
        for e in range(int(epochs.max())):
            pop.step_epoch(x, learn)
            for j in np.flatnonzero(epochs == e + 1):
                pop.stop(int(j))
        states = pop.member_states(list(range(len(index))))
        for j, i in enumerate(index):
            out[i] = {k: np.array(v) for k, v in states[j].items()
                      if k == "params" or k.startswith("buffer.")}
    return [w for w in out if w is not None]


