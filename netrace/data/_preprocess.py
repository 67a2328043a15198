"""Standardization and one-hot encoding, fitted on a training part only.

``fit`` sees only the rows it is given (the rows that a fold's training windows read); the
fitted object is frozen and transforms any rows, so a validation or test row can never change
what was learned from the training part. In a panel (many series in one table) every series'
numeric columns are standardized by that series' own training rows; categories are shared.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from netrace.errors import UserError

__all__ = ["Preprocessor", "FittedPreprocessor", "SeriesFittedPreprocessor"]


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

    def transform_known(self, frame: pd.DataFrame) -> np.ndarray:
        """:meth:`transform`; a panel's preprocessing leaves out the rows of series it was
        not fitted on (:class:`SeriesFittedPreprocessor`)."""
        return self.transform(frame)


@dataclass(frozen=True)
class SeriesFittedPreprocessor(FittedPreprocessor):
    """A panel's preprocessing: per series (``labels``, the values of column ``series``) the
    means and scales of the numeric columns, rows ``(series, numeric)`` of ``series_mean``
    and ``series_scale``, learned from that series' training rows; ``mean`` and ``scale`` are
    unused. A row of a series without training rows cannot be transformed."""

    series: str = ""
    labels: tuple[object, ...] = ()
    series_mean: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    series_scale: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        if not self.numeric:
            return super().transform(frame)
        lookup = {v: i for i, v in enumerate(self.labels)}
        code = np.array([lookup.get(v, -1) for v in frame[self.series].to_numpy()], dtype=np.intp)
        if (code < 0).any():
            unknown = frame[self.series].to_numpy()[np.flatnonzero(code < 0)[0]]
            raise UserError(f"series {unknown!r} has no training rows, so its inputs cannot be "
                            f"scaled (netrace scales each series by its own training rows); "
                            f"known series: {', '.join(map(str, self.labels))}; forecast only "
                            "those series, or race again on data where it has training rows")
        fitted = FittedPreprocessor(self.numeric, self.series_mean[code],
                                    self.series_scale[code], self.categorical, self.categories)
        return fitted.transform(frame)

    def transform_known(self, frame: pd.DataFrame) -> np.ndarray:
        """:meth:`transform` of the rows of series with training rows; NaN in the rows of
        any other series (one that starts later than a fold's training part: no window of
        that fold reads its rows)."""
        known = frame[self.series].isin(list(self.labels)).to_numpy()
        if known.all():
            return self.transform(frame)
        z = self.transform(frame.iloc[np.flatnonzero(known)])
        out = np.full((len(frame), z.shape[1]), np.nan)
        out[known] = z
        return out


@dataclass(frozen=True)
class Preprocessor:
    """Which columns to standardize and which to one-hot encode; ``series``, in a panel, the
    column naming each row's series (standardized on its own)."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...] = ()
    series: str | None = None

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
        if self.series is None:
            return FittedPreprocessor(self.numeric, mean, scale, self.categorical, cats)
        labels = frame[self.series].to_numpy()
        names = tuple(_sorted_unique(frame[self.series]))
        per = [x[labels == v] for v in names]  # each series as if it were alone
        means = np.array([p.mean(axis=0) for p in per]).reshape(len(names), x.shape[1])
        scales = np.array([p.std(axis=0) for p in per]).reshape(len(names), x.shape[1])
        return SeriesFittedPreprocessor(
            self.numeric, mean, scale, self.categorical, cats, series=self.series, labels=names,
            series_mean=means, series_scale=np.where(scales > 0, scales, 1.0))


def _sorted_unique(values: pd.Series) -> Sequence[object]:
    uniq = pd.unique(values)
    try:
        return sorted(uniq)
    except TypeError:  # mixed types: keep first-seen order
        return list(uniq)
