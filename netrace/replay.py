"""``netrace replay CURVES.csv --rule RULE``: how much compute a stopping rule saves.

Loads recorded curves (columns curve_id, workload, goal (max|min), step, value; extra columns
allowed; .csv or .csv.gz), maps each workload's values to the normalized score of
``../shared/data/learning-curves/README.md`` (y' = (s*y - lo) / (hi - lo), s = +1 for max and
-1 for min, lo/hi the 1st/99th percentiles of s*y over the workload, clipped to [-0.5, 1.5]),
keeps curves with at least ``--min-points`` points, and replays the rule per workload
(``netrace.curves._replay``): mean over ``--orders`` arrival orders; then the median over
workloads and the worst workload.

    python -m netrace.replay curves.csv.gz --rule lc --workers 4 --seed 0 --json out.json
    python -m netrace.replay curves.csv.gz --rule median --option percentile=25

``--option KEY=VALUE`` sets one of the rule's options (the keys of ``[race.<rule>]`` in a
config); VALUE is read as a TOML value (``0.1``, ``inf``, ``[3, 9, 27]``, ``true``), or else
taken as a word (``method=sampler``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tomllib
from pathlib import Path

import numpy as np

from netrace.curves import RULES, make_rule, rule_options
from netrace.curves._replay import replay_many
from netrace.errors import UserError

__all__ = ["load_curves", "main", "parse_options", "run", "save_curves"]

REQUIRED = ("curve_id", "workload", "goal", "step", "value")


def save_curves(path: str | Path, workload: str, goal: str,
                curves: dict[str, np.ndarray], extra: dict[str, dict] | None = None) -> int:
    """Write ``curves`` (curve id -> values after each evaluation) of one workload as a
    recorded-curves CSV (``.gz``: compressed), which :func:`load_curves` and ``netrace
    replay`` read; ``extra[curve id]`` adds columns (for example the hyperparameters). Returns
    the number of rows."""
    import pandas as pd

    if goal not in ("max", "min"):
        raise ValueError(f"goal must be 'max' or 'min', got {goal!r}")
    extra = extra or {}
    rows = [{"curve_id": cid, "workload": workload, "goal": goal, "step": step, "value": v,
             **extra.get(cid, {})}
            for cid, ys in curves.items() for step, v in enumerate(ys, start=1)]
    columns = [*REQUIRED, *sorted({k for e in extra.values() for k in e})]
    pd.DataFrame(rows, columns=columns).to_csv(path, index=False)
    return len(rows)


def load_curves(path: str | Path, min_points: int = 20) -> dict[str, list[np.ndarray]]:
    """Per workload, the normalized curves (higher is better) of a recorded-curves CSV."""
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise UserError(f"curves file '{path}' not found: pass the path of a CSV (.csv or .csv.gz) "
                        f"with columns {', '.join(REQUIRED)}.")
    try:
        d = pd.read_csv(p)
    except Exception as exc:  # pandas raises many types for unreadable files
        raise UserError(f"could not read '{path}' as CSV ({exc}); pass a .csv or .csv.gz file.") from exc
    missing = [c for c in REQUIRED if c not in d.columns]
    if missing:
        raise UserError(f"'{path}' lacks column(s) {', '.join(missing)}; required: {', '.join(REQUIRED)} "
                        f"(extra columns are allowed); found: {', '.join(map(str, d.columns))}.")
    bad = sorted(set(d["goal"].astype(str)) - {"max", "min"})
    if bad:
        raise UserError(f"column 'goal' must hold 'max' or 'min'; got {', '.join(repr(b) for b in bad[:5])}. "
                        "Write max when higher values are better, min when lower are.")
    for col in ("step", "value"):
        if not np.issubdtype(d[col].dtype, np.number):
            raise UserError(f"column '{col}' must be numeric; got values like {d[col].iloc[0]!r}.")
    d = d.dropna(subset=["value"])
    d["sy"] = np.where(d["goal"] == "max", d["value"], -d["value"])
    q = d.groupby("workload")["sy"].quantile([0.01, 0.99]).unstack()
    d = d.join(q, on="workload")
    span = (d[0.99] - d[0.01]).where(lambda s: s > 0, 1.0)
    d["y"] = ((d["sy"] - d[0.01]) / span).clip(-0.5, 1.5)
    out: dict[str, list[np.ndarray]] = {}
    for (_, workload), c in d.sort_values(["curve_id", "step"]).groupby(["curve_id", "workload"], sort=True):
        if len(c) >= min_points:
            out.setdefault(str(workload), []).append(c["y"].to_numpy())
    if not out:
        raise UserError(f"no curve in '{path}' has at least {min_points} points; "
                        "lower --min-points or record longer curves.")
    return dict(sorted(out.items()))


def parse_options(rule: str, pairs: list[str]) -> dict:
    """``--option KEY=VALUE`` pairs as the options of ``rule`` (checked by the rule).

    >>> parse_options("hyperband", ["keep=0.5", "rungs=[2, 6, 18]"])
    {'keep': 0.5, 'rungs': (2, 6, 18)}
    """
    given: dict = {}
    for pair in pairs:
        key, sep, text = (part.strip() for part in pair.partition("="))
        if not sep or not key:
            raise UserError(f"--option takes KEY=VALUE, e.g. --option epsilon=0.1; got {pair!r}.")
        if key in given:
            raise UserError(f"--option {key} is given twice; give each option once.")
        try:
            given[key] = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            given[key] = text  # a bare word
    return rule_options(rule, given)


def run(curves: dict[str, list[np.ndarray]], rule_name: str, *, workers: int = 4, seed: int = 0,
        orders: int = 5, options: dict | None = None) -> dict:
    """Replay ``rule_name`` (with ``options``) on every workload; returns the figures as a
    JSON-ready dict."""
    options = dict(options or {})
    rule = make_rule(rule_name, **options)
    rows = []
    for workload, ys in curves.items():
        res = replay_many(ys, rule, workers=workers, seed=seed, orders=orders)
        rows.append({
            "workload": workload,
            "curves": len(ys),
            "steps_all": res[0].total,
            "steps": float(np.mean([r.cost for r in res])),
            "speedup": float(np.mean([r.speedup for r in res])),
            "regret": float(np.mean([r.regret for r in res])),
        })
    worst = max(rows, key=lambda r: r["regret"])
    return {
        # strict JSON: an infinite option (prior_weight = inf) as the string TOML reads back
        "rule": rule_name, "workers": workers, "seed": seed, "orders": orders,
        "options": {k: str(v) if isinstance(v, float) and not math.isfinite(v) else v
                    for k, v in options.items()},
        "workloads": rows,
        "median_speedup": float(np.median([r["speedup"] for r in rows])),
        "median_regret": float(np.median([r["regret"] for r in rows])),
        "worst_regret": worst["regret"], "worst_workload": worst["workload"],
    }


def format_report(result: dict) -> str:
    """The replay figures as a markdown table."""
    opts = ", ".join(f"{k}={v}" for k, v in result.get("options", {}).items())
    lines = [(f"rule {result['rule']}{f' ({opts})' if opts else ''}, {result['workers']} workers, "
              f"{result['orders']} arrival orders "
              f"(seed {result['seed']}); regret in units of the workload's score range"),
             "", "| workload | curves | steps (all) | steps | speedup | regret |", "|---|---|---|---|---|---|"]
    for r in result["workloads"]:
        lines.append(f"| {r['workload']} | {r['curves']} | {r['steps_all']} | {r['steps']:.0f} | "
                     f"{r['speedup']:.2f} | {r['regret']:.4f} |")
    lines.append(f"| **median** | | | | {result['median_speedup']:.2f} | {result['median_regret']:.4f} |")
    lines.append(f"| **worst** ({result['worst_workload']}) | | | | | {result['worst_regret']:.4f} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Entry point of ``netrace replay``; returns the exit status (bad input raises UserError)."""
    ap = argparse.ArgumentParser(prog="netrace replay", description=__doc__.splitlines()[0])
    ap.add_argument("curves", help="CSV (.csv or .csv.gz): curve_id, workload, goal, step, value")
    ap.add_argument("--rule", required=True, help=f"one of: {', '.join(RULES)}")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--orders", type=int, default=5, help="arrival orders to average over")
    ap.add_argument("--min-points", type=int, default=20)
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="one of the rule's options, e.g. epsilon=0.1 (repeatable): "
                         + "; ".join(f"{n}: {', '.join(RULES[n].options)}"
                                     for n in RULES if RULES[n].options))
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    options = parse_options(args.rule, args.option)  # an unknown rule: the message naming them
    if args.workers < 1 or args.orders < 1:
        raise UserError(f"--workers and --orders must be at least 1; got {args.workers} and {args.orders}.")
    result = run(load_curves(args.curves, args.min_points), args.rule, workers=args.workers,
                 seed=args.seed, orders=args.orders, options=options)
    print(format_report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except UserError as err:
        print(f"netrace replay: {err}", file=sys.stderr)
        sys.exit(2)
