"""Train netrace's amortized forecaster (netrace/curves/amortized.npz) and score it.

The network maps a curve, binned and normalized as ``prepare`` does it, to 32 quantiles of the
ensemble sampler's PAPER draws for the same curve (see netrace/curves/_amortized.py).

Curves: the AlgoPerf dev curves except the 400 that BENCHMARKS.md scores (the LCX sample),
as running bests cut at every lc checkpoint (growth 1.5 and 1.25) and raw, cut at 4 random
points each; and curves drawn from the model's prior (the test suite's generator: 11
families, Dirichlet weights, noise 0.02-0.1) cut after 5 or more points, horizons 1.5-8x the
observed length, half of them as running bests. Targets: 32 quantiles of the sampler's draws
for each curve (normalized units), never the values the curves reached. Network: 51 features
(standardized with a floor under the scale, clipped to +-8) -> 3 x HIDDEN SiLU -> 32
increasing quantiles; Smooth-L1 loss, Adam, cosine schedule; about 4 minutes on 2 cores.
Evaluation (``--evaluate``): 90% coverage on 500 prior curves (the test's seed 1) against the
sampler, CPU time, the LCX protocol on the 400 held-out curves, and replay on them alone.

    python bench/amortize.py [--hidden 256] [--epochs 100] [--out netrace/curves/amortized.npz]
    python bench/amortize.py --evaluate
    python bench/amortize.py --study runs/netrace.db   # a race's own curves (R² or accuracy)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from netrace.curves import CALIBRATED, PAPER, extrapolate  # noqa: E402
from netrace.curves._amortized import LEVELS, features, standardize  # noqa: E402
from netrace.curves._fit import prepare  # noqa: E402
from netrace.curves._forecast import extrapolate_many  # noqa: E402
from netrace.curves._rules import checkpoints  # noqa: E402
from tests.test_curves_synthetic import prior_curves  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "learning-curves" / "algoperf-dev.csv.gz"
def evaluate() -> None:
    """The shipped network (netrace/curves/amortized.npz) against the sampler."""
    from bench.curves import BOUNDS, _lcx, _table

    xs, ys, xt, truth = prior_curves(500, seed=1)
    t0 = time.process_time()
    fast = extrapolate(xs, ys, xt, calibration=PAPER, method="amortized")
    t_fast = time.process_time() - t0
    t0 = time.process_time()
    slow = extrapolate(xs, ys, xt, calibration=PAPER)
    t_slow = time.process_time() - t0
    for name, f in (("network", fast), ("sampler", slow)):
        lo, hi = f.quantile([0.05, 0.95])
        print(f"prior curves (500, seed 1), PAPER: {name} 90% coverage "
              f"{np.mean((truth >= lo) & (truth <= hi)):.3f}, MAE {np.mean(np.abs(f.mean - truth)):.4f}")
    span = np.array([np.ptp(y) for y in ys])
    print(f"network against sampler: median |mean difference| / observed range "
          f"{np.median(np.abs(fast.mean - slow.mean) / span):.4f}, median std ratio "
          f"{np.median(fast.std / slow.std):.3f}; CPU {1e3 * t_fast / 500:.2f} against "
          f"{1e3 * t_slow / 500:.2f} ms per curve\n")
    lcx = _lcx()
    sample = lcx.load(str(DATA), 400, 0)

    def predictor(cal):
        def predict(xs_, ys_, xt_):
            f = extrapolate(xs_, ys_, xt_, calibration=cal, bounds=BOUNDS, method="amortized")
            q05, q95 = f.quantile([0.05, 0.95])
            return {"mean": f.mean, "std": f.std, "q05": q05, "q95": q95}
        return predict

    rows = [(f"network, {name}", lcx.score(sample, predictor(cal), cut))
            for cut in (0.2, 0.4) for name, cal in (("PAPER", PAPER), ("CALIBRATED", CALIBRATED))]
    print("LCX protocol on the 400 scored dev curves, held out of training (the sampler's rows: "
          "BENCHMARKS.md)\n")
    print(_table(rows) + "\n")
    replay_held_out(sample)


def compare_on_study(db: Path, bounds: tuple[float, float]) -> None:
    """Both forecasters on a study's own curves: every lc checkpoint prefix of the running best
    of each network that ran the whole budget, against its final running best."""
    from netrace.curves import CALIBRATED
    from netrace.curves._forecast import extrapolate_many
    from netrace.storage import Storage, TrialState

    s = Storage(db)
    sid = s.get_study(s.study_names()[0]).id
    full = [np.asarray(c, dtype=float) for c in s.curves(sid, [TrialState.COMPLETE]).values()]
    budget = max(len(c) for c in full)
    full = [np.maximum.accumulate(c) for c in full if len(c) == budget and np.isfinite(c).all()]
    xs, ys, truth = [], [], []
    for b in full:
        for n in checkpoints(5, 1.5, budget):
            xs.append(np.arange(1.0, n + 1))
            ys.append(b[:n])
            truth.append(b[-1])
    truth = np.array(truth)
    print(f"{len(xs)} prefixes of {len(full)} networks; last value MAE "
          f"{np.mean(np.abs(np.array([y[-1] for y in ys]) - truth)):.4f}")
    for method in ("sampler", "amortized"):
        for bd in (None, bounds):
            f = extrapolate_many(xs, ys, float(budget), (CALIBRATED,), method=method, bounds=bd)[0]
            lo, hi = f.quantile([0.05, 0.95])
            print(f"{method}, bounds {bd}: MAE {np.mean(np.abs(f.mean - truth)):.4f}, median "
                  f"{np.median(np.abs(f.mean - truth)):.4f}, 90% coverage "
                  f"{np.mean((truth >= lo) & (truth <= hi)):.3f}")


def replay_held_out(sample: list) -> None:
    """Replay (4 workers, 5 orders) on the held-out curves alone, per workload: lc with either
    forecaster, and baselines."""
    import dataclasses

    from bench.curves import _summary_row
    from netrace.curves import HyperbandRule, LCRule, MedianRule
    from netrace.curves._replay import lc_with_precomputed_forecasts, simulate

    by: dict[str, list] = {}
    for _, workload, y in sample:
        by.setdefault(workload, []).append(np.asarray(y, dtype=float))
    print("| rule | median speedup | median regret | worst regret (workload) |\n|---|---|---|---|")
    for method in ("sampler", "amortized"):
        base = {w: lc_with_precomputed_forecasts(ys, LCRule(method=method)) for w, ys in by.items()}
        for eps, weight in ((0.05, float("inf")), (0.05, 10.0), (0.1, 10.0), (0.2, 10.0)):
            res = {w: [simulate(ys, dataclasses.replace(base[w], epsilon=eps, prior_weight=weight),
                                workers=4, seed=k)
                       for k in range(5)] for w, ys in by.items()}
            print(_summary_row(f"lc {method}, eps {eps}, prior weight {weight:g}", res), flush=True)
    for name, rule in (("median 10th pct", MedianRule(percentile=10.0)), ("median", MedianRule()),
                       ("hyperband keep half", HyperbandRule(keep=0.5)),
                       ("hyperband keep two thirds", HyperbandRule(keep=2 / 3))):
        res = {w: [simulate(ys, rule, workers=4, seed=k) for k in range(5)] for w, ys in by.items()}
        print(_summary_row(name, res), flush=True)


def curves() -> tuple[list, list, np.ndarray]:
    """The training curves. The 400 curves the LCX protocol scores are held out."""
    from bench.curves import _lcx

    lcx = _lcx()
    scored = {c[0] for c in lcx.load(str(DATA), 400, 0)}
    dev = [y for cid, _, y in lcx.load(str(DATA), 10**6, 0) if cid not in scored]
    rng = np.random.default_rng(0)
    xs, ys, xt = [], [], []

    def add(y: np.ndarray, n: int, target: float) -> None:
        xs.append(np.arange(1.0, n + 1))
        ys.append(np.asarray(y[:n], dtype=float))
        xt.append(target)

    for y in dev:
        best = np.maximum.accumulate(y)
        for growth in (1.5, 1.25):  # what the lc rule asks: running bests at its checkpoints
            for n in checkpoints(5, growth, len(best)):
                add(best, n, float(len(best)))
        for _ in range(4):  # what users pass: raw curves cut anywhere
            add(y, int(rng.integers(5, len(y))), float(len(y)))
    for seed, n, horizon, noise in ((11, 5400, 1.5, 0.02), (12, 5400, 3.0, 0.02), (13, 5400, 6.0, 0.02),
                                    (22, 6000, 2.0, 0.05), (32, 6000, 4.0, 0.05), (42, 6000, 8.0, 0.1)):
        px, py, pt, _ = prior_curves(n, seed=seed, horizon=horizon, noise=noise)
        for x, y, t in zip(px, py, pt):
            k = int(rng.integers(5, len(x) + 1))
            add(np.maximum.accumulate(y) if rng.random() < 0.5 else y, k, float(t))
    return xs, ys, np.array(xt)


def targets(xs: list, ys: list, xt: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    feats, quants = [], []
    for i in range(0, len(xs), 512):
        sl = slice(i, i + 512)
        batch = prepare(xs[sl], ys[sl], xt[sl])
        f = extrapolate_many(xs[sl], ys[sl], xt[sl], (PAPER,), seed=seed)[0]
        draws = (f.samples - batch.y_offset[:, None]) / batch.y_scale[:, None]
        feats.append(features(batch))
        quants.append(np.quantile(draws, LEVELS, axis=1).T)
    return np.concatenate(feats), np.concatenate(quants)


def main() -> None:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "netrace" / "curves" / "amortized.npz")
    ap.add_argument("--evaluate", action="store_true", help="score the shipped network instead")
    ap.add_argument("--study", type=Path, default=None,
                    help="compare the forecasters on this study's curves (a metric to maximize, <= 1)")
    a = ap.parse_args()
    if a.study:
        compare_on_study(a.study, (-np.inf, 1.0))
        return
    if a.evaluate:
        evaluate()
        return
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    t0 = time.time()
    xs, ys, xt = curves()
    X, Y = targets(xs, ys, xt, seed=0)
    print(f"{len(X)} curves, sampler targets in {time.time() - t0:.0f} s", flush=True)
    perm = np.random.default_rng(0).permutation(len(X))
    test, train = perm[: len(X) // 10], perm[len(X) // 10 :]
    mu, sd = X[train].mean(0), np.maximum(X[train].std(0), 0.05)
    Xt = torch.tensor(standardize(X, mu, sd), dtype=torch.float32)
    Yt = torch.tensor(np.clip(Y, -20, 20), dtype=torch.float32)
    H = a.hidden
    net = torch.nn.Sequential(torch.nn.Linear(X.shape[1], H), torch.nn.SiLU(),
                              torch.nn.Linear(H, H), torch.nn.SiLU(),
                              torch.nn.Linear(H, H), torch.nn.SiLU(), torch.nn.Linear(H, len(LEVELS)))

    def quantiles(z):
        o = net(z)
        return torch.cat([o[:, :1], o[:, :1] + torch.cumsum(torch.nn.functional.softplus(o[:, 1:]), 1)], 1)

    opt = torch.optim.Adam(net.parameters(), 1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, a.epochs)
    tr = torch.tensor(train)
    for ep in range(a.epochs):
        idx = tr[torch.randperm(len(tr))]
        for i in range(0, len(idx), 256):
            b = idx[i : i + 256]
            loss = torch.nn.functional.smooth_l1_loss(quantiles(Xt[b]), Yt[b], beta=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        if ep % 10 == 9 or ep == a.epochs - 1:
            with torch.no_grad():
                err = np.abs(quantiles(Xt[test]).numpy() - Y[test]).mean(1)
            print(f"epoch {ep + 1}: held-out median |quantile error| {np.median(err):.4f} "
                  f"({time.time() - t0:.0f} s)", flush=True)
    # the sampler against itself (another seed) on the same held-out curves: its own noise
    sub = test[:4096]
    _, Y2 = targets([xs[i] for i in sub], [ys[i] for i in sub], xt[sub], seed=1)
    with torch.no_grad():
        p = quantiles(Xt[sub]).numpy()
    print(f"held-out median |quantile error|: network {np.median(np.abs(p - Y[sub]).mean(1)):.4f}, "
          f"sampler seed 1 against seed 0 {np.median(np.abs(Y2 - Y[sub]).mean(1)):.4f}")
    layers = [m for m in net if isinstance(m, torch.nn.Linear)]
    arrays = {"mu": mu.astype(np.float32), "sd": sd.astype(np.float32)}
    for k, m in enumerate(layers):
        arrays[f"w{k}"] = m.weight.detach().numpy().astype(np.float32)
        arrays[f"b{k}"] = m.bias.detach().numpy().astype(np.float32)
    np.savez_compressed(a.out, **arrays)
    print(f"saved {a.out} ({a.out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
