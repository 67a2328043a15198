"""A member's state exported from one population and loaded into a slot of another trains on
exactly as it would have without the move (the race resumes a dead worker's networks so)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from netrace.errors import UserError
from netrace.models import MLPSpec, RNNSpec
from netrace.train import MemberSpec, MemberState, Population, Schedule

torch.set_num_threads(1)

SPECS = {
    "mlp-batchnorm": MLPSpec(in_features=5, hidden=(8, 6), norm="batch"),
    "gru": RNNSpec(in_features=1, cell="gru", hidden_size=6),
}
# the moved member: every per-member mechanism that carries state from epoch to epoch
MOVED = MemberSpec(seed=11, lr=2e-2, momentum=0.9, dropout=0.2, bagging=True, clip_norm=0.5,
                   l1=1e-3, schedule=Schedule("step", step_size=2, gamma=0.5, warmup=1),
                   patience=50)


def _data(spec, n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g, dtype=torch.float64) if isinstance(spec, MLPSpec) else \
        torch.randn(n, 10, generator=g, dtype=torch.float64)
    y = x.reshape(n, -1)[:, 0] * 0.5 + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    return x, y


def _pop(spec, members, optimizer, seed):
    return Population(spec, members, optimizer=optimizer, batch_size=16, seed=seed,
                      device="cpu", dtype=torch.float64)


def _epoch(pop, x, y, xv, yv, order):
    pop.step_epoch(x, y, order=order)
    pop.validate(xv, yv)


def _assert_same_state(a, b, atol=0.0):
    assert sorted(a) == sorted(b)
    for name in a:
        if isinstance(a[name], np.ndarray):
            np.testing.assert_allclose(a[name], b[name], rtol=0, atol=atol, err_msg=name)
        else:
            assert a[name] == b[name], name


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop", "momentum"])
@pytest.mark.parametrize("family", sorted(SPECS))
def test_moved_member_trains_on_exactly_as_if_never_moved(family, optimizer):
    spec = SPECS[family]
    x, y = _data(spec)
    xv, yv = _data(spec, seed=1)
    gen = torch.Generator().manual_seed(3)
    orders = [torch.randperm(len(x), generator=gen) for _ in range(7)]
    n, m = 4, 3
    # uninterrupted: the member in slot 1 for n + m epochs
    whole = _pop(spec, [MemberSpec(seed=0, lr=1e-2, momentum=0.9), MOVED,
                        MemberSpec(seed=2, lr=5e-3, momentum=0.9)], optimizer, seed=7)
    for e in range(n):
        _epoch(whole, x, y, xv, yv, orders[e])
    state = whole.member_state(1)
    assert state["epochs"] == n and state["state"] == "running"
    # elsewhere: a population with other neighbours, its own epoch count and shuffle seed,
    # takes the member into slot 2 and trains it on with the same minibatches
    other = _pop(spec, [MemberSpec(seed=5, lr=3e-3, momentum=0.9, dropout=0.5),
                        MemberSpec(seed=6, lr=1e-3, momentum=0.9),
                        MemberSpec(seed=8, lr=1e-2, momentum=0.9)], optimizer, seed=99)
    for _ in range(2):
        other.step_epoch(x, y)
        other.validate(xv, yv)
    neighbour = [t[0].clone() for t in (other.model.flat, *other.model.buffers())]
    other.load_member_state(2, MOVED, state)
    _assert_same_state(other.member_state(2), state)
    for e in range(n, n + m):
        _epoch(whole, x, y, xv, yv, orders[e])
        _epoch(other, x, y, xv, yv, orders[e])
    moved, kept = other.member_state(2), whole.member_state(1)
    assert kept["epochs"] == n + m and kept["optim_steps"] == (n + m) * 3
    # weights, optimizer, batch-norm, best, books: bit for bit for the MLP; the GRU's wide
    # input product (all members' columns in one matrix) may round an element one ulp apart
    # in another slot
    _assert_same_state(moved, kept, atol=0.0 if family.startswith("mlp") else 1e-12)
    # and the neighbour it joined was not disturbed by the move
    alone = _pop(spec, [other.members[0], other.members[1], MemberSpec(seed=9, momentum=0.9)],
                 optimizer, seed=99)
    for _ in range(2):
        alone.step_epoch(x, y)
        alone.validate(xv, yv)
    assert all(torch.equal(s, t[0]) for s, t in
               zip(neighbour, (alone.model.flat, *alone.model.buffers()), strict=True))


def test_best_state_and_books_move_with_the_member():
    spec = SPECS["mlp-batchnorm"]
    x, y = _data(spec)
    xv, yv = _data(spec, seed=1)
    pop = _pop(spec, [MemberSpec(seed=0, lr=0.3, patience=3), MemberSpec(seed=1)], "sgd", 1)
    for _ in range(6):
        pop.step_epoch(x, y)
        pop.validate(xv, yv)
    state = pop.member_state(0)
    assert ("best.params" in state) == (pop.best_epoch[0] != pop.epoch - 1)
    target = _pop(spec, [MemberSpec(seed=3), MemberSpec(seed=4)], "sgd", 2)
    target.load_member_state(1, pop.members[0], state)
    assert target.best_epoch[1] == target.epoch - state["epochs"] + state["best_epoch"]
    assert target.best_score[1] == pop.best_score[0]
    pop.freeze(0)
    target.freeze(1)  # both fall back to the same best weights
    assert torch.equal(pop.model.flat[0], target.model.flat[1])
    assert target.states[1] is MemberState.FROZEN


def test_a_state_only_fits_the_same_architecture_and_optimizer():
    spec = MLPSpec(in_features=5, hidden=(8,))
    state = _pop(spec, [MemberSpec()], "adam", 0).member_state(0)
    wider = _pop(MLPSpec(in_features=5, hidden=(9,)), [MemberSpec()], "adam", 0)
    with pytest.raises(UserError, match=r"does not fit the population: it holds 57 parameters "
                       r"for optimizer 'adam', the population's members have 64 for 'adam'; "
                       r"load it into a population of the same architecture and optimizer"):
        wider.load_member_state(0, MemberSpec(), state)
    with pytest.raises(UserError, match=r"57 parameters for optimizer 'adam', the population's "
                       r"members have 57 for 'sgd'"):
        _pop(spec, [MemberSpec()], "sgd", 0).load_member_state(0, MemberSpec(), state)
    with pytest.raises(UserError, match=r"member index must be an integer in \[0, 1\); got 1"):
        wider.load_member_state(1, MemberSpec(), state)


def test_live_states_pack_like_snapshots():
    """The race packs views of the live tensors (``snapshot=False``), copied only by the
    packing: the same bytes as from copies. The views follow the population as it trains on;
    the copies do not."""
    from netrace.race._resume import pack_states, save_slots, unpack_states

    spec = SPECS["mlp-batchnorm"]
    x, y = _data(spec)
    xv, yv = _data(spec, seed=1)
    pop = _pop(spec, [MemberSpec(seed=s, lr=1e-2) for s in range(4)] + [MOVED], "adam", 0)
    for _ in range(3):
        _epoch(pop, x, y, xv, yv, None)
    slots = [4, 1, 3]
    copies = pop.member_states(slots)
    live = pop.member_states(slots, snapshot=False)
    packed = save_slots([pop], slots)
    assert packed == [pack_states([c]) for c in copies]
    for c, b in zip(copies, packed, strict=True):
        _assert_same_state(c, unpack_states(b)[0])
    _epoch(pop, x, y, xv, yv, None)
    now = pop.member_states(slots)
    for c, v, n in zip(copies, live, now, strict=True):
        assert not np.array_equal(c["params"], n["params"])
        np.testing.assert_array_equal(v["params"], n["params"])
        np.testing.assert_array_equal(v["optim.0.exp_avg"], n["optim.0.exp_avg"])
