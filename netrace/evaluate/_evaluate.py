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

:func:`evaluate_study` runs these as named steps, in this order: ``_open_study`` (the config and
data, checked to be what the race ran on), ``_load_finalists``, ``_validate`` (the validation
forecasts and the candidates' weights), ``_validation_baselines``, ``_weigh_blend`` (the nested
forecasts and the blend's weights), ``_intervals``, ``_refit_finalists``, ``_open_test`` (every
forecast of the test part), ``_judge`` (metrics, DM and SPA), ``_result`` and ``_final_model``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from netrace.data import (
    DevData,
    FittedPreprocessor,
    Fold,
    FoldData,
    Prepared,
    TestData,
    prepare,
)
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
from netrace.race._race import check_same_data, study_config
from netrace.race._target import TargetData, level_source
from netrace.race._worker import FOLD_KEY, race_metric
from netrace.storage import Storage, StudyRecord, TrialRecord

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
    chosen = config.evaluate.baselines
    if chosen != "auto":
        return chosen
    return {"vol_next": "volatility", "vol_close_next": "volatility",
            "return_next": "returns"}.get(target_recipe or "", "level")


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
    stored = _stored_result(s, rec, study, again)
    if stored is not None:
        return stored
    started = time.perf_counter()
    ctx = _open_study(s, rec, study, device, say)
    _check_fold_coverage(ctx)  # before any training
    fins = _load_finalists(ctx)
    val = _validate(ctx, fins)
    base_fold, valid_baselines = _validation_baselines(ctx)
    blend = _weigh_blend(ctx, val, base_fold)
    intervals = _intervals(ctx, val, blend)
    fit = _refit_finalists(ctx, fins)
    tp = _open_test(ctx, val, blend, fit)
    models, spa = _judge(ctx, tp, intervals, len(fins), None)
    result = _result(ctx, fins, val, valid_baselines, blend, intervals, fit, tp, models, spa,
                     started)
    result["verdict"] = verdict(result)
    if tp.data.series is not None:  # the verdict of every series on its own, next to the pooled
        result["series"] = _series_verdicts(ctx, tp, intervals, len(fins), result)
    model = _final_model(ctx, val, blend, intervals, fit, tp, len(fins))
    s.complete_evaluation(tp.opening, result, dump_model(model))
    return result


def _stored_result(s: Storage, rec: StudyRecord, study: str, again: bool
                   ) -> dict[str, Any] | None:
    """The stored verdict, when the study was evaluated and ``again`` is false; ``None`` when
    it is to be computed."""
    past = s.evaluations(rec.id)
    done = [e for e in past if e.result is not None]
    if not past or again:
        return None
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


@dataclass
class _Study:
    """What every step of an evaluation reads: the study, its config, its data (prepared as
    for the race) and the fold arrays."""

    storage: Storage
    rec: StudyRecord
    name: str
    config: Any
    metric: str
    direction: str
    prepared: Prepared
    folds: list[FoldData]
    shape: DataShape
    #: where a network that learns the target's ratio to its window's level finds that level
    source: str | None
    device: str
    say: Callable[[str], None]

    @property
    def ev(self) -> Any:
        return self.config.evaluate

    @property
    def dev(self) -> DevData:
        return self.prepared.dev

    @property
    def task(self) -> str:
        return self.config.task.type

    @property
    def kind(self) -> str:
        return _baseline_kind(self.config, self.prepared.target.recipe)

    @property
    def n_classes(self) -> int:
        return len(self.dev.classes or ())

    def series_of(self, samples: np.ndarray) -> np.ndarray | None:
        return None if self.dev.series is None else self.dev.series[samples]

    def baselines_at(self, hist: pd.DataFrame, anchors: np.ndarray) -> dict[str, np.ndarray]:
        """The time-series baselines' forecasts at these origins (P(class 1) for binary); in
        a panel each series' from its own past alone."""
        out = bl.per_series_baselines(self.kind, hist, anchors, self.dev.horizon,
                                      n_classes=self.n_classes,
                                      refit_every=self.ev.refit_every)
        return {n: b[:, 1] if self.task == "binary" else b for n, b in out.items()}


def _open_study(s: Storage, rec: StudyRecord, study: str, device: str,
                say: Callable[[str], None]) -> _Study:
    """The study's config and data, checked to be the data its race ran on."""
    config = study_config(rec.config, origin=f"study '{study}'")
    metric, direction = race_metric(config)
    prepared = prepare(config)
    check_same_data(rec.config, study, prepared, "evaluate on the data the race used")
    dev = prepared.dev
    task = config.task.type
    source = level_source(prepared.features, prepared.target) if task == "regression" else None
    folds = [dev.fold_data(f) for f in dev.folds]
    shape = DataShape(folds[0].X_train.shape[1], folds[0].X_train.shape[2], task,
                      len(dev.classes or ()), tuple(dev.series_names or ()))
    return _Study(s, rec, study, config, metric, direction, prepared, folds, shape, source,
                  device, say)


def _load_finalists(ctx: _Study) -> list[_Finalist]:
    """The finalists (see :func:`_finalists`) that have a checkpoint, with their fold
    networks' weights."""
    s, dev = ctx.storage, ctx.dev
    fins = []
    for t in _finalists(s, ctx.rec.id, ctx.direction, ctx.ev.finalists):
        ck_rec = s.checkpoint(t.id)
        if ck_rec is None:
            continue
        ck = load_checkpoint(ck_rec.data)
        if len(ck.fold_weights) != len(dev.folds):
            raise UserError(f"trial {t.number}'s checkpoint holds {len(ck.fold_weights)} fold "
                            f"networks, the study's split now makes {len(dev.folds)} folds; it "
                            "was written by an older netrace or under another [split]; race "
                            "again in a new study (netrace run CONFIG --study NEW)")
        fins.append(_Finalist(t, ck, population_settings(t.params, ctx.shape)))
    if not fins:
        raise UserError(f"study '{ctx.name}' has no finished network with a checkpoint yet; "
                        "race first (netrace run CONFIG), or let the running race finish some")
    ctx.say(f"{len(fins)} finalists (trials {', '.join(str(f.trial.number) for f in fins)}), "
           f"chosen on validation {ctx.metric}")
    return fins


@dataclass
class _Validation:
    """Every finalist's fold networks and their validation forecasts: per finalist and fold
    (``fold_fcs``), and out of fold (``oof``, finalists first, on the development samples
    ``seen``, whose targets are ``y``); each finalist's mean validation score recomputed as the
    race scored it; the candidates' weights over the finalists, and their validation losses."""

    fold_nets: list[list[Net]]
    fold_fcs: list[list[np.ndarray]]
    seen: np.ndarray
    y: np.ndarray
    oof: np.ndarray
    rescored: list[float]
    weights: dict[str, np.ndarray]
    losses: dict[str, float]


def _validate(ctx: _Study, fins: list[_Finalist]) -> _Validation:
    """Every finalist's out-of-fold forecasts, and the candidates weighed on them."""
    dev, task = ctx.dev, ctx.task
    fold_nets: list[list[Net]] = []
    oof = []
    rescored = []
    fold_fcs = []  # per finalist, per fold: its fold network's validation forecasts
    valid_scaling = [dev.target_scaling(fo).valid for fo in dev.folds]  # as the race scored
    for f in fins:
        nets, fcs, raw = _fold_forecasts(ctx, f)
        fold_nets.append(nets)
        fold_fcs.append(fcs)
        seen, fc = out_of_fold(dev.n, [fo.valid for fo in dev.folds], fcs)
        oof.append(fc)
        rescored.append(float(np.mean([_valid_score(ctx.metric, fd, fcv, task, sc)
                                       for fd, fcv, sc in zip(ctx.folds, raw, valid_scaling,
                                                              strict=True)])))
    y_oof = dev.y[seen]
    oof_arr = np.stack(oof)
    k = len(fins)
    weights = {
        "best": np.eye(k)[0],
        "top_k": np.full(k, 1.0 / k),
        "greedy": greedy_weights(task, y_oof, oof_arr),
    }
    weights["folds"], weights["best_folds"] = weights["top_k"], weights["best"]
    validation = {name: ensemble_loss(task, y_oof, combine(oof_arr, w)[0])
                  for name, w in weights.items() if name in ("best", "top_k", "greedy")}
    return _Validation(fold_nets, fold_fcs, seen, y_oof, oof_arr, rescored, weights,
                       validation)


def _fold_forecasts(ctx: _Study, f: _Finalist
                    ) -> tuple[list[Net], list[np.ndarray], list[np.ndarray]]:
    """A finalist's fold networks, their forecasts of their own fold's validation part, and
    the same forecasts as the race scored them (without the forecast floor)."""
    task = ctx.task
    nets, fcs, raw = [], [], []
    for j, (fold, fd) in enumerate(zip(ctx.dev.folds, ctx.folds, strict=True)):
        scaling = (f.checkpoint.target_scaling[j] if f.checkpoint.target_scaling
                   else ((float(fd.y_train.mean()), float(fd.y_train.std()) or 1.0)
                         if task == "regression" else (0.0, 1.0)))
        net = Net(f"trial {f.trial.number} fold {j + 1}", f.settings,
                  f.checkpoint.fold_weights[j], f.checkpoint.preprocessors[j], scaling,
                  forecast_floor(task, fd.y_train), target=f.checkpoint.target(j))
        nets.append(net)
        fcs.append(net.forecast(fd.X_valid, task, ctx.series_of(fold.valid)))
        net.floor, floor = None, net.floor  # as the race scored it: without the floor
        raw.append(net.forecast(fd.X_valid, task, ctx.series_of(fold.valid)))
        net.floor = floor
    return nets, fcs, raw


def _validation_baselines(ctx: _Study
                          ) -> tuple[list[dict[str, np.ndarray] | None], dict[str, float]]:
    """Every baseline's forecasts of each validation block, from the past only (a block with
    too little past before it, as at the start of purged k-fold, has none), and their losses
    on the same validation samples as the networks' (for the record: did the networks beat
    them on validation, where they were chosen?)."""
    dev = ctx.dev
    base_fold: list[dict[str, np.ndarray] | None] = []
    for fo in dev.folds:
        try:
            base_fold.append(ctx.baselines_at(dev.history, dev.anchors[fo.valid])
                             if dev.history is not None else None)
        except UserError:
            base_fold.append(None)
    with_base = [j for j, b in enumerate(base_fold) if b is not None]
    valid_baselines = {}
    if with_base:
        idx = np.concatenate([dev.folds[j].valid for j in with_base])
        valid_baselines = {n: ensemble_loss(ctx.task, dev.y[idx], np.concatenate(
            [base_fold[j][n] for j in with_base])) for n in base_fold[with_base[0]]}
    return base_fold, valid_baselines


@dataclass
class _BlendFit:
    """The blend's weights over its ``columns`` (``top_k``, then the baselines), chosen on
    nested validation forecasts (targets ``y``, the blend's forecasts of them ``valid``), by
    ``loss``; a panel's per series; and the nested validation's report."""

    base_names: list[str]
    columns: dict[str, np.ndarray]
    loss: str | tuple[str, ...] | None
    weights: np.ndarray
    by_series: dict[Any, np.ndarray]
    y: np.ndarray
    valid: np.ndarray
    report: dict[str, Any]
    seconds: float


def _weigh_blend(ctx: _Study, val: _Validation,
                 base_fold: list[dict[str, np.ndarray] | None]) -> _BlendFit:
    """``top_k`` and the baselines weighed by greedy selection on nested validation forecasts
    (:func:`_nested_forecasts`; when there are none, the fold networks' own, chosen on every
    fold: optimistic, and said so)."""
    dev, task = ctx.dev, ctx.task
    t0 = time.perf_counter()
    nested, why_not = _nested_forecasts(ctx)
    nested_seconds = time.perf_counter() - t0
    if nested is not None:
        top_fold, best_fold = nested
    else:  # the fold networks' own forecasts, chosen on every fold: optimistic, and said so
        top_fold = [combine(np.stack([fcs[j] for fcs in val.fold_fcs]), val.weights["top_k"])[0]
                    for j in range(len(dev.folds))]
        best_fold = [val.fold_fcs[0][j] for j in range(len(dev.folds))]
    with_base = [j for j, b in enumerate(base_fold) if b is not None]
    use = with_base or list(range(len(dev.folds)))
    base_names = list(base_fold[with_base[0]]) if with_base else []
    y_blend = np.concatenate([dev.y[dev.folds[j].valid] for j in use])
    columns = {"top_k": np.concatenate([top_fold[j] for j in use]),
               **{n: np.concatenate([base_fold[j][n] for j in use]) for n in base_names}}
    # a volatility is judged on MSE and QLIKE, so the blend is weighed on both alike (MSE
    # alone leaned on log-HAR and lost QLIKE to HAR on nested validation, NASDAQ)
    blend_loss: str | tuple[str, ...] | None = ("mse", "qlike") if ctx.kind == "volatility" \
        else "qlike" if ctx.metric == "qlike" else None
    cols = np.stack(list(columns.values()))
    w_blend = greedy_weights(task, y_blend, cols, loss=blend_loss,
                             floor=_floor_model(task, y_blend, cols, blend_loss))
    blend_valid = combine(cols, w_blend)[0]
    # a panel: every series its own weights, on its own nested validation samples (one set
    # for all let the pooled networks' weight, right for one series, hurt another)
    w_series: dict[Any, np.ndarray] = {}
    if dev.series is not None:
        s_blend = np.concatenate([dev.series[dev.folds[j].valid] for j in use])
        for label in pd.unique(s_blend):
            at = s_blend == label
            w_series[label] = greedy_weights(
                task, y_blend[at], cols[:, at], loss=blend_loss,
                floor=_floor_model(task, y_blend[at], cols[:, at], blend_loss))
            blend_valid[at] = combine(cols[:, at], w_series[label])[0]
    best = np.concatenate([best_fold[j] for j in use])
    report = _nested_report(ctx, nested is not None, why_not, use, y_blend, blend_valid,
                            columns, best, base_names)
    return _BlendFit(base_names, columns, blend_loss, w_blend, w_series, y_blend, blend_valid,
                     report, nested_seconds)


def _floor_model(task: str, y: np.ndarray, cols: np.ndarray,
                 loss: str | tuple[str, ...] | None) -> int | None:
    """The column (after ``top_k``, the baselines) that the blend must not be worse than on
    any of its losses on nested validation: the baseline best on the first loss (HAR, as a
    rule, for a volatility), so that what validation shows to lose to it is never chosen."""
    if len(cols) < 2:
        return None
    first = loss if loss is None or isinstance(loss, str) else loss[0]
    finite = [j for j in range(1, len(cols)) if np.isfinite(cols[j]).all()]
    if not finite:
        return None
    return min(finite, key=lambda j: (ensemble_loss(task, y, cols[j], first), j))


def _nested_report(ctx: _Study, nested: bool, why_not: str | None, use: list[int],
                   y: np.ndarray, blend: np.ndarray, columns: dict[str, np.ndarray],
                   best: np.ndarray, base_names: list[str]) -> dict[str, Any]:
    """What the result says of the nested validation: whether it was nested (why not), on
    which samples and folds, and every column's losses on it, the blend's and best's too."""
    task = ctx.task
    losses_on = ["mse", "qlike"] if ctx.kind == "volatility" else \
        (["mse"] if task == "regression" else ["log_loss"])
    return {
        "nested": nested, "why_not": why_not, "samples": int(len(y)),
        "folds": [j + 1 for j in use],
        **{lname: {name: _num(ensemble_loss(task, y, f, lname)) for name, f in
                   [("blend", blend), ("top_k", columns["top_k"]), ("best", best),
                    *[(n, columns[n]) for n in base_names]]}
           for lname in losses_on}}


def _intervals(ctx: _Study, val: _Validation, blend: _BlendFit) -> dict[str, Interval]:
    """Each candidate's interval from its validation residuals (the blend's nested ones), for
    a regression."""
    if ctx.task != "regression":
        return {}
    intervals = {name: Interval.fit(val.y, combine(val.oof, w)[0], ctx.ev.coverage)
                 for name, w in val.weights.items()}
    intervals["blend"] = Interval.fit(blend.y, blend.valid, ctx.ev.coverage)
    return intervals


@dataclass
class _Refit:
    """The finalists refit on the whole development part: its preprocessing ``fitted``, its
    inputs ``X``, the jobs and the networks."""

    fitted: FittedPreprocessor
    X: np.ndarray
    jobs: list[RefitJob]
    nets: list[Net]
    seconds: float


def _refit_finalists(ctx: _Study, fins: list[_Finalist]) -> _Refit:
    """Every finalist refit on the whole development part, for the epochs at which its fold
    mean peaked."""
    dev, task = ctx.dev, ctx.task
    t0 = time.perf_counter()
    everything = np.arange(dev.n)
    fitted = dev.fit_preprocessor(everything)
    X_dev = dev.windows(everything, fitted)
    y_dev, scaling = _scaled_target(task, dev, everything)
    jobs = [RefitJob(f.settings, f.trial.params, f.trial.seed, int(f.trial.best_epoch or 0) + 1,
                     ctx.config.race.max_epochs) for f in fins]
    ctx.say(f"refitting {len(fins)} finalists on all {dev.n} development samples "
           f"({sum(j.epochs for j in jobs)} network-epochs)")
    # torch's own thread count (OMP_NUM_THREADS when set): forcing every core would make this
    # process crawl beside another that uses them too
    dev_targets = TargetData(dev.y, X_dev, fitted, ctx.source, ctx.series_of(everything))
    refit_weights = refit(jobs, X_dev, y_dev, task=task, monitor="loss", seed=ctx.ev.seed,
                          device=ctx.device, target=dev_targets,
                          series=ctx.series_of(everything))
    refit_nets = [Net(f"trial {f.trial.number} refit", f.settings, w, fitted, scaling,
                      forecast_floor(task, dev.y), target=dev_targets.fitted(f.settings, w))
                  for f, w in zip(fins, refit_weights, strict=True)]
    return _Refit(fitted, X_dev, jobs, refit_nets, time.perf_counter() - t0)


@dataclass
class _TestPart:
    """The test part, opened (``opening`` in the storage, the study's ``openings``-th), and
    what was forecast on it: the refit finalists' forecasts (``refit_fc``), every candidate's
    (``forecasts``, the blend first) and every baseline's; its first and last origin."""

    data: TestData
    opening: int
    openings: int
    refit_fc: np.ndarray
    forecasts: dict[str, np.ndarray]
    baselines: dict[str, np.ndarray]
    first: Any
    last: Any


def _open_test(ctx: _Study, val: _Validation, blend: _BlendFit, fit: _Refit) -> _TestPart:
    """Open the test part, once (counted in the storage first), and forecast it: every
    candidate and every baseline, on exactly the same points."""
    s, dev, task = ctx.storage, ctx.dev, ctx.task
    opening = s.open_evaluation(ctx.rec.id)
    openings = len(s.evaluations(ctx.rec.id))
    ctx.say(f"opening the test part ({ctx.prepared.holdout.n} samples; opening number "
           f"{openings})")
    test = ctx.prepared.holdout.open(fit.fitted)
    refit_fc = np.stack([net.forecast(test.X, task, test.series) for net in fit.nets])
    by_fold = {}
    fold_fc = []
    for nets in val.fold_nets:
        per, masks = [], []
        for j, net in enumerate(nets):
            if j not in by_fold:
                by_fold[j] = test.windows(net.preprocessor)
            out, known = net.forecast_known(by_fold[j], task, test.series)
            per.append(out)
            masks.append(np.ones(len(out), bool) if known is None else known)
        # a panel's series that starts after a fold's training part: the other folds' mean
        fold_fc.append(combine(np.stack(per), np.full(len(per), 1.0 / len(per)),
                               None if all(m.all() for m in masks) else np.stack(masks))[0])
    fold_fc_arr = np.stack(fold_fc)
    forecasts = {name: combine(refit_fc if name in ("top_k", "greedy", "best") else fold_fc_arr,
                               val.weights[name])[0] for name in CANDIDATES if name != "blend"}
    baselines, first, last = _test_baselines(ctx, test, fit.X)
    test_cols = np.stack([forecasts["top_k"], *[baselines[n] for n in blend.base_names]])
    blend_test = combine(test_cols, blend.weights)[0]
    for label, wl in blend.by_series.items():
        at = test.series == label
        if at.any():
            blend_test[at] = combine(test_cols[:, at], wl)[0]
    forecasts = {"blend": blend_test, **forecasts}
    return _TestPart(test, opening, openings, refit_fc, forecasts, baselines, first, last)


def _check_fold_coverage(ctx: _Study) -> None:
    """A forecast made of fold networks (``folds``, ``best_folds``) forecasts a panel's series
    only where some fold trained on it: one listed after every fold's training part it cannot
    forecast, which is said before anything is trained or opened."""
    if ctx.ev.forecast not in ("folds", "best_folds") or ctx.dev.series is None:
        return
    known = {str(v) for f in ctx.folds for v in getattr(f.preprocessor, "labels", ())}
    p = ctx.prepared
    lost = [str(n) for n, c in zip(p.series_names, p.series_counts, strict=True)
            if c[2] and str(n) not in known]
    if lost:
        raise UserError(f"[evaluate] forecast = {ctx.ev.forecast!r} averages the fold networks, "
                        f"and no fold trained on series {', '.join(lost)} (its development rows "
                        "start after every fold's training part), so they cannot forecast its "
                        "test part; use forecast = \"blend\" or \"top_k\" (networks refit on "
                        "the whole development part), or fewer folds")


def _test_baselines(ctx: _Study, test: TestData, X_dev: np.ndarray
                    ) -> tuple[dict[str, np.ndarray], Any, Any]:
    """The baselines' forecasts of the test points (time series: from the past only; i.i.d.
    rows: fit on the development part), and the first and last point's time (or index)."""
    dev, task, y = ctx.dev, ctx.task, test.y
    if test.history is not None:
        baselines = ctx.baselines_at(test.history, test.anchors)
        when = test.history["time"].to_numpy()[test.anchors + dev.horizon]
        return baselines, _iso(when.min()), _iso(when.max())
    baselines = bl.iid_baselines(task, X_dev.reshape(len(X_dev), -1), dev.y,
                                 test.X.reshape(len(y), -1), n_classes=ctx.n_classes)
    if task == "binary":  # P(class 1)
        baselines = {n: b[:, 1] for n, b in baselines.items()}
    return baselines, 0, len(y) - 1


def _loss_names(ctx: _Study) -> list[str]:
    """The losses the test part is judged on, each with a Diebold-Mariano test."""
    if ctx.task == "regression":
        return ["mse", "mae"] + (["qlike"] if ctx.kind == "volatility" else [])
    return ["log_loss"]


def _judge(ctx: _Study, tp: _TestPart, intervals: dict[str, Interval], k: int,
           sel: np.ndarray | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every candidate's and baseline's metrics and DM p-values, and SPA, on the test
    samples ``sel`` (all); a panel's pooled tests run on the per-date means of the losses
    (the cross-section's average each day), one series' on its own days."""
    dev, task, test, chosen = ctx.dev, ctx.task, tp.data, ctx.ev.forecast
    loss_names = _loss_names(ctx)
    h = dev.horizon if test.history is not None else 1
    yy = test.y if sel is None else test.y[sel]
    part = (lambda f: f) if sel is None else (lambda f: f[sel])
    dates = test.time if test.series is not None and sel is None else None
    train_mean = 0.0
    if task == "regression":
        train_mean = float(dev.y.mean() if sel is None or dev.series is None else
                           dev.y[dev.series == test.series[sel][0]].mean())
    fc = part(tp.forecasts[chosen])
    models = []
    for name in CANDIDATES:
        f = part(tp.forecasts[name])
        m = _test_metrics(ctx, yy, f, train_mean)
        if name in intervals:
            m["coverage"] = st.interval_coverage(yy, *intervals[name].bounds(f))
        models.append({"name": name, "kind": "netrace",
                       "description": CANDIDATES[name].format(k=k),
                       "metrics": {a: _num(b) for a, b in m.items()},
                       "dm_pvalue": {} if name == chosen else _dm(loss_names, yy, f, fc, h,
                                                                  dates)})
    for name, b in tp.baselines.items():
        m = _test_metrics(ctx, yy, part(b), train_mean)
        models.append({"name": name, "kind": "baseline",
                       "metrics": {a: _num(v) for a, v in m.items()},
                       "dm_pvalue": _dm(loss_names, yy, part(b), fc, h, dates)})
    spa = {}
    for lname in loss_names[:1] + (["qlike"] if ctx.kind == "volatility" else []):
        spa[lname] = _spa(lname, yy, part, dates, tp, ctx.ev.seed)
    return models, spa


def _test_metrics(ctx: _Study, y: np.ndarray, f: np.ndarray, train_mean: float
                  ) -> dict[str, float]:
    """A forecast's metrics on test targets ``y`` (R² against ``train_mean``)."""
    task, rets = ctx.task, ctx.kind == "returns"
    if task == "regression":
        m = st.regression_metrics(y, f, train_mean=train_mean,
                                  volatility=ctx.kind == "volatility", returns=rets)
    elif task == "binary":
        m = st.binary_metrics(y, f)
    else:
        return st.multiclass_metrics(y, f)
    if (rets or task == "binary") and np.isfinite(f).all():
        # directions: is the hit rate better than chance (Pesaran-Timmermann)?
        m["pt_pvalue"] = st.pesaran_timmermann(
            y, f if rets else (f >= 0.5).astype(float))[1]
    return m


def _spa(lname: str, y: np.ndarray, part: Callable[[np.ndarray], np.ndarray],
         dates: np.ndarray | None, tp: _TestPart, seed: int) -> dict[str, Any]:
    """Hansen's SPA on loss ``lname``: whether any refit finalist or candidate beats the best
    baseline after the search over them."""
    bench_l = {n: _by_date(st.point_losses(lname, y, part(b)), dates)
               for n, b in tp.baselines.items()}
    bb = min(bench_l, key=lambda n: _mean_or_inf(bench_l[n]))
    cols = np.column_stack(
        [_by_date(st.point_losses(lname, y, part(f)), dates) for f in tp.refit_fc]
        + [_by_date(st.point_losses(lname, y, part(tp.forecasts[n])), dates)
           for n in CANDIDATES])
    cols = cols[:, np.isfinite(cols).all(axis=0)]
    p = st.spa_pvalue(bench_l[bb], cols, seed=seed) \
        if cols.shape[1] and len(cols) >= MIN_TEST_POINTS else math.nan
    return {"benchmark": bb, "pvalue": _num(p)}


def _result(ctx: _Study, fins: list[_Finalist], val: _Validation,
            valid_baselines: dict[str, float], blend: _BlendFit,
            intervals: dict[str, Interval], fit: _Refit, tp: _TestPart,
            models: list[dict[str, Any]], spa: dict[str, Any], started: float
            ) -> dict[str, Any]:
    """The verdict's record (without the verdict sentence): what the result JSON holds."""
    task, chosen = ctx.task, ctx.ev.forecast
    interval = intervals.get(chosen)
    return {
        "study": ctx.name, "task": task, "target": ctx.config.task.target,
        "test": {"first": tp.first, "last": tp.last, "n": int(len(tp.data.y))},
        "forecast": chosen,
        "models": models,
        "spa_pvalue": spa[_loss_names(ctx)[0]]["pvalue"],
        "spa": spa,
        "openings": tp.openings,
        "finalists": [{"trial": f.trial.number, "validation": _num(f.trial.best_value),
                       "rescored": _num(r), "epochs": j.epochs, "model": f.settings.model,
                       "state": f.trial.state.value}
                      for f, r, j in zip(fins, val.rescored, fit.jobs, strict=True)],
        "validation": {"metric": "mse" if task == "regression" else "log_loss",
                       "samples": int(len(val.seen)),
                       **{n: _num(v) for n, v in val.losses.items()},
                       "baselines": {n: _num(v) for n, v in valid_baselines.items()}},
        "weights": {n: [_num(x) for x in val.weights[n]] for n in ("greedy",)},
        "blend": _blend_record(ctx, blend),
        "interval": None if interval is None else {"kind": interval.kind,
                                                   "coverage": interval.coverage},
        "baselines": {"kind": ctx.kind, "refit_every": ctx.ev.refit_every},
        "race": {"metric": ctx.metric, "epochs_spent": ctx.storage.epochs_spent(ctx.rec.id)},
        "seconds": {"refit": round(fit.seconds, 2), "nested": round(blend.seconds, 2),
                    "total": round(time.perf_counter() - started, 2)},
    }


def _blend_record(ctx: _Study, blend: _BlendFit) -> dict[str, Any]:
    """The blend's weights (a panel's per series too), its loss and the nested report."""
    return {"weights": {n: _num(x) for n, x in zip(blend.columns, blend.weights, strict=True)},
            **({"by_series": {_iso(label): {n: _num(x) for n, x in
                                            zip(blend.columns, wl, strict=True)}
                              for label, wl in blend.by_series.items()}}
               if blend.by_series else {}),
            "loss": "+".join(blend.loss) if isinstance(blend.loss, tuple) else
            blend.loss or ("mse" if ctx.task == "regression" else "log_loss"),
            **blend.report}


def _series_verdicts(ctx: _Study, tp: _TestPart, intervals: dict[str, Interval], k: int,
                     result: dict[str, Any]) -> list[dict[str, Any]]:
    """A panel: the verdict of every series on its own test points."""
    out = []
    primary = _loss_names(ctx)[0]
    for name in pd.unique(tp.data.series):
        sel = np.flatnonzero(tp.data.series == name)
        s_models, s_spa = _judge(ctx, tp, intervals, k, sel)
        one = {"series": _iso(name), "n": int(len(sel)), "models": s_models,
               "forecast": ctx.ev.forecast, "spa": s_spa,
               "spa_pvalue": s_spa[primary]["pvalue"],
               "blend": {**result["blend"], "weights": result["blend"].get(
                   "by_series", {}).get(_iso(name), result["blend"]["weights"])}}
        one["verdict"] = verdict(one)
        out.append(one)
    return out


def _final_model(ctx: _Study, val: _Validation, blend: _BlendFit,
                 intervals: dict[str, Interval], fit: _Refit, tp: _TestPart, k: int
                 ) -> FinalModel:
    """netrace's forecast, as ``netrace predict`` uses it: the chosen candidate's networks
    and weights (and baselines, for the blend), its interval, and the test forecasts."""
    dev, task, chosen, test = ctx.dev, ctx.task, ctx.ev.forecast, tp.data
    nets = fit.nets if chosen in ("blend", "top_k", "greedy", "best") else \
        [n for nets in val.fold_nets for n in nets]
    w = val.weights["top_k" if chosen == "blend" else chosen]
    final_blend = None
    if chosen == "blend":
        def blend_of(wb: np.ndarray) -> Blend:
            return Blend(float(wb[0]), {n: float(x) for n, x in zip(blend.base_names, wb[1:],
                                                                    strict=True) if x > 0},
                         ctx.kind, dev.horizon, ctx.ev.refit_every, ctx.n_classes,
                         test.time.min() if test.time is not None and len(test.time) else None)

        final_blend = blend_of(blend.weights)
        if blend.by_series:
            final_blend = replace(final_blend, by_series={
                label: blend_of(wl) for label, wl in blend.by_series.items()})
    if chosen in ("folds", "best_folds"):
        w = np.repeat(w, len(dev.folds)) / len(dev.folds)
    keep = w > 0
    interval = intervals.get(chosen)
    model = FinalModel(ctx.name, chosen, CANDIDATES[chosen].format(k=k), task, dev.classes,
                       ctx.rec.config, [n for n, kp in zip(nets, keep) if kp], w[keep],
                       interval, dev.window, ctx.prepared.time_name,
                       features=tuple(f.name for f in ctx.prepared.features), blend=final_blend,
                       history_start=_history_start(dev))
    origin = test.time if test.time is not None else np.arange(len(test.y))
    table = {"time": origin, **({"series": test.series} if test.series is not None else {}),
             "y": test.y}
    for name, f in [*tp.forecasts.items(), *tp.baselines.items()]:
        if np.ndim(f) == 1:
            table[name] = f
    if task == "regression" and interval is not None:
        table["lower"], table["upper"] = interval.bounds(tp.forecasts[chosen])
    model.test = pd.DataFrame(table)
    return model


def _history_start(dev: Any) -> dict[str, Any] | None:
    """The time of the development part's first row, per series ("" for one series)."""
    h = dev.history
    if h is None or "time" not in h or not len(h):
        return None
    if "series" in h:
        return {str(k): v for k, v in h.groupby("series", sort=False)["time"].min().items()}
    return {"": h["time"].iloc[0]}


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


def _nested_forecasts(ctx: _Study
                      ) -> tuple[tuple[list[np.ndarray], list[np.ndarray]] | None, str | None]:
    """Per fold, the validation forecasts of ``top_k`` and ``best`` as validation would have
    chosen them without that fold (:mod:`._nested`): the networks with the best mean score over
    the other folds, retrained on the fold's training part for the epochs at which that mean
    peaked. ``(None, why)`` when that cannot be done."""
    s, dev, task = ctx.storage, ctx.dev, ctx.task
    n_folds = len(dev.folds)
    if n_folds < 2:
        return None, "one validation block: the networks were chosen on the block itself"
    trials = {t.id: t for t in s.trials(ctx.rec.id)
              if t.state.value in _KEPT and t.best_value is not None and t.epochs > 0}
    metrics = s.curve_metrics(ctx.rec.id, list(trials))
    tables = {}
    for tid in trials:
        table = fold_table(metrics.get(tid, []), n_folds, FOLD_KEY)
        if table is None:
            return None, "the race kept no per-fold scores (it ran on an older netrace)"
        tables[tid] = table
    top, best = [], []
    for j, fd in enumerate(ctx.folds):
        choice = choose_without(tables, j, ctx.ev.finalists,
                                maximize=ctx.direction == "maximize")
        if not choice.trials:
            return None, f"no network has a score on the folds other than fold {j + 1}"
        y_train, scaling = _scaled_target(task, dev, dev.folds[j].train)
        jobs = [RefitJob(population_settings(trials[t].params, ctx.shape), trials[t].params,
                         trials[t].seed, e, ctx.config.race.max_epochs)
                for t, e in zip(choice.trials, choice.epochs, strict=True)]
        ctx.say(f"nested validation, fold {j + 1} of {n_folds}: {len(jobs)} networks chosen on "
                f"the other folds, trained on its {len(y_train)} training samples "
                f"({sum(choice.epochs)} network-epochs)")
        s_train = ctx.series_of(dev.folds[j].train)
        fold_targets = TargetData(fd.y_train, fd.X_train, fd.preprocessor, ctx.source, s_train)
        trained = refit(jobs, fd.X_train, y_train, task=task, monitor="loss", seed=ctx.ev.seed,
                        device=ctx.device, target=fold_targets, series=s_train)
        fcs = np.stack([Net(f"trial {trials[t].number} nested fold {j + 1}", job.settings, w,
                            fd.preprocessor, scaling, forecast_floor(task, fd.y_train),
                            target=fold_targets.fitted(job.settings, w)
                            ).forecast(fd.X_valid, task, ctx.series_of(dev.folds[j].valid))
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
    idx = pd.Index(dates)
    out = pd.Series(losses).groupby(idx).mean().to_numpy().copy()
    # a day with a missing loss (a model that did not forecast every series) has no mean
    out[pd.Series(np.isnan(losses)).groupby(idx).any().to_numpy()] = np.nan
    return out


#: the fewest test points (days, pooled) that DM and SPA are run on: with fewer, a
#: Newey-West variance and a block bootstrap mean nothing, and the verdict says so
MIN_TEST_POINTS = 20


def _dm(loss_names: list[str], y: np.ndarray, other: np.ndarray, forecast: np.ndarray,
        h: int, dates: np.ndarray | None = None) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name in loss_names:
        a = _by_date(st.point_losses(name, y, other), dates)
        b = _by_date(st.point_losses(name, y, forecast), dates)
        if not (np.isfinite(a).all() and np.isfinite(b).all()) or len(a) < MIN_TEST_POINTS:
            out[name] = None  # not a number everywhere, or too few points: no test
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
            beats = f"beats the best baseline ({best['name']}) on {_LABELS[lname]}"
            if how == "significantly" and spa_l is not None and spa_l >= 0.05:
                # a DM win that the search over networks and candidates could have produced
                # by chance (SPA, which also allows for persistent losses) is not a win
                parts.append(f"{beats} (DM p = {ptxt}), but not significantly once the search "
                             f"over models is allowed for (SPA p = {spa_l:.3f})")
            else:
                parts.append(f"{beats} {how} (DM p = {ptxt})")
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
    n = result.get("n", (result.get("test") or {}).get("n"))
    few = (f"; too few test points ({n}) for a test, which needs at least {MIN_TEST_POINTS}"
           if n is not None and n < MIN_TEST_POINTS else "")
    return f"{lead} ({what}) " + " and ".join(parts) + spa_txt + few + "."


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
