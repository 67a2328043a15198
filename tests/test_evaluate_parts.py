"""The parts of the verdict: refit finalists trained together as one population, greedy
ensemble selection, out-of-fold assembly, intervals."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from netrace.evaluate import Interval
from netrace.evaluate._ensemble import ensemble_loss, greedy_weights, out_of_fold
from netrace.evaluate._model import combine
from netrace.evaluate._refit import RefitJob, refit
from netrace.race._build import DataShape, population_settings


def test_finalists_refit_together_train_as_each_would_alone() -> None:
    torch.manual_seed(0)
    shape = DataShape(window=3, features=2, task="regression")
    params = [{"model": "mlp", "width": 8, "lr": lr, "batch_size": 32}
              for lr in (1e-3, 1e-2, 3e-2)]
    settings = population_settings(params[0], shape)
    X = np.random.default_rng(0).normal(size=(96, 3, 2))
    y = X[:, -1, 0] * 0.5 + np.random.default_rng(1).normal(size=96) * 0.1
    jobs = [RefitJob(settings, p, seed, epochs, 10) for p, seed, epochs in
            zip(params, (11, 12, 13), (4, 2, 3), strict=True)]
    together = refit(jobs, X, y, task="regression", monitor="loss", seed=5, device="cpu")
    for job, got in zip(jobs, together, strict=True):
        alone = refit([job], X, y, task="regression", monitor="loss", seed=5, device="cpu")[0]
        np.testing.assert_allclose(got["params"], alone["params"], rtol=1e-5, atol=1e-6)
    # each stopped after its own epoch count: one more epoch gives other weights
    longer = refit([RefitJob(settings, params[1], 12, 3, 10)], X, y, task="regression",
                   monitor="loss", seed=5, device="cpu")[0]
    assert not np.allclose(longer["params"], together[1]["params"])


def test_greedy_selection_matches_a_brute_force_search_round_by_round() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=50)
    f = np.stack([y + rng.normal(0, s, 50) + b for s, b in
                  ((0.5, 0.3), (0.5, -0.3), (0.8, 0.0), (2.0, 1.0))])
    w = greedy_weights("regression", y, f, rounds=6)
    # the same procedure by hand: each round adds the model that makes the running mean best
    chosen: list[int] = []
    for _ in range(6):
        losses = [np.mean((y - f[chosen + [j]].mean(axis=0)) ** 2) for j in range(4)]
        chosen.append(int(np.argmin(losses)))
    np.testing.assert_allclose(w, np.bincount(chosen, minlength=4) / 6)
    assert w[3] == 0 and w[0] > 0 and w[1] > 0  # the biases cancel; the bad model stays out
    # ... and the ensemble is at least as good on validation as the best single model
    best = min(ensemble_loss("regression", y, fj) for fj in f)
    assert ensemble_loss("regression", y, combine(f, w)[0]) <= best


def test_greedy_selection_for_classes_uses_log_loss() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 80)
    good = np.clip(0.5 + 0.3 * (2 * y - 1) + rng.normal(0, 0.1, 80), 0.01, 0.99)
    f = np.stack([np.full(80, 0.5), good, 1 - good])
    assert greedy_weights("binary", y, f, rounds=5).tolist() == [0.0, 1.0, 0.0]
    from sklearn.metrics import log_loss

    assert ensemble_loss("binary", y, good) == pytest.approx(log_loss(y, good))
    probs = np.stack([1 - good, good], axis=1)
    assert ensemble_loss("multiclass", y, probs) == pytest.approx(log_loss(y, probs))


def test_out_of_fold_forecasts_cover_each_validated_sample_once() -> None:
    parts = [np.array([4, 5, 6]), np.array([7, 8]), np.array([0, 1])]
    fc = [np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0]), np.array([6.0, 7.0])]
    seen, got = out_of_fold(10, parts, fc)
    assert seen.tolist() == [0, 1, 4, 5, 6, 7, 8]
    assert got.tolist() == [6.0, 7.0, 1.0, 2.0, 3.0, 4.0, 5.0]


@pytest.mark.parametrize("positive", [True, False])
def test_intervals_from_residuals_cover_as_nominal_on_the_same_law(positive: bool) -> None:
    rng = np.random.default_rng(2)
    f = rng.uniform(1, 3, 4000) if positive else rng.normal(size=4000)
    noise = rng.normal(0, 0.3, 8000)
    y_fit = f * np.exp(noise[:4000]) if positive else f + noise[:4000]
    y_new = f * np.exp(noise[4000:]) if positive else f + noise[4000:]
    iv = Interval.fit(y_fit, f, 0.9)
    assert iv.kind == ("ratio" if positive else "additive")
    lo, hi = iv.bounds(f)
    assert np.mean((y_new >= lo) & (y_new <= hi)) == pytest.approx(0.9, abs=0.02)


def test_combine_weights_members_and_measures_their_spread() -> None:
    f = np.array([[1.0, 2.0], [3.0, 2.0]])
    mean, spread = combine(f, np.array([0.5, 0.5]))
    assert mean.tolist() == [2.0, 2.0] and spread.tolist() == [1.0, 0.0]
    mean, _ = combine(f, np.array([3.0, 1.0]))  # weights are normalized
    assert mean.tolist() == [1.5, 2.0]
    probs = np.array([[[0.2, 0.8]], [[0.4, 0.6]]])
    mean, spread = combine(probs, np.array([1.0, 1.0]))
    np.testing.assert_allclose(mean, [[0.3, 0.7]])
    np.testing.assert_allclose(spread, [0.1])  # of the chosen class's probability
    assert list(itertools.chain(*mean)) == pytest.approx([0.3, 0.7])


@pytest.mark.parametrize("epochs", [30, 100, 7])
def test_learning_rate_schedules_follow_the_epoch_budget(epochs: int) -> None:
    """A schedule runs over the network's own budget: cosine reaches zero at its last epoch
    and never climbs back (it used to be fixed at 50 epochs, so at 100 it rose again after
    epoch 50); step and exponential end at a hundredth of the base rate, not at 1e-10."""
    from netrace.race._build import member_spec
    from netrace.train import lr_at

    base = 0.01
    rates = {kind: [lr_at(base, member_spec({"schedule": kind, "lr": base}, 0, "adam",
                                            epochs).schedule, e) for e in range(epochs)]
             for kind in ("cosine", "step", "exponential", "constant")}
    for kind in ("cosine", "step", "exponential"):
        r = np.array(rates[kind])
        assert (np.diff(r) <= 1e-15).all(), kind  # never rises within the budget
        assert r[0] == pytest.approx(base)
    assert 0 < rates["cosine"][-1] < 0.06 * base  # the last epoch's rate, near zero
    assert rates["cosine"][epochs // 2] == pytest.approx(base / 2, rel=0.25)
    # torch's CosineAnnealingLR with T_max = the budget gives the same rates
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    torch_rates = []
    for _ in range(epochs):
        torch_rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    np.testing.assert_allclose(rates["cosine"], torch_rates, rtol=1e-9, atol=1e-15)
    assert rates["step"][-1] == pytest.approx(base * 0.01)  # two steps of 0.1 in the budget
    assert rates["step"][epochs // 2] == pytest.approx(base * 0.1)
    assert rates["exponential"][-1] == pytest.approx(base * 0.01 ** ((epochs - 1) / epochs))
    assert rates["constant"] == [base] * epochs


def test_nested_choice_ignores_the_fold_it_is_for() -> None:
    from netrace.evaluate._nested import choose_without

    rng = np.random.default_rng(3)
    tables = {t: rng.normal(size=(int(rng.integers(1, 9)), 3)) for t in range(12)}
    tables[4][2, 1] = np.nan  # an epoch not a number on fold 2: never a peak for folds 1, 3
    for fold in range(3):
        for maximize in (True, False):
            got = choose_without(tables, fold, 5, maximize=maximize)
            # brute force: every (trial, epoch) mean over the other folds
            best = {}
            for t, tab in tables.items():
                means = [np.mean(np.delete(row, fold)) for row in tab]
                ok = [(m, e) for e, m in enumerate(means) if np.isfinite(m)]
                m, e = (max if maximize else min)(ok, key=lambda p: p[0])
                best[t] = (m, e + 1)
            order = sorted(best, key=lambda t: (-best[t][0] if maximize else best[t][0], t))[:5]
            assert got.trials == tuple(order)
            assert got.epochs == tuple(best[t][1] for t in order)
            # what fold `fold` holds never changes the choice for it
            moved = {t: tab.copy() for t, tab in tables.items()}
            for tab in moved.values():
                tab[:, fold] = rng.normal(size=len(tab)) * 100
            assert choose_without(moved, fold, 5, maximize=maximize) == got


def test_greedy_never_adds_a_forecast_that_is_not_a_number() -> None:
    y = np.array([1.0, 2.0, 3.0, 4.0])
    f = np.stack([y + np.array([0.0, 0.0, 0.0, np.nan]), y + 0.5, y * 0 - 1.0])
    w = greedy_weights("regression", y, f, rounds=5)
    assert w[0] == 0 and w[1] > 0
    # QLIKE: a forecast <= 0 has no finite loss alone, so it is never the first pick
    w = greedy_weights("regression", y, f[1:], rounds=1, loss="qlike")
    assert w.tolist() == [1.0, 0.0]
    assert ensemble_loss("regression", y, f[2], "qlike") > 1e9  # floored: enormous


def test_the_blend_is_its_weighted_mean_with_baselines_refit_as_in_the_evaluation() -> None:
    from netrace.evaluate._baselines import ewma, har, time_series_baselines
    from netrace.evaluate._model import Blend

    rng = np.random.default_rng(0)
    x = np.abs(rng.normal(0.01, 0.003, 400))
    anchors = np.arange(150, 240)
    assert set(time_series_baselines("volatility", x, anchors, 1, only=["har", "ewma"])) == \
        {"har", "ewma"}
    with pytest.raises(Exception, match="no baseline 'harr'.*did you mean 'har'"):
        time_series_baselines("volatility", x, anchors, 1, only=["harr"])
    nets = rng.normal(0.01, 0.001, len(anchors))
    blend = Blend(0.5, {"har": 0.3, "ewma": 0.2}, "volatility", 1, 20)
    np.testing.assert_allclose(blend.apply(nets, x, None, anchors),
                               0.5 * nets + 0.3 * har(x, anchors, 1, 20) + 0.2 * ewma(x, anchors, 1),
                               rtol=1e-12)
    assert blend.past_needed() >= 22 + 30 + 1


def test_the_verdict_claims_no_win_that_spa_does_not_support() -> None:
    from netrace.evaluate._evaluate import verdict

    def result(dm: float, spa: float) -> dict:
        return {"forecast": "top_k", "spa_pvalue": spa, "models": [
            {"name": "top_k", "kind": "netrace", "metrics": {"log_loss": 0.690},
             "dm_pvalue": {}},
            {"name": "majority", "kind": "baseline", "metrics": {"log_loss": 0.693},
             "dm_pvalue": {"log_loss": dm}}]}

    assert "on log-loss significantly (DM p = 0.010); whether any" in verdict(result(0.01, 0.02))
    text = verdict(result(0.01, 0.40))
    assert ("on log-loss (DM p = 0.010), but not significantly once the search over models is "
            "allowed for (SPA p = 0.400)") in text
    assert "but not significantly (DM p = 0.300);" in verdict(result(0.30, 0.40))
    # with several losses, each win answers to the SPA of its own loss
    two = result(0.01, 0.40)
    two["models"][0]["metrics"]["qlike"] = 0.4
    two["models"][1]["metrics"]["qlike"] = 0.5
    two["models"][1]["dm_pvalue"]["qlike"] = 0.02
    two["spa"] = {"log_loss": {"pvalue": 0.40}, "qlike": {"pvalue": 0.03}}
    text = verdict(two)
    assert "log-loss (DM p = 0.010), but not significantly once the search" in text
    assert "QLIKE significantly (DM p = 0.020)" in text


def test_greedy_on_two_losses_weighs_each_by_its_best_single_model() -> None:
    rng = np.random.default_rng(2)
    y = np.exp(rng.normal(-4.5, 0.5, 400))
    low, high = 0.8 * y * np.exp(rng.normal(0, 0.1, 400)), 1.3 * y
    f = np.stack([low, high])
    w = greedy_weights("regression", y, f, rounds=20, loss=("mse", "qlike"))
    # brute force over the same rounds: the mean of the two losses, each over its best single
    scale = [min(ensemble_loss("regression", y, g, n) for g in f) for n in ("mse", "qlike")]
    best = min(range(21), key=lambda k: np.mean([
        ensemble_loss("regression", y, (k * low + (20 - k) * high) / 20, n) / s
        for n, s in zip(("mse", "qlike"), scale)]))
    crit = [np.mean([ensemble_loss("regression", y, (k * low + (20 - k) * high) / 20, n) / s
                     for n, s in zip(("mse", "qlike"), scale)]) for k in (best, round(w[0] * 20))]
    assert crit[1] <= crit[0] * 1.001  # greedy reaches the best mix on the grid
    assert 0 < w[0] < 1


def test_a_floor_model_bounds_the_greedy_blend_on_every_loss() -> None:
    # a volatility y; "har" is fair on both losses; "net" is close on most days but twice too
    # high on the largest tenth: much better on QLIKE, worse on MSE. Weighed on the mean of
    # both, the blend leans on it and loses MSE to har
    rng = np.random.default_rng(4)
    y = np.exp(rng.normal(-4.5, 0.6, 2000))
    har = y * np.exp(rng.normal(0.0, 0.3, 2000))
    net = y * np.exp(rng.normal(0.0, 0.05, 2000)) * np.where(y > np.quantile(y, 0.9), 2.0, 1.0)
    f = np.stack([net, har])
    loss = ("mse", "qlike")

    def losses(w: np.ndarray) -> list[float]:
        return [ensemble_loss("regression", y, w @ f, n) for n in loss]

    free = greedy_weights("regression", y, f, rounds=20, loss=loss)
    floored = greedy_weights("regression", y, f, rounds=20, loss=loss, floor=1)
    bound = losses(np.array([0.0, 1.0]))
    assert losses(free)[0] > bound[0]  # without the floor: worse than har on MSE
    got = losses(floored)
    assert got[0] <= bound[0] and got[1] <= bound[1]  # never worse than har on either
    assert got[1] < 0.97 * bound[1] and 0 < floored[0] < free[0]  # and still uses net
    # the best mix on the grid that keeps the floor is what greedy found, or within 0.1%
    scale = [min(ensemble_loss("regression", y, g, n) for g in f) for n in loss]
    grid = [np.array([k / 20, 1 - k / 20]) for k in range(21)]
    ok = [w for w in grid if all(a <= b for a, b in zip(losses(w), bound))]
    crit = [np.mean([v / s for v, s in zip(losses(w), scale)]) for w in (*ok, floored)]
    assert crit[-1] <= min(crit[:-1]) * 1.001
    # a floor that is the best model on every loss: the blend is the floor alone
    assert greedy_weights("regression", y, np.stack([har, y]), rounds=10, loss=loss,
                          floor=1).tolist() == [0.0, 1.0]


def test_few_test_points_get_no_test_and_a_missing_forecast_no_partial_mean() -> None:
    from netrace.evaluate._evaluate import MIN_TEST_POINTS, _by_date, _dm, verdict

    rng = np.random.default_rng(7)
    y = np.exp(rng.normal(-4.5, 0.5, 60))
    good, bad = y * 1.01, y * 1.5
    assert _dm(["mse"], y, bad, good, 1)["mse"] < 0.05  # 60 points: a clear difference
    short = MIN_TEST_POINTS - 1
    assert _dm(["mse"], y[:short], bad[:short], good[:short], 1) == {"mse": None}
    # pooled by date: a day where a model has no forecast for one series has no mean
    dates = np.repeat(np.arange(30), 2)
    losses = np.arange(60, dtype=float)
    losses[5] = np.nan
    pooled = _by_date(losses, dates)
    assert np.isnan(pooled[2]) and np.isfinite(np.delete(pooled, 2)).all()
    assert pooled[0] == 0.5
    partial = bad.copy()
    partial[5] = np.nan
    assert _dm(["mse"], y, partial, good, 1, dates) == {"mse": None}
    result = {"forecast": "top_k", "n": 2, "spa_pvalue": None, "models": [
        {"name": "top_k", "kind": "netrace", "metrics": {"mse": 1.0}, "dm_pvalue": {}},
        {"name": "har", "kind": "baseline", "metrics": {"mse": 0.5},
         "dm_pvalue": {"mse": None}}]}
    assert verdict(result).endswith("too few test points (2) for a test, which needs at "
                                    f"least {MIN_TEST_POINTS}.")
