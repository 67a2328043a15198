"""Standardization and one-hot encoding, fitted on a training part only.

``fit`` sees only the rows it is given (the rows that a fold's training windows read); the
fitted object is frozen and transforms any rows, so a validation or test row can never change
what was learned from the training part.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["Preprocessor", "FittedPreprocessor"]


@dataclass(frozen=True)
class FittedPreprocessor:
    """Frozen statistics of one training part: means and scales, and the categories seen."""

    numeric: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    categorical: tuple[str, ...]
    categories: tuple[tuple[object, ...], ...]

    @property
    def feature_names(self) -> tuple[str, ...]:
        onehot = tuple(f"{c}={v}" for c, cats in zip(self.categorical, self.categories)
                       for v in cats)
        return self.numeric + onehot

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Rows to a float64 matrix: standardized numerics, then one column per category
        (a category never seen in training is all zeros)."""
        parts = []
        if self.numeric:
            x = frame[list(self.numeric)].to_numpy(dtype=np.float64)
            parts.append((x - self.mean) / self.scale)
        for col, cats in zip(self.categorical, self.categories):
            values = frame[col].to_numpy()
            parts.append(np.stack([values == c for c in cats], axis=1).astype(np.float64)
                         if cats else np.zeros((len(frame), 0)))
        if not parts:
            return np.zeros((len(frame), 0))
        return np.concatenate(parts, axis=1)


@dataclass(frozen=True)
class Preprocessor:
    """Which columns to standardize and which to one-hot encode."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...] = ()

    def fit(self, frame: pd.DataFrame) -> FittedPreprocessor:
        """Learn means, scales (population std; 1 where a column is constant) and categories
        from these rows alone."""
        if len(frame) == 0:
            raise ValueError("cannot fit preprocessing on zero rows")
        x = frame[list(self.numeric)].to_numpy(dtype=np.float64)
        mean = x.mean(axis=0) if self.numeric else np.zeros(0)
        scale = x.std(axis=0) if self.numeric else np.zeros(0)
        scale = np.where(scale > 0, scale, 1.0)
        cats = tuple(tuple(_sorted_unique(frame[c])) for c in self.categorical)
        return FittedPreprocessor(self.numeric, mean, scale, self.categorical, cats)


def _sorted_unique(values: pd.Series) -> Sequence[object]:
    uniq = pd.unique(values)
    try:
        return sorted(uniq)
    except TypeError:  # mixed types: keep first-seen order
        return list(uniq)
