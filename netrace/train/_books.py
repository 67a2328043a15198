"""A population's books: each member's best validation state and how long ago it came.

The best state is a copy of every member's rows of the population's state tensors (the flat
parameters, then the buffers), saved when the member reaches a new best validation score and
restored when it is frozen or diverges; ``score`` is that best in "lower is better" units,
``epoch`` the population epoch it came at, ``bad`` the validations since (patience).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["Books"]


class Books:
    """The best state, score, epoch and patience count of ``k`` members whose state is
    ``tensors`` (each with the members first, on ``device``); every member starts with no
    best yet."""

    def __init__(self, tensors: Sequence[Tensor], k: int, device: torch.device) -> None:
        self.k, self.device = k, device
        self.best = [t.detach().clone() for t in tensors]
        self.score = np.full(k, np.inf)  # in "lower is better" units
        self.epoch = np.full(k, -1, dtype=np.int64)
        self.bad = np.zeros(k, dtype=np.int64)

    def reset(self, i: int, tensors: Sequence[Tensor]) -> None:
        """Member ``i`` starts over: its best state is its state now, with no score."""
        for best, t in zip(self.best, tensors, strict=True):
            best[i].copy_(t[i])
        self.score[i], self.epoch[i], self.bad[i] = np.inf, -1, 0

    def keep(self, index: Sequence[int], tensors: Sequence[Tensor]) -> None:
        """Members ``index``'s best state becomes their state now (their books stay)."""
        for best, t in zip(self.best, tensors, strict=True):
            for i in index:
                best[i].copy_(t[i])

    def restore(self, i: int, tensors: Sequence[Tensor]) -> None:
        """Put member ``i``'s best state back into ``tensors``."""
        for best, t in zip(self.best, tensors, strict=True):
            t.detach()[i].copy_(best[i])

    def record(self, lower: np.ndarray, running: np.ndarray, epoch: int,
               tensors: Sequence[Tensor]) -> np.ndarray:
        """A validation's scores ``lower`` (lower is better) at population epoch ``epoch``:
        the ``running`` members that reached a new best have their state saved; the others
        count one more bad epoch. Returns who improved."""
        improved = running & np.isfinite(lower) & (lower < self.score)
        self._save(improved, tensors)
        self.score = np.where(improved, lower, self.score)
        self.epoch = np.where(improved, epoch, self.epoch)
        self.bad = np.where(improved, 0, self.bad + running)
        return improved

    def _save(self, improved: np.ndarray, tensors: Sequence[Tensor]) -> None:
        if not improved.any():
            return
        mask = torch.as_tensor(improved, device=self.device)
        for best, t in zip(self.best, tensors, strict=True):
            shape = (self.k,) + (1,) * (t.dim() - 1)
            best.copy_(torch.where(mask.view(shape), t.detach(), best))
