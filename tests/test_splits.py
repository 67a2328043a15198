"""Property tests for every splitter: no index in two parts; in time, every training sample's
rows (inputs and label) end at least the embargo before the evaluated part; purged k-fold drops
exactly the training samples whose rows overlap the evaluated part's."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netrace.data import (
    HoldoutSplit,
    KFold,
    PurgedKFold,
    WalkForward,
    min_embargo,
    poisson_weights,
    split_test,
)
from netrace.errors import UserError

shapes = st.fixed_dictionaries({
    "n": st.integers(1, 400),
    "window": st.integers(1, 12),
    "reach": st.integers(0, 6),      # extra rows a feature recipe reads before the window
    "horizon": st.integers(1, 6),
    "folds": st.integers(2, 7),
    "extra": st.integers(0, 5),      # embargo beyond the minimum
})


def _interval(i: np.ndarray, lookback: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows sample i reads: inputs from i - lookback + 1, label at i + horizon."""
    return i - lookback + 1, i + horizon


def _overlaps(a: np.ndarray, b: np.ndarray, lookback: int, horizon: int) -> np.ndarray:
    """For each sample in a: does its row interval meet any sample's interval in b?"""
    if len(b) == 0:
        return np.zeros(len(a), dtype=bool)
    a_lo, a_hi = _interval(a, lookback, horizon)
    b_lo, b_hi = _interval(b, lookback, horizon)
    return ((a_lo[:, None] <= b_hi[None, :]) & (b_lo[None, :] <= a_hi[:, None])).any(axis=1)


def _check_common(train: np.ndarray, test: np.ndarray, n: int) -> None:
    assert train.dtype == np.intp and test.dtype == np.intp
    assert np.intersect1d(train, test).size == 0
    for part in (train, test):
        assert np.all(np.diff(part) > 0)
        assert part.size == 0 or (part.min() >= 0 and part.max() < n)


def _check_forward(train: np.ndarray, test: np.ndarray, lookback: int, horizon: int,
                   embargo: int) -> None:
    """Training strictly before the evaluated part, at least the embargo apart, no shared row."""
    if len(train) == 0 or len(test) == 0:
        return
    assert train.max() < test.min()
    assert test.min() - train.max() - 1 >= embargo
    last_label_row = train.max() + horizon
    first_input_row = test.min() - lookback + 1
    assert last_label_row < first_input_row
    assert not _overlaps(train, test, lookback, horizon).any()


@settings(max_examples=150, deadline=None)
@given(shapes)
def test_holdout_in_time(s: dict[str, int]) -> None:
    lookback = s["window"] + s["reach"]
    emb = min_embargo(lookback, s["horizon"]) + s["extra"]
    sp = HoldoutSplit(0.25, lookback=lookback, horizon=s["horizon"], embargo=emb)
    pairs = list(sp.split(np.zeros((s["n"], 3))))
    assert len(pairs) == 1
    train, valid = pairs[0]
    _check_common(train, valid, s["n"])
    _check_forward(train, valid, lookback, s["horizon"], emb)
    assert valid.size == max(1, round(0.25 * s["n"]))
    assert valid.max() == s["n"] - 1
    # the gap is exactly the embargo when there is a training part
    if train.size:
        assert valid.min() - train.max() - 1 == emb


@settings(max_examples=150, deadline=None)
@given(shapes, st.sampled_from(["expanding", "rolling"]), st.integers(1, 50))
def test_walk_forward(s: dict[str, int], mode: str, train_size: int) -> None:
    lookback = s["window"] + s["reach"]
    emb = min_embargo(lookback, s["horizon"]) + s["extra"]
    sp = WalkForward(s["folds"], lookback=lookback, horizon=s["horizon"], embargo=emb,
                     mode=mode, train_size=train_size if mode == "rolling" else None)
    pairs = list(sp.split(range(s["n"])))
    assert len(pairs) == s["folds"] == sp.get_n_splits()
    previous_end = None
    for train, valid in pairs:
        _check_common(train, valid, s["n"])
        _check_forward(train, valid, lookback, s["horizon"], emb)
        if train.size and valid.size:
            assert np.array_equal(train, np.arange(train[0], train[-1] + 1))
            assert valid.min() - train.max() - 1 == emb
            if mode == "expanding":
                assert train[0] == 0
            else:
                assert train.size <= train_size
        if valid.size and previous_end is not None:
            assert valid.min() == previous_end + 1  # consecutive validation blocks
        if valid.size:
            previous_end = valid.max()
    sizes = {len(v) for _, v in pairs}
    assert len(sizes) == 1  # equal blocks
    if pairs[-1][1].size:
        assert pairs[-1][1].max() == s["n"] - 1


@settings(max_examples=150, deadline=None)
@given(shapes)
def test_purged_kfold_drops_exactly_the_overlapping(s: dict[str, int]) -> None:
    n, h = s["n"], s["horizon"]
    lookback = s["window"] + s["reach"]
    least = min_embargo(lookback, h)
    for extra in (0, s["extra"]):
        emb = least + extra
        sp = PurgedKFold(s["folds"], lookback=lookback, horizon=h, embargo=emb)
        pairs = list(sp.split(np.zeros(n)))
        assert len(pairs) == s["folds"]
        all_valid = np.concatenate([v for _, v in pairs])
        assert np.array_equal(np.sort(all_valid), np.arange(n))  # a partition
        idx = np.arange(n)
        for train, valid in pairs:
            _check_common(train, valid, n)
            if valid.size == 0:
                continue
            assert np.array_equal(valid, np.arange(valid[0], valid[-1] + 1))
            others = np.setdiff1d(idx, valid)
            dropped = np.setdiff1d(others, train)
            # no training sample shares a row with the evaluated part
            assert not _overlaps(train, valid, lookback, h).any()
            overlapping = others[_overlaps(others, valid, lookback, h)]
            near = others[(others >= valid[0] - emb) & (others <= valid[-1] + emb)]
            assert np.array_equal(dropped, near)
            if extra == 0:  # with the default embargo: exactly the purge
                assert np.array_equal(dropped, overlapping)
            else:
                assert np.isin(overlapping, dropped).all()


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 300), st.integers(2, 8), st.integers(0, 1000))
def test_kfold_iid_partition(n: int, folds: int, seed: int) -> None:
    pairs = list(KFold(folds, seed=seed).split(np.zeros(n)))
    valid = np.concatenate([v for _, v in pairs])
    assert np.array_equal(np.sort(valid), np.arange(n))
    for train, v in pairs:
        _check_common(train, v, n)
        assert np.array_equal(np.sort(np.concatenate([train, v])), np.arange(n))
    again = list(KFold(folds, seed=seed).split(np.zeros(n)))
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(pairs, again))


@settings(max_examples=150, deadline=None)
@given(shapes, st.floats(0.05, 0.5))
def test_split_test_in_time(s: dict[str, int], frac: float) -> None:
    lookback = s["window"] + s["reach"]
    emb = min_embargo(lookback, s["horizon"]) + s["extra"]
    dev, test = split_test(s["n"], frac, lookback=lookback, horizon=s["horizon"], embargo=emb)
    _check_common(dev, test, s["n"])
    _check_forward(dev, test, lookback, s["horizon"], emb)
    assert test.max() == s["n"] - 1 and test.size == max(1, round(frac * s["n"]))
    if dev.size:
        assert test.min() - dev.max() - 1 == emb and dev[0] == 0


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 300), st.floats(0.05, 0.5), st.integers(0, 100))
def test_split_test_iid(n: int, frac: float, seed: int) -> None:
    dev, test = split_test(n, frac, shuffle=True, seed=seed)
    _check_common(dev, test, n)
    assert np.array_equal(np.sort(np.concatenate([dev, test])), np.arange(n))


def test_holdout_shuffled_iid() -> None:
    tr, va = next(HoldoutSplit(0.2, shuffle=True, seed=3).split(np.zeros(100)))
    assert len(va) == 20 and len(tr) == 80
    assert not np.array_equal(va, np.arange(80, 100))  # shuffled, not the tail


def test_embargo_below_minimum_is_refused() -> None:
    with pytest.raises(UserError, match=r"embargo = 3 is less than the 24 rows .* use embargo "
                                        r">= 24"):
        WalkForward(3, lookback=20, horizon=5, embargo=3)


def test_sklearn_compatible() -> None:
    """Works as cv= in scikit-learn's own cross-validation."""
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import cross_val_score

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    y = X @ np.array([1.0, -2.0, 0.5, 0.0]) + rng.normal(0, 0.1, 300)
    cv = PurgedKFold(4, lookback=5, horizon=1)
    scores = cross_val_score(Ridge(), X, y, cv=cv)
    assert len(scores) == 4 and np.all(scores > 0.9)


def test_poisson_weights() -> None:
    w = poisson_weights(20_000, 4, seed=5)
    assert w.shape == (4, 20_000) and w.dtype == np.float64
    assert np.all(w == np.round(w)) and w.min() >= 0
    assert abs(w.mean() - 1) < 0.02 and abs(w.var() - 1) < 0.05  # Poisson(1)
    assert not np.array_equal(w[0], w[1])
    # adding members leaves existing members' weights unchanged
    assert np.array_equal(poisson_weights(20_000, 6, seed=5)[:4], w)
