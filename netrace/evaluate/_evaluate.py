"""``netrace evaluate``: the verdict. Finalists chosen on validation, refit, combined, and
judged once on the test part next to the classical baselines.

The steps, in order, and what each may see:

1. **Finalists**: the ``[evaluate] finalists`` networks with the best validation score (their
   mean over the folds, as the race ranked them) among those that finished with a checkpoint.
2. **Validation forecasts**: each finalist's fold networks (the weights of the epoch at which
   its fold mean peaked) forecast their own fold's validation part; together, one out-of-fold
   forecast per validated development sample.
3. **Candidates**, weighed on those validation forecasts alone: ``best`` (the best network),
   ``top_k`` (the mean of all finalists), ``greedy`` (greedy ensemble selection with
   replacement), each made of networks refit on the whole development part; ``folds`` and
   ``best_folds``, the fold networks themselves (mean over folds and finalists, or of the best
   one). Which one is netrace's forecast is ``[evaluate] forecast`` (``top_k`` by default, as
   BENCHMARKS.md measured on the built-in data), never the test part.
4. **Interval**: the quantiles of the chosen candidate's validation residuals.
5. **Refit** (:mod:`._refit`), then the test part is **opened once** (the opening is counted in
   the storage before it happens), every candidate and every baseline forecasts exactly the
   test points, and the metrics, Diebold-Mariano and SPA p-values and the verdict are stored
   with the final model. A second call shows the stored result; ``again=True`` opens the test
   part again, and the count says so.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from netrace.data import prepare
from netrace.errors import UserError
from netrace.evaluate import _baselines as bl
from netrace.evaluate import _stats as st
from netrace.evaluate._ensemble import ensemble_loss, greedy_weights, out_of_fold
from netrace.evaluate._model import FinalModel, Interval, Net, combine, dump_model, read_model
from netrace.evaluate._refit import RefitJob, refit
from netrace.race import load_checkpoint
from netrace.race._build import DataShape, population_settings
from netrace.race._race import study_config
from netrace.race._target import TargetData, level_source
from netrace.race._worker import race_metric
from netrace.storage import Storage, TrialRecord, TrialState

__all__ = ["evaluate_study", "load_model", "result_lines", "CANDIDATES"]

#: netrace's candidates, as the result names them.
CANDIDATES = {
    "top_k": "mean of the {k} finalists, refit on the whole development part",
    "greedy": "greedy ensemble selection over the {k} finalists (weights chosen on "
              "validation), refit",
    "best": "the best network on validation, refit on the whole development part",
    "folds": "mean of the {k} finalists' fold networks (trained during the race)",
    "best_folds": "the best network's fold networks (trained during the race)",
}
_KEPT = ("complete", "stopped", "cut")  # finished states whose networks can be finalists


@dataclass
class _Finalist:
    trial: TrialRecord
    checkpoint: Any
    settings: Any


def _iso(value: Any) -> Any:
    if isinstance(value, (np.datetime64, pd.Timestamp)):
        ts = pd.Timestamp(value)
        return ts.date().isoformat() if ts == ts.normalize() else ts.isoformat()
    if isinstance(value, (np.integer,)):
        return int(value)
    return value if isinstance(value, (int, float, str)) else str(value)


def _num(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _finalists(storage: Storage, study_id: int, direction: str, n: int) -> list[TrialRecord]:
    trials = [t for t in storage.trials(study_id)
              if t.state.value in _KEPT and t.best_value is not None and t.epochs > 0]
    sign = -1.0 if direction == "maximize" else 1.0
    trials.sort(key=lambda t: (sign * t.best_value, t.number))
    return trials[:n]


def _baseline_kind(config: Any, target_recipe: str | None) -> str:
    task = config.task.type
    if task != "regression":
        return task
    return {"vol_next": "volatility", "return_next": "returns"}.get(target_recipe or "", "level")


def load_model(storage: str | Storage, study: str) -> FinalModel:
    """The final model ``netrace evaluate`` stored for ``study``: ``.predict(frame)`` gives
    forecasts from raw rows.

    >>> # model = load_model("runs/vol.db", "sp500_vol"); model.predict(frame).tail(1)
    """
    s = storage if isinstance(storage, Storage) else _open(storage)
    rec = s.get_study(study)
    done = [e for e in s.evaluations(rec.id) if e.result is not None]
    if not done:
        raise UserError(f"study '{study}' has not been evaluated yet, so it has no final model; "
                        f"run: netrace evaluate {study}")
    data = s.evaluation_model(done[-1].id)
    if data is None:
        raise UserError(f"study '{study}''s evaluation stored no model; run netrace evaluate "
                        f"{study} --again")
    return read_model(data)


def _open(url: str) -> Storage:
    return Storage(url, create=False)  # a mistyped path is an error, not a new empty file


def evaluate_study(storage: str | Storage, study: str, *, again: bool = False,
                   log: Callable[[str], None] | None = None, device: str = "auto"
                   ) -> dict[str, Any]:
    """The verdict on ``study``'s test part: computed and stored the first time, read back
    afterwards; ``again=True`` computes it anew, opening the test part once more (counted)."""
    say = log or (lambda _: None)
    s = storage if isinstance(storage, Storage) else _open(storage)
    rec = s.get_study(study)
    past = s.evaluations(rec.id)
    done = [e for e in past if e.result is not None]
    if past and not again:
        if not done:
            raise UserError(f"an earlier evaluation of '{study}' opened the test part and did "
                            "not complete; the opening is counted. To evaluate anyway (a "
                            f"second look at the test part, shown in the result): netrace "
                            f"evaluate {study} --again")
        result = dict(done[-1].result)
        result["stored"] = True
        spent = s.epochs_spent(rec.id)
        if spent != done[-1].epochs_spent:
            result["note"] = (f"the race went on after this evaluation ({done[-1].epochs_spent} "
                              f"-> {spent} network-epochs); this is the verdict from before. "
                              "A new one opens the test part again: netrace evaluate "
                              f"{study} --again")
        return result
    started = time.perf_counter()
    config = study_config(rec.config, origin=f"study '{study}'")
    ev = config.evaluate
    metric, direction = race_metric(config)
    prepared = prepare(config)
    raced_on = rec.config.get("data_check")
    if raced_on and raced_on.get("test_fingerprint") != prepared.holdout.fingerprint:
        raise UserError(
            f"the data of study '{study}' changed since its race: the test part then had "
            f"{raced_on.get('test_samples')} samples (fingerprint "
            f"{raced_on.get('test_fingerprint')}), now {prepared.holdout.n} ("
            f"{prepared.holdout.fingerprint}); the networks may have trained on what is now the "
            "test part. Evaluate on the data the race used, or race again on the new data in "
            "a new study (netrace run CONFIG --study NEW)")
    dev = prepared.dev
    task = config.task.type
    folds = [dev.fold_data(f) for f in dev.folds]
    shape = DataShape(folds[0].X_train.shape[1], folds[0].X_train.shape[2], task,
                      len(dev.classes or ()))
    fins = []
    for t in _finalists(s, rec.id, direction, ev.finalists):
        ck_rec = s.checkpoint(t.id)
        if ck_rec is None:
            continue
        ck = load_checkpoint(ck_rec.data)
        if len(ck.fold_weights) != len(dev.folds):
            raise UserError(f"trial {t.number}'s checkpoint holds {len(ck.fold_weights)} fold "
                            f"networks, the study's split now makes {len(dev.folds)} folds; it "
                            "was written by an older netrace or under another [split]; race "
                            "again in a new study (netrace run CONFIG --study NEW)")
        fins.append(_Finalist(t, ck, population_settings(t.params, shape)))
    if not fins:
        raise UserError(f"study '{study}' has no finished network with a checkpoint yet; race "
                        "first (netrace run CONFIG), or let the running race finish some")
    k = len(fins)
    say(f"{k} finalists (trials {', '.join(str(f.trial.number) for f in fins)}), chosen on "
        f"validation {metric}")

    # -- validation: every finalist's out-of-fold forecasts ------------------------------------
    fold_nets: list[list[Net]] = []
    oof = []
    rescored = []
    for f in fins:
        nets, fcs = [], []
        for j, (fold, fd) in enumerate(zip(dev.folds, folds, strict=True)):
            scaling = (f.checkpoint.target_scaling[j] if f.checkpoint.target_scaling
                       else ((float(fd.y_train.mean()), float(fd.y_train.std()) or 1.0)
                             if task == "regression" else (0.0, 1.0)))
            net = Net(f"trial {f.trial.number} fold {j + 1}", f.settings,
                      f.checkpoint.fold_weights[j], f.checkpoint.preprocessors[j], scaling,
                      target=f.checkpoint.target(j))
            nets.append(net)
            fcs.append(net.forecast(fd.X_valid, task))
        fold_nets.append(nets)
        seen, fc = out_of_fold(dev.n, [fo.valid for fo in dev.folds], fcs)
        oof.append(fc)
        rescored.append(float(np.mean([_valid_score(metric, fd, fcv, task)
                                       for fd, fcv in zip(folds, fcs, strict=True)])))
    y_oof = dev.y[seen]
    oof_arr = np.stack(oof)
    weights = {
        "best": np.eye(k)[0],
        "top_k": np.full(k, 1.0 / k),
        "greedy": greedy_weights(task, y_oof, oof_arr),
    }
    weights["folds"], weights["best_folds"] = weights["top_k"], weights["best"]
    validation = {name: ensemble_loss(task, y_oof, combine(oof_arr, w)[0])
                  for name, w in weights.items() if name in ("best", "top_k", "greedy")}
    # the baselines on the same validation samples, fit on the past only (for the record:
    # did the networks beat them on validation, where they were chosen?)
    kind = _baseline_kind(config, prepared.target.recipe)
    n_classes = len(dev.classes or ())

    def baselines_at(hist: pd.DataFrame, anchors: np.ndarray) -> dict[str, np.ndarray]:
        """The time-series baselines' forecasts at these origins (P(class 1) for binary)."""
        out = bl.time_series_baselines(
            kind, hist["target"].to_numpy(), anchors, dev.horizon,
            returns=hist["returns"].to_numpy() if "returns" in hist else None,
            n_classes=n_classes, refit_every=ev.refit_every)
        return {n: b[:, 1] if task == "binary" else b for n, b in out.items()}

    valid_baselines: dict[str, float] = {}
    if dev.history is not None:
        try:
            vb = baselines_at(dev.history, dev.anchors[seen])
        except UserError:  # too little past before the first validation block (purged k-fold)
            vb = {}
        valid_baselines = {n: ensemble_loss(task, y_oof, b) for n, b in vb.items()}
    chosen = ev.forecast
    # each candidate's interval from its validation residuals
    intervals = {name: Interval.fit(y_oof, combine(oof_arr, w)[0], ev.coverage)
                 for name, w in weights.items()} if task == "regression" else {}
    interval = intervals.get(chosen)

    # -- refit on the whole development part ----------------------------------------------------
    t0 = time.perf_counter()
    everything = np.arange(dev.n)
    fitted = dev.fit_preprocessor(everything)
    X_dev = dev.windows(everything, fitted)
    y_dev = dev.y
    scaling = (0.0, 1.0)
    if task == "regression":
        scaling = (float(y_dev.mean()), float(y_dev.std()) or 1.0)
        y_dev = (y_dev - scaling[0]) / scaling[1]
    jobs = [RefitJob(f.settings, f.trial.params, f.trial.seed, int(f.trial.best_epoch or 0) + 1,
                     config.race.max_epochs) for f in fins]
    say(f"refitting {k} finalists on all {dev.n} development samples "
        f"({sum(j.epochs for j in jobs)} network-epochs)")
    # torch's own thread count (OMP_NUM_THREADS when set): forcing every core would make this
    # process crawl beside another that uses them too
    raw = TargetData(dev.y, X_dev, fitted, level_source(prepared.features, prepared.target))
    refit_weights = refit(jobs, X_dev, y_dev, task=task, monitor="loss", seed=ev.seed,
                          device=device, target=raw)
    refit_nets = [Net(f"trial {f.trial.number} refit", f.settings, w, fitted, scaling,
                      target=raw.fitted(f.settings, w))
                  for f, w in zip(fins, refit_weights, strict=True)]
    refit_seconds = time.perf_counter() - t0

    # -- the test part, once ----------------------------------------------------------------------
    opening = s.open_evaluation(rec.id)
    openings = len(s.evaluations(rec.id))
    say(f"opening the test part ({prepared.holdout.n} samples; opening number {openings})")
    test = prepared.holdout.open(fitted)
    y = test.y
    refit_fc = np.stack([net.forecast(test.X, task) for net in refit_nets])
    by_fold = {}
    fold_fc = []
    for nets in fold_nets:
        per = []
        for j, net in enumerate(nets):
            if j not in by_fold:
                by_fold[j] = test.windows(net.preprocessor)
            per.append(net.forecast(by_fold[j], task))
        fold_fc.append(combine(np.stack(per), np.full(len(per), 1.0 / len(per)))[0])
    fold_fc_arr = np.stack(fold_fc)
    forecasts = {name: combine(refit_fc if name in ("top_k", "greedy", "best") else fold_fc_arr,
                               weights[name])[0] for name in CANDIDATES}

    # -- baselines on exactly the same points -----------------------------------------------------
    if test.history is not None:
        baselines = baselines_at(test.history, test.anchors)
        when = test.history["time"].to_numpy()[test.anchors + dev.horizon]
        first, last = _iso(when[0]), _iso(when[-1])
    else:
        baselines = bl.iid_baselines(task, X_dev.reshape(len(X_dev), -1), dev.y,
                                     test.X.reshape(len(y), -1), n_classes=n_classes)
        if task == "binary":  # P(class 1)
            baselines = {n: b[:, 1] for n, b in baselines.items()}
        first, last = 0, len(y) - 1

    # -- metrics, tests, verdict ----------------------------------------------------------------
    vol, rets = kind == "volatility", kind == "returns"
    train_mean = float(dev.y.mean()) if task == "regression" else 0.0

    def metrics_of(f: np.ndarray) -> dict[str, float]:
        if task == "regression":
            m = st.regression_metrics(y, f, train_mean=train_mean, volatility=vol,
                                      returns=rets)
        elif task == "binary":
            m = st.binary_metrics(y, f)
        else:
            return st.multiclass_metrics(y, f)
        if (rets or task == "binary") and np.isfinite(f).all():
            # directions: is the hit rate better than chance (Pesaran-Timmermann, one-sided)?
            m["pt_pvalue"] = st.pesaran_timmermann(
                y, f if rets else (f >= 0.5).astype(float))[1]
        return m

    loss_names = (["mse", "mae"] + (["qlike"] if vol else [])) if task == "regression" \
        else ["log_loss"]
    h = dev.horizon if test.history is not None else 1
    fc = forecasts[chosen]
    models = []
    for name in CANDIDATES:
        m = metrics_of(forecasts[name])
        if name in intervals:
            m["coverage"] = st.interval_coverage(y, *intervals[name].bounds(forecasts[name]))
        models.append({"name": name, "kind": "netrace",
                       "description": CANDIDATES[name].format(k=k),
                       "metrics": {a: _num(b) for a, b in m.items()},
                       "dm_pvalue": {} if name == chosen else _dm(loss_names, y, forecasts[name],
                                                                   fc, h)})
    for name, b in baselines.items():
        m = metrics_of(b)
        models.append({"name": name, "kind": "baseline", "metrics": {a: _num(v) for a, v in
                                                                     m.items()},
                       "dm_pvalue": _dm(loss_names, y, b, fc, h)})
    primary = loss_names[0]
    spa = {}
    for lname in loss_names[:1] + (["qlike"] if vol else []):
        bench_l = {n: st.point_losses(lname, y, b) for n, b in baselines.items()}
        bb = min(bench_l, key=lambda n: _mean_or_inf(bench_l[n]))
        cols = np.column_stack([st.point_losses(lname, y, f) for f in refit_fc]
                               + [st.point_losses(lname, y, forecasts[n]) for n in CANDIDATES])
        cols = cols[:, np.isfinite(cols).all(axis=0)]
        p = st.spa_pvalue(bench_l[bb], cols, seed=ev.seed) if cols.shape[1] else math.nan
        spa[lname] = {"benchmark": bb, "pvalue": _num(p)}
    result: dict[str, Any] = {
        "study": study, "task": task, "target": config.task.target,
        "test": {"first": first, "last": last, "n": int(len(y))},
        "forecast": chosen,
        "models": models,
        "spa_pvalue": spa[primary]["pvalue"],
        "spa": spa,
        "openings": openings,
        "finalists": [{"trial": f.trial.number, "validation": _num(f.trial.best_value),
                       "rescored": _num(r), "epochs": j.epochs, "model": f.settings.model,
                       "state": f.trial.state.value}
                      for f, r, j in zip(fins, rescored, jobs, strict=True)],
        "validation": {"metric": "mse" if task == "regression" else "log_loss",
                       "samples": int(len(seen)),
                       **{n: _num(v) for n, v in validation.items()},
                       "baselines": {n: _num(v) for n, v in valid_baselines.items()}},
        "weights": {n: [_num(x) for x in weights[n]] for n in ("greedy",)},
        "interval": None if interval is None else {"kind": interval.kind,
                                                   "coverage": interval.coverage},
        "baselines": {"kind": kind, "refit_every": ev.refit_every},
        "race": {"metric": metric, "epochs_spent": s.epochs_spent(rec.id)},
        "seconds": {"refit": round(refit_seconds, 2),
                    "total": round(time.perf_counter() - started, 2)},
    }
    result["verdict"] = verdict(result)
    nets = refit_nets if chosen in ("top_k", "greedy", "best") else \
        [n for nets in fold_nets for n in nets]
    w = weights[chosen]
    if chosen in ("folds", "best_folds"):
        w = np.repeat(w, len(dev.folds)) / len(dev.folds)
    keep = w > 0
    model = FinalModel(study, chosen, CANDIDATES[chosen].format(k=k), task, dev.classes,
                       rec.config, [n for n, kp in zip(nets, keep) if kp], w[keep], interval,
                       dev.window, prepared.time_name,
                       features=tuple(f.name for f in prepared.features))
    origin = test.time if test.time is not None else np.arange(len(y))
    table = {"time": origin, "y": y}
    for name, f in [*forecasts.items(), *baselines.items()]:
        if np.ndim(f) == 1:
            table[name] = f
    if task == "regression" and interval is not None:
        table["lower"], table["upper"] = interval.bounds(fc)
    model.test = pd.DataFrame(table)
    s.complete_evaluation(opening, result, dump_model(model))
    return result


def _mean_or_inf(x: np.ndarray) -> float:
    m = float(np.mean(x))
    return m if math.isfinite(m) else math.inf


def _valid_score(metric: str, fd: Any, f: np.ndarray, task: str) -> float:
    """A fold's validation score as the race computes it (R² against the training mean)."""
    if task == "regression":
        m = st.regression_metrics(fd.y_valid, f, train_mean=float(fd.y_train.mean()),
                                  volatility=metric == "qlike")
    elif task == "binary":
        m = st.binary_metrics(fd.y_valid, f)
    else:
        m = st.multiclass_metrics(fd.y_valid, f)
    return float(m.get(metric, math.nan))


def _dm(loss_names: list[str], y: np.ndarray, other: np.ndarray, forecast: np.ndarray,
        h: int) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name in loss_names:
        a, b = st.point_losses(name, y, other), st.point_losses(name, y, forecast)
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            out[name] = None  # a forecast that is not a number everywhere: no test
            continue
        # Newey-West lags, not only h-1: volatility loss differentials cluster in time
        out[name] = _num(st.diebold_mariano(a, b, h=h, lags=st.newey_west_lags(len(a)))[1])
    return out


_LABELS = {"mse": "MSE", "mae": "MAE", "qlike": "QLIKE", "log_loss": "log-loss"}


def verdict(result: dict[str, Any]) -> str:
    """One plain sentence: does netrace's forecast beat the best baseline, significantly?"""
    models = {m["name"]: m for m in result["models"]}
    fc = models[result["forecast"]]
    bases = [m for m in result["models"] if m["kind"] == "baseline"]
    losses = [n for n in ("mse", "qlike", "log_loss") if n in fc["metrics"]]
    parts = []
    for lname in losses:
        best = min(bases, key=lambda m: m["metrics"][lname] if m["metrics"][lname] is not None
                   else math.inf)
        ours, theirs = fc["metrics"][lname], best["metrics"][lname]
        p = best["dm_pvalue"].get(lname)
        ptxt = "n/a" if p is None else f"{p:.3f}"
        if ours is not None and theirs is not None and ours < theirs:
            how = "significantly" if p is not None and p < 0.05 else "but not significantly"
            parts.append(f"beats the best baseline ({best['name']}) on {_LABELS[lname]} {how} "
                         f"(DM p = {ptxt})")
        else:
            how = "significantly" if p is not None and p < 0.05 else "not significantly"
            parts.append(f"loses to {best['name']} on {_LABELS[lname]}, {how} (DM p = {ptxt})")
    spa = result.get("spa_pvalue")
    spa_txt = (f"; whether any finalist beats the best baseline after the search: SPA p = "
               f"{spa:.3f}" if spa is not None else "")
    worse_all = all(p.startswith("loses") for p in parts)
    lead = "netrace does not beat the baselines: its forecast" if worse_all else \
        "netrace's forecast"
    return f"{lead} ({result['forecast']}) " + " and ".join(parts) + spa_txt + "."


def result_lines(result: dict[str, Any]) -> list[str]:
    """The result as a table and the verdict, for the terminal."""
    t = result["test"]
    out = [f"study {result['study']}: {result['task']} of {result['target']}; test part "
           f"{t['first']} .. {t['last']} ({t['n']} points), opened {result['openings']} "
           f"time{'s' if result['openings'] != 1 else ''}"]
    if result.get("stored"):
        out.append("(the stored verdict; netrace evaluate STUDY --again opens the test part "
                   "again)")
    if result.get("note"):
        out.append(result["note"])
    val = result.get("validation")
    if val:
        ours = ", ".join(f"{n} {_fmt(val[n])}" for n in ("top_k", "greedy", "best") if n in val)
        theirs = ", ".join(f"{n} {_fmt(v)}" for n, v in val.get("baselines", {}).items())
        out.append(f"validation {val['metric']} ({val['samples']} out-of-fold samples): {ours}"
                   + (f"; baselines {theirs}" if theirs else ""))
    fins = result.get("finalists", [])
    if fins:
        out.append(f"finalists (trial: validation {result['race']['metric']}): "
                   + ", ".join(f"{f['trial']}: {f['validation']:.4g}" for f in fins))
    names = [n for n in ("mse", "mae", "r2", "qlike", "coverage", "accuracy", "log_loss",
                         "auc", "hit_rate", "pt_pvalue") if any(n in m["metrics"] for m in result["models"])]
    dms = [n for n in ("mse", "qlike", "log_loss") if any(n in m["dm_pvalue"]
                                                          for m in result["models"])]
    head = f"{'model':<12} {'kind':<8} " + " ".join(f"{n:>10}" for n in names) + \
        " " + " ".join(f"{'DM p ' + n:>12}" for n in dms)
    out += ["", head]
    for m in result["models"]:
        mark = "*" if m["name"] == result["forecast"] else " "
        vals = " ".join(f"{_fmt(m['metrics'].get(n)):>10}" for n in names)
        ps = " ".join(f"{_fmt(m['dm_pvalue'].get(n), 3):>12}" for n in dms)
        out.append(f"{mark}{m['name']:<11} {m['kind']:<8} {vals} {ps}")
    out += ["", "* netrace's forecast; DM p: Diebold-Mariano (Newey-West variance, Harvey's "
            "correction, two-sided) of each model against it", "", result["verdict"]]
    return out


def _fmt(x: float | None, digits: int = 4) -> str:
    if x is None:
        return "-"
    if digits == 3:
        return f"{x:.3f}"
    return f"{x:.4g}"
