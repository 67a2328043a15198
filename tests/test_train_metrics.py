"""Validation metrics, losses and schedules against scikit-learn and torch references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn import metrics as skm

from netrace.errors import UserError
from netrace.models import MLPSpec
from netrace.train import MemberSpec, Population, Schedule, lr_at, member_losses, metrics

torch.set_num_threads(1)


def _binary(k=3, n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, generator=g) > 0.4).double()
    logits = torch.randn(k, n, generator=g, dtype=torch.float64) + y * torch.arange(k).unsqueeze(1)
    return logits, y


def test_auc_matches_sklearn_with_ties():
    logits, y = _binary()
    logits = torch.round(logits * 2) / 2  # many ties
    got = metrics.auc(logits, y)
    want = [skm.roc_auc_score(y.numpy(), row.numpy()) for row in logits]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_auc_edge_cases():
    assert np.isnan(metrics.auc(torch.randn(2, 5), torch.ones(5))).all()  # one class only
    np.testing.assert_allclose(metrics.auc(torch.tensor([[1.0, 2.0]]), torch.tensor([0.0, 1.0])),
                               [1.0])
    np.testing.assert_allclose(metrics.auc(torch.tensor([[3.0, 3.0]]), torch.tensor([0.0, 1.0])),
                               [0.5])


def test_binary_log_loss_and_accuracy_match_sklearn():
    logits, y = _binary()
    want_ll = [skm.log_loss(y.numpy(), torch.sigmoid(row).numpy()) for row in logits]
    want_acc = [skm.accuracy_score(y.numpy(), (row > 0).numpy()) for row in logits]
    np.testing.assert_allclose(metrics.log_loss(logits, y), want_ll, rtol=1e-10)
    np.testing.assert_allclose(metrics.accuracy(logits, y), want_acc, rtol=0, atol=0)


def test_multiclass_log_loss_and_accuracy_match_sklearn():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 50, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (50,), generator=g)
    want_ll = [skm.log_loss(y.numpy(), torch.softmax(row, 1).numpy(), labels=range(4))
               for row in logits]
    want_acc = [skm.accuracy_score(y.numpy(), row.argmax(1).numpy()) for row in logits]
    np.testing.assert_allclose(metrics.log_loss(logits, y), want_ll, rtol=1e-10)
    np.testing.assert_allclose(metrics.accuracy(logits, y), want_acc)


def test_regression_metrics_match_sklearn():
    g = torch.Generator().manual_seed(2)
    y = torch.randn(60, generator=g, dtype=torch.float64)
    pred = y + 0.5 * torch.randn(3, 60, generator=g, dtype=torch.float64)
    np.testing.assert_allclose(metrics.mse(pred, y),
                               [skm.mean_squared_error(y, p) for p in pred], rtol=1e-12)
    np.testing.assert_allclose(metrics.mae(pred, y),
                               [skm.mean_absolute_error(y, p) for p in pred], rtol=1e-12)
    # against the sample mean as baseline, out-of-sample R^2 is the ordinary R^2
    np.testing.assert_allclose(metrics.r2_oos(pred, y, torch.full_like(y, y.mean().item())),
                               [skm.r2_score(y, p) for p in pred], rtol=1e-12)
    baseline = torch.zeros_like(y)  # a random-walk-style "predict zero return" baseline
    want = 1 - ((pred - y) ** 2).sum(1) / (y ** 2).sum()
    np.testing.assert_allclose(metrics.r2_oos(pred, y, baseline), want.numpy(), rtol=1e-12)
    assert np.isnan(metrics.r2_oos(pred, y, y)).all()  # a perfect baseline


def test_validate_reports_every_metric_in_one_pass():
    x = torch.randn(80, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = (x[:, 0] > 0).double()
    pop = Population(MLPSpec(in_features=3, hidden=(6,), task="binary"),
                     [MemberSpec(seed=s, lr=1e-2) for s in range(3)], monitor="auc",
                     device="cpu", dtype=torch.float64)
    pop.step_epoch(x, y)
    v = pop.validate(x, y)
    logits = torch.stack([pop.member_module(i).eval()(x)[:, 0] for i in range(3)])
    np.testing.assert_allclose(v.metrics["auc"],
                               [skm.roc_auc_score(y, r.detach()) for r in logits], atol=1e-12)
    np.testing.assert_allclose(v.metrics["log_loss"], v.metrics["loss"], rtol=1e-12)
    assert v.score is v.metrics["auc"] and v.improved.all()

    reg = Population(MLPSpec(in_features=3), [MemberSpec(seed=0)], monitor="r2", device="cpu",
                     dtype=torch.float64)
    yr = x[:, 1]
    r2 = reg.validate(x, yr, baseline=torch.zeros(80)).metrics["r2"]
    pred = reg.predict(x)[0, :, 0]
    np.testing.assert_allclose(r2, [1 - ((pred - yr) ** 2).sum() / (yr ** 2).sum()])
    with pytest.raises(UserError, match="monitor 'r2' needs a baseline forecast"):
        reg.validate(x, yr)
    with pytest.raises(UserError, match=r"baseline must hold one forecast per row, shape \(80,\)"):
        reg.validate(x, yr, baseline=torch.zeros(3))


@pytest.mark.parametrize("loss", ["mse", "mae", "huber", "bce", "cross_entropy"])
def test_member_losses_match_torch(loss):
    g = torch.Generator().manual_seed(3)
    out = torch.randn(3, 10, 4 if loss == "cross_entropy" else 1, generator=g,
                      dtype=torch.float64)
    y = torch.randint(0, 4, (10,), generator=g) if loss == "cross_entropy" else \
        (torch.rand(10, generator=g) > 0.5).double() if loss == "bce" else \
        torch.randn(10, generator=g, dtype=torch.float64) * 2
    w = torch.rand(3, 10, generator=g, dtype=torch.float64)
    fn = {"mse": lambda o: F.mse_loss(o[:, 0], y, reduction="none"),
          "mae": lambda o: F.l1_loss(o[:, 0], y, reduction="none"),
          "huber": lambda o: F.huber_loss(o[:, 0], y, reduction="none"),
          "bce": lambda o: F.binary_cross_entropy_with_logits(o[:, 0], y, reduction="none"),
          "cross_entropy": lambda o: F.cross_entropy(o, y, reduction="none")}[loss]
    want = torch.stack([(w[k] * fn(out[k])).sum() / 10 for k in range(3)])
    torch.testing.assert_close(member_losses(out, y, w, loss), want, rtol=1e-12, atol=0)
    torch.testing.assert_close(member_losses(out, y, None, loss),
                               torch.stack([fn(out[k]).mean() for k in range(3)]))


def _torch_lrs(make, epochs=12, base=0.1):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
    sched = make(opt)
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize(("schedule", "make"), [
    (Schedule("step", step_size=3, gamma=0.5),
     lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5)),
    (Schedule("exponential", gamma=0.9),
     lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9)),
    (Schedule("cosine", t_max=8, eta_min=0.01),
     lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=8, eta_min=0.01)),
    (Schedule("constant", warmup=4, warmup_start=0.25),
     lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=0.25, total_iters=4)),
])
def test_schedules_match_torch_schedulers(schedule, make):
    want = _torch_lrs(make)
    got = [lr_at(0.1, schedule, e) for e in range(12)]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_bad_hyperparameters_are_user_errors():
    with pytest.raises(UserError, match="unknown schedule 'cosin'.*did you mean 'cosine'"):
        Schedule("cosin")
    with pytest.raises(UserError, match=r"dropout must be a rate in \[0, 1\); got 1.5"):
        MemberSpec(dropout=1.5)
    with pytest.raises(UserError, match="unknown init 'kaiming_normal'"):
        MemberSpec(init="kaiming_normal")
    with pytest.raises(UserError, match="lr must be a finite number >= 0; got -0.1"):
        MemberSpec(lr=-0.1)
    with pytest.raises(UserError, match="nesterov needs momentum > 0"):
        MemberSpec(nesterov=True)
    with pytest.raises(UserError, match="loss 'bce' does not fit a regression task"):
        Population(MLPSpec(in_features=2), [MemberSpec()], loss="bce", device="cpu")


def test_multiclass_auc_matches_sklearn_one_vs_rest_macro():
    g = torch.Generator().manual_seed(4)
    k, n, c = 3, 60, 4
    y = torch.randint(0, c, (n,), generator=g)
    logits = torch.randn(k, n, c, generator=g, dtype=torch.float64)
    logits[:, torch.arange(n), y] += torch.arange(k, dtype=torch.float64).unsqueeze(1)
    got = metrics.auc(logits, y)
    want = [skm.roc_auc_score(y.numpy(), torch.softmax(row, dim=1).numpy(), multi_class="ovr",
                              average="macro") for row in logits]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    # a class absent from the labels is left out of the average, not a NaN for everyone
    y_missing = torch.where(y == 3, 0, y)
    got = metrics.auc(logits, y_missing)
    want = [np.mean([skm.roc_auc_score(y_missing.numpy() == j, torch.softmax(row, dim=1)[:, j])
                     for j in range(3)]) for row in logits]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_qlike_in_the_targets_units_equals_the_verdicts_qlike():
    """The race's QLIKE (a network learns a standardized target; QLIKE is scored back in the
    target's own units) is the evaluation's QLIKE of the same forecasts."""
    from netrace.evaluate._stats import point_losses

    gen = torch.Generator().manual_seed(1)
    x = torch.randn(120, 3, generator=gen, dtype=torch.float64)
    vol = 0.01 * torch.exp(0.3 * x[:, 0])  # a positive volatility target
    mu, sd = float(vol.mean()), float(vol.std())
    yz = (vol - mu) / sd
    pop = Population(MLPSpec(in_features=3, hidden=(6,)), [MemberSpec(seed=s, lr=1e-2)
                                                           for s in range(3)],
                     monitor="qlike", device="cpu", dtype=torch.float64)
    pop.step_epoch(x, yz)
    m = pop.measure(x, yz, scale=(mu, sd))
    pred = pop.predict(x)[..., 0]
    want = [point_losses("qlike", vol.numpy(), (mu + sd * p).numpy()).mean() for p in pred]
    np.testing.assert_allclose(m["qlike"], want, rtol=1e-10)
    v = pop.judge(m)
    assert v.score is m["qlike"] and v.improved.all()  # lower is better, first validation
    with pytest.raises(UserError, match="monitor 'qlike' needs the target's scale"):
        pop.measure(x, yz)
