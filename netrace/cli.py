"""The ``netrace`` command: a thin table of subcommands that parse, call and print.

Exit status: 0 on success, 2 on a user error (one message on stderr, no traceback), 1 on an
internal failure.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from netrace import __version__
from netrace.errors import UserError

__all__ = ["main"]


def _data_inspect(args: argparse.Namespace) -> int:
    from netrace.config import load_config
    from netrace.data import plan_text, prepare, summary_text

    prepared = prepare(load_config(args.config))
    _warn(prepared.warnings)
    print(summary_text(prepared))
    print()
    print(plan_text(prepared))
    return 0


def _warn(warnings: Sequence[str]) -> None:
    for w in warnings:
        print(f"netrace: warning: {w}", file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from netrace.config import load_config
    from netrace.race import Progress, run_race

    if args.workers is not None and args.workers < 1:  # before any storage is touched
        raise UserError(f"--workers must be at least 1 (worker processes to start); got "
                        f"{args.workers}; leave it out for one per core")
    config = load_config(args.config)
    storage = args.storage or config.race.storage or "netrace.db"
    study = args.study or Path(args.config).stem
    mode = "json" if args.json else "quiet" if args.quiet else "live"
    final = run_race(config, storage_url=storage, study=study, workers=args.workers,
                     backend=args.backend, seed=args.seed, progress=Progress(mode),
                     warn=lambda w: _warn([w]))
    if final.state != "done":  # stopped by Ctrl-C: resumable
        print(f"netrace: study '{study}' stopped before the end; run the same command to "
              "resume it", file=sys.stderr)
        return 130
    return 0


def _status(args: argparse.Namespace) -> int:
    from netrace.race import snapshot, summary_lines, top_lines, top_rows
    from netrace.storage import Storage

    if args.top < 0:
        raise UserError(f"--top must be 0 or more (networks to list; 0: none); got {args.top}")
    storage = Storage(args.storage, create=False)  # a mistyped path must not make a new file
    names = storage.study_names()
    name = args.study
    if name is None:
        if len(names) != 1:
            raise UserError(f"{args.storage} holds {len(names)} studies"
                            + (f" ({', '.join(names)})" if names else "")
                            + "; name one: netrace status STUDY")
        name = names[0]
    snap = snapshot(storage, name)
    if args.curves:
        _save_curves(storage, name, args.curves)
    if args.json:
        import json
        from dataclasses import asdict

        print(json.dumps({**asdict(snap), "top": top_rows(storage, name, args.top)}))
    else:
        print("\n".join(summary_lines(snap)))
        if args.top:
            print()
            print("\n".join(top_lines(storage, name, args.top)))
    return 0


def _save_curves(storage, name: str, path: str) -> None:  # noqa: ANN001
    """The validation curves of the study's networks that ran to their end, for replay."""
    import json

    from netrace.replay import save_curves
    from netrace.storage import TrialState

    study = storage.get_study(name)
    trials = {t.id: t for t in storage.trials(study.id, [TrialState.COMPLETE])}
    curves = {f"{name}/{trials[i].number}": ys
              for i, ys in storage.curves(study.id, [TrialState.COMPLETE]).items()}
    extra = {f"{name}/{t.number}": {"hparams": json.dumps(t.params, sort_keys=True)}
             for t in trials.values()}
    try:
        save_curves(path, name, "max" if study.direction == "maximize" else "min", curves, extra)
    except OSError as err:
        raise UserError(f"could not write the curves to '{path}' ({err.strerror or err}); give "
                        "a path in a folder that exists and that you can write to") from None
    print(f"wrote {len(curves)} curves (the networks that ran to their end) to {path}; "
          f"replay rules on them: netrace replay {path} --rule median --min-points 5",
          file=sys.stderr)


def _evaluate(args: argparse.Namespace) -> int:
    import json

    from netrace.evaluate import evaluate_study, result_lines

    log = None if args.json else (lambda m: print(m, file=sys.stderr))
    result = evaluate_study(args.storage, args.study, again=args.again, log=log)
    if args.json:
        print(json.dumps(result))
    else:
        print("\n".join(result_lines(result)))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from pathlib import Path

    import pandas as pd

    from netrace.data import read_table
    from netrace.evaluate import load_model

    model = load_model(args.storage, args.study)
    series = (model.config.get("data") or {}).get("series")
    frame = read_table(Path(args.data), text=(series,) if series else ())
    out = model.predict(frame)
    for line in out.attrs.get("warnings", []):
        print(f"netrace: warning: {line}", file=sys.stderr)
    try:
        out.to_csv(args.out, index=False)
    except OSError as err:
        raise UserError(f"could not write the forecasts to '{args.out}' ({err.strerror or err}); "
                        "give a path in a folder that exists and that you can write to") from None
    def when(t: object) -> object:
        return t.date() if isinstance(t, pd.Timestamp) and t == t.normalize() else t

    def shown(v: object) -> object:
        return f"{v:.6g}" if isinstance(v, float) else v

    if series and series in out.columns:  # a panel: each series' last forecast
        lasts = out.groupby(series, sort=False).tail(1)
        parts = [f"{name} from {when(t)}: {shown(v)}" for name, t, v in
                 zip(lasts[series], lasts["time"], lasts["forecast"], strict=True)]
        more = f", and {len(parts) - 5} more series" if len(parts) > 5 else ""
        print(f"wrote {len(out)} forecasts to {args.out}; each series' last (for its next "
              f"period): {'; '.join(parts[:5])}{more}", file=sys.stderr)
        return 0
    print(f"wrote {len(out)} forecasts to {args.out}; the last, from "
          f"{when(out['time'].iloc[-1])} (for the next period): "
          f"{shown(out['forecast'].iloc[-1])}", file=sys.stderr)
    return 0


def _report(args: argparse.Namespace) -> int:
    from netrace.report import report_study

    if args.top < 1:
        raise UserError(f"--top must be at least 1 (networks in the leaderboard); got {args.top}")
    out = args.out or f"{args.study}_report.html"
    report = report_study(args.storage, args.study, out, top=args.top,
                          log=lambda m: print(m, file=sys.stderr))
    print(f"wrote the report of '{args.study}' to {out} ({len(report.figures)} figures"
          + ("" if report.evaluated else "; not evaluated yet: netrace evaluate "
             f"{args.study} adds the verdict") + "); open it in a browser, no network needed",
          file=sys.stderr)
    return 0


def _replay(args: argparse.Namespace) -> int:
    from netrace.replay import main as replay_main

    return replay_main(args.rest)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a UserError (one line, exit 2) like every other."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{message} (see '{self.prog} --help')")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="netrace", description="Race many neural networks on small, noisy data "
                "and keep the ones that generalize.")
    p.add_argument("--version", action="version", version=f"netrace {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    data = sub.add_parser("data", help="look at the data a config describes")
    data_sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND",
                                   parser_class=_Parser)
    data_sub.required = True
    inspect = data_sub.add_parser("inspect", help="print the data summary and the split plan")
    inspect.add_argument("config", metavar="CONFIG", help="a TOML config file")
    inspect.set_defaults(func=_data_inspect)

    run = sub.add_parser("run", help="race networks on the data of a config")
    run.add_argument("config", metavar="CONFIG", help="a TOML config file")
    run.add_argument("--storage", help="a SQLite file or postgresql:// URL "
                     "(default: [race] storage, else netrace.db)")
    run.add_argument("--study", help="study name (default: the config file's name); an "
                     "existing study is resumed")
    run.add_argument("--workers", type=int, help="worker processes (default: one per core)")
    run.add_argument("--backend", default="local", choices=["local", "ray"])
    run.add_argument("--seed", type=int, default=0, help="seed of the workers' random streams")
    out = run.add_mutually_exclusive_group()
    out.add_argument("--quiet", action="store_true", help="print the final summary only")
    out.add_argument("--json", action="store_true", help="progress as JSON lines")
    run.set_defaults(func=_run)

    status = sub.add_parser("status", help="summarize a study: networks, best score, budget")
    status.add_argument("study", metavar="STUDY", nargs="?", help="study name (optional when "
                        "the storage holds one)")
    status.add_argument("--storage", default="netrace.db", help="a SQLite file or "
                        "postgresql:// URL (default: netrace.db)")
    status.add_argument("--json", action="store_true", help="as one JSON object")
    status.add_argument("--top", type=int, default=10, metavar="N",
                        help="also list the N best networks (default 10; 0: none)")
    status.add_argument("--curves", metavar="FILE.csv", help="also write the validation "
                        "curves of the networks that ran to their end as a recorded-curves CSV "
                        "(.csv.gz: compressed), to replay rules on: netrace replay FILE.csv")
    status.set_defaults(func=_status)

    evaluate = sub.add_parser("evaluate", help="the verdict: refit the finalists, open the "
                              "test part once, compare with the baselines")
    evaluate.add_argument("study", metavar="STUDY", help="study name")
    evaluate.add_argument("--storage", default="netrace.db", help="a SQLite file or "
                          "postgresql:// URL (default: netrace.db)")
    evaluate.add_argument("--json", action="store_true", help="the result as one JSON object")
    evaluate.add_argument("--again", action="store_true", help="evaluate anew, opening the test "
                          "part once more (counted and shown), e.g. after more racing")
    evaluate.set_defaults(func=_evaluate)

    predict = sub.add_parser("predict", help="forecast with an evaluated study's final model")
    predict.add_argument("study", metavar="STUDY", help="study name")
    predict.add_argument("--data", required=True, metavar="FILE", help="a CSV or Parquet file "
                         "with the columns the study was raced on (the target may be absent)")
    predict.add_argument("--out", required=True, metavar="PRED.csv", help="where to write the "
                         "forecasts: time, forecast, lower, upper, spread")
    predict.add_argument("--storage", default="netrace.db", help="a SQLite file or "
                         "postgresql:// URL (default: netrace.db)")
    predict.set_defaults(func=_predict)

    report = sub.add_parser("report", help="write a study's report: one self-contained HTML "
                            "file (verdict, forecasts, leaderboard, curves, timeline, "
                            "importance, data)")
    report.add_argument("study", metavar="STUDY", help="study name")
    report.add_argument("--storage", default="netrace.db", help="a SQLite file or "
                        "postgresql:// URL (default: netrace.db)")
    report.add_argument("--out", metavar="REPORT.html", help="where to write it (default: "
                        "STUDY_report.html)")
    report.add_argument("--top", type=int, default=20, metavar="N",
                        help="networks in the leaderboard (default 20)")
    report.set_defaults(func=_report)

    replay = sub.add_parser("replay", add_help=False, help="run a termination rule over recorded "
                            "learning curves (netrace replay --help)")
    replay.add_argument("rest", nargs=argparse.REMAINDER)
    replay.set_defaults(func=_replay)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args[:1] == ["replay"]:  # its own parser owns every argument after the name
            return _replay(argparse.Namespace(rest=args[1:]))
        ns = _parser().parse_args(args)
        func: Callable[[argparse.Namespace], int] = ns.func
        return func(ns)
    except UserError as exc:
        print(f"netrace: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("netrace: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
