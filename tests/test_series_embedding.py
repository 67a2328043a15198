"""A learned series embedding (``series_embedding`` in ``[search.space]``): a pooled network
on a panel learns one vector per series, appended to its input at every step.

Member i of a population with an embedding equals torch's ``nn.Embedding`` in front of torch's
own layers, forward, backward and trained by torch.optim; on a panel whose series differ in
dynamics their standardized windows do not show, it is what lets a pooled network tell them
apart; the series' codes flow from the race through the verdict to ``netrace predict``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from netrace.cli import main
from netrace.config import config_from_dict
from netrace.errors import UserError
from netrace.models import CNNSpec, MLPSpec, RNNSpec, build_model
from netrace.models._embedding import WithEmbedding
from netrace.race._build import DataShape, member_spec, model_inputs, population_settings
from netrace.train import MemberSpec, Population
from netrace.train._reference import train_reference

torch.set_num_threads(1)

TOL = 1e-10
SPECS = {
    "mlp": MLPSpec(in_features=6, hidden=(7,), activation="tanh", series=3, embedding=2),
    "mlp-linear": MLPSpec(in_features=6, hidden=(5,), series=3, embedding=2, linear_inputs=6),
    "cnn": CNNSpec(length=6, in_channels=2, channels=(4,), kernel_size=3, hidden=(5,),
                   series=3, embedding=2),
    "gru": RNNSpec(in_features=2, cell="gru", hidden_size=5, layers=2, series=3, embedding=2),
    "lstm": RNNSpec(in_features=2, cell="lstm", hidden_size=4, series=3, embedding=3),
}


def _inputs(spec, n=40, seed=0):
    """Inputs with each sample's series code where the population reads it: after an MLP's
    features, as a CNN's last channel, as an RNN's last feature at every step."""
    g = torch.Generator().manual_seed(seed)
    code = torch.randint(0, spec.series, (n,), generator=g).double()
    if isinstance(spec, MLPSpec):
        x = torch.randn(n, spec.in_features, generator=g, dtype=torch.float64)
        return torch.cat([x, code[:, None]], 1), code
    if isinstance(spec, CNNSpec):
        x = torch.randn(n, spec.in_channels, spec.length, generator=g, dtype=torch.float64)
        return torch.cat([x, code[:, None, None].expand(-1, 1, spec.length)], 1), code
    x = torch.randn(n, 6, spec.in_features, generator=g, dtype=torch.float64)
    return torch.cat([x, code[:, None, None].expand(-1, 6, 1)], 2), code


@pytest.mark.parametrize("name", sorted(SPECS))
def test_forward_and_gradients_are_torchs_embedding_and_layers(name: str) -> None:
    spec = SPECS[name]
    model = build_model(spec, 3, seeds=[4, 5, 6], dtype=torch.float64)
    x, _ = _inputs(spec)
    out = model(x)
    (out ** 2).sum().backward()
    for i in range(3):
        ref = model.member_module(i)
        assert isinstance(ref, WithEmbedding) and isinstance(ref.embedding, torch.nn.Embedding)
        # the member's table is its own row of the population's (K, series, d) parameter
        assert torch.equal(ref.embedding.weight, model.emb[i])
        r = ref(x)
        assert (r - out[i]).abs().max() < TOL
        (r ** 2).sum().backward()
        assert (ref.embedding.weight.grad - model.emb.grad[i]).abs().max() < TOL
        assert ref.embedding.weight.grad.abs().sum() > 0
        # the first layer reads data and embedding alike
        if isinstance(spec, RNNSpec):
            first, want = ref.body.rnn.weight_ih_l0, model.rnn0_wih.grad[i].T
        elif isinstance(spec, CNNSpec):
            first, want = ref.body.body[0].weight, model.conv0_w.grad[i]
        else:
            first, want = ref.body[0].weight, model.dense0_w.grad[i].T
        assert (first.grad - want).abs().max() < TOL


def test_tables_start_as_nn_embedding_does_and_differ_by_seed() -> None:
    model = build_model(MLPSpec(in_features=2, series=50, embedding=40), 2, seeds=[1, 2])
    e = model.emb.detach()
    assert e.shape == (2, 50, 40) and not torch.equal(e[0], e[1])
    assert abs(float(e.mean())) < 0.05 and abs(float(e.std()) - 1.0) < 0.05  # N(0, 1)
    again = build_model(MLPSpec(in_features=2, series=50, embedding=40), 1, seeds=[2])
    assert torch.equal(again.emb[0], e[1])


@pytest.mark.parametrize("name", ["mlp", "cnn", "gru"])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_training_matches_torch_optim_member_by_member(name: str, optimizer: str) -> None:
    """The table trains with the rest of the network: same optimizer, weight decay as every
    parameter; L1 (on weight matrices and kernels) leaves it alone, as the reference."""
    spec = SPECS[name]
    members = [MemberSpec(seed=7, lr=1e-2, weight_decay=1e-2),
               MemberSpec(seed=8, lr=2e-2, l1=1e-3, clip_norm=0.5)] if optimizer == "adam" \
        else [MemberSpec(seed=7, lr=0.05, momentum=0.9, weight_decay=1e-2)]
    x, _ = _inputs(spec)
    y = torch.randn(len(x), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    pop = Population(spec, members, optimizer=optimizer, batch_size=16, device="cpu",
                     dtype=torch.float64)
    refs = [pop.member_module(i) for i in range(pop.k)]
    start = [r.embedding.weight.detach().clone() for r in refs]
    g = torch.Generator().manual_seed(3)
    orders = [torch.randperm(len(x), generator=g) for _ in range(3)]
    history = [pop.step_epoch(x, y, order=o).train_loss for o in orders]
    for i, (ref, member) in enumerate(zip(refs, members, strict=True)):
        ref_hist = train_reference(ref, optimizer, copy.deepcopy(member), x, y, orders=orders,
                                   batch_size=16)
        got = pop.member_module(i).state_dict()
        for key, want in ref.state_dict().items():
            assert (got[key] - want).abs().max() < TOL, f"member {i} {key}"
        np.testing.assert_allclose([h[i] for h in history], ref_hist, rtol=0, atol=TOL)
        assert (ref.embedding.weight - start[i]).abs().max() > 1e-4  # the table moved


def test_the_least_squares_start_reads_the_data_alone() -> None:
    spec = SPECS["mlp-linear"]
    x, _ = _inputs(spec)
    y = x[:, :6] @ torch.arange(1.0, 7.0, dtype=torch.float64) + 0.5
    pop = Population(spec, [MemberSpec(seed=1, lr=1e-2)], device="cpu", dtype=torch.float64)
    pop.init_linear([0], x, y)
    assert (pop.predict(x)[0, :, 0] - y).abs().max() < 1e-6  # the fit (a 1e-9 ridge)


def _ar_panel(n: int, seed: int) -> dict[str, np.ndarray]:
    """Series A: y_t = 0.8 y_(t-1) + e; B: y_t = -0.8 y_(t-1) + e. Standardized, their
    values look alike (the same mean 0 and variance 1): a window of one row cannot tell them
    apart, only its series can."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, phi in (("A", 0.8), ("B", -0.8)):
        y = np.zeros(n)
        for t in range(1, n):
            y[t] = phi * y[t - 1] + rng.normal()
        out[name] = (y - y.mean()) / y.std()
    return out


def _one_row_windows(panel: dict[str, np.ndarray]):
    x = np.concatenate([y[:-1] for y in panel.values()])[:, None, None].astype(np.float32)
    y = np.concatenate([y[1:] for y in panel.values()]).astype(np.float32)
    s = np.concatenate([[name] * (len(y) - 1) for name, y in panel.items()])
    return torch.as_tensor(x), torch.as_tensor(y), s


@pytest.mark.parametrize("model", ["mlp", "gru"])
@pytest.mark.parametrize("seed", [0, 1])
def test_the_embedding_tells_series_apart_that_pooling_cannot(model: str, seed: int) -> None:
    xt, yt, st = _one_row_windows(_ar_panel(600, seed))
    xv, yv, sv = _one_row_windows(_ar_panel(300, seed + 100))
    shape = DataShape(1, 1, "regression", series=("A", "B"))
    r2 = {}
    for d in (0, 2):
        params = {"model": model, "series_embedding": d, "width": 16, "hidden_size": 8,
                  "lr": 1e-2}
        s = population_settings(params, shape)
        assert s.spec.embedding == d and s.series == (("A", "B") if d else ())
        pop = Population(s.spec, [member_spec(params, 10 * seed + i, s.optimizer, 30)
                                  for i in range(3)], batch_size=32, monitor="r2", seed=seed,
                         device="cpu")
        train_in = model_inputs(xt, s, st)
        for _ in range(30):
            pop.step_epoch(train_in, yt)
        r2[d] = pop.measure(model_inputs(xv, s, sv), yv, baseline=torch.zeros(len(yv)))["r2"]
    # one AR coefficient of +-0.8 explains 64% of the variance; pooled, the best forecast is 0
    assert r2[2].min() > 0.4 and r2[0].max() < 0.1, r2


def test_model_inputs_carry_the_code_and_unknown_series_are_refused() -> None:
    shape = DataShape(4, 3, "regression", series=("A", "B", "C"))
    x = torch.randn(5, 4, 3)
    labels = np.array(["C", "A", "B", "A", "C"])
    for model, axis in (("mlp", 1), ("cnn", 1), ("gru", 2)):
        s = population_settings({"model": model, "series_embedding": 3}, shape)
        inp = model_inputs(x, s, labels)
        code = inp[:, -1] if model == "mlp" else inp[:, -1, 0] if axis == 1 else inp[:, 0, -1]
        assert code.tolist() == [2, 0, 1, 0, 2]
        plain = model_inputs(x, population_settings({"model": model}, shape))
        if model == "mlp":
            assert torch.equal(inp[:, :-1], plain)
        else:
            assert torch.equal(inp.narrow(axis, 0, 3), plain)
        build_model(s.spec, 2)(inp)  # the network reads them
    with pytest.raises(UserError, match=r"series 'ZZZ' not in the data these networks were "
                                        r"raced on \(they learned a vector for each of 3 "
                                        r"series: A, B, C\); forecast only those series"):
        model_inputs(x, s, np.array(["A", "ZZZ", "B", "A", "C"]))
    with pytest.raises(UserError, match="series_embedding = 2 learns a vector per series of a "
                                        "panel; this data is one series: set"):
        population_settings({"series_embedding": 2}, DataShape(4, 3, "regression"))


@pytest.mark.parametrize("value", [4, [0, 4], {"low": 0, "high": 3}])
def test_config_refuses_an_embedding_without_series(value: object) -> None:
    with pytest.raises(UserError, match=r"\[search.space\] series_embedding learns a vector per "
                                        r"series of a panel, but \[data\] series is not set"):
        config_from_dict({"data": {"source": "sp500", "time": "Date"},
                          "task": {"target": "vol_next"},
                          "search": {"space": {"series_embedding": value}}})
    # zero is no embedding, and with a series column any size is fine
    config_from_dict({"data": {"source": "sp500", "time": "Date"},
                      "task": {"target": "vol_next"},
                      "search": {"space": {"series_embedding": 0}}})
    config_from_dict({"data": {"path": "p.csv", "time": "Date", "series": "ticker"},
                      "task": {"target": "y"}, "search": {"space": {"series_embedding": value}}})


def _panel_csv(path: Path) -> None:
    frames = []
    for i, (name, y) in enumerate(_ar_panel(260, 5).items()):
        dates = pd.bdate_range("2010-01-01", periods=len(y))
        frames.append(pd.DataFrame({"Date": dates, "ticker": name, "y": y + 3 * i}))
    pd.concat(frames).sort_values(["Date", "ticker"]).to_csv(path, index=False)


@pytest.mark.slow
def test_run_evaluate_predict_with_an_embedding(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    _panel_csv(tmp_path / "panel.csv")
    cfg = tmp_path / "emb.toml"
    cfg.write_text(
        '[data]\npath = "panel.csv"\ntime = "Date"\nseries = "ticker"\n'
        '[task]\ntarget = "y"\nfeatures = ["y"]\nwindow = 2\n'
        '[split]\nscheme = "walk_forward"\nfolds = 2\n'
        '[race]\npopulation = 4\nmax_epochs = 4\nbudget = 48\n'
        '[evaluate]\nfinalists = 3\n'
        '[search]\nsampler = "random"\n'
        '[search.space]\nmodel = ["mlp", "gru"]\nseries_embedding = [0, 2]\nwidth = 8\n'
        'hidden_size = 8\nlr = 1e-2\nbatch_size = 32\n')
    db = str(tmp_path / "emb.db")
    assert main(["run", str(cfg), "--storage", db, "--workers", "1", "--quiet"]) == 0
    assert main(["evaluate", "emb", "--storage", db, "--json"]) == 0
    capsys.readouterr()
    from netrace.evaluate import load_model

    model = load_model(db, "emb")
    nets = [n for n in model.nets if n.settings.series_embedding]
    assert nets and all(n.settings.series == ("A", "B") for n in nets)
    out = tmp_path / "p.csv"
    assert main(["predict", "emb", "--storage", db, "--data", str(tmp_path / "panel.csv"),
                 "--out", str(out)]) == 0
    pred = pd.read_csv(out, parse_dates=["time"])
    test = model.test.set_index(["time", "series"])
    got = pred.set_index(["time", "ticker"]).loc[test.index]
    np.testing.assert_allclose(got["forecast"], test[model.name], rtol=1e-6, atol=1e-9)
    # a series the networks never saw: one clear message, exit code 2
    frame = pd.read_csv(tmp_path / "panel.csv")
    frame.loc[frame["ticker"] == "B", "ticker"] = "ZZZ"
    frame.to_csv(tmp_path / "new.csv", index=False)
    capsys.readouterr()
    assert main(["predict", "emb", "--storage", db, "--data", str(tmp_path / "new.csv"),
                 "--out", str(tmp_path / "q.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("netrace: error: ") and err.count("\n") == 1, err
    # the series' inputs, scaled by its own training rows, are refused first
    assert "series 'ZZZ' has no training rows" in err and "known series: A, B" in err
    assert "forecast only those series, or race again" in err
    # the networks' inputs themselves name the series they learned a vector for
    net = nets[0]
    windows = np.zeros((2, net.settings.window, 1), dtype=np.float32)
    with pytest.raises(UserError, match="series 'ZZZ' not in the data these networks were "
                                        "raced on"):
        net.forecast(windows, "regression", np.array(["A", "ZZZ"]))
