"""Population.subset: a population that can no longer refill is continued as its running
members alone, who go on exactly as they would have in the old one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from netrace.errors import UserError
from netrace.models import MLPSpec, RNNSpec
from netrace.train import MemberSpec, MemberState, Population


def members() -> list[MemberSpec]:
    return [MemberSpec(seed=s, lr=lr, dropout=0.2, bagging=s % 2 == 0, weight_decay=1e-3,
                       patience=1 if s == 2 else None)
            for s, lr in enumerate((1e-2, 3e-3, 2e-2, 5e-3))]


@pytest.mark.parametrize("spec", [MLPSpec(in_features=6, hidden=(8,), norm="batch"),
                                  RNNSpec(in_features=2, cell="gru", hidden_size=4)],
                         ids=["mlp-batchnorm", "gru"])
def test_a_subset_goes_on_exactly(spec: MLPSpec | RNNSpec) -> None:
    gen = torch.Generator().manual_seed(0)
    shape = (6,) if isinstance(spec, MLPSpec) else (3, 2)
    x, y = torch.randn(96, *shape, generator=gen), torch.randn(96, generator=gen)
    xv, yv = torch.randn(40, *shape, generator=gen), torch.randn(40, generator=gen)
    old = Population(spec, members(), optimizer="adam", batch_size=16, monitor="mse", seed=3)
    for _ in range(2):
        old.step_epoch(x, y)
        old.validate(xv, yv)
    old.stop(1)
    old.stop(3)
    # slot 3 refilled just before the subset (the race's last refill): it has trained nothing
    old.replace(3, MemberSpec(seed=7, lr=1e-2, dropout=0.1))
    keep = [2, 0, 3]
    new = old.subset(keep)
    assert new.k == 3 and [m.seed for m in new.members] == [2, 0, 7]
    for _ in range(4):  # each draws its own minibatch order: the same one
        old.step_epoch(x, y)
        new.step_epoch(x, y)
        a, b = old.validate(xv, yv), new.validate(xv, yv)
        for name in a.metrics:
            np.testing.assert_allclose(b.metrics[name], a.metrics[name][keep], rtol=1e-5,
                                       atol=1e-6)
        assert [new.states[j] for j in range(3)] == [old.states[i] for i in keep]
    for j, i in enumerate(keep):
        for sa, sb in zip(old.member_module(i).state_dict().values(),
                          new.member_module(j).state_dict().values(), strict=True):
            torch.testing.assert_close(sb, sa, rtol=1e-5, atol=1e-6)
        assert new.best_score[j] == pytest.approx(old.best_score[i])
        assert new.best_epoch[j] == old.best_epoch[i]
        assert new.member_epochs[j] == old.member_epochs[i]
        for k, v in new.best_weights([j])[0].items():
            np.testing.assert_allclose(v, old.best_weights([i])[0][k], rtol=1e-5, atol=1e-6)
    with pytest.raises(UserError, match="member index"):
        old.subset([4])
