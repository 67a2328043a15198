"""Splits with no look-ahead, as scikit-learn-compatible ``split(X, y=None, groups=None)``.

Indices are samples. For time series, sample ``i`` is the window whose last input row is the
``i``-th anchor (anchors are consecutive rows), and it reads raw rows ``[i - lookback + 1,
i + horizon]``: ``lookback`` rows of inputs (window plus the longest feature recipe's reach, minus
one) and its label ``horizon`` rows later. Two samples share information exactly when those
intervals intersect, which for a sample before another happens when they are at most
``lookback + horizon - 1`` apart. That is the smallest allowed embargo, and the default: an
embargo of ``E`` drops the ``E`` samples between a training part and the part it is judged on
(on both sides of it in purged k-fold), so no window or label straddles the boundary.

>>> s = WalkForward(3, lookback=20, horizon=1)
>>> [(len(tr), int(va[0]), len(va)) for tr, va in s.split(range(200))]
[(45, 65, 45), (90, 110, 45), (135, 155, 45)]
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import numpy as np

from netrace.errors import UserError

__all__ = [
    "Splitter",
    "HoldoutSplit",
    "WalkForward",
    "PurgedKFold",
    "KFold",
    "DateSplit",
    "min_embargo",
    "split_test",
    "split_test_dates",
    "poisson_weights",
]

Pair = tuple[np.ndarray, np.ndarray]


def min_embargo(lookback: int, horizon: int) -> int:
    """The fewest samples between a training part and its evaluated part with no shared row."""
    return lookback + horizon - 1


def _embargo(embargo: int | None, lookback: int, horizon: int) -> int:
    if lookback < 1 or horizon < 0:
        raise ValueError(f"lookback must be >= 1 and horizon >= 0, got {lookback}, {horizon}")
    least = min_embargo(lookback, horizon)
    if embargo is None:
        return least
    if embargo < least:
        raise UserError(f"[split] embargo = {embargo} is less than the {least} rows that a "
                        f"window's inputs and label span (lookback {lookback} + horizon "
                        f"{horizon} - 1), so training windows or labels would straddle the "
                        f"boundary; use embargo >= {least} or remove it for the default")
    return int(embargo)


def _num_samples(X: Any) -> int:
    if isinstance(X, (int, np.integer)):
        return int(X)
    shape = getattr(X, "shape", None)
    return int(shape[0]) if shape is not None else len(X)


class Splitter(ABC):
    """Base class: turns ``X`` into a sample count, calls ``_pairs(n)``, checks every pair.

    Subclasses yield ``(train, evaluated)`` index arrays; the base class makes them sorted
    ``intp`` arrays and refuses any pair with a shared index or an empty part.
    """

    n_splits: int = 1

    def split(self, X: Any, y: Any = None, groups: Any = None) -> Iterator[Pair]:
        n = _num_samples(X)
        for train, test in self._pairs(n):
            train = np.sort(np.asarray(train, dtype=np.intp))
            test = np.sort(np.asarray(test, dtype=np.intp))
            if np.intersect1d(train, test).size:  # a bug, not a user error
                raise AssertionError(f"{type(self).__name__} put an index in two parts")
            yield train, test

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        return self.n_splits

    @abstractmethod
    def _pairs(self, n: int) -> Iterator[Pair]:
        """Yield (train, evaluated) index arrays over ``n`` samples."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class HoldoutSplit(Splitter):
    """One training part and one validation part: the last ``validation`` fraction in time,
    after an embargo; or, with ``shuffle=True`` (i.i.d. rows), a seeded random fraction."""

    def __init__(self, validation: float = 0.2, *, lookback: int = 1, horizon: int = 1,
                 embargo: int | None = None, shuffle: bool = False, seed: int = 0) -> None:
        self.validation = validation
        self.shuffle = shuffle
        self.seed = seed
        self.embargo = 0 if shuffle else _embargo(embargo, lookback, horizon)

    def _pairs(self, n: int) -> Iterator[Pair]:
        n_val = max(1, int(round(self.validation * n)))
        if self.shuffle:
            perm = np.random.default_rng(self.seed).permutation(n)
            yield perm[n_val:], perm[:n_val]
            return
        yield np.arange(0, max(0, n - n_val - self.embargo)), np.arange(max(0, n - n_val), n)


class WalkForward(Splitter):
    """Walk-forward folds: equal validation blocks at the end, each trained on what precedes
    it less the embargo: all of it (``mode="expanding"``) or its last ``train_size`` samples
    (``mode="rolling"``). The validation block size is ``(n - embargo) // (folds + 1)``, so the
    first fold trains on at least one block."""

    def __init__(self, folds: int = 5, *, lookback: int = 1, horizon: int = 1,
                 embargo: int | None = None, mode: str = "expanding",
                 train_size: int | None = None) -> None:
        if mode not in ("expanding", "rolling"):
            raise UserError(f"walk-forward mode must be 'expanding' or 'rolling', got {mode!r}")
        if mode == "rolling" and train_size is None:
            raise UserError("[split] mode = \"rolling\" needs train_size (training rows per fold)")
        self.n_splits = folds
        self.embargo = _embargo(embargo, lookback, horizon)
        self.mode = mode
        self.train_size = train_size

    def _pairs(self, n: int) -> Iterator[Pair]:
        k = self.n_splits
        size = max(0, (n - self.embargo) // (k + 1))
        for i in range(k):
            start = n - (k - i) * size
            end = start + size
            stop = max(0, start - self.embargo)
            first = 0 if self.mode == "expanding" else max(0, stop - int(self.train_size or 0))
            yield np.arange(first, stop), np.arange(max(0, start), max(0, end))


class PurgedKFold(Splitter):
    """Purged k-fold with embargo (de Prado, 2018): contiguous blocks; every block is judged
    by a model trained on all other samples except those within ``embargo`` of the block on
    either side, which include every sample whose rows overlap the block's."""

    def __init__(self, folds: int = 5, *, lookback: int = 1, horizon: int = 1,
                 embargo: int | None = None) -> None:
        self.n_splits = folds
        self.embargo = _embargo(embargo, lookback, horizon)

    def _pairs(self, n: int) -> Iterator[Pair]:
        idx = np.arange(n)
        for block in np.array_split(idx, self.n_splits):
            if block.size == 0:
                yield np.arange(0), block
                continue
            lo, hi = block[0] - self.embargo, block[-1] + self.embargo
            yield idx[(idx < lo) | (idx > hi)], block


class KFold(Splitter):
    """Shuffled k-fold for i.i.d. rows (seeded): each sample is evaluated exactly once."""

    def __init__(self, folds: int = 5, *, seed: int = 0) -> None:
        self.n_splits = folds
        self.seed = seed

    def _pairs(self, n: int) -> Iterator[Pair]:
        perm = np.random.default_rng(self.seed).permutation(n)
        for block in np.array_split(perm, self.n_splits):
            yield np.setdiff1d(perm, block), block


class DateSplit(Splitter):
    """A panel's splits, the same dates for every series: ``inner`` (any splitter above) cuts
    the sorted unique dates of the samples, with its embargo counted in dates, and every sample
    goes where its date goes. ``date`` is each sample's date (its last input row's), ``first``
    and ``last`` the dates of the first row it reads and of its label row, ``series`` its
    series (codes).

    Two more rules hold every part to the contract when series skip dates that others have
    (where they do not, neither removes anything): a training sample is purged when the dates
    it reads, ``first`` .. ``last``, reach into the span of dates that the evaluated part
    reads; and an evaluated sample of a series with no training sample in that fold is left
    out, as that series could not be scaled from its own training rows.
    """

    def __init__(self, inner: Splitter, date: np.ndarray, first: np.ndarray, last: np.ndarray,
                 series: np.ndarray) -> None:
        self.inner = inner
        self.n_splits = inner.n_splits
        self.embargo = getattr(inner, "embargo", 0)
        self._dates, self._pos = np.unique(np.asarray(date), return_inverse=True)
        self._first, self._last = np.asarray(first), np.asarray(last)
        self._series = np.asarray(series)

    @property
    def n_dates(self) -> int:
        return len(self._dates)

    def _pairs(self, n: int) -> Iterator[Pair]:
        if n != len(self._pos):
            raise ValueError(f"DateSplit knows the dates of {len(self._pos)} samples, got {n}")
        for train_d, valid_d in self.inner.split(len(self._dates)):
            train = np.isin(self._pos, train_d)
            valid = np.isin(self._pos, valid_d)
            if valid.any():
                lo, hi = self._first[valid].min(), self._last[valid].max()
                train &= (self._last < lo) | (self._first > hi)
            valid &= np.isin(self._series, self._series[train])
            yield np.flatnonzero(train), np.flatnonzero(valid)


def split_test_dates(date: np.ndarray, first: np.ndarray, last: np.ndarray, test: float, *,
                     lookback: int = 1, horizon: int = 1, embargo: int | None = None) -> Pair:
    """A panel's test part: ``(development, test)`` sample indices cut at one date.

    The test part is every sample dated at or after the cut date, the latest date that puts at
    least the ``test`` fraction of all samples after it; the ``embargo`` dates before it belong
    to neither part (counted in the sorted unique dates of the samples), nor does a sample
    whose dates ``first`` .. ``last`` reach the first date that a test sample reads.

    >>> d = np.repeat(np.arange(10), 2)  # two series, ten dates
    >>> dev, test = split_test_dates(d, d - 2, d + 1, 0.2, lookback=3, horizon=1)
    >>> int(d[dev].max()), int(d[test].min()), len(test)
    (4, 8, 4)
    """
    gap = _embargo(embargo, lookback, horizon)
    date = np.asarray(date)
    dates, pos = np.unique(date, return_inverse=True)
    n_test = max(1, int(round(test * len(date))))
    after = np.cumsum(np.bincount(pos, minlength=len(dates))[::-1])[::-1]  # samples >= date
    cut = int(np.flatnonzero(after >= n_test).max())
    test_idx = np.flatnonzero(pos >= cut)
    dev = (pos < cut - gap) & (np.asarray(last) < np.asarray(first)[test_idx].min())
    return np.flatnonzero(dev), test_idx


def split_test(n: int, test: float, *, lookback: int = 1, horizon: int = 1,
               embargo: int | None = None, shuffle: bool = False, seed: int = 0) -> Pair:
    """Hold the test part apart: ``(development, test)`` sample indices.

    In time, the test part is the last ``test`` fraction and the ``embargo`` samples before it
    belong to neither part; with ``shuffle`` a seeded random fraction.
    """
    n_test = max(1, int(round(test * n)))
    if shuffle:
        perm = np.random.default_rng([seed, 7]).permutation(n)
        return np.sort(perm[n_test:]), np.sort(perm[:n_test])
    gap = _embargo(embargo, lookback, horizon)
    return np.arange(0, max(0, n - n_test - gap)), np.arange(max(0, n - n_test), n)


def poisson_weights(n: int, members: int, seed: int = 0) -> np.ndarray:
    """Per-member bootstrap sample weights, Poisson(1) draws: ``(members, n)`` float64.

    Member ``m``'s weights depend only on ``(seed, m)``, so adding members changes no
    existing member's weights.

    >>> w = poisson_weights(1000, 3, seed=1)
    >>> w.shape, bool(abs(w.mean() - 1) < 0.1)
    ((3, 1000), True)
    """
    return np.stack([np.random.default_rng([seed, m]).poisson(1.0, n).astype(np.float64)
                     for m in range(members)]) if members else np.zeros((0, n))
