"""A finished network's checkpoint: its best weights without building a module, back as torch
modules equal to the population's own export of that member, with its preprocessing."""

from __future__ import annotations

import io
from dataclasses import asdict

import numpy as np
import pytest
import torch

from netrace.errors import UserError
from netrace.models import CNNSpec, MLPSpec, RNNSpec, member_module_from
from netrace.race import load_checkpoint
from netrace.race._checkpoint import pack_checkpoint, pack_preprocessors
from netrace.train import MemberSpec, Population

SPECS = {
    "mlp-batchnorm": (MLPSpec(in_features=6, hidden=(8, 4), norm="batch"), (6,)),
    "cnn-layernorm": (CNNSpec(in_channels=2, length=6, channels=(3,), kernel_size=3,
                              hidden=(4,), norm="layer"), (2, 6)),
    "gru": (RNNSpec(in_features=2, cell="gru", hidden_size=5), (6, 2)),
    "lstm-2": (RNNSpec(in_features=2, cell="lstm", hidden_size=4, layers=2, hidden=(3,)),
               (6, 2)),
}


def trained(name: str) -> tuple[Population, torch.Tensor, list[dict[str, torch.Tensor]]]:
    """A population of 3 validated once (its best state saved), then trained on: the live
    weights are no longer the best ones. Returns it, inputs, and the best state dicts."""
    spec, shape = SPECS[name]
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, *shape, generator=gen), torch.randn(64, generator=gen)
    pop = Population(spec, [MemberSpec(seed=s, lr=0.05) for s in range(3)], batch_size=16,
                     device="cpu")
    pop.step_epoch(x, y)
    pop.validate(x, y)  # the first validation is every member's best so far
    best = [{k: v.clone() for k, v in pop.member_module(i).state_dict().items()}
            for i in range(3)]
    pop.step_epoch(x, y)
    return pop, x, best


@pytest.mark.parametrize("name", sorted(SPECS))
def test_best_weights_are_the_best_state_as_torch_modules(name: str) -> None:
    pop, x, best = trained(name)
    rows = pop.best_weights([2, 0])
    for i, row in zip([2, 0], rows, strict=True):
        module = member_module_from(pop.spec, row).eval()
        got = module.state_dict()
        assert got.keys() == best[i].keys()
        for k in got:
            assert torch.equal(got[k], best[i][k]), (name, i, k)
        live = pop.member_module(i).state_dict()
        assert any(not torch.equal(live[k], got[k]) for k in got)  # not the live weights
        pop.freeze(i)  # restores the best state: the population's own export agrees
        assert torch.equal(module(x), pop.member_module(i).eval()(x))
    assert pop.best_weights([]) == []


def test_checkpoint_round_trip_and_the_earlier_format() -> None:
    pop, x, best = trained("mlp-batchnorm")
    pre = [{"mean": np.arange(3.0)}]
    params = {"model": "mlp", "lr": 0.05}
    data = pack_checkpoint(params, 7, "mlp", pop.spec, 1, "r2", [pop.best_weights([1])[0]],
                           pack_preprocessors(pre))
    ck = load_checkpoint(data)
    assert (ck.params, ck.seed, ck.model, ck.spec, ck.window, ck.metric) == \
        (params, 7, "mlp", pop.spec, 1, "r2")
    np.testing.assert_array_equal(ck.preprocessors[0]["mean"], pre[0]["mean"])
    ref = build_reference(pop.spec, best[1])
    assert torch.equal(ck.modules()[0](x), ref(x))
    # a study written before this format: torch.save of the modules' state dicts
    buf = io.BytesIO()
    torch.save({"params": params, "seed": 7, "model": "mlp", "spec": asdict(pop.spec),
                "spec_type": "MLPSpec", "window": 1, "metric": "r2", "fold_states": [best[1]],
                "preprocessors": pre}, buf)
    old = load_checkpoint(buf.getvalue())
    assert old.spec == pop.spec and torch.equal(old.modules()[0](x), ref(x))


def build_reference(spec: MLPSpec, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    from netrace.models import build_model

    m = build_model(spec, 1).member_module(0)
    m.load_state_dict(state)
    return m.eval()


def test_unreadable_checkpoints_say_so() -> None:
    with pytest.raises(UserError, match="cannot be read"):
        load_checkpoint(b"not a checkpoint")
    import pickle

    with pytest.raises(UserError, match="not in a format"):
        load_checkpoint(pickle.dumps({"format": "something else"}))
    spec = MLPSpec(in_features=6, hidden=(8,))
    with pytest.raises(UserError, match="parameters"):
        member_module_from(spec, {"params": np.zeros(3, dtype=np.float32)})
