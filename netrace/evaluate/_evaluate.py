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
   one).
4. **The blend** (``[evaluate] forecast``'s default): ``top_k`` and the classical baselines,
   weighed by greedy selection on *nested* validation forecasts (:mod:`._nested`): for each
   fold, the networks validation would have chosen and stopped without that fold, retrained on
   its training part, next to the baselines fit on the past only; every fold weighs together.
   Which candidate is netrace's forecast is never chosen on the test part.
5. **Interval**: the quantiles of the chosen candidate's (nested, for the blend) validation
   residuals.
6. **Refit** (:mod:`._refit`), then the test part is **opened once** (the opening is counted in
   the storage before it happens), every candidate and every baseline forecasts exactly the
   test points, and the metrics, Diebold-Mariano and SPA p-values and the verdict are stored
   with the final model. A second call shows the stored result; ``again=True`` opens the test
   part again, and the count says so.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from netrace.data import Fold, prepare
from netrace.errors import UserError
from netrace.evaluate import _baselines as bl
from netrace.evaluate import _stats as st
from netrace.evaluate._ensemble import ensemble_loss, greedy_weights, out_of_fold
from netrace.evaluate._nested import choose_without, fold_table
from netrace.evaluate._model import (
    Blend,
    FinalModel,
    Interval,
    Net,
    combine,
    dump_model,
    forecast_floor,
    read_model,
)
from netrace.evaluate._refit import RefitJob, refit
from netrace.race import load_checkpoint
from netrace.race._build import DataShape, population_settings
from netrace.race._race import study_config
from netrace.race._target import TargetData, level_source
from netrace.race._worker import FOLD_KEY, race_metric
from netrace.storage import Storage, TrialRecord, TrialState

__all__ = ["evaluate_study", "load_model", "result_lines", "CANDIDATES"]

#: netrace's candidates, as the result names them.
CANDIDATES = {
    "blend": "top_k and the classical baselines, weighed by greedy selection on nested "
             "validation forecasts (networks chosen without the block they forecast)",
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

    # where a network that learns the target's ratio to its window's level finds that level
    source = level_source(prepared.features, prepared.target) if task == "regression" else None

    def series_of(samples: np.ndarray) -> np.ndarray | None:
        return None if dev.series is None else dev.series[samples]
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
    fold_fcs = []  # per finalist, per fold: its fold network's validation forecasts
    valid_scaling = [dev.target_scaling(fo).valid for fo in dev.folds]  # as the race scored
    for f in fins:
        nets, fcs, raw = [], [], []
        for j, (fold, fd) in enumerate(zip(dev.folds, folds, strict=True)):
            scaling = (f.checkpoint.target_scaling[j] if f.checkpoint.target_scaling
                       else ((float(fd.y_train.mean()), float(fd.y_train.std()) or 1.0)
                             if task == "regression" else (0.0, 1.0)))
            net = Net(f"trial {f.trial.number} fold {j + 1}", f.settings,
                      f.checkpoint.fold_weights[j], f.checkpoint.preprocessors[j], scaling,
                      forecast_floor(task, fd.y_train), target=f.checkpoint.target(j))
            nets.append(net)
            fcs.append(net.forecast(fd.X_valid, task, series_of(fold.valid)))
            net.floor, floor = None, net.floor  # as the race scored it: without the floor
            raw.append(net.forecast(fd.X_valid, task, series_of(fold.valid)))
            net.floor = floor
        fold_nets.append(nets)
        fold_fcs.append(fcs)
        seen, fc = out_of_fold(dev.n, [fo.valid for fo in dev.folds], fcs)
        oof.append(fc)
        rescored.append(float(np.mean([_valid_score(metric, fd, fcv, task, sc)
                                       for fd, fcv, sc in zip(folds, raw, valid_scaling,
                                                              strict=True)])))
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
        """The time-series baselines' forecasts at these origins (P(class 1) for binary); in
        a panel each series' from its own past alone."""
        out = bl.per_series_baselines(kind, hist, anchors, dev.horizon, n_classes=n_classes,
                                      refit_every=ev.refit_every)
        return {n: b[:, 1] if task == "binary" else b for n, b in out.items()}

    # every baseline's forecasts of each validation block, from the past only (a block with
    # too little past before it, as at the start of purged k-fold, has none)
    base_fold: list[dict[str, np.ndarray] | None] = []
    for fo in dev.folds:
        try:
            base_fold.append(baselines_at(dev.history, dev.anchors[fo.valid])
                             if dev.history is not None else None)
        except UserError:
            base_fold.append(None)
    with_base = [j for j, b in enumerate(base_fold) if b is not None]
    valid_baselines = {}
    if with_base:
        idx = np.concatenate([dev.folds[j].valid for j in with_base])
        valid_baselines = {n: ensemble_loss(task, dev.y[idx], np.concatenate(
            [base_fold[j][n] for j in with_base])) for n in base_fold[with_base[0]]}

    # -- nested validation forecasts, and the blend weighed on them --------------------------
    t0 = time.perf_counter()
    nested, why_not = _nested_forecasts(s, rec.id, dev, folds, shape, task, direction, ev,
                                        config.race.max_epochs, device, say, source)
    nested_seconds = time.perf_counter() - t0
    if nested is not None:
        top_fold, best_fold = nested
    else:  # the fold networks' own forecasts, chosen on every fold: optimistic, and said so
        top_fold = [combine(np.stack([fcs[j] for fcs in fold_fcs]), weights["top_k"])[0]
                    for j in range(len(dev.folds))]
        best_fold = [fold_fcs[0][j] for j in range(len(dev.folds))]
    use = with_base or list(range(len(dev.folds)))
    base_names = list(base_fold[with_base[0]]) if with_base else []
    y_blend = np.concatenate([dev.y[dev.folds[j].valid] for j in use])
    columns = {"top_k": np.concatenate([top_fold[j] for j in use]),
               **{n: np.concatenate([base_fold[j][n] for j in use]) for n in base_names}}
    # a volatility is judged on MSE and QLIKE, so the blend is weighed on both alike (MSE
    # alone leaned on log-HAR and lost QLIKE to HAR on nested validation, NASDAQ)
    blend_loss: str | tuple[str, ...] | None = ("mse", "qlike") if kind == "volatility" \
        else "qlike" if metric == "qlike" else None
    cols = np.stack(list(columns.values()))
    w_blend = greedy_weights(task, y_blend, cols, loss=blend_loss)
    blend_valid = combine(cols, w_blend)[0]
    # a panel: every series its own weights, on its own nested validation samples (one set
    # for all let the pooled networks' weight, right for one series, hurt another)
    w_series: dict[Any, np.ndarray] = {}
    if dev.series is not None:
        s_blend = np.concatenate([dev.series[dev.folds[j].valid] for j in use])
        for label in pd.unique(s_blend):
            at = s_blend == label
            w_series[label] = greedy_weights(task, y_blend[at], cols[:, at], loss=blend_loss)
            blend_valid[at] = combine(cols[:, at], w_series[label])[0]
    losses_on = ["mse", "qlike"] if kind == "volatility" else \
        (["mse"] if task == "regression" else ["log_loss"])
    nested_report = {
        "nested": nested is not None, "why_not": why_not, "samples": int(len(y_blend)),
        "folds": [j + 1 for j in use],
        **{lname: {name: _num(ensemble_loss(task, y_blend, f, lname)) for name, f in
                   [("blend", blend_valid), ("top_k", columns["top_k"]),
                    ("best", np.concatenate([best_fold[j] for j in use])),
                    *[(n, columns[n]) for n in base_names]]}
           for lname in losses_on}}
    chosen = ev.forecast
    # each candidate's interval from its validation residuals
    intervals = {name: Interval.fit(y_oof, combine(oof_arr, w)[0], ev.coverage)
                 for name, w in weights.items()} if task == "regression" else {}
    if task == "regression":
        intervals["blend"] = Interval.fit(y_blend, blend_valid, ev.coverage)
    interval = intervals.get(chosen)

    # -- refit on the whole development part ----------------------------------------------------
    t0 = time.perf_counter()
    everything = np.arange(dev.n)
    fitted = dev.fit_preprocessor(everything)
    X_dev = dev.windows(everything, fitted)
    y_dev, scaling = _scaled_target(task, dev, everything)
    jobs = [RefitJob(f.settings, f.trial.params, f.trial.seed, int(f.trial.best_epoch or 0) + 1,
                     config.race.max_epochs) for f in fins]
    say(f"refitting {k} finalists on all {dev.n} development samples "
        f"({sum(j.epochs for j in jobs)} network-epochs)")
    # torch's own thread count (OMP_NUM_THREADS when set): forcing every core would make this
    # process crawl beside another that uses them too
    dev_targets = TargetData(dev.y, X_dev, fitted, source)
    refit_weights = refit(jobs, X_dev, y_dev, task=task, monitor="loss", seed=ev.seed,
                          device=device, target=dev_targets)
    refit_nets = [Net(f"trial {f.trial.number} refit", f.settings, w, fitted, scaling,
                      forecast_floor(task, dev.y), target=dev_targets.fitted(f.settings, w))
                  for f, w in zip(fins, refit_weights, strict=True)]
    refit_seconds = time.perf_counter() - t0

    # -- the test part, once ----------------------------------------------------------------------
    opening = s.open_evaluation(rec.id)
    openings = len(s.evaluations(rec.id))
    say(f"opening the test part ({prepared.holdout.n} samples; opening number {openings})")
    test = prepared.holdout.open(fitted)
    y = test.y
    refit_fc = np.stack([net.forecast(test.X, task, test.series) for net in refit_nets])
    by_fold = {}
    fold_fc = []
    for nets in fold_nets:
        per = []
        for j, net in enumerate(nets):
            if j not in by_fold:
                by_fold[j] = test.windows(net.preprocessor)
            per.append(net.forecast(by_fold[j], task, test.series))
        fold_fc.append(combine(np.stack(per), np.full(len(per), 1.0 / len(per)))[0])
    fold_fc_arr = np.stack(fold_fc)
    forecasts = {name: combine(refit_fc if name in ("top_k", "greedy", "best") else fold_fc_arr,
                               weights[name])[0] for name in CANDIDATES if name != "blend"}

    # -- baselines on exactly the same points -----------------------------------------------------
    if test.history is not None:
        baselines = baselines_at(test.history, test.anchors)
        when = test.history["time"].to_numpy()[test.anchors + dev.horizon]
        first, last = _iso(when.min()), _iso(when.max())
    else:
        baselines = bl.iid_baselines(task, X_dev.reshape(len(X_dev), -1), dev.y,
                                     test.X.reshape(len(y), -1), n_classes=n_classes)
        if task == "binary":  # P(class 1)
            baselines = {n: b[:, 1] for n, b in baselines.items()}
        first, last = 0, len(y) - 1

    test_cols = np.stack([forecasts["top_k"], *[baselines[n] for n in base_names]])
    blend_test = combine(test_cols, w_blend)[0]
    for label, wl in w_series.items():
        at = test.series == label
        if at.any():
            blend_test[at] = combine(test_cols[:, at], wl)[0]
    forecasts = {"blend": blend_test, **forecasts}

    # -- metrics, tests, verdict ----------------------------------------------------------------
    vol, rets = kind == "volatility", kind == "returns"
    loss_names = (["mse", "mae"] + (["qlike"] if vol else [])) if task == "regression" \
        else ["log_loss"]
    h = dev.horizon if test.history is not None else 1
    panel = test.series is not None

    def judge(sel: np.ndarray | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Every candidate's and baseline's metrics and DM p-values, and SPA, on the test
        samples ``sel`` (all); a panel's pooled tests run on the per-date means of the losses
        (the cross-section's average each day), one series' on its own days."""
        yy = y if sel is None else y[sel]
        part = (lambda f: f) if sel is None else (lambda f: f[sel])
        dates = test.time if panel and sel is None else None
        train_mean = 0.0
        if task == "regression":
            train_mean = float(dev.y.mean() if sel is None or dev.series is None else
                               dev.y[dev.series == test.series[sel][0]].mean())

        def metrics_of(f: np.ndarray) -> dict[str, float]:
            if task == "regression":
                m = st.regression_metrics(yy, f, train_mean=train_mean, volatility=vol,
                                          returns=rets)
            elif task == "binary":
                m = st.binary_metrics(yy, f)
            else:
                return st.multiclass_metrics(yy, f)
            if (rets or task == "binary") and np.isfinite(f).all():
                # directions: is the hit rate better than chance (Pesaran-Timmermann)?
                m["pt_pvalue"] = st.pesaran_timmermann(
                    yy, f if rets else (f >= 0.5).astype(float))[1]
            return m

        fc = part(forecasts[chosen])
        models = []
        for name in CANDIDATES:
            f = part(forecasts[name])
            m = metrics_of(f)
            if name in intervals:
                m["coverage"] = st.interval_coverage(yy, *intervals[name].bounds(f))
            models.append({"name": name, "kind": "netrace",
                           "description": CANDIDATES[name].format(k=k),
                           "metrics": {a: _num(b) for a, b in m.items()},
                           "dm_pvalue": {} if name == chosen else _dm(loss_names, yy, f, fc, h,
                                                                      dates)})
        for name, b in baselines.items():
            m = metrics_of(part(b))
            models.append({"name": name, "kind": "baseline",
                           "metrics": {a: _num(v) for a, v in m.items()},
                           "dm_pvalue": _dm(loss_names, yy, part(b), fc, h, dates)})
        spa = {}
        for lname in loss_names[:1] + (["qlike"] if vol else []):
            bench_l = {n: _by_date(st.point_losses(lname, yy, part(b)), dates)
                       for n, b in baselines.items()}
            bb = min(bench_l, key=lambda n: _mean_or_inf(bench_l[n]))
            cols = np.column_stack(
                [_by_date(st.point_losses(lname, yy, part(f)), dates) for f in refit_fc]
                + [_by_date(st.point_losses(lname, yy, part(forecasts[n])), dates)
                   for n in CANDIDATES])
            cols = cols[:, np.isfinite(cols).all(axis=0)]
            p = st.spa_pvalue(bench_l[bb], cols, seed=ev.seed) if cols.shape[1] else math.nan
            spa[lname] = {"benchmark": bb, "pvalue": _num(p)}
        return models, spa

    models, spa = judge(None)
    primary = loss_names[0]
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
        "blend": {"weights": {n: _num(x) for n, x in zip(columns, w_blend, strict=True)},
                  **({"by_series": {_iso(label): {n: _num(x) for n, x in
                                                  zip(columns, wl, strict=True)}
                                    for label, wl in w_series.items()}} if w_series else {}),
                  "loss": "+".join(blend_loss) if isinstance(blend_loss, tuple) else
                  blend_loss or ("mse" if task == "regression" else "log_loss"),
                  **nested_report},
        "interval": None if interval is None else {"kind": interval.kind,
                                                   "coverage": interval.coverage},
        "baselines": {"kind": kind, "refit_every": ev.refit_every},
        "race": {"metric": metric, "epochs_spent": s.epochs_spent(rec.id)},
        "seconds": {"refit": round(refit_seconds, 2), "nested": round(nested_seconds, 2),
                    "total": round(time.perf_counter() - started, 2)},
    }
    result["verdict"] = verdict(result)
    if panel:  # the verdict of every series on its own, next to the pooled one
        result["series"] = []
        for name in pd.unique(test.series):
            sel = np.flatnonzero(test.series == name)
            s_models, s_spa = judge(sel)
            one = {"series": _iso(name), "n": int(len(sel)), "models": s_models,
                   "forecast": chosen, "spa": s_spa, "spa_pvalue": s_spa[primary]["pvalue"],
                   "blend": {**result["blend"], "weights": result["blend"].get(
                       "by_series", {}).get(_iso(name), result["blend"]["weights"])}}
            one["verdict"] = verdict(one)
            result["series"].append(one)
    nets = refit_nets if chosen in ("blend", "top_k", "greedy", "best") else \
        [n for nets in fold_nets for n in nets]
    w = weights["top_k" if chosen == "blend" else chosen]
    blend = None
    if chosen == "blend":
        def blend_of(wb: np.ndarray) -> Blend:
            return Blend(float(wb[0]), {n: float(x) for n, x in zip(base_names, wb[1:],
                                                                    strict=True) if x > 0},
                         kind, dev.horizon, ev.refit_every, n_classes,
                         test.time.min() if test.time is not None and len(test.time) else None)

        blend = blend_of(w_blend)
        if w_series:
            blend = replace(blend, by_series={label: blend_of(wl)
                                              for label, wl in w_series.items()})
    if chosen in ("folds", "best_folds"):
        w = np.repeat(w, len(dev.folds)) / len(dev.folds)
    keep = w > 0
    model = FinalModel(study, chosen, CANDIDATES[chosen].format(k=k), task, dev.classes,
                       rec.config, [n for n, kp in zip(nets, keep) if kp], w[keep], interval,
                       dev.window, prepared.time_name,
                       features=tuple(f.name for f in prepared.features), blend=blend)
    origin = test.time if test.time is not None else np.arange(len(y))
    table = {"time": origin, **({"series": test.series} if panel else {}), "y": y}
    for name, f in [*forecasts.items(), *baselines.items()]:
        if np.ndim(f) == 1:
            table[name] = f
    if task == "regression" and interval is not None:
        table["lower"], table["upper"] = interval.bounds(forecasts[chosen])
    model.test = pd.DataFrame(table)
    s.complete_evaluation(opening, result, dump_model(model))
    return result


def _scaled_target(task: str, dev: Any, samples: np.ndarray) -> tuple[np.ndarray, Any]:
    """What networks trained on these development samples learn (a regression target
    standardized by their mean and standard deviation, per series in a panel, as in the race)
    and the scaling back (``(mean, std)``, or a :class:`~netrace.data.SeriesScaling`)."""
    y = dev.y[samples]
    if task != "regression":
        return y, (0.0, 1.0)
    sc = dev.target_scaling(Fold(-1, samples, samples[:0]))
    centre, scale = sc.train
    return (y - centre) / scale, sc.kept


def _nested_forecasts(s: Storage, study_id: int, dev: Any, folds: list, shape: DataShape,
                      task: str, direction: str, ev: Any, budget: int, device: str,
                      say: Callable[[str], None], source: str | None = None
                      ) -> tuple[tuple[list[np.ndarray], list[np.ndarray]] | None, str | None]:
    """Per fold, the validation forecasts of ``top_k`` and ``best`` as validation would have
    chosen them without that fold (:mod:`._nested`): the networks with the best mean score over
    the other folds, retrained on the fold's training part for the epochs at which that mean
    peaked. ``(None, why)`` when that cannot be done."""
    n_folds = len(dev.folds)
    if n_folds < 2:
        return None, "one validation block: the networks were chosen on the block itself"
    trials = {t.id: t for t in s.trials(study_id)
              if t.state.value in _KEPT and t.best_value is not None and t.epochs > 0}
    metrics = s.curve_metrics(study_id, list(trials))
    tables = {}
    for tid in trials:
        table = fold_table(metrics.get(tid, []), n_folds, FOLD_KEY)
        if table is None:
            return None, "the race kept no per-fold scores (it ran on an older netrace)"
        tables[tid] = table
    top, best = [], []
    for j, fd in enumerate(folds):
        choice = choose_without(tables, j, ev.finalists, maximize=direction == "maximize")
        if not choice.trials:
            return None, f"no network has a score on the folds other than fold {j + 1}"
        y_train, scaling = _scaled_target(task, dev, dev.folds[j].train)
        jobs = [RefitJob(population_settings(trials[t].params, shape), trials[t].params,
                         trials[t].seed, e, budget)
                for t, e in zip(choice.trials, choice.epochs, strict=True)]
        say(f"nested validation, fold {j + 1} of {n_folds}: {len(jobs)} networks chosen on the "
            f"other folds, trained on its {len(y_train)} training samples "
            f"({sum(choice.epochs)} network-epochs)")
        fold_targets = TargetData(fd.y_train, fd.X_train, fd.preprocessor, source)
        trained = refit(jobs, fd.X_train, y_train, task=task, monitor="loss", seed=ev.seed,
                        device=device, target=fold_targets)
        fcs = np.stack([Net(f"trial {trials[t].number} nested fold {j + 1}", job.settings, w,
                            fd.preprocessor, scaling, forecast_floor(task, fd.y_train),
                            target=fold_targets.fitted(job.settings, w)).forecast(fd.X_valid, task, None if dev.series is None
                                       else dev.series[dev.folds[j].valid])
                        for t, job, w in zip(choice.trials, jobs, trained, strict=True)])
        top.append(fcs.mean(axis=0))
        best.append(fcs[0])
    return (top, best), None


def _mean_or_inf(x: np.ndarray) -> float:
    m = float(np.mean(x))
    return m if math.isfinite(m) else math.inf


def _valid_score(metric: str, fd: Any, f: np.ndarray, task: str,
                 valid_scaling: Any = None) -> float:
    """A fold's validation score as the race computes it (R² against the training mean; in a
    panel, MSE, MAE and R² in each series' standardized units, QLIKE in the target's)."""
    if task == "regression":
        m = st.regression_metrics(fd.y_valid, f, train_mean=float(fd.y_train.mean()),
                                  volatility=metric == "qlike")
        if valid_scaling is not None and np.ndim(valid_scaling[0]) > 0:
            c, sc = valid_scaling
            qlike = m.get("qlike")
            m = st.regression_metrics((fd.y_valid - c) / sc, (f - c) / sc, train_mean=0.0)
            if qlike is not None:
                m["qlike"] = qlike
    elif task == "binary":
        m = st.binary_metrics(fd.y_valid, f)
    else:
        m = st.multiclass_metrics(fd.y_valid, f)
    return float(m.get(metric, math.nan))


def _by_date(losses: np.ndarray, dates: np.ndarray | None) -> np.ndarray:
    """Per-sample losses, or (a panel's pooled test) their mean per date, in date order."""
    if dates is None:
        return losses
    return pd.Series(losses).groupby(pd.Index(dates)).mean().to_numpy()


def _dm(loss_names: list[str], y: np.ndarray, other: np.ndarray, forecast: np.ndarray,
        h: int, dates: np.ndarray | None = None) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name in loss_names:
        a = _by_date(st.point_losses(name, y, other), dates)
        b = _by_date(st.point_losses(name, y, forecast), dates)
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
    spas = {n: v.get("pvalue") for n, v in (result.get("spa") or {}).items()}
    for lname in losses:
        best = min(bases, key=lambda m: m["metrics"][lname] if m["metrics"][lname] is not None
                   else math.inf)
        ours, theirs = fc["metrics"][lname], best["metrics"][lname]
        p = best["dm_pvalue"].get(lname)
        ptxt = "n/a" if p is None else f"{p:.3f}"
        if ours is not None and theirs is not None and ours < theirs:
            how = "significantly" if p is not None and p < 0.05 else "but not significantly"
            spa_l = spas.get(lname, result.get("spa_pvalue") if len(losses) == 1 else None)
            if how == "significantly" and spa_l is not None and spa_l >= 0.05:
                # a DM win that the search over networks and candidates could have produced
                # by chance (SPA, which also allows for persistent losses) is not a win
                how, ptxt = "but not significantly", f"{ptxt}, SPA p = {spa_l:.3f}"
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
    what = result["forecast"]
    blend = result.get("blend")
    if what == "blend" and blend:
        what += ": " + ", ".join(f"{100 * w:.0f}% {n}" for n, w in blend["weights"].items()
                                 if w)
    return f"{lead} ({what}) " + " and ".join(parts) + spa_txt + "."


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
    blend = result.get("blend")
    if blend:
        how = "nested: networks chosen without the block they forecast" if blend["nested"] \
            else f"not nested: {blend['why_not']}"
        names = blend["loss"].split("+")
        out.append(f"blend weights ({how}; greedy on "
                   f"{' and '.join(_LABELS.get(n, n) for n in names)} over "
                   f"{blend['samples']} validation samples): "
                   + ", ".join(f"{n} {w:.2f}" for n, w in blend["weights"].items() if w))
        for lname in names:
            if blend.get(lname):
                out.append(f"nested validation {_LABELS.get(lname, lname)}: " + ", ".join(
                    f"{n} {_fmt(v)}" for n, v in blend[lname].items()))
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
            "correction, two-sided) of each model against it"
            + ("; pooled over the panel's series: on each day's mean loss" if
               result.get("series") else ""), "", result["verdict"]]
    for one in result.get("series", []):
        out.append(f"series {one['series']} ({one['n']} points): {one['verdict']}")
    return out


def _fmt(x: float | None, digits: int = 4) -> str:
    if x is None:
        return "-"
    if digits == 3:
        return f"{x:.3f}"
    return f"{x:.4g}"
