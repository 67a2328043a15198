"""The race on built-in S&P 500 volatility: rules compared at the same sampler seed and budget,
the race's throughput against the bare population engine, and 2 workers against 1.

    .venv/bin/python bench/race.py [--part rules|throughput|lccost|workers|ray|all] [--population 16]
                                   [--epochs 20] [--budget-factor 4] [--repeat 3]
                                   [--seeds 0 1 2] [--space narrow|default] [--k 256]
                                   [--lc-budget-factor 1] [--model mlp16|mlp64x2|gru16]

rules: for none, lc, median, hyperband (one worker, same sampler seed, same budget): the
network-epochs spent until the running best validation R² is within 1% of the `none` race's
final best, and each race's final best, and the wall seconds until then, then a summary over the
seeds; --space default races netrace's default space instead of the benchmark's small one.
throughput: a race of one K=256 population (rules of --rules, default none and lc) against the
same population trained bare by the engine, network-epochs per second measured in the same run
(--sampler: the races' sampler, default tpe; the rules part takes it too; --model: the networks,
default mlp16). workers: the same race with 2 workers against 1. ray (not in all): 2
workers as actors of a Ray head started on 127.0.0.1 against 2 local processes. lccost (not in
all): the throughput race's population over 30 epochs under none and under lc (what the
forecasts cost). Prints markdown tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import tempfile
import time

import numpy as np

SPACE = {
    "model": ["mlp", "gru"], "layers": 1, "width": [16, 32], "hidden_size": 16,
    "optimizer": ["adam", "adamw"], "lr": {"low": 3e-4, "high": 3e-2, "log": True},
    "weight_decay": {"low": 1e-6, "high": 1e-2, "log": True},
    "dropout": {"low": 0.0, "high": 0.3}, "batch_size": 128,
}


def rule_spec(spec: str) -> tuple[str, dict]:
    """``NAME`` or ``NAME:KEY=VALUE:KEY=VALUE`` (e.g. ``lc:epsilon=0.2``) -> (name, options)."""
    from netrace.replay import parse_options

    name, *pairs = spec.split(":")
    return name, parse_options(name, pairs)


def config(rule: str, population: int, epochs: int, budget: int, space: dict | None = None):
    from netrace.config import config_from_dict

    rule, options = rule_spec(rule)
    return config_from_dict({
        "data": {"source": "sp500"},
        "task": {"type": "regression", "target": "vol_next", "window": 10,
                 "features": ["log_return", "range", "volume_change", "rolling_vol_20"]},
        "split": {"scheme": "holdout", "test": 0.2},
        "race": {"rule": rule, "population": population, "max_epochs": epochs,
                 "budget": budget, "metric": "r2", **({rule: options} if options else {})},
        "search": {"sampler": "tpe", "seed": 0, "startup": 8, "space": space or SPACE},
    })


def race(cfg, folder: str, name: str, workers: int = 1, backend: str = "local"):
    tl, wall, _ = race_timed(cfg, folder, name, workers, backend)
    return tl, wall


def race_timed(cfg, folder: str, name: str, workers: int = 1, backend: str = "local"):
    """The race's timeline, its wall time, and the Unix time it started (the timeline's
    stamps are Unix times)."""
    from netrace.race import run_race
    from netrace.storage import Storage

    url = os.path.join(folder, f"{name}.db")
    started, t0 = time.time(), time.perf_counter()
    run_race(cfg, storage_url=url, study=name, workers=workers, seed=0, backend=backend)
    wall = time.perf_counter() - t0
    s = Storage(url)
    return s.timeline(s.get_study(name).id), wall, started


def config_seed(cfg, seed: int):
    return dataclasses.replace(cfg, search=dataclasses.replace(cfg.search, seed=seed))


def part_rules(a: argparse.Namespace, folder: str) -> None:
    budget = a.population * a.epochs * a.budget_factor
    chosen = a.rules or ["lc", "median", "hyperband"]
    rules = ("none", *[r for r in chosen if r != "none"])  # none: the reference
    table: dict[str, list] = {r: [] for r in rules}
    oracle: dict[int, tuple[int, int, int]] = {}
    for seed in a.seeds:
        results = {}
        for rule in rules:
            cfg = config_seed(config(rule, a.population, a.epochs, budget, _space(a)), seed)
            cfg = dataclasses.replace(cfg, search=dataclasses.replace(cfg.search,
                                                                      sampler=a.sampler))
            tag = re.sub(r"\W", "_", rule)
            tl, wall, started = race_timed(cfg, folder, f"rule_{tag}_{seed}")
            values = np.array([r[3] for r in tl])
            best = np.fmax.accumulate(np.where(np.isnan(values), -np.inf, values))
            results[rule] = (best, wall, tl, started)
            print(f"  seed {seed} {rule}: {len(values)} network-epochs, final best "
                  f"{best[-1]:.4f}, {wall:.0f} s", flush=True)
        ref = results["none"][0][-1]
        goal = ref - 0.01 * abs(ref)
        base = None
        for rule, (best, wall, tl, started) in results.items():
            hit = np.flatnonzero(best >= goal)
            reach = int(hit[0]) + 1 if hit.size else None
            base = reach if rule == "none" else base
            # wall seconds from the race's start to the epoch batch that got within 1%
            secs = tl[int(hit[0])][0] - started if hit.size else None
            table[rule].append((seed, reach, base, best[-1], wall, secs))
        oracle[seed] = _oracle(results["none"][2], goal, a.population)
    print(f"\nS&P 500 next-day volatility, validation R², population {a.population}, "
          f"max_epochs {a.epochs}, budget {budget} network-epochs, sampler {a.sampler}, 1 worker, "
          f"{a.space} space\n")
    print(f"| {a.sampler} seed | rule | network-epochs to within 1% of none's final best | vs none | "
          "seconds to within 1% | final best | wall (s) |")
    print("|---|---|---|---|---|---|---|")
    for seed in a.seeds:
        for rule in rules:
            _, reach, base, final, wall, secs = next(x for x in table[rule] if x[0] == seed)
            ratio = f"{base / reach:.2f}x fewer" if reach and base else "never"
            print(f"| {seed} | {rule} | {reach or 'never'} | {ratio} | "
                  f"{'never' if secs is None else f'{secs:.0f}'} | {final:.4f} | {wall:.0f} |")
    summary(table, budget)
    print("\nThe least any rule could spend on none's proposals (an oracle that stops every other "
          "network after its first epoch; a population's slots train side by side):\n")
    print(f"| {a.sampler} seed | network within 1% | at epoch | oracle (network-epochs) | "
          "none / oracle |")
    print("|---|---|---|---|---|")
    for seed in a.seeds:
        n, e, least = oracle[seed]
        base = next(x for x in table["none"] if x[0] == seed)[1]
        print(f"| {seed} | #{n} | {e} | {least} | {base / least:.2f}x |")


def summary(table: dict[str, list], budget: int) -> None:
    """Per rule over the seeds: how many reached 5x fewer network-epochs than none, the ratio
    of the totals (a race that never got within 1% counts the whole budget), the median ratio,
    on how many seeds it spent fewer than each other rule, and the mean final best."""
    rules = list(table)
    spent = {r: {x[0]: x[1] or budget for x in table[r]} for r in rules}
    seeds = sorted(spent["none"])
    print(f"\nOver {len(seeds)} seeds:\n")
    secs = {r: {x[0]: x[5] if x[5] is not None else x[4] for x in table[r]} for r in rules}
    print("| rule | seeds at >= 5x fewer | total none / total rule | median ratio | "
          + " | ".join(f"fewer than {o}" for o in rules if o != "none")
          + " | mean final best | total seconds none / rule |")
    print("|---" * (6 + len(rules) - 1) + "|")
    for r in rules:
        ratios = [spent["none"][s] / spent[r][s] for s in seeds]
        fewer = [f"{sum(spent[r][s] < spent[o][s] for s in seeds)}" if o != r else "-"
                 for o in rules if o != "none"]
        finals = np.mean([x[3] for x in table[r]])
        print(f"| {r} | {sum(q >= 5 for q in ratios)} | "
              f"{sum(spent['none'].values()) / sum(spent[r].values()):.2f}x | "
              f"{np.median(ratios):.2f}x | " + " | ".join(fewer) + f" | {finals:.4f} | "
              f"{sum(secs['none'].values()) / sum(secs[r].values()):.2f}x |")


def _space(a: argparse.Namespace) -> dict:
    """--space narrow: the benchmark's own small space; default: what netrace searches when a
    config names no space (four model families, four optimizers, wider ranges)."""
    from netrace.config import default_space

    return SPACE if a.space == "narrow" else default_space(time_series=True)


def _oracle(tl: list, goal: float, population: int) -> tuple[int, int, int]:
    """The least network-epochs a rule could spend on the same proposals, with the network
    that gets within 1% that way and at which epoch (1-based): the networks proposed before
    it need one epoch each, ``population`` at a time, and while it trains its
    ``population - 1`` neighbours do too."""
    def cost(number: int, epochs: int) -> int:
        return population * (number // population) + population * epochs

    # trial ids count from 1 in the order the networks were proposed
    hits = {(r[1] - 1, r[2] + 1) for r in tl if r[3] >= goal}
    number, epochs = min(hits, key=lambda h: (cost(*h), h))
    return number, epochs, cost(number, epochs)


#: --model of the throughput part: the networks of the race and of the bare engine
MODELS = {
    "mlp16": {"model": "mlp", "layers": 1, "width": 16},
    "mlp64x2": {"model": "mlp", "layers": 2, "width": 64},
    "gru16": {"model": "gru", "layers": 1, "hidden_size": 16},
}


def model_space(model: str = "mlp16") -> dict:
    """The search space of the races timed against each other or the bare engine: the networks
    of ``model``, Adam, a learning rate each, nothing else."""
    return {**MODELS[model], "optimizer": "adam",
            "lr": {"low": 3e-4, "high": 3e-2, "log": True}, "batch_size": 128}


def bare_engine(k: int, epochs: int, model: str = "mlp16") -> float:
    """Member-epochs per second of the bare engine on the race's own data and model."""
    import torch

    from netrace.data import prepare
    from netrace.race._build import (
        DataShape,
        member_spec,
        model_inputs,
        population_settings,
    )
    from netrace.train import Population

    cfg = config("none", k, epochs, k * epochs)
    d = prepare(cfg).dev.fold_data(0)
    shape = DataShape(d.X_train.shape[1], d.X_train.shape[2], "regression")
    params = {**MODELS[model], "optimizer": "adam", "batch_size": 128}
    settings = population_settings(params, shape)
    rng = np.random.default_rng(0)
    members = [member_spec({**params, "lr": float(10 ** rng.uniform(-3.5, -1.5))}, i, "adam",
                           epochs)
               for i in range(k)]
    torch.set_num_threads(len(os.sched_getaffinity(0)))  # as a lone race worker does
    pop = Population(settings.spec, members, optimizer="adam", batch_size=128, monitor="r2",
                     device="cpu")
    y = torch.as_tensor((d.y_train - d.y_train.mean()) / d.y_train.std(), dtype=torch.float32)
    yv = torch.as_tensor((d.y_valid - d.y_train.mean()) / d.y_train.std(), dtype=torch.float32)
    x = model_inputs(torch.as_tensor(d.X_train, dtype=torch.float32), settings)
    xv = model_inputs(torch.as_tensor(d.X_valid, dtype=torch.float32), settings)
    t0 = time.perf_counter()
    for _ in range(epochs):
        pop.step_epoch(x, y)
        pop.validate(xv, yv, baseline=torch.zeros_like(yv))
    return k * epochs / (time.perf_counter() - t0)


def _rate(tl: list) -> float:
    """Network-epochs per second from the first recorded epoch batch to the last but one (the
    last batch also writes every network's final checkpoint, which the bare engine does not)."""
    t = np.array([r[0] for r in tl])
    stamps = np.unique(t)
    if len(stamps) < 3:
        return float("nan")
    start, stop = stamps[0], stamps[-2]
    n = int(((t > start) & (t <= stop)).sum())
    return n / (stop - start)


def part_throughput(a: argparse.Namespace, folder: str) -> None:
    k, epochs = 256, 10
    space = model_space(a.model)  # the bare engine's networks
    rules = a.rules or ["none", "lc"]
    rows = []
    for r in range(a.repeat):
        rates = {}
        for rule in rules:
            tag = re.sub(r"\W", "_", rule)
            cfg = config(rule, k, epochs, k * epochs, space)
            cfg = dataclasses.replace(cfg, search=dataclasses.replace(cfg.search,
                                                                      sampler=a.sampler))
            tl, _ = race(cfg, folder, f"throughput_{tag}{r}")
            rates[rule] = _rate(tl)
        rows.append((bare_engine(k, epochs, a.model), rates))
    print(f"\nThroughput, one population of K={k} networks ({a.model}: {MODELS[a.model]}, "
          f"window 10 x 4, Adam, a learning rate each), {epochs} epochs, 1 worker with "
          f"{len(os.sched_getaffinity(0))} core(s), sampler {a.sampler}; the bare engine and "
          "the races alternate\n")
    print("| run | bare engine (network-epochs/s) | "
          + " | ".join(f"race, {r} (network-epochs/s) | {r} / bare" for r in rules) + " |")
    print("|---" * (2 + 2 * len(rules)) + "|")
    for n, (bare, rates) in enumerate(rows, 1):
        print(f"| {n} | {bare:.0f} | "
              + " | ".join(f"{rates[r]:.0f} | {rates[r] / bare:.0%}" for r in rules) + " |")


def part_lccost(a: argparse.Namespace, folder: str) -> None:
    """What the lc rule's forecasts cost in wall time: the same race (one population of --k
    MLPs, 30 epochs, budget --lc-budget-factor x k x 30 network-epochs) under none and lc,
    alternating."""
    k, epochs = a.k, 30
    space = model_space()
    rows = []
    for r in range(a.repeat):
        rates = {}
        for rule in ("none", "lc"):
            tl, wall = race(config(rule, k, epochs, a.lc_budget_factor * k * epochs, space), folder,
                            f"cost_{rule}{r}")
            rates[rule] = (_rate(tl), wall)
        rows.append(rates)
    print(f"\nThe lc rule's cost, one population of K={k} MLPs, {epochs} epochs, budget "
          f"{a.lc_budget_factor * k * epochs} network-epochs, 1 worker with both cores\n")
    print("| run | none (network-epochs/s) | lc (network-epochs/s) | lc / none | wall none / lc (s) |")
    print("|---|---|---|---|---|")
    for r, x in enumerate(rows, 1):
        print(f"| {r} | {x['none'][0]:.0f} | {x['lc'][0]:.0f} | {x['lc'][0] / x['none'][0]:.0%} | "
              f"{x['none'][1]:.1f} / {x['lc'][1]:.1f} |")


def part_workers(a: argparse.Namespace, folder: str) -> None:
    k, epochs = 64, 10
    space = model_space()
    rates = {}
    for n in (1, 2):
        tl, wall = race(config("none", k, epochs, 2 * k * epochs, space), folder, f"w{n}",
                        workers=n)
        rates[n] = _rate(tl)
    print(f"\nWorkers, populations of K={k} MLPs, {2 * k * epochs} network-epochs, rule none\n")
    print("| 1 worker (network-epochs/s) | 2 workers (network-epochs/s) | 2 / 1 |")
    print("|---|---|---|")
    print(f"| {rates[1]:.0f} | {rates[2]:.0f} | {rates[2] / rates[1]:.2f}x |")


def part_ray(a: argparse.Namespace, folder: str) -> None:
    """2 workers as Ray actors (a head started here on 127.0.0.1) against 2 local processes,
    alternating, same race as ``workers``."""
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from tests.servers import RAY_ENV, RayHead

    os.environ.update(RAY_ENV)
    head = RayHead(cpus=2)
    os.environ["RAY_ADDRESS"] = head.address
    k, epochs = 64, 10
    space = model_space()
    rows = []
    try:
        for r in range(a.repeat):
            rates = {}
            for backend in ("local", "ray"):
                tl, wall = race(config("none", k, epochs, 10 * k * epochs, space), folder,
                                f"{backend}{r}", workers=2, backend=backend)
                rates[backend] = (_rate(tl), wall)
            rows.append(rates)
            print(f"  run {r + 1}: local {rates['local'][0]:.0f}, ray {rates['ray'][0]:.0f} "
                  "network-epochs/s", flush=True)
    finally:
        head.stop()
    print(f"\nRay actors vs local processes, 2 workers, K={k} MLPs, {10 * k * epochs} "
          "network-epochs, rule none\n")
    print("| run | local (network-epochs/s) | Ray (network-epochs/s) | Ray / local | "
          "wall local / Ray (s) |")
    print("|---|---|---|---|---|")
    for r, x in enumerate(rows, 1):
        print(f"| {r} | {x['local'][0]:.0f} | {x['ray'][0]:.0f} | "
              f"{x['ray'][0] / x['local'][0]:.0%} | {x['local'][1]:.1f} / {x['ray'][1]:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", default="all",
                    choices=["rules", "throughput", "lccost", "workers", "ray", "all"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--population", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--budget-factor", type=int, default=4)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--space", choices=("narrow", "default"), default="narrow",
                    help="rules: the benchmark's small space, or netrace's default space")
    ap.add_argument("--rules", nargs="+", default=None,
                    help="rules: which to race against none (default lc median hyperband); "
                         "throughput: which rules' races to time (default none lc); a rule's "
                         "options as NAME:KEY=VALUE[:KEY=VALUE], e.g. lc:epsilon=0.2")
    ap.add_argument("--k", type=int, default=256, help="lccost: population size")
    ap.add_argument("--sampler", choices=("tpe", "random", "gp"), default="tpe",
                    help="the races' sampler (rules, throughput)")
    ap.add_argument("--model", choices=sorted(MODELS), default="mlp16",
                    help="throughput: the networks raced and trained bare (default mlp16, "
                         "the cheapest; gru16 costs ~30x more per network-epoch)")
    ap.add_argument("--lc-budget-factor", type=int, default=1,
                    help="lccost: budget in populations x epochs")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        if a.part in ("rules", "all"):
            part_rules(a, folder)
        if a.part in ("throughput", "all"):
            part_throughput(a, folder)
        if a.part in ("workers", "all"):
            part_workers(a, folder)
        if a.part == "ray":
            part_ray(a, folder)
        if a.part == "lccost":
            part_lccost(a, folder)


if __name__ == "__main__":
    main()
