"""Experiment, not part of netrace: an amortized forecaster, a network trained on the sampler.

The ensemble sampler costs 1-2 ms of CPU per curve, about as much as several epochs of a small
network. This trains a network that maps a curve, binned and normalized as ``prepare`` does
it, to 32 quantiles of the sampler's PAPER draws for the same curve (inference amortized over
curves, as LC-PFN does for learning curves: Adriaensen et al., NeurIPS 2023), and scores it.

Curves: every lc checkpoint prefix of the AlgoPerf dev curves' running bests (growth 1.5 and
1.25, to their full length), and curves drawn from the model's prior (the test suite's
generator: 11 families, Dirichlet weights, noise 0.02) cut after 5 or more points, horizons
1.5-8x the observed length, half of them as running bests. Targets: 32 quantiles of the
sampler's draws for each curve (normalized units), never the values the curves reached.
Network: 51 features -> 3 x HIDDEN SiLU -> 32 increasing quantiles; Smooth-L1 loss, Adam,
cosine schedule. Evaluation: held-out error against the sampler's own seed-to-seed spread,
90% coverage on 500 prior curves (the test's seed 1), CPU time, and the LCX protocol on raw
dev curves (``bench/curves.py --part extrap``'s scoring).

    python bench/amortize.py [--hidden 256] [--epochs 100] [--out /tmp/amortized.npz]
    python bench/amortize.py --evaluate /tmp/amortized.npz
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from netrace.curves import CALIBRATED, PAPER, Calibration, Forecast, extrapolate  # noqa: E402
from netrace.curves._fit import N_BINS, Batch, prepare  # noqa: E402
from netrace.curves._forecast import extrapolate_many  # noqa: E402
from netrace.curves._rules import checkpoints  # noqa: E402
from netrace.replay import load_curves  # noqa: E402
from tests.test_curves_synthetic import prior_curves  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "learning-curves" / "algoperf-dev.csv.gz"
LEVELS = (np.arange(32) + 0.5) / 32


def features(batch: Batch) -> np.ndarray:
    """(C, 51): the binned normalized values and x positions (zero where a bin is empty), the
    bins in use, x_first, the horizon log(x_target / x_last) and log(points observed)."""
    mask = (batch.n > 0).astype(float)
    return np.concatenate([batch.y * mask, mask, batch.x[:, :N_BINS] * mask,
                           batch.x[:, N_BINS : N_BINS + 1], batch.h[:, None],
                           np.log(batch.n_obs)[:, None]], axis=1)


def amortized_quantiles(w: dict, batch: Batch) -> np.ndarray:
    """(C, 32) quantiles at LEVELS, normalized units; one curve at a time (matrix-vector
    products and elementwise functions of fixed length), so nothing depends on the batch."""
    z = (features(batch) - w["mu"]) / w["sd"]
    layers = sum(1 for k in w if k.startswith("w"))
    out = np.empty((batch.size, len(LEVELS)))
    for i, h in enumerate(z):
        for k in range(layers):
            h = w[f"w{k}"] @ h + w[f"b{k}"]
            if k < layers - 1:
                h = h / (1.0 + np.exp(-h))  # SiLU
        out[i, 0] = h[0]
        out[i, 1:] = h[0] + np.cumsum(np.logaddexp(0.0, h[1:]))
    return out


def amortized_extrapolate(w: dict, xs, ys, xt, calibration: Calibration, seed: int = 0,
                          bounds=None, n: int = 312) -> Forecast:
    """``extrapolate`` with the network in place of the sampler: its quantiles inverted at
    uniform draws (linear between levels and beyond the outer two), PAPER's inflation undone,
    then the calibration applied as ``extrapolate_many`` does."""
    from netrace.curves._forecast import _curve_seed

    batch = prepare(xs, ys, np.asarray(xt, dtype=float))
    rngs = [_curve_seed(seed, np.asarray(x, float), np.asarray(y, float), t) for x, y, t in zip(xs, ys, xt)]
    q = amortized_quantiles(w, batch)
    u = np.stack([r.random(n) for r in rngs])
    hi = np.clip(np.searchsorted(LEVELS, u), 1, len(LEVELS) - 1)
    frac = (u - LEVELS[hi - 1]) / (LEVELS[hi] - LEVELS[hi - 1])
    q_lo = np.take_along_axis(q, hi - 1, axis=1)
    d = q_lo + frac * (np.take_along_axis(q, hi, axis=1) - q_lo)
    m = d.mean(axis=1, keepdims=True)
    d = m + calibration.inflate / PAPER.inflate * (d - m)
    if calibration.has_discrepancy:
        t = np.stack([r.standard_t(calibration.nu, n) for r in rngs])
        d = d + batch.h[:, None] * (calibration.drift + calibration.spread * t)
    y = batch.y_offset[:, None] + batch.y_scale[:, None] * d
    return Forecast(np.clip(y, *bounds) if bounds is not None else y)


def evaluate(path: Path) -> None:
    from bench.curves import BOUNDS, _lcx, _table
    from tests.test_curves_synthetic import prior_curves as prior

    with np.load(path) as f:
        w = {k: f[k].astype(np.float64) for k in f.files}
    xs, ys, xt, truth = prior(500, seed=1)
    t0 = time.process_time()
    fast = amortized_extrapolate(w, xs, ys, xt, PAPER)
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
            f = amortized_extrapolate(w, xs_, ys_, xt_, cal, bounds=BOUNDS)
            q05, q95 = f.quantile([0.05, 0.95])
            return {"mean": f.mean, "std": f.std, "q05": q05, "q95": q95}
        return predict

    rows = [(f"network, {name}", lcx.score(sample, predictor(cal), cut))
            for cut in (0.2, 0.4) for name, cal in (("PAPER", PAPER), ("CALIBRATED", CALIBRATED))]
    print("LCX protocol on raw dev curves (the sampler's rows: BENCHMARKS.md)\n")
    print(_table(rows))


def curves() -> tuple[list, list, np.ndarray]:
    xs, ys, xt = [], [], []
    dev = load_curves(DATA)
    for growth in (1.5, 1.25):
        for cs in dev.values():
            for y in cs:
                best = np.maximum.accumulate(y)
                for n in checkpoints(5, growth, len(best)):
                    xs.append(np.arange(1.0, n + 1))
                    ys.append(best[:n])
                    xt.append(float(len(best)))
    rng = np.random.default_rng(0)
    for seed, n, horizon in ((11, 5400, 1.5), (12, 5400, 3.0), (13, 5400, 6.0),
                             (22, 6000, 2.0), (32, 6000, 4.0), (42, 6000, 8.0)):
        px, py, pt, _ = prior_curves(n, seed=seed, horizon=horizon)
        for x, y, t in zip(px, py, pt):
            k = int(rng.integers(5, len(x) + 1))
            xs.append(x[:k])
            ys.append(np.maximum.accumulate(y[:k]) if rng.random() < 0.5 else y[:k])
            xt.append(float(t))
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
    ap.add_argument("--out", type=Path, default=Path("/tmp/amortized.npz"))
    ap.add_argument("--evaluate", type=Path, default=None, help="score saved weights instead")
    a = ap.parse_args()
    if a.evaluate:
        evaluate(a.evaluate)
        return
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    t0 = time.time()
    xs, ys, xt = curves()
    X, Y = targets(xs, ys, xt, seed=0)
    print(f"{len(X)} curves, sampler targets in {time.time() - t0:.0f} s", flush=True)
    perm = np.random.default_rng(0).permutation(len(X))
    test, train = perm[: len(X) // 10], perm[len(X) // 10 :]
    mu, sd = X[train].mean(0), X[train].std(0) + 1e-6
    Xt = torch.tensor((X - mu) / sd, dtype=torch.float32)
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
