"""Population models: forward equals torch's own layers, per-member init and dropout."""

from __future__ import annotations

import math

import pytest
import torch

from netrace.errors import UserError
from netrace.models import CNNSpec, MLPSpec, RNNSpec, build_model
from netrace.models._layers import dropout
from netrace.train import resolve_device

torch.set_num_threads(1)

SPECS = [
    MLPSpec(in_features=5, hidden=(7, 6), norm="batch", activation="tanh"),
    MLPSpec(in_features=5, hidden=(7,), norm="layer", activation="gelu", task="multiclass",
            n_outputs=3),
    CNNSpec(length=20, channels=(4, 3), kernel_size=3, padding=1, pool="avg", hidden=(5,)),
    CNNSpec(length=20, in_channels=2, channels=(4,), kernel_size=5, stride=2, pool="none"),
    CNNSpec(length=20, channels=(4, 3), kernel_size=3, norm="batch", hidden=(5,)),
    CNNSpec(length=20, channels=(4,), kernel_size=3, norm="layer"),
    RNNSpec(in_features=2, cell="lstm", hidden_size=6, layers=2, hidden=(4,)),
    RNNSpec(in_features=1, cell="gru", hidden_size=6, layers=3),
]


def _input(spec, n=9):
    g = torch.Generator().manual_seed(0)
    if isinstance(spec, MLPSpec):
        return torch.randn(n, spec.in_features, generator=g, dtype=torch.float64)
    if isinstance(spec, CNNSpec):
        shape = (n, spec.length) if spec.in_channels == 1 else (n, spec.in_channels, spec.length)
        return torch.randn(*shape, generator=g, dtype=torch.float64)
    return torch.randn(n, 11, spec.in_features, generator=g, dtype=torch.float64).squeeze(-1) \
        if spec.in_features == 1 else torch.randn(n, 11, spec.in_features, generator=g,
                                                  dtype=torch.float64)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: type(s).__name__)
def test_forward_equals_torch_layers_in_train_and_eval_mode(spec):
    model = build_model(spec, k=3, seeds=[4, 5, 6], dtype=torch.float64)
    x = _input(spec)
    for training in (True, False):
        model.train(training)
        out = model(x)
        assert out.shape == (3, len(x), spec.n_outputs)
        for i in range(3):
            ref = model.member_module(i).train(training)
            torch.testing.assert_close(out[i], ref(x), rtol=0, atol=1e-12)


def test_member_weights_depend_only_on_the_seed():
    spec = RNNSpec(in_features=2, cell="lstm", hidden_size=4)
    a = build_model(spec, k=2, seeds=[10, 11])
    b = build_model(spec, k=5, seeds=[1, 2, 3, 11, 4])
    for name, p in a.named_parameters():
        assert torch.equal(p[1], getattr(b, name)[3]), name
    assert not torch.equal(a.rnn0_wih[0], a.rnn0_wih[1])


@pytest.mark.parametrize(("init", "dist", "var"), [
    ("kaiming", "uniform", 2 / 200), ("he", "normal", 2 / 200),
    ("xavier", "normal", 2 / 300), ("lecun", "uniform", 1 / 200),
])
def test_init_schemes_have_their_variance(init, dist, var):
    model = build_model(MLPSpec(in_features=200, hidden=(100,)), k=4, init=init,
                        init_dist=dist, dtype=torch.float64)
    w = model.dense0_w
    assert w.var().item() == pytest.approx(var, rel=0.05)
    assert (model.dense0_b == 0).all()
    if dist == "uniform":
        assert w.abs().max().item() <= math.sqrt(3 * var) + 1e-12


def test_recurrent_weights_are_orthogonal_per_gate():
    model = build_model(RNNSpec(in_features=3, cell="gru", hidden_size=8), k=2,
                        dtype=torch.float64)
    for gate in range(3):
        block = model.rnn0_whh[1][:, gate * 8:(gate + 1) * 8]
        torch.testing.assert_close(block.T @ block, torch.eye(8, dtype=torch.float64))


def test_dropout_masks_are_per_member_and_have_the_given_rate():
    h = torch.ones(3, 200, 50)
    p = torch.tensor([0.0, 0.3, 0.6])
    key = torch.tensor([11, 12, 13])
    out = dropout(h, p, key, site=1)
    assert torch.equal(out[0], h[0])
    for i in (1, 2):
        zero = (out[i] == 0).float().mean().item()
        assert zero == pytest.approx(p[i].item(), abs=0.01)
        assert torch.allclose(out[i][out[i] != 0], torch.tensor(1 / (1 - p[i].item())))
    # a member's mask depends on its own key and rate only
    other = dropout(h, torch.tensor([0.5, 0.3, 0.1]), torch.tensor([99, 12, 7]), site=1)
    assert torch.equal(other[1], out[1])
    assert not torch.equal(dropout(h, p, key, site=2)[1], out[1])


def test_dropout_only_in_training_mode():
    model = build_model(MLPSpec(in_features=4, hidden=(16,)), k=2)
    x = torch.randn(5, 4)
    kw = {"dropout_p": torch.tensor([0.5, 0.5]), "dropout_key": torch.tensor([1, 2])}
    assert not torch.equal(model(x, **kw), model(x))
    model.eval()
    assert torch.equal(model(x, **kw), model(x))


def test_spec_and_input_errors_say_what_is_allowed():
    with pytest.raises(UserError, match="unknown activation 'rleu'.*did you mean 'relu'"):
        MLPSpec(in_features=3, activation="rleu")
    with pytest.raises(UserError, match="unknown cell 'lstn'.*allowed: lstm, gru"):
        RNNSpec(in_features=1, cell="lstn")
    with pytest.raises(UserError, match="a multiclass task needs n_outputs >= 2"):
        MLPSpec(in_features=3, task="multiclass")
    with pytest.raises(UserError, match="shrink a window of length 8 to nothing"):
        CNNSpec(length=8, channels=(4, 4, 4), kernel_size=3)
    with pytest.raises(UserError, match=r"takes a batch \(B, 3\); got shape \(5, 4\)"):
        build_model(MLPSpec(in_features=3), k=2)(torch.zeros(5, 4))
    with pytest.raises(UserError, match="a population needs k >= 1 members; got k=0"):
        build_model(MLPSpec(in_features=3), k=0)
    with pytest.raises(UserError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
