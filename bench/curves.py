"""Benchmark of netrace.curves on real learning curves (AlgoPerf dev set); prints markdown.

Extrapolation: the LCX protocol of ../shared/data/learning-curves/README.md, scored by
../shared/tools/lcx_eval.py itself (its ``load`` and ``score``): observe 20% and 40% of each
curve, predict the final value; MAE, mean Gaussian log-likelihood, 90% coverage, ms per curve
(netrace in batches of 100). Compared with the last observed value and, on a subset (it takes
seconds per curve), with NNI 3.0's curve-fitting assessor run from its own virtualenv.
The calibration term (``netrace.curves.Calibration``) is fitted here on curves outside the
scoring sample, then the scoring uses it.

Replay: every rule over every workload with the README's simulation (netrace.replay.run).

    python bench/curves.py [--part extrap|replay|reliability|steps|veto|transfer|speed|all]
                           [--n 400]
                           [--nni-python /tmp/nni/bin/python] [--compare OTHER_CHECKOUT]
                           [--workers 4] [--orders-seed 0] [--lc-eps 0.05,0.2,0.5]
                           [--lc-delta 0.002,0.003] [--lc-min-observed 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from netrace.curves import CALIBRATED, PAPER, RAW, Calibration, LCRule, extrapolate
from netrace.curves._fit import prepare
from netrace.curves._replay import lc_with_precomputed_forecasts, replay_many, simulate
from netrace.curves._rules import (
    HyperbandRule,
    MedianRule,
    NoRule,
    Rule,
    TopKRule,
    checkpoints,
)
from netrace.replay import load_curves

SHARED = ROOT.parent / "shared"
DATA = SHARED / "data" / "learning-curves" / "algoperf-dev.csv.gz"
BOUNDS = (-0.5, 1.5)  # the protocol clips y' to this range


def _lcx():
    spec = importlib.util.spec_from_file_location("lcx_eval", SHARED / "tools" / "lcx_eval.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def netrace_predictor(calibration: Calibration, batch: int = 100):
    def predict(xs, ys, xt):
        out = []
        for i in range(0, len(xs), batch):
            out.append(extrapolate(xs[i : i + batch], ys[i : i + batch], xt[i : i + batch],
                                   bounds=BOUNDS, calibration=calibration).samples)
        s = np.concatenate(out)
        q05, q95 = np.quantile(s, [0.05, 0.95], axis=1)
        return {"mean": s.mean(1), "std": s.std(1), "q05": q05, "q95": q95}
    return predict


_NNI_SCRIPT = r"""
import json, sys, time, warnings, logging
import numpy as np
logging.disable(logging.CRITICAL); warnings.filterwarnings("ignore")
from nni.algorithms.hpo.curvefitting_assessor.model_factory import CurveModel
d = json.load(open(sys.argv[1])); out = []
t0 = time.perf_counter()
for ys, xt in zip(d["ys"], d["xt"]):
    try:
        p = CurveModel(int(xt)).predict(list(ys))
    except Exception:
        p = None
    out.append(None if p is None or not np.isfinite(p) else float(p))
json.dump({"pred": out, "sec": time.perf_counter() - t0}, open(sys.argv[2], "w"))
"""


def nni_predictor(python: str):
    """NNI's CurveModel (point estimate); where it declines (None) the last value is used."""
    def predict(xs, ys, xt):
        with tempfile.TemporaryDirectory() as tmp:
            src, dst, script = Path(tmp, "in.json"), Path(tmp, "out.json"), Path(tmp, "nni_run.py")
            src.write_text(json.dumps({"ys": [list(map(float, y)) for y in ys], "xt": list(map(float, xt))}))
            script.write_text(_NNI_SCRIPT)
            subprocess.run([python, str(script), str(src), str(dst)], check=True)
            res = json.loads(dst.read_text())
        pred = np.array([p if p is not None else y[-1] for p, y in zip(res["pred"], ys)])
        predict.declined = sum(p is None for p in res["pred"])
        return {"mean": pred, "std": None, "q05": None, "q95": None}
    return predict


def _score_cal(raw, truth, scale, h, t, cal: Calibration):
    """Apply ``cal`` to RAW draws (user units) as extrapolate does; return (loglik, coverage, mae)."""
    m = raw.mean(1, keepdims=True)
    s = m + cal.inflate * (raw - m) + scale[:, None] * h[:, None] * (cal.drift + cal.spread * t)
    s = np.clip(s, *BOUNDS)
    mean, sd = s.mean(1), np.maximum(s.std(1), 1e-3)
    lo, hi = np.quantile(s, [0.05, 0.95], axis=1)
    ll = np.mean(-0.5 * np.log(2 * np.pi * sd**2) - 0.5 * ((truth - mean) / sd) ** 2)
    return ll, float(np.mean((truth >= lo) & (truth <= hi))), float(np.mean(np.abs(mean - truth)))


def fit_calibration(lcx, held_out, cutoffs=(0.2, 0.4)) -> tuple[Calibration, str]:
    """Grid search of the calibration term on held-out curves (max log-likelihood, coverage 0.87-0.93)."""
    parts = []
    for f in cutoffs:
        xs, ys, xt, truth = [], [], [], []
        for _, _, y in held_out:
            n = len(y)
            k = max(5, int(np.ceil(f * n)))
            xs.append(np.arange(1.0, k + 1)); ys.append(y[:k].astype(float)); xt.append(float(n)); truth.append(y[-1])
        xt = np.array(xt)
        raw = np.concatenate([extrapolate(xs[i : i + 100], ys[i : i + 100], xt[i : i + 100], bounds=BOUNDS,
                                          calibration=RAW).samples for i in range(0, len(xs), 100)])
        b = prepare(xs, ys, xt)
        parts.append((raw, np.array(truth), b.y_scale, b.h))
    rng = np.random.default_rng(0)
    best, rows = None, []
    for inflate, drift, spread, nu in itertools.product((1.0, 1.6, 2.5, 4.0), (0.0, 0.05, 0.1, 0.15, 0.2, 0.3),
                                                        (0.0, 0.05, 0.1, 0.15, 0.2), (1.5, 2.5, 4.0)):
        cal = Calibration(inflate=inflate, drift=drift, spread=spread, nu=nu)
        scores = []
        for raw, truth, scale, h in parts:
            t = rng.standard_t(nu, raw.shape) if spread else 0.0
            scores.append(_score_cal(raw, truth, scale, h, t, cal))
        ll = np.mean([s[0] for s in scores]); cov = np.mean([s[1] for s in scores])
        rows.append((ll, cov, cal))
        if 0.87 <= min(s[1] for s in scores) and max(s[1] for s in scores) <= 0.93 and (best is None or ll > best[0]):
            best = (ll, cov, cal)
    if best is None:
        best = max(rows, key=lambda r: r[0])
    top = sorted(rows, key=lambda r: -r[0])[:5]
    note = "top log-likelihoods on held-out curves: " + "; ".join(
        f"{r[2]} ll={r[0]:.3f} cov={r[1]:.3f}" for r in top)
    return best[2], f"chosen {best[2]} (held-out ll={best[0]:.3f}, cov={best[1]:.3f}); {note}"


def _table(rows) -> str:
    out = ["| method | cutoff | curves | MAE | log-lik | 90% coverage | ms/curve |", "|---|---|---|---|---|---|---|"]
    for name, r in rows:
        ll = f"{r['loglik']:.3f}" if "loglik" in r else "-"
        cov = f"{r['coverage90']:.3f}" if "coverage90" in r else "-"
        out.append(f"| {name} | {r['cutoff']} | {r['curves']} | {r['mae']:.4f} | {ll} | {cov} | "
                   f"{1000 * r['sec_per_curve']:.1f} |")
    return "\n".join(out)


def part_extrap(args) -> None:
    lcx = _lcx()
    sample = lcx.load(str(args.data), args.n, 0)
    ids = {c[0] for c in sample}
    rest = [c for c in lcx.load(str(args.data), 10**6, 0) if c[0] not in ids][: args.n_fit]
    print(f"## Extrapolation (LCX protocol, {len(sample)} curves; calibration fitted on {len(rest)} others)\n")
    t0 = time.perf_counter()
    fitted, note = fit_calibration(lcx, rest)
    print(f"Calibration fit ({time.perf_counter() - t0:.0f} s): {note}\n")
    print(f"Shipped default CALIBRATED = {CALIBRATED}\n")
    methods = [("last value", lcx.last_value), ("netrace PAPER (paper's model)", netrace_predictor(PAPER)),
               ("netrace fitted calibration", netrace_predictor(fitted))]
    if fitted != CALIBRATED:
        methods.append(("netrace CALIBRATED (shipped)", netrace_predictor(CALIBRATED)))
    rows = []
    for f in (0.2, 0.4):
        for name, fn in methods:
            rows.append((name, lcx.score(sample, fn, f)))
    print(_table(rows) + "\n")
    if args.nni_python:
        sub = sample[: args.nni_n]
        rows = []
        nni = nni_predictor(args.nni_python)
        for f in (0.2, 0.4):
            for name, fn in methods + [("NNI 3.0 curve-fitting assessor", nni)]:
                rows.append((name, lcx.score(sub, fn, f)))
            print(f"(NNI declined {nni.declined} of {len(sub)} curves at f={f}; the last value stands in)")
        print(f"\n### Subset of {len(sub)} curves (first of the same sample), with NNI\n")
        print(_table(rows) + "\n")


class VetoedRule(Rule):
    """An experiment, not a netrace rule: ``base`` stops a curve only if the lc forecast also
    gives it probability < ``epsilon`` of reaching the best value seen in other curves (the
    forecast made at the curve's latest lc checkpoint, against the current best)."""

    def __init__(self, base: Rule, lc: LCRule, epsilon: float) -> None:
        self.base, self.lc, self.epsilon = base, lc, epsilon
        self.name = f"{base.name}+lc"

    def _stop(self, best: np.ndarray, curves) -> np.ndarray:
        stop = self.base._stop(best, curves)
        for c in np.nonzero(stop)[0]:
            n = int(curves.observed[c])
            due = [m for m in checkpoints(self.lc.min_observed, self.lc.growth,
                                          int(curves.budget[c])) if m <= n]
            if not due:  # too early to forecast: the base rule decides alone
                continue
            m = due[-1]
            thr = np.nanmax(np.delete(best, c, axis=0))
            if best[c, n - 1] >= thr:
                stop[c] = False
                continue
            f = self.lc.forecast([np.arange(1.0, m + 1)], [best[c, :m]], curves.budget[[c]])[0]
            stop[c] = float(f.prob_above(np.array([thr]))[0]) < self.epsilon
        return stop


def part_veto(args) -> None:
    """The experiment: hyperband (ASHA) whose stops from the lc's first forecast on (5
    evaluations) the lc may veto. Prints one summary row per setting."""
    curves = load_curves(args.data)
    caches = {w: lc_with_precomputed_forecasts(ys, LCRule(calibration=CALIBRATED)).forecast
              for w, ys in curves.items()}
    print("| rule | median speedup | median regret | worst regret (workload) |\n|---|---|---|---|")
    for keep, eps in ((0.5, 0.1), (1 / 3, 0.01), (1 / 3, 0.3), (0.25, 0.01), (0.25, 0.3)):
        res = {w: [simulate(ys, VetoedRule(HyperbandRule(keep=keep),
                                           LCRule(calibration=CALIBRATED, forecast=caches[w]), eps),
                            workers=args.workers, seed=k) for k in range(5)]
               for w, ys in curves.items()}
        print(_summary_row(f"hyperband keep {keep:.2f}, lc veto eps {eps}", res), flush=True)


def _summary_row(name: str, res: dict) -> str:
    """One markdown row: median speedup, median regret and the worst workload's regret over
    the workloads of ``res`` (workload -> replays of several arrival orders)."""
    sp = [np.mean([r.speedup for r in v]) for v in res.values()]
    rg = [np.mean([r.regret for r in v]) for v in res.values()]
    j = int(np.argmax(rg))
    return (f"| {name} | {np.median(sp):.2f} | {np.median(rg):.4f} | {rg[j]:.4f} "
            f"({list(res)[j]}) |")


class TransferRule(Rule):
    """An experiment, not a netrace rule: the lc rule told what other curves of the same race
    gained. At a checkpoint (growth 1.2) a curve at running best b needs to gain tau - b to reach
    the best value seen (tau); every finished curve j gained g_j from the same fraction of its
    budget to its end. p_emp = (sum_j w_j [b + g_j >= tau] + 1) / (sum_j w_j + 2), with w_j = 1
    or a Gaussian kernel of bandwidth ``bw`` on how far j's running best was from b there.
    ``mode`` "emp" stops on p_emp < epsilon (the forecast only before ``min_done`` curves
    finished), "min" when either p_emp or the forecast's probability is below it."""

    def __init__(self, lc: LCRule, epsilon: float, mode: str, bw: float = 0.0,
                 min_done: int = 10) -> None:
        self.lc, self.epsilon, self.mode, self.bw, self.min_done = lc, epsilon, mode, bw, min_done
        self.name = f"transfer-{mode}"

    def _stop(self, best: np.ndarray, curves) -> np.ndarray:
        stop = np.zeros(len(best), dtype=bool)
        done = np.nonzero((curves.observed >= curves.budget) & ~curves.running)[0]
        for c in np.nonzero(curves.running)[0]:
            n, size = int(curves.observed[c]), int(curves.budget[c])
            if n not in checkpoints(self.lc.min_observed, self.lc.growth, size):
                continue
            others = np.delete(best, c, axis=0)
            if not np.isfinite(others).any() or best[c, n - 1] >= np.nanmax(others):
                continue
            tau, b = np.nanmax(others), best[c, n - 1]
            p_model = float(self.lc.forecast([np.arange(1.0, n + 1)], [best[c, :n]],
                                             curves.budget[[c]])[0].prob_above(np.array([tau]))[0])
            if len(done) < self.min_done:
                stop[c] = p_model < self.epsilon
                continue
            ends = curves.budget[done].astype(int)
            at = np.clip(np.rint(n / size * ends).astype(int), 1, ends)
            level = best[done, at - 1]
            gain = best[done, ends - 1] - level
            w = np.ones(len(done)) if self.bw <= 0 else np.exp(-0.5 * ((level - b) / self.bw) ** 2)
            p_emp = (np.sum(w * (b + gain >= tau)) + 1.0) / (w.sum() + 2.0)
            p = p_emp if self.mode == "emp" else min(p_emp, p_model)
            stop[c] = p < self.epsilon
        return stop


def part_transfer(args) -> None:
    """The experiment: lc with what finished curves gained (TransferRule); one row a setting."""
    curves = load_curves(args.data)
    caches = {w: lc_with_precomputed_forecasts(ys, LCRule(calibration=CALIBRATED, growth=1.2))
              .forecast for w, ys in curves.items()}
    print("| rule | median speedup | median regret | worst regret (workload) |\n|---|---|---|---|")
    settings = [("lc alone", 0.05, None, 0.0), ("emp", 0.05, "emp", 0.0),
                ("min", 0.05, "min", 0.0), ("emp, kernel 0.05", 0.05, "emp", 0.05),
                ("min, kernel 0.05", 0.05, "min", 0.05), ("emp, kernel 0.05", 0.1, "emp", 0.05)]
    for name, eps, mode, bw in settings:
        def rule(w: str) -> Rule:
            lc = LCRule(epsilon=eps, calibration=CALIBRATED, growth=1.2, forecast=caches[w])
            return lc if mode is None else TransferRule(lc, eps, mode, bw)
        res = {w: [simulate(ys, rule(w), workers=args.workers, seed=k) for k in range(5)]
               for w, ys in curves.items()}
        print(_summary_row(f"{name}, eps {eps}", res), flush=True)


def part_replay(args) -> None:
    curves = load_curves(args.data)
    rules = [("none", NoRule()), ("median (50th pct, after 5)", MedianRule()),
             ("median 10th pct", MedianRule(percentile=10.0)),
             ("median 25th pct", MedianRule(percentile=25.0)),
             ("median 75th pct", MedianRule(percentile=75.0)),
             ("median 2nd pct", MedianRule(percentile=2.0)),
             ("median 5th pct", MedianRule(percentile=5.0)),
             ("median 10th pct after 10", MedianRule(percentile=10.0, min_observed=10)),
             ("median 10th pct after 20", MedianRule(percentile=10.0, min_observed=20)),
             ("median 50th pct after 20", MedianRule(percentile=50.0, min_observed=20)),
             ("hyperband (ASHA eta 3, rungs 3..243)", HyperbandRule()),
             ("hyperband keep a quarter", HyperbandRule(keep=0.25)),
             ("hyperband keep half", HyperbandRule(keep=0.5)),
             ("hyperband keep two thirds", HyperbandRule(keep=2 / 3)),
             ("hyperband keep 0.8", HyperbandRule(keep=0.8)),
             ("hyperband keep 0.9", HyperbandRule(keep=0.9)),
             ("topk (top third at 10%)", TopKRule()), ("topk (top half at 10%)", TopKRule(keep=0.5)),
             ("topk (top two thirds at 10%)", TopKRule(keep=2 / 3)),
             ("topk (top 0.8 at 10%)", TopKRule(keep=0.8))]
    seed = args.orders_seed
    print(f"## Replay ({args.workers} workers, 5 arrival orders, seeds {seed}-{seed + 4})\n")
    summary = ["| rule | median speedup | median regret | worst regret (workload) | time (s) |", "|---|---|---|---|---|"]
    per_wl: dict[str, dict[str, tuple]] = {}
    names = []

    def record(name, results_by_wl, seconds):
        names.append(name)
        sp = [np.mean([r.speedup for r in res]) for res in results_by_wl.values()]
        rg = [np.mean([r.regret for r in res]) for res in results_by_wl.values()]
        for (w, res), g in zip(results_by_wl.items(), rg):
            per_wl.setdefault(w, {})[name] = (np.mean([r.cost for r in res]), g)
        worst = int(np.argmax(rg))
        summary.append(f"| {name} | {np.median(sp):.2f} | {np.median(rg):.4f} | {rg[worst]:.4f} "
                       f"({list(results_by_wl)[worst]}) | {seconds:.0f} |")
        print(summary[-1], flush=True)

    for name, rule in rules:
        t0 = time.perf_counter()
        out = {w: replay_many(ys, rule, workers=args.workers, seed=seed, orders=5)
               for w, ys in curves.items()}
        record(name, out, time.perf_counter() - t0)
    # lc: forecasts depend only on each curve's own prefix, so one precomputed cache per
    # calibration serves every epsilon and prior weight
    for cal_name, cal in (("CALIBRATED", CALIBRATED), ("PAPER", PAPER)):
        t0 = time.perf_counter()
        m = args.lc_min_observed
        caches = {w: lc_with_precomputed_forecasts(ys, LCRule(calibration=cal, min_observed=m)).forecast
                  for w, ys in curves.items()}
        t_cache = time.perf_counter() - t0
        weights = args.lc_prior if cal is CALIBRATED else [math.inf]
        settings = [(f"lc (eps {eps}, {cal_name}, prior weight {weight:g}, after {m})",
                     {"epsilon": eps, "prior_weight": weight})
                    for eps, weight in itertools.product(args.lc_eps, weights)]
        settings += [(f"lc (improvement, delta {delta}, {cal_name}, after {m})",
                      {"criterion": "improvement", "delta": delta})
                     for delta in (args.lc_delta if cal is CALIBRATED else [])]
        for name, options in settings:
            t0 = time.perf_counter()
            out = {w: [simulate(ys, LCRule(calibration=cal, min_observed=m, forecast=caches[w],
                                           **options), workers=args.workers, seed=seed + k)
                       for k in range(5)]
                   for w, ys in curves.items()}
            record(name, out, time.perf_counter() - t0 + t_cache)
            t_cache = 0.0

    print("\n" + "\n".join(summary) + "\n")
    print("Per workload: steps consumed (regret); 'none' = training everything\n")
    print("| workload | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for w, d in per_wl.items():
        print(f"| {w} | " + " | ".join(f"{d[n][0]:.0f} ({d[n][1]:.4f})" for n in names) + " |")


class _Watch(Rule):
    """Passes ``rule``'s verdicts (and state) through and keeps, by row (the replay's row r is
    the r-th curve started), the fraction of its budget a curve had run when it was stopped."""

    def __init__(self, rule: Rule) -> None:
        self.rule, self.stopped = rule, {}

    def initial_state(self):
        return self.rule.initial_state()

    def decide(self, curves, state=None):
        out, state = self.rule.decide(curves, state)
        for j, v in enumerate(out):
            if v.stop:
                self.stopped[j] = curves.observed[j] / curves.budget[j]
        return out, state


class _WatchP(_Watch):
    """A :class:`_Watch` of an lc rule that also records, at each of its decisions, what
    ``part_reliability`` tabulates: (p, reached, stopped, observed, current gap, forecast-mean
    gap), ``finals`` giving each row's whole-curve best."""

    def __init__(self, rule: LCRule, finals: np.ndarray) -> None:
        super().__init__(rule)
        self.finals, self.recs = finals, []

    def decide(self, curves, state=None):
        out, state = super().decide(curves, state)
        for j, v in enumerate(out):
            if v.forecast is None:
                continue
            thr = np.nanmax(np.delete(curves.values, j, axis=0))
            self.recs.append((v.forecast.p, self.finals[j] >= thr, v.stop,
                              int(curves.observed[j]), np.nanmax(curves.values[j]) - thr,
                              v.forecast.mean - thr))
        return out, state


def part_reliability(args) -> None:
    """Is lc's probability calibrated for the event it decides on? The replay of ``--part
    replay`` (first of ``--lc-eps``, ``--lc-min-observed``, 4 workers, 5 orders), and at every
    decision: the probability p that the curve reaches the threshold (the best value of the
    other curves so far) by its end, and whether the whole curve, trained fully, does. Prints
    the reached frequency by bins of p, and how well p, the curve's current gap to the
    threshold and the forecast mean's gap rank the curves that reach it (AUC), by how many
    evaluations had been observed."""
    from scipy.stats import mannwhitneyu

    eps, m_obs = args.lc_eps[0], args.lc_min_observed
    recs = []  # (p, reached, stopped, observed, current gap, forecast-mean gap)
    for ys in load_curves(args.data).values():
        base = lc_with_precomputed_forecasts(ys, LCRule(epsilon=eps, min_observed=m_obs))
        finals = np.array([float(np.nanmax(y)) for y in ys])
        for k in range(5):
            order = np.random.default_rng(args.orders_seed + k).permutation(len(ys))
            watch = _WatchP(base, finals[order])
            simulate(ys, watch, workers=args.workers, seed=args.orders_seed + k)
            recs += watch.recs
    r = np.array(recs, dtype=float)
    p, reached, stops, observed = r[:, 0], r[:, 1] > 0, r[:, 2] > 0, r[:, 3]

    def auc(score: np.ndarray, m: np.ndarray) -> float:
        a, b = score[m & reached], score[m & ~reached]
        return float(mannwhitneyu(a, b).statistic / (len(a) * len(b)))

    print(f"## Reliability of lc's probability (eps {eps}, after {m_obs}, {args.workers} "
          f"workers, orders {args.orders_seed}-{args.orders_seed + 4})\n")
    print(f"{len(r)} decisions, {int(stops.sum())} stops; of the stopped curves "
          f"{reached[stops].mean():.3f} would have reached the threshold.\n")
    print("| p | decisions | mean p | reached |\n|---|---|---|---|")
    for lo, hi in [(0, .01), (.01, .02), (.02, .05), (.05, .1), (.1, .2), (.2, .3), (.3, .5),
                   (.5, 1.01)]:
        m = (p >= lo) & (p < hi)
        if m.any():
            print(f"| [{lo:.2f}, {min(hi, 1):.2f}) | {int(m.sum())} | {p[m].mean():.3f} | "
                  f"{reached[m].mean():.3f} |")
    print("\n| evaluations observed | decisions | reached | mean p | AUC of p | AUC of the "
          "current gap | AUC of the forecast mean's gap |\n|---|---|---|---|---|---|---|")
    for lo, hi in [(0, 10**9), (3, 4), (4, 8), (8, 16), (16, 40), (40, 10**9)]:
        m = (observed >= lo) & (observed < hi)
        if m.sum() > 50 and reached[m].any() and (~reached[m]).any():
            print(f"| {'all' if lo == 0 else f'{lo}-{hi - 1}' if hi < 10**9 else f'{lo}+'} | "
                  f"{int(m.sum())} | {reached[m].mean():.3f} | {p[m].mean():.3f} | "
                  f"{auc(p, m):.3f} | {auc(r[:, 4], m):.3f} | {auc(r[:, 5], m):.3f} |")


def part_steps(args) -> None:
    """Where each rule's steps go (the replay of ``--part replay``: 4 workers, 5 orders): the
    share of curves stopped by the fraction of its budget seen, and of the steps they took;
    the share of curves let finish by when they started in the workload's arrival order; and
    how far the finished curves ended below the workload's best (in units of its range)."""
    curves = load_curves(args.data)
    m = args.lc_min_observed
    caches = {w: lc_with_precomputed_forecasts(ys, LCRule(min_observed=m)).forecast
              for w, ys in curves.items()}
    rules = [(f"lc (eps {e}, after {m})", lambda w, e=e: LCRule(epsilon=e, min_observed=m,
                                                                 forecast=caches[w]))
             for e in args.lc_eps]
    rules += [("median (defaults)", lambda w: MedianRule()),
              ("hyperband (defaults)", lambda w: HyperbandRule())]
    edges = [0, 0.03, 0.06, 0.1, 0.2, 0.4, 0.7, 1.0]
    print(f"## Where the steps go ({args.workers} workers, orders {args.orders_seed}-"
          f"{args.orders_seed + 4})\n")
    for name, make in rules:
        frac, first, gaps = [], [[] for _ in range(10)], []
        for w, ys in curves.items():
            top = max(float(np.max(y)) for y in ys)
            for k in range(5):
                watch = _Watch(make(w))
                simulate(ys, watch, workers=args.workers, seed=args.orders_seed + k)
                order = np.random.default_rng(args.orders_seed + k).permutation(len(ys))
                for pos, c in enumerate(order):  # row pos of the replay is the pos-th started
                    done = pos not in watch.stopped
                    frac.append(1.0 if done else watch.stopped[pos])
                    first[min(10 * pos // len(ys), 9)].append(done)
                    if done:
                        gaps.append(top - float(np.max(ys[c])))
        f = np.array(frac)
        print(f"### {name}: {f.sum() / len(f):.3f} of the steps of training everything\n")
        print("| stopped at (fraction of budget) | curves | share of the rule's steps |")
        print("|---|---|---|")
        for lo, hi in zip(edges, edges[1:]):
            sel = (f >= lo) & (f < hi)
            print(f"| [{lo:.2f}, {hi:.2f}) | {sel.mean():.1%} | {f[sel].sum() / f.sum():.1%} |")
        sel = f >= 1.0
        print(f"| finished | {sel.mean():.1%} | {f[sel].sum() / f.sum():.1%} |\n")
        print("Curves let finish, by tenth of the arrival order: "
              + ", ".join(f"{np.mean(d):.2f}" for d in first))
        q = np.quantile(gaps, [0.1, 0.25, 0.5, 0.75, 0.9])
        print("Finished curves' final value below the workload's best, 10/25/50/75/90th "
              "percentiles: " + " / ".join(f"{v:.4f}" for v in q) + "\n", flush=True)


_SPEED_SCRIPT = r"""
import json, sys, time
import numpy as np
import torch
from netrace.curves import extrapolate
curves = json.loads(sys.stdin.read())
out = {}
for c in (1, 32, 256):
    for n in (5, 8, 17, 30):
        xs = [np.arange(1.0, n + 1) for _ in range(c)]
        ys = [np.asarray(curves[i % len(curves)][:n], dtype=float) for i in range(c)]
        extrapolate(xs, ys, 3.0 * n)
        best = np.inf
        for _ in range(3 if c < 256 else 2):
            t = time.process_time()  # CPU time: one thread, less moved by the machine's other load
            extrapolate(xs, ys, 3.0 * n)
            best = min(best, time.process_time() - t)
        out[f"{c},{n}"] = best
print(json.dumps(out))
"""


def part_speed(args) -> None:
    """Forecast time as a race sees it: batches of 1, 32 and 256 curves cut at 5, 8, 17 and 30
    points (the lc rule's first checkpoints), the first points of real dev curves; CPU seconds
    of the (one-thread) forecast. Each round
    runs this tree and, with --compare TREE, another netrace checkout, alternating, each in a
    fresh process pinned to one core (best of 2-3 calls per cell, best of the rounds)."""
    lcx = _lcx()
    curves = [list(map(float, y)) for _, _, y in lcx.load(str(args.data), 256, 0) if len(y) >= 30]
    trees = {"this tree": str(ROOT)}
    if args.compare:
        trees["--compare"] = str(Path(args.compare).resolve())
    res: dict[str, list] = {k: [] for k in trees}
    for r in range(args.repeat):
        for name, tree in trees.items():
            env = {**os.environ, "PYTHONPATH": tree}
            p = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", _SPEED_SCRIPT],
                               input=json.dumps(curves), env=env, capture_output=True, text=True,
                               check=True, cwd=tree)
            res[name].append(json.loads(p.stdout))
            print(f"  round {r + 1} {name} done", flush=True)
    best = {k: {cell: min(run[cell] for run in v) for cell in v[0]} for k, v in res.items()}
    head = "| curves | points | this tree (ms, ms/curve) |" + (" --compare (ms) | speedup |" if args.compare else "")
    print(head)
    print("|---|---|---|" + ("---|---|" if args.compare else ""))
    for cell, t in best["this tree"].items():
        c, n = cell.split(",")
        row = f"| {c} | {n} | {1e3 * t:.0f} ({1e3 * t / int(c):.2f}) |"
        if args.compare:
            o = best["--compare"][cell]
            row += f" {1e3 * o:.0f} | {o / t:.1f}x |"
        print(row)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=["extrap", "replay", "reliability", "steps", "veto",
                                       "transfer", "speed", "all"],
                    default="all")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--n-fit", type=int, default=300)
    ap.add_argument("--nni-python", default=None)
    ap.add_argument("--nni-n", type=int, default=60)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--orders-seed", type=int, default=0,
                    help="replay: the first of the 5 arrival orders' seeds")
    ap.add_argument("--lc-min-observed", type=int, default=LCRule().min_observed,
                    help="replay: lc's first forecast after this many evaluations")
    ap.add_argument("--lc-delta", type=lambda v: [float(e) for e in v.split(",")],
                    default=[0.002, 0.003], help="replay: lc's improvement criterion at these")
    ap.add_argument("--lc-eps", type=lambda v: [float(e) for e in v.split(",")], default=[0.05, 0.2, 0.5])
    ap.add_argument("--lc-prior", type=lambda v: [float(e) for e in v.split(",")],
                    default=[math.inf, 10.0], help="lc prior weights (inf: no learning)")
    ap.add_argument("--compare", default=None, help="speed: another netrace checkout to time too")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if args.part == "speed":
        part_speed(args)
    if args.part in ("extrap", "all"):
        part_extrap(args)
    if args.part in ("replay", "all"):
        part_replay(args)
    if args.part == "reliability":
        part_reliability(args)
    if args.part == "steps":
        part_steps(args)
    if args.part == "veto":
        part_veto(args)
    if args.part == "transfer":
        part_transfer(args)


if __name__ == "__main__":
    main()
