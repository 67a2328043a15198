"""The linear path: every family's output is a linear model of the flattened window plus the
network's correction; as torch modules, and started at the least-squares fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from netrace.errors import UserError
from netrace.models import CNNSpec, MLPSpec, RNNSpec, build_model
from netrace.race._build import DataShape, population_settings
from netrace.train import MemberSpec, Population

SPECS = {
    "mlp": (MLPSpec(in_features=12, hidden=(5,), linear_inputs=12), (12,)),
    "cnn-batchnorm": (CNNSpec(length=6, in_channels=2, channels=(3,), hidden=(4,), norm="batch",
                              linear_inputs=12), (2, 6)),
    "gru": (RNNSpec(in_features=2, cell="gru", hidden_size=4, linear_inputs=12), (6, 2)),
    "lstm-2": (RNNSpec(in_features=2, cell="lstm", hidden_size=3, layers=2, hidden=(3,),
                       linear_inputs=12), (6, 2)),
}


def _data(shape: tuple[int, ...], n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(n, *shape, generator=gen, dtype=torch.float64)
    w = torch.randn(int(np.prod(shape)), generator=gen, dtype=torch.float64)
    y = x.reshape(n, -1) @ w + 0.5 + 0.1 * torch.randn(n, generator=gen, dtype=torch.float64)
    return x, y


@pytest.mark.parametrize("name", sorted(SPECS))
def test_the_linear_path_as_torch_modules_and_its_gradients(name: str) -> None:
    spec, shape = SPECS[name]
    m = build_model(spec, 3, dtype=torch.float64)
    with torch.no_grad():
        m.lin_w.normal_()
        m.lin_b.normal_()
    x, y = _data(shape, 9)
    m.eval()
    out = m(x)
    for i in range(3):
        module = m.member_module(i).eval()
        ref = module(x)
        torch.testing.assert_close(out[i], ref, rtol=1e-12, atol=1e-12)
        # the same gradient for the linear path's weights
        g_pop = torch.autograd.grad(((m(x)[i, :, 0] - y) ** 2).mean(), [m.lin_w])[0][i]
        loss = ((module(x)[:, 0] - y) ** 2).mean()
        g_ref = torch.autograd.grad(loss, [module.linear.weight])[0]
        torch.testing.assert_close(g_pop, g_ref.T, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_ols_start_is_the_least_squares_fit(name: str) -> None:
    spec, shape = SPECS[name]
    x, y = _data(shape)
    pop = Population(spec, [MemberSpec(seed=s, lr=1e-2) for s in range(2)], batch_size=16,
                     device="cpu", dtype=torch.float64)
    pop.init_linear([1], x, y)
    X = np.c_[x.reshape(len(x), -1).numpy(), np.ones(len(x))]
    beta, *_ = np.linalg.lstsq(X, y.numpy(), rcond=None)
    out = pop.predict(x)[..., 0]
    np.testing.assert_allclose(out[1].numpy(), X @ beta, rtol=1e-6, atol=1e-6)
    assert not np.allclose(out[0].numpy(), X @ beta, atol=1e-3)  # member 0 was left alone
    # the best state is the fit, and training moves on from it
    pop.freeze(1)
    np.testing.assert_allclose(pop.predict(x)[1, :, 0].numpy(), X @ beta, rtol=1e-6, atol=1e-6)


def test_settings_and_their_errors() -> None:
    shape = DataShape(window=5, features=3, task="regression")
    for model in ("mlp", "cnn", "gru"):
        s = population_settings({"model": model, "linear": "ols"}, shape)
        assert s.linear == "ols" and s.spec.linear_inputs == 15
    assert population_settings({"model": "mlp"}, shape).spec.linear_inputs == 0
    with pytest.raises(UserError, match='linear = "ols" starts a network at the least-squares'):
        population_settings({"linear": "ols"}, DataShape(5, 3, "binary"))
    with pytest.raises(UserError, match="init_linear needs a linear path"):
        build_model(MLPSpec(in_features=3), 1).init_linear([0], torch.zeros(4, 3),
                                                           torch.zeros(4))


def test_gaussian_nll_is_torchs_and_its_networks_forecast_their_mean() -> None:
    from netrace.train import sample_losses

    gen = torch.Generator().manual_seed(0)
    out = torch.randn(3, 20, 2, generator=gen, dtype=torch.float64)
    y = torch.randn(20, generator=gen, dtype=torch.float64)
    got = sample_losses(out, y, "gaussian_nll")
    ref = torch.nn.GaussianNLLLoss(reduction="none", eps=1e-6)
    for k in range(3):
        torch.testing.assert_close(got[k], ref(out[k, :, 0], y, out[k, :, 1].exp()),
                                   rtol=1e-12, atol=1e-12)
    # a network with this loss has two outputs; its forecast (and mse) is the first
    shape = DataShape(window=4, features=2, task="regression")
    s = population_settings({"model": "mlp", "loss": "gaussian_nll", "linear": "ols"}, shape)
    assert s.spec.n_outputs == 2
    x = torch.randn(64, 8, generator=gen, dtype=torch.float64)
    yy = x[:, 0] + 0.1 * torch.randn(64, generator=gen, dtype=torch.float64)
    pop = Population(s.spec, [MemberSpec(seed=1, lr=1e-2)], loss="gaussian_nll", monitor="mse",
                     device="cpu", dtype=torch.float64)
    pop.init_linear([0], x, yy)
    pred = pop.predict(x)[0]
    m = pop.measure(x, yy)
    np.testing.assert_allclose(m["mse"], [float(((pred[:, 0] - yy) ** 2).mean())], rtol=1e-12)
    assert m["mse"][0] < 0.02  # the least-squares start: the mean is already fitted
