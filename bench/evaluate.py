"""The verdict (issue 21): race each example config, then judge its finalists once on the sealed
test part against the classical baselines, and time the final stage against the race.

    .venv/bin/python bench/evaluate.py [--configs examples/sp500_vol.toml ...] [--budget N]
                                       [--workers 2] [--seed 0] [--out DIR] [--json FILE]
    .venv/bin/python bench/evaluate.py --refit-probe [--threads 2 1]

For every config (default: examples/sp500_vol.toml, examples/nasdaq_vol.toml,
examples/sp500_direction.toml): a race into a fresh SQLite study (``run_race``, progress
quiet), timed, then ``evaluate_study`` on it, timed. ``--budget`` overrides ``[race] budget``
for every config; without it each config races its own budget, and a config that sets none
(sp500_direction, whose default would be 25,600 network-epochs) races 2,400, said in the
output. ``--seed`` is the seed of the workers' random streams (``netrace run --seed``); the
sampler's seed stays the config's. ``--out``: where the study databases go (default a temporary
directory, removed at the end; the folder must not already hold a study of the same name).

Printed per task, as markdown: one row per model (netrace's candidates first, then the
baselines) with its test metrics and the Diebold-Mariano p-value of each loss against
netrace's forecast (``[evaluate] forecast``, ``blend`` by default; every candidate is shown,
none is chosen on these figures); the SPA p-values, the verdict, the blend's weights and its
nested validation losses, the greedy weights, the finalists; the wall seconds of the race and of the evaluation (and its refit), and their
ratio. ``--json FILE`` writes all of it. With 2 workers the race is not deterministic.

``--refit-probe`` races nothing and opens no test part: it times the final stage's refit alone
(``netrace.evaluate._refit.refit``) of 10 CNNs drawn from sp500_vol's space, refit for 3-21
epochs (the epochs of the S&P 500 volatility finalists in BENCHMARKS.md), on that config's whole
development part, once per torch thread count of ``--threads``: what the refit costs with and
without other work on the cores (start that work yourself, e.g. ``python3 -c "while True:
pass" &`` twice, and kill it by its pid afterwards).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ["examples/sp500_vol.toml", "examples/nasdaq_vol.toml", "examples/sp500_direction.toml"]
#: the budget of a config that sets none (its default, 64 x 20 x 20 = 25,600, is ~10x the others)
FALLBACK_BUDGET = 2400

#: metric columns by task kind, then the losses whose DM p-values are shown
VOL_METRICS = ["mse", "mae", "qlike", "r2", "coverage"]
VOL_LOSSES = ["mse", "mae", "qlike"]
REG_METRICS = ["mse", "mae", "r2", "coverage"]
REG_LOSSES = ["mse", "mae"]
CLS_METRICS = ["accuracy", "auc", "log_loss", "hit_rate", "pt_pvalue"]
CLS_LOSSES = ["log_loss"]


def _fmt(x: Any, digits: str = ".4g") -> str:
    if x is None:
        return "–"
    return format(x, digits)


def _p(x: Any) -> str:
    return _fmt(x, ".3f")


def columns(result: dict[str, Any]) -> tuple[list[str], list[str]]:
    if result["task"] != "regression":
        return CLS_METRICS, CLS_LOSSES
    if result["baselines"]["kind"] == "volatility":
        return VOL_METRICS, VOL_LOSSES
    return REG_METRICS, REG_LOSSES


def model_table(result: dict[str, Any]) -> list[str]:
    metrics, losses = columns(result)
    chosen = result["forecast"]
    head = ["model", "kind", *metrics, *(f"DM p {n}" for n in losses)]
    out = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for m in result["models"]:  # the result lists netrace's candidates first
        name = f"**{m['name']}** (forecast)" if m["name"] == chosen else m["name"]
        vals = [_p(m["metrics"].get(n)) if n in ("coverage", "pt_pvalue")
                else _fmt(m["metrics"].get(n)) for n in metrics]
        ps = ["–" if m["name"] == chosen else _p(m["dm_pvalue"].get(n)) for n in losses]
        out.append("| " + " | ".join([name, m["kind"], *vals, *ps]) + " |")
    return out


def task_lines(run: dict[str, Any]) -> list[str]:
    r = run["result"]
    t = r["test"]
    out = [f"### {run['config']}", "",
           f"{r['task']} of {r['target']}; race: {run['budget']} network-epochs budget"
           + (f" ({run['budget_note']})" if run["budget_note"] else "")
           + f", {r['race']['epochs_spent']} spent, {run['workers']} workers, "
           f"{run['networks']} networks; validation metric {r['race']['metric']}; "
           f"test part {t['first']} .. {t['last']} ({t['n']} points), opened "
           f"{r['openings']} time(s); baselines refit every {r['baselines']['refit_every']} "
           "points", ""]
    out += model_table(r)
    out += ["", "DM p: Diebold-Mariano (Newey-West variance, Harvey-corrected, two-sided) of "
            f"each model against netrace's forecast ({r['forecast']})"
            + ("; coverage: share of test points inside the candidate's "
               f"{r['interval']['coverage']:.0%} interval (validation residual quantiles)"
               if r.get("interval") else "") + ".", ""]
    spa = "; ".join(f"{loss}: p = {_p(v['pvalue'])} against {v['benchmark']}"
                    for loss, v in r["spa"].items())
    out += [f"SPA (any finalist or candidate beats the best baseline): {spa}.", "",
            f"Verdict: {r['verdict']}", ""]
    for one in r.get("series", []):  # a panel: every series on its own
        out += [f"Series {one['series']} ({one['n']} points):", ""] + model_table(
            {**one, "task": r["task"], "baselines": r["baselines"]}) + [
            "", f"Verdict ({one['series']}): {one['verdict']}", ""]
    v = r["validation"]
    out.append(f"Validation ({v['metric']} of the out-of-fold forecasts, {v['samples']} "
               "samples; what the candidates were weighed on): "
               + ", ".join(f"{n} {_fmt(v.get(n))}" for n in ("best", "top_k", "greedy")) + ".")
    b = r.get("blend")
    if b:
        how = "nested" if b["nested"] else f"not nested ({b['why_not']})"
        out += ["", f"Blend weights ({how}, greedy on {b['loss']} over {b['samples']} "
                "validation samples of folds " + ", ".join(map(str, b["folds"])) + "): "
                + ", ".join(f"{n} {_fmt(x, '.2f')}" for n, x in b["weights"].items() if x)
                + "."]
        for lname in ("mse", "qlike", "log_loss"):
            if lname in b:
                out.append(f"Nested validation {lname}: " + ", ".join(
                    f"{n} {_fmt(x)}" for n, x in b[lname].items()) + ".")
    w = r["weights"]["greedy"]
    out += ["", "Greedy weights (finalists in validation order): "
            + ", ".join(_fmt(x, ".2f") for x in w) + ".", ""]
    out += ["| finalist | trial | model | validation " + r["race"]["metric"]
            + " (race) | rescored | refit epochs |", "|---|---|---|---|---|---|"]
    for i, f in enumerate(r["finalists"], 1):
        out.append(f"| {i} | {f['trial']} | {f['model']} | {_fmt(f['validation'])} | "
                   f"{_fmt(f['rescored'])} | {f['epochs']} |")
    s = run["seconds"]
    out += ["", "| race (s) | evaluation (s) | of which refit (s) | evaluation / race |",
            "|---|---|---|---|",
            f"| {s['race']:.1f} | {s['evaluate']:.1f} | {r['seconds']['refit']:.1f} | "
            f"{s['evaluate'] / s['race']:.1%} |", "",
            f"Of the evaluation, the nested validation's retraining: "
            f"{r['seconds'].get('nested', 0):.1f} s.", ""]
    return out


PANEL_CSV = ROOT / "bench" / "configs" / "sp500_nasdaq.csv"


def write_builtin_panel() -> None:
    """The two built-in series as one long file (``ticker`` SP500 / NASDAQ), as a user's
    panel of tickers would come: what bench/configs/panel_vol.toml races on."""
    import pandas as pd

    from netrace.data import load_source

    parts = [load_source(name).assign(ticker=name.upper()) for name in ("sp500", "nasdaq")]
    pd.concat(parts).to_csv(PANEL_CSV, index=False)


def run_one(path: str, a: argparse.Namespace, folder: str) -> dict[str, Any]:
    from netrace.config import load_config

    if "panel" in Path(path).stem and not PANEL_CSV.exists():
        write_builtin_panel()
    from netrace.evaluate import evaluate_study
    from netrace.race import run_race
    from netrace.race._progress import Progress
    from netrace.race._worker import budget_of

    cfg = load_config(ROOT / path if not os.path.isabs(path) else path)
    note = ""
    budget = a.budget
    if budget is None and cfg.race.budget is None:
        budget = FALLBACK_BUDGET
        note = (f"the config sets none; {FALLBACK_BUDGET} here instead of netrace's default "
                f"{budget_of(cfg)}")
    elif a.budget is not None and cfg.race.budget != a.budget:
        own = cfg.race.budget if cfg.race.budget is not None else f"none, so {budget_of(cfg)}"
        note = f"--budget; the config's own: {own}"
    if budget is not None:
        cfg = dataclasses.replace(cfg, race=dataclasses.replace(cfg.race, budget=budget))
    budget = cfg.race.budget
    study = Path(path).stem
    url = os.path.join(folder, f"{study}.db")
    if os.path.exists(url):
        raise SystemExit(f"{url} exists already; give an empty --out folder (a study there "
                         "would be resumed, and its test part may have been opened)")
    print(f"[{study}] racing, budget {budget} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    snap = run_race(cfg, storage_url=url, study=study, workers=a.workers, seed=a.seed,
                    progress=Progress("quiet", out=sys.stderr))
    race_s = time.perf_counter() - t0
    print(f"[{study}] race {race_s:.1f} s; evaluating ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    result = evaluate_study(url, study,
                            log=lambda m: print(f"[{study}]   {m}", file=sys.stderr, flush=True))
    eval_s = time.perf_counter() - t0
    print(f"[{study}] evaluation {eval_s:.1f} s", file=sys.stderr, flush=True)
    networks = snap.complete + snap.stopped + snap.diverged + snap.failed + snap.ended_with_race
    return {"config": path, "study": study, "storage": url, "budget": budget,
            "budget_note": note, "workers": a.workers, "seed": a.seed, "networks": networks,
            "race": dataclasses.asdict(snap),
            "seconds": {"race": round(race_s, 2), "evaluate": round(eval_s, 2),
                        "ratio": round(eval_s / race_s, 4)},
            "result": result}


PROBE_EPOCHS = [9, 17, 8, 6, 11, 15, 3, 12, 7, 21]


def refit_probe(threads: list[int]) -> None:
    import numpy as np
    import torch

    from netrace.config import load_config
    from netrace.data import prepare
    from netrace.evaluate._refit import RefitJob, refit
    from netrace.race._build import DataShape, population_settings

    dev = prepare(load_config(ROOT / CONFIGS[0])).dev  # the development part only
    everything = np.arange(dev.n)
    X = dev.windows(everything, dev.fit_preprocessor(everything))
    y = (dev.y - dev.y.mean()) / dev.y.std()
    shape = DataShape(X.shape[1], X.shape[2], "regression", 0)
    rng = np.random.default_rng(0)
    jobs = []
    for i, epochs in enumerate(PROBE_EPOCHS):
        p = {"model": "cnn", "layers": 1, "width": int(rng.choice([16, 32])), "channels": 8,
             "kernel_size": 3, "optimizer": str(rng.choice(["adam", "adamw"])),
             "lr": float(10 ** rng.uniform(np.log10(3e-4), np.log10(3e-2))),
             "weight_decay": float(10 ** rng.uniform(-6, -2)),
             "dropout": float(rng.uniform(0, 0.3)), "batch_size": 128}
        jobs.append(RefitJob(population_settings(p, shape), p, 1000 + i, epochs))
    print(f"\nRefit alone: 10 CNNs ({len({j.settings for j in jobs})} populations), "
          f"{sum(PROBE_EPOCHS)} network-epochs, {dev.n} development samples\n")
    print("| torch threads | refit (s) |")
    print("|---|---|")
    for n in threads:
        torch.set_num_threads(n)
        t0 = time.perf_counter()
        refit(jobs, X, y, task="regression", monitor="loss", seed=0, device="cpu")
        print(f"| {n} | {time.perf_counter() - t0:.1f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", nargs="+", default=CONFIGS)
    ap.add_argument("--budget", type=int, default=None,
                    help="network-epochs for every race (default: each config's own; "
                         f"{FALLBACK_BUDGET} for a config that sets none)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="seed of the workers' random streams")
    ap.add_argument("--out", default=None, help="folder for the study databases (default: a "
                    "temporary one, removed at the end)")
    ap.add_argument("--json", default=None, help="write everything to this file as JSON")
    ap.add_argument("--refit-probe", action="store_true",
                    help="only time the refit of 10 CNNs at each --threads (no race, no test)")
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    a = ap.parse_args()
    if a.refit_probe:
        refit_probe(a.threads)
        return
    import torch

    machine = (f"{platform.python_implementation()} {platform.python_version()}, torch "
               f"{torch.__version__}, {len(os.sched_getaffinity(0))} cores, OMP_NUM_THREADS="
               f"{os.environ.get('OMP_NUM_THREADS', 'unset')}")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = a.out or tmp
        os.makedirs(folder, exist_ok=True)
        for path in a.configs:
            run = run_one(path, a, folder)
            runs.append(run)
            print("\n".join(task_lines(run)), flush=True)
    print("| task | race (s) | evaluation (s) | refit (s) | evaluation / race |")
    print("|---|---|---|---|---|")
    for run in runs:
        s = run["seconds"]
        print(f"| {run['study']} | {s['race']:.1f} | {s['evaluate']:.1f} | "
              f"{run['result']['seconds']['refit']:.1f} | {s['ratio']:.1%} |")
    print(f"\n{machine}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": machine, "argv": sys.argv[1:], "runs": runs}, f, indent=1,
                      default=str)


if __name__ == "__main__":
    main()
