"""Slots: stopping, freezing, replacing and divergence of one member never disturb the others."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from netrace.errors import UserError
from netrace.models import CNNSpec, MLPSpec, RNNSpec
from netrace.train import MemberSpec, MemberState, Population

torch.set_num_threads(1)

SPECS = {
    "mlp-batchnorm": MLPSpec(in_features=5, hidden=(8, 6), norm="batch"),
    "lstm": RNNSpec(in_features=1, cell="lstm", hidden_size=6, layers=2),
    "gru": RNNSpec(in_features=1, cell="gru", hidden_size=6),
    "cnn-batchnorm": CNNSpec(length=10, channels=(4, 3), kernel_size=3, norm="batch"),
    "mlp": MLPSpec(in_features=5, hidden=(8, 6)),
}


def _data(spec, n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g) if isinstance(spec, MLPSpec) else \
        torch.randn(n, 10, generator=g)
    y = x.reshape(n, -1)[:, 0] * 0.5 + 0.1 * torch.randn(n, generator=g)
    return x, y


def _members():
    return [MemberSpec(seed=0, lr=1e-2, dropout=0.2, bagging=True),
            MemberSpec(seed=1, lr=2e-2, clip_norm=0.5),
            MemberSpec(seed=2, lr=5e-3, l1=1e-3, dropout=0.1),
            MemberSpec(seed=3, lr=1e-2)]


def _state(pop, i):
    return [t[i].clone() for t in [*pop.model.parameters(), *pop.model.buffers()]]


def _equal(a, b):
    return all(torch.equal(s, t) for s, t in zip(a, b, strict=True))


def _run(spec, action=None, epochs=5, members=None):
    x, y = _data(spec)
    xv, yv = _data(spec, seed=1)
    pop = Population(spec, members or _members(), optimizer="adam", batch_size=16, seed=7,
                     device="cpu", dtype=torch.float32)
    for epoch in range(epochs):
        pop.step_epoch(x, y)
        pop.validate(xv, yv)
        if action is not None:
            action(pop, epoch)
    return pop


@pytest.mark.parametrize("family", sorted(SPECS))
def test_stop_freeze_replace_leave_others_bit_identical(family):
    spec = SPECS[family]
    snap = {}

    def act(pop, epoch):
        if epoch == 1:
            pop.stop(1)
            snap["stopped"] = _state(pop, 1)
            pop.freeze(2)
            snap["frozen"] = _state(pop, 2)
            pop.replace(3, MemberSpec(seed=99, lr=5e-2, dropout=0.5, momentum=0.9))

    base = _run(spec)
    changed = _run(spec, act)
    assert _equal(_state(base, 0), _state(changed, 0))  # the untouched member, bit for bit
    assert changed.states == [MemberState.RUNNING, MemberState.STOPPED, MemberState.FROZEN,
                              MemberState.RUNNING]
    assert _equal(_state(changed, 1), snap["stopped"])  # stopped: not moved since
    assert _equal(_state(changed, 2), snap["frozen"])
    assert not _equal(_state(changed, 3), _state(base, 3))
    assert changed.member_epochs.tolist() == [5, 2, 2, 3]


def test_freeze_restores_best_validation_state():
    spec = SPECS["mlp-batchnorm"]
    x, y = _data(spec)
    xv, yv = _data(spec, seed=1)
    pop = Population(spec, [MemberSpec(seed=0, lr=3e-2), MemberSpec(seed=1, lr=1e-2)],
                     batch_size=16, device="cpu")
    best, scores = None, []
    for _ in range(6):
        pop.step_epoch(x, y)
        v = pop.validate(xv, yv)
        scores.append(v.score[0])
        if v.improved[0]:
            best = _state(pop, 0)
    pop.freeze(0)
    assert _equal(_state(pop, 0), best)
    assert pop.best_score[0] == pytest.approx(min(scores))
    assert pop.states[0] is MemberState.FROZEN and pop.states[1] is MemberState.RUNNING


@pytest.mark.parametrize("family", sorted(SPECS))
def test_diverging_member_is_stopped_and_others_are_unaffected(family):
    spec = SPECS[family]
    healthy = [MemberSpec(seed=0, lr=1e-2), MemberSpec(seed=1, lr=1e30, momentum=0.9),
               MemberSpec(seed=2, lr=5e-3)]
    sane = [healthy[0], MemberSpec(seed=1, lr=1e-3), healthy[2]]
    x, y = _data(spec)
    results = []
    for members in (healthy, sane):
        pop = Population(spec, members, optimizer="sgd", batch_size=16, seed=3, device="cpu")
        reports = [pop.step_epoch(x, y) for _ in range(3)]
        results.append((pop, reports))
    (pop, reports), (ref, _) = results
    assert reports[0].diverged == (1,)
    assert reports[1].diverged == () and reports[2].diverged == ()
    assert pop.states[1] is MemberState.DIVERGED
    assert [s for i, s in enumerate(reports[0].states) if i != 1] == [MemberState.RUNNING] * 2
    assert all(torch.isfinite(t).all() for t in _state(pop, 1))  # NaN kept out of the slot
    for i in (0, 2):
        assert _equal(_state(pop, i), _state(ref, i))
    assert np.isfinite(pop.validate(x, y).metrics["mse"][[0, 2]]).all()


def test_never_learning_member_is_early_stopped_by_patience():
    spec = MLPSpec(in_features=5, hidden=(8,))
    x, y = _data(spec)
    xv, yv = _data(spec, seed=1)
    never = MemberSpec(seed=0, lr=0.0, patience=2)  # a network that never learns
    learner = MemberSpec(seed=1, lr=1e-2, patience=50)
    pop = Population(spec, [never, learner], batch_size=16, device="cpu")
    stopped_at = None
    for epoch in range(8):
        pop.step_epoch(x, y)
        v = pop.validate(xv, yv)
        if v.early_stopped:
            assert v.early_stopped == (0,)
            stopped_at = epoch
    assert stopped_at == 2  # improved at epoch 0 only, then 2 epochs without improvement
    assert pop.states == [MemberState.FROZEN, MemberState.RUNNING]
    assert pop.best_epoch[0] == 0 and pop.member_epochs.tolist() == [3, 8]


def test_replaced_member_reproduces_a_fresh_member():
    spec = SPECS["mlp-batchnorm"]
    x, y = _data(spec)
    new = MemberSpec(seed=42, lr=2e-2)
    order = torch.arange(len(x))
    pop = Population(spec, [MemberSpec(seed=0, lr=1e-2), MemberSpec(seed=1)], batch_size=16,
                     device="cpu")
    pop.step_epoch(x, y, order=order)
    pop.replace(1, new)
    fresh = Population(spec, [MemberSpec(seed=5), new], batch_size=16, device="cpu")
    for _ in range(2):
        pop.step_epoch(x, y, order=order)
        fresh.step_epoch(x, y, order=order)
    assert _equal(_state(pop, 1), _state(fresh, 1))


def test_slot_errors_say_what_is_allowed():
    pop = Population(MLPSpec(in_features=2), [MemberSpec()], device="cpu")
    with pytest.raises(UserError, match=r"member index must be an integer in \[0, 1\); got 3"):
        pop.stop(3)
    with pytest.raises(UserError, match="optimizer 'momentum' needs a member momentum > 0"):
        Population(MLPSpec(in_features=2), [MemberSpec()], optimizer="momentum", device="cpu")
    with pytest.raises(UserError, match="unknown optimizer 'adamm'.*did you mean 'adam'"):
        Population(MLPSpec(in_features=2), [MemberSpec()], optimizer="adamm", device="cpu")
    with pytest.raises(UserError, match="monitor 'auc' is not a regression metric"):
        Population(MLPSpec(in_features=2), [MemberSpec()], monitor="auc", device="cpu")
    with pytest.raises(UserError, match=r"sample_weight must be \(K, N\) = \(1, 4\)"):
        pop.step_epoch(torch.zeros(4, 2), torch.zeros(4), sample_weight=torch.ones(2, 4))
    assert math.isinf(pop.best_score[0])


@pytest.mark.parametrize("family", sorted(SPECS))
def test_member_chunks_change_no_number(family):
    spec = SPECS[family]
    x, y = _data(spec)
    pops = [Population(spec, _members(), batch_size=16, seed=1, device="cpu",
                       dtype=torch.float64, member_chunk=chunk) for chunk in (1, 3, None)]
    assert [p.member_chunk for p in pops][:2] == [1, 3] and pops[2].member_chunk >= 4
    for _ in range(2):
        losses = [p.step_epoch(x, y).train_loss for p in pops]
    for p, loss in zip(pops[:2], losses[:2], strict=True):
        np.testing.assert_allclose(loss, losses[2], rtol=1e-12)
        torch.testing.assert_close(p.model.flat, pops[2].model.flat, rtol=0, atol=1e-12)
