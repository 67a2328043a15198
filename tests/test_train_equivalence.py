"""Member i of a population == its own nn.Module trained by torch.optim (float64, 1e-10).

For every batched optimizer and every model family: K members with different
hyperparameters, trained for several epochs on the same data order, each compared with
torch's own layers (nn.Linear, nn.Conv1d, nn.LSTM, nn.GRU, ...) holding the same initial
weights and trained by the matching torch.optim optimizer.
"""

from __future__ import annotations

import copy

import pytest
import torch

from netrace.models import CNNSpec, MLPSpec, RNNSpec
from netrace.train import MemberSpec, Population, Schedule
from netrace.train._reference import train_reference

torch.set_num_threads(1)

EPOCHS = 3
TOL = 1e-10


def _data(spec, n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    if isinstance(spec, MLPSpec):
        x = torch.randn(n, spec.in_features, generator=g, dtype=torch.float64)
    elif isinstance(spec, CNNSpec):
        x = torch.randn(n, spec.length, generator=g, dtype=torch.float64)
    else:
        x = torch.randn(n, 12, spec.in_features, generator=g, dtype=torch.float64)
    if spec.task == "binary":
        y = (torch.rand(n, generator=g) > 0.5).double()
    elif spec.task == "multiclass":
        y = torch.randint(0, spec.n_outputs, (n,), generator=g)
    else:
        y = torch.randn(n, generator=g, dtype=torch.float64)
    return x, y


def _check(spec, optimizer, members, *, loss=None, batch_size=16, sample_weight=None):
    x, y = _data(spec)
    pop = Population(spec, members, optimizer=optimizer, loss=loss, batch_size=batch_size,
                     device="cpu", dtype=torch.float64)
    refs = [pop.member_module(i) for i in range(pop.k)]
    initial = [copy.deepcopy(r.state_dict()) for r in refs]
    g = torch.Generator().manual_seed(123)
    orders = [torch.randperm(len(x), generator=g) for _ in range(EPOCHS)]
    history = [pop.step_epoch(x, y, order=o, sample_weight=sample_weight).train_loss
               for o in orders]
    for i, (ref, member) in enumerate(zip(refs, members, strict=True)):
        ref_hist = train_reference(ref, optimizer, member, x, y, orders=orders,
                                   batch_size=batch_size, loss=pop.loss,
                                   sample_weight=None if sample_weight is None
                                   else sample_weight[i])
        got = pop.member_module(i).state_dict()
        for name, want in ref.state_dict().items():
            if want.is_floating_point():
                err = (got[name] - want).abs().max().item()
                assert err < TOL, f"member {i} {name}: max abs diff {err:.3g}"
        assert torch.allclose(torch.tensor([h[i] for h in history], dtype=torch.float64),
                              torch.tensor(ref_hist, dtype=torch.float64), rtol=0, atol=TOL)
        # the members really moved (and moved differently), so the match is not vacuous
        assert any((got[n] - initial[i][n]).abs().max() > 1e-6 for n in got)


_MLP = MLPSpec(in_features=4, hidden=(6, 5), activation="tanh")
_STEP = Schedule("step", step_size=1, gamma=0.5)
_COS = Schedule("cosine", t_max=4, warmup=1)

OPTIMIZER_MEMBERS = {
    "sgd": [MemberSpec(seed=1, lr=0.05),
            MemberSpec(seed=2, lr=0.02, momentum=0.9, dampening=0.1, weight_decay=1e-2),
            MemberSpec(seed=3, lr=0.03, momentum=0.5, nesterov=True, schedule=_STEP)],
    "momentum": [MemberSpec(seed=1, lr=0.01, momentum=0.9),
                 MemberSpec(seed=2, lr=0.05, momentum=0.5, weight_decay=0.1, l1=1e-3)],
    "nesterov": [MemberSpec(seed=1, lr=0.01, momentum=0.9),
                 MemberSpec(seed=2, lr=0.04, momentum=0.7, clip_norm=0.05, schedule=_COS)],
    "adagrad": [MemberSpec(seed=1, lr=0.05),
                MemberSpec(seed=2, lr=0.1, lr_decay=0.05, weight_decay=1e-2, eps=1e-6)],
    "adadelta": [MemberSpec(seed=1),
                 MemberSpec(seed=2, lr=0.5, rho=0.8, eps=1e-5, weight_decay=1e-3)],
    "rmsprop": [MemberSpec(seed=1, lr=1e-3),
                MemberSpec(seed=2, lr=3e-3, alpha=0.9, centered=True, momentum=0.5),
                MemberSpec(seed=3, lr=2e-3, momentum=0.9, weight_decay=1e-2, eps=1e-6)],
    "adam": [MemberSpec(seed=1, lr=1e-2),
             MemberSpec(seed=2, lr=3e-3, beta1=0.8, beta2=0.99, weight_decay=1e-2, eps=1e-6),
             MemberSpec(seed=3, lr=2e-2, schedule=_STEP, l1=1e-3, clip_norm=0.1)],
    "adamw": [MemberSpec(seed=1, lr=1e-2),
              MemberSpec(seed=2, lr=5e-3, beta1=0.5, weight_decay=0.2, schedule=_COS)],
}


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZER_MEMBERS))
def test_every_optimizer_matches_torch_optim(optimizer):
    _check(_MLP, optimizer, OPTIMIZER_MEMBERS[optimizer])


def test_sample_weights_match_weighted_reference():
    g = torch.Generator().manual_seed(5)
    w = torch.randint(0, 3, (2, 40), generator=g).double()
    _check(_MLP, "adam", [MemberSpec(seed=1, lr=1e-2), MemberSpec(seed=2, lr=2e-2)],
           sample_weight=w)


_ADAM = [MemberSpec(seed=7, lr=1e-2), MemberSpec(seed=8, lr=3e-3, weight_decay=1e-2),
         MemberSpec(seed=9, lr=2e-2, init="xavier", init_dist="normal",
                    recurrent_init="lecun")]
_SGD = [MemberSpec(seed=7, lr=0.05, momentum=0.9),
        MemberSpec(seed=8, lr=0.02, init="lecun", recurrent_init="xavier")]

FAMILIES = {
    "mlp-batchnorm-relu": MLPSpec(in_features=4, hidden=(8, 6), norm="batch"),
    "mlp-layernorm-gelu": MLPSpec(in_features=4, hidden=(8,), norm="layer", activation="gelu"),
    "mlp-leaky-binary": MLPSpec(in_features=4, hidden=(8,), activation="leaky_relu",
                                task="binary"),
    "mlp-sigmoid-multiclass": MLPSpec(in_features=4, hidden=(8,), activation="sigmoid",
                                      task="multiclass", n_outputs=3),
    "cnn-max": CNNSpec(length=16, channels=(4, 3), kernel_size=3, hidden=(5,)),
    "cnn-batchnorm": CNNSpec(length=16, channels=(4, 3), kernel_size=3, hidden=(5,),
                             norm="batch"),
    "cnn-layernorm-gelu": CNNSpec(length=16, channels=(3,), kernel_size=3, pool="avg",
                                  norm="layer", activation="gelu"),
    "cnn-avg-stride-pad": CNNSpec(length=16, channels=(3,), kernel_size=4, stride=2,
                                  padding=1, pool="avg", activation="tanh"),
    "lstm": RNNSpec(in_features=2, cell="lstm", hidden_size=5),
    "lstm-2layer-head": RNNSpec(in_features=2, cell="lstm", hidden_size=4, layers=2,
                                hidden=(3,)),
    "gru": RNNSpec(in_features=2, cell="gru", hidden_size=5),
    "gru-2layer-binary": RNNSpec(in_features=2, cell="gru", hidden_size=4, layers=2,
                                 task="binary"),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_every_model_family_matches_torch_layers(family, optimizer):
    members = _ADAM if optimizer == "adam" else _SGD
    _check(FAMILIES[family], optimizer, copy.deepcopy(members))


@pytest.mark.parametrize("loss", ["mae", "huber"])
def test_regression_losses_match(loss):
    _check(_MLP, "adam", [MemberSpec(seed=1, lr=1e-2), MemberSpec(seed=2, lr=5e-3)], loss=loss)
