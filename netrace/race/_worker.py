"""A race worker: populations of networks, trained, validated, judged and refilled every epoch.

One worker runs one population at a time (one per fold when the split has folds; a network's
score per epoch is its mean over folds). After every epoch it records the validation values of
all members, lets the rule judge every running network at once, ends the finished ones with a
checkpoint of their best state, and refills freed slots from the sampler, which has seen the
results of every worker. Everything it learns goes to storage in one transaction per epoch,
with the whole training state of every network still running, so that if this worker dies
another one continues those networks where they were (re-queued trials are claimed before new
proposals). A resumed network sees its new population's minibatch order from then on; its
weights, optimizer state, schedule, dropout keys, bagging weights, best state and patience go
on exactly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from netrace.backends import WorkerContext
from netrace.config import Config, default_space, parse_space
from netrace.curves import Curves, Goal, LCRule, Rule, make_rule
from netrace.data import prepare
from netrace.errors import UserError
from netrace.race._build import (
    DEFAULT_METRIC,
    MAXIMIZED,
    DataShape,
    PopulationSettings,
    member_spec,
    model_inputs,
    population_settings,
)
from netrace.race._checkpoint import pack_checkpoint, pack_preprocessors
from netrace.race._proposer import Proposer, population_key
from netrace.race._resume import load_slot, save_slots
from netrace.race._target import FoldTarget, TargetData, level_source
from netrace.storage import (
    RACE_ENDED,
    Checkpoint,
    DecisionRecord,
    EpochValue,
    RaceEndReason,
    ResumeState,
    Storage,
    TrialEnd,
    TrialEndReason,
    TrialRecord,
    TrialState,
)
from netrace.train import MemberState, Population

__all__ = ["RacePlan", "worker_main", "race_metric", "race_rule", "search_space",
           "DEFAULT_BUDGET_FACTOR"]

#: Without ``[race] budget``: this many full populations' worth of network-epochs.
DEFAULT_BUDGET_FACTOR = 4
#: an epoch's metrics hold the race's metric on fold j (counted from 1) as ``fold<j>``
FOLD_KEY = "fold"


@dataclass(frozen=True)
class RacePlan:
    """What every worker is handed (picklable): the config and where the study lives."""

    config: Config
    storage_url: str
    study: str
    seed: int = 0
    device: str = "auto"
    refill_factor: int = 3  # a population starts at most this many x population networks


def race_metric(config: Config) -> tuple[str, str]:
    """The metric networks are judged by and its direction."""
    task = config.task.type
    metric = config.race.metric or DEFAULT_METRIC[task]
    allowed = {"regression": ("r2", "mse", "mae", "loss", "qlike"),
               "binary": ("auc", "log_loss", "accuracy", "loss"),
               "multiclass": ("accuracy", "auc", "log_loss", "loss")}[task]
    if metric not in allowed:
        raise UserError(f"[race] metric = {metric!r} does not apply to a {task} task; choose one "
                        f"of {', '.join(allowed)}")
    return metric, "maximize" if metric in MAXIMIZED else "minimize"


def search_space(config: Config) -> Any:
    return config.search.space or parse_space(default_space(config.is_time_series))


def budget_of(config: Config) -> int:
    r = config.race
    return r.budget or DEFAULT_BUDGET_FACTOR * r.population * r.max_epochs


def oriented_bounds(metric: str) -> tuple[float, float]:
    """The metric's range with higher better (a minimized metric negated): R², accuracy and
    AUC are at most 1 (the last two at least 0); MSE, MAE, log-loss and the loss at least 0."""
    if metric not in MAXIMIZED:
        return (-math.inf, 0.0)
    return (-math.inf, 1.0) if metric == "r2" else (0.0, 1.0)


def race_rule(config: Config, metric: str) -> Rule:
    """The race's termination rule: ``[race] rule`` with its options from ``[race.<rule>]``;
    the lc rule also gets the metric's range."""
    options = dict(getattr(config.race, config.race.rule, None) or {})
    if config.race.rule == "lc":
        options["bounds"] = oriented_bounds(metric)
    return make_rule(config.race.rule, **options)


def worker_main(ctx: WorkerContext, plan: RacePlan) -> None:
    """Entry point of a worker process (handed to a backend)."""
    _Worker(ctx, plan).run()


def _metric_units(behind: dict[str, Any], goal: Goal) -> dict[str, Any]:
    """The lc rule's forecast (made on oriented values, higher is better) in the metric's units:
    the probability behind the decision, the mean, std and 90% interval of the final value."""
    out = dict(behind)
    if goal is Goal.MIN:
        out.update(mean=-behind["mean"], q05=-behind["q95"], q95=-behind["q05"],
                   model_mean=-behind["model_mean"])
    return out


def stop_forecasts(decisions: Mapping[int, list[DecisionRecord]]) -> dict[int, float]:
    """The forecast of the final value behind each lc stop among these trials' decisions
    (metric units, by trial id; trials the lc rule did not stop are left out)."""
    out = {}
    for tid, records in decisions.items():
        for d in records:
            if d.action == "stop" and d.prediction and "mean" in d.prediction:
                out[tid] = float(d.prediction["mean"])
    return out


def teach(rule: LCRule, curves: dict[int, np.ndarray], decisions: dict[int, list[DecisionRecord]],
          goal: Goal, budget: int) -> None:
    """Hand ``rule`` the model forecasts behind other workers' lc decisions on these finished
    ``curves`` (metric units, by trial id), so that it learns from them without forecasting
    them again."""
    s = 1.0 if goal is Goal.MAX else -1.0
    for tid, records in decisions.items():
        v = s * curves[tid]
        best = np.where(np.isnan(v), np.nan, np.fmax.accumulate(v))  # as Curves.running_best
        for d in records:
            pr = d.prediction or {}
            if d.rule == "lc" and "model_mean" in pr:
                rule.remember(budget, best[: pr["observed"]], s * pr["model_mean"], pr["unit"])


class _Worker:
    def __init__(self, ctx: WorkerContext, plan: RacePlan) -> None:
        self.ctx, self.plan, cfg = ctx, plan, plan.config
        self.storage = Storage(plan.storage_url)
        self.study = self.storage.get_study(plan.study)
        self.wid = self.storage.register_worker(self.study.id,
                                                heartbeat_timeout=cfg.race.heartbeat_timeout)
        self.metric, self.direction = race_metric(cfg)
        self.goal = Goal.MAX if self.direction == "maximize" else Goal.MIN
        self.space = search_space(cfg)
        self.proposer = Proposer(self.space, cfg.search.sampler,
                                 seed=cfg.search.seed * 100_003 + self.wid,
                                 startup=cfg.search.startup, direction=self.direction)
        self.rule = race_rule(cfg, self.metric)
        self.rng = np.random.default_rng([plan.seed, self.wid])
        self.k, self.max_epochs = cfg.race.population, cfg.race.max_epochs
        self.budget = budget_of(cfg)
        self._load_data()
        self._finished_curves: dict[int, np.ndarray] = {}
        self._taught: set[int] = set()  # finished trials whose forecasts the lc rule has
        self._curves_at = -math.inf
        self._seen: set[int] = set()  # stopped trials whose decisions were read
        self._synced_to = 0  # the sampler has seen the trials up to this id ...
        self._unfinished: set[int] = set()  # ... and these as unfinished

    def _load_data(self) -> None:
        p = prepare(self.plan.config)  # the test part stays sealed: workers never open it
        dev = p.dev
        task = self.plan.config.task.type
        self.folds = []
        self._target_scaling: list[Any] = []  # per fold: y = mu + sd * output (per series)
        self._valid_scaling: list[Any] = []  # per fold: (mu, sd) of its validation targets
        # per fold, the raw targets that a network learning a log or a ratio starts from
        self._target_data: list[tuple[TargetData, np.ndarray]] = []
        source = level_source(p.features, p.target) if task == "regression" else None
        for f in dev.folds:
            d = dev.fold_data(f)
            ydt = torch.long if task == "multiclass" else torch.float32
            ytr = torch.as_tensor(d.y_train, dtype=ydt)
            yva = torch.as_tensor(d.y_valid, dtype=ydt)
            base = None
            if task == "regression":
                # networks learn a standardized target (training statistics only, per series
                # in a panel); R² against the training mean, the baseline, is the same in
                # either unit
                scaling = dev.target_scaling(f)
                ytr, yva = _standardized(ytr, *scaling.train), _standardized(yva, *scaling.valid)
                base = torch.zeros_like(yva)
                kept, valid = scaling.kept, scaling.valid
            else:
                kept, valid = (0.0, 1.0), None
            self.folds.append((torch.as_tensor(d.X_train, dtype=torch.float32), ytr,
                               torch.as_tensor(d.X_valid, dtype=torch.float32), yva, base,
                               d.preprocessor))
            self._target_scaling.append(kept)
            self._valid_scaling.append(valid)
            self._target_data.append((TargetData(d.y_train, self.folds[-1][0].numpy(),
                                                 d.preprocessor, source), d.y_valid))
        self._preprocessors = pack_preprocessors([f[5] for f in self.folds])
        x0 = self.folds[0][0]
        self.shape = DataShape(int(x0.shape[1]), int(x0.shape[2]), task,
                               len(dev.classes or ()))

    # -- the race's state -------------------------------------------------------------------
    def over(self) -> bool:
        state, _ = self.storage.study_state(self.study.id)
        return state == "done"

    def _spend_check(self) -> None:
        if self.storage.epochs_spent(self.study.id) >= self.budget:
            self.storage.finish_study(self.study.id, RaceEndReason.BUDGET_SPENT,
                                      f"budget spent ({self.budget} network-epochs)")

    def run(self) -> None:
        failures = 0
        try:
            while not self.ctx.should_stop() and not self.over():
                self._spend_check()
                if self.over():
                    break
                try:
                    self._run_population()
                    failures = 0
                except _BadPopulation as exc:
                    failures += 1
                    if failures >= 10:
                        raise UserError(f"10 proposals in a row could not be built, the last "
                                        f"because: {exc}; narrow [search.space]") from None
        finally:
            if self.ctx.should_stop() and not self.over():
                self.storage.release_worker(self.wid)
            else:
                self.storage.finish_worker(self.wid)

    # -- one population -----------------------------------------------------------------------
    def _seeds(self, n: int) -> list[int]:
        return [int(s) for s in self.rng.integers(0, 2**31 - 1, n)]

    def _new_trials(self, n: int, fixed: dict[str, Any] | None) -> list[TrialRecord]:
        """Trials for ``n`` slots: re-queued ones of this population first (a dead worker's),
        then fresh proposals from the sampler."""
        if n <= 0:
            return []
        claimed = self.storage.claim_queued(self.study.id, self.wid, n, matching=fixed) \
            if fixed is not None else []
        n -= len(claimed)
        if n <= 0:
            return claimed
        # what changed since the last refill: new trials and the ones then unfinished
        trials = self.storage.trials_changed(self.study.id, self._synced_to, self._unfinished)
        self.proposer.sync(trials, self._forecasts(trials))
        self._synced_to = max([self._synced_to, *(t.id for t in trials)])
        self._unfinished = {t.id for t in trials if not t.state.finished}
        params = self.proposer.ask(n, fixed=fixed)
        added = self.storage.add_trials(self.study.id, params, self._seeds(n), worker_id=self.wid)
        self.proposer.bind(t.id for t in added)
        return claimed + added

    def _forecasts(self, trials: list[TrialRecord]) -> dict[int, float]:
        """The forecasts behind the lc rule's stops of networks first seen stopped now (metric
        units, by trial id): what the sampler, which meets them now too, is told of them."""
        new = [t.id for t in trials if t.state is TrialState.STOPPED and t.id not in self._seen]
        self._seen.update(new)
        return stop_forecasts(self.storage.decisions_of(new)) if new else {}

    def _run_population(self) -> None:
        queued = self.storage.claim_queued(self.study.id, self.wid, 1)
        first = queued[0] if queued else self._new_trials(1, None)[0]
        fixed = dict(population_key(first.params, self.space))
        trials: list[TrialRecord | None] = [first, *self._new_trials(self.k - 1, fixed)]
        pop_seed = int(self.rng.integers(0, 2**31 - 1))
        try:
            settings = population_settings(first.params, self.shape)
            members = [member_spec(t.params, t.seed, settings.optimizer, self.max_epochs)
                       for t in trials if t]
            pops = [Population(settings.spec, members, optimizer=settings.optimizer,
                               loss=settings.loss, batch_size=settings.batch_size,
                               monitor=self.metric, seed=pop_seed, device=self.plan.device)
                    for _ in self.folds]
            targets = [FoldTarget.of(data, settings, fold[2], y_valid)
                       for (data, y_valid), fold in zip(self._target_data, self.folds)]
        except UserError as exc:  # a combination the engine refuses: those trials fail
            self.storage.record_epoch(self.wid, ends=[
                TrialEnd(t.id, TrialState.FAILED, f"cannot build this network: {exc}")
                for t in trials if t is not None])
            raise _BadPopulation(str(exc)) from None
        # a network that learns a log or a ratio trains on it (its own target, tg.z_train); a
        # rolling window (train_window) on the most recent training samples alone
        inputs = [(model_inputs(xtr[rows], settings),
                   (ytr if tg is None else tg.z_train)[rows], model_inputs(xva, settings), yva,
                   base, None if tg is None else replace(tg, z_train=tg.z_train[rows]))
                  for (xtr, ytr, xva, yva, base, _), tg in zip(self.folds, targets)
                  for rows in [settings.training_rows(len(ytr))]]
        _start_linear(pops, inputs, settings, range(len(trials)))
        curves: list[list[float]] = [[] for _ in trials]
        for i, t in enumerate(trials):
            if t is not None and not self._resume(pops, i, t, settings, curves):
                trials[i] = None
        started = len(trials)
        while any(t is not None for t in trials):
            if self.ctx.should_stop() or self.over():
                self._end_all(pops, trials, curves, settings)
                return
            self._epoch(pops, inputs, trials, curves, settings)
            free = [i for i, t in enumerate(trials) if t is None]
            room = self.plan.refill_factor * self.k - started
            if free and room > 0 and not self.over() and not self.ctx.should_stop():
                new = self._new_trials(min(len(free), room), fixed)
                for i, t in zip(free, new):
                    m = member_spec(t.params, t.seed, settings.optimizer, self.max_epochs)
                    for pop in pops:
                        pop.replace(i, m)
                    _start_linear(pops, inputs, settings, [i])
                    trials[i], curves[i] = t, []
                    if not self._resume(pops, i, t, settings, curves):
                        trials[i] = None
                started += len(new)
                room -= len(new)
            running = [i for i, t in enumerate(trials) if t is not None]
            if room <= 0 and 0 < len(running) <= len(trials) // 2:
                # no more refills (the last may have been just now): the last networks go on
                # in a population of their size, which trains an epoch in a fraction of the
                # time the half-empty one takes
                pops = [pop.subset(running) for pop in pops]
                trials, curves = [trials[i] for i in running], [curves[i] for i in running]

    def _resume(self, pops: list[Population], i: int, t: TrialRecord,
                settings: PopulationSettings, curves: list[list[float]]) -> bool:
        """Slot ``i`` holds ``t`` as a new network; if ``t`` was re-queued with a saved state,
        that state takes the slot and ``t``'s curve goes on from the kept one. False if the
        state does not fit (the trial fails, the slot stays free)."""
        saved = self.storage.resume_state(t.id) if t.epochs > 0 else None
        if saved is None:
            return True  # starts over; a kept curve (a checkpoint's) is overwritten epoch by epoch
        _, kept = self.storage.curve(t.id)
        try:
            if len(kept) != saved.epochs:
                raise UserError(f"its saved state is from epoch {saved.epochs}, its curve has "
                                f"{len(kept)} epochs")
            load_slot(pops, i, member_spec(t.params, t.seed, settings.optimizer,
                                           self.max_epochs), saved.data)
        except UserError as exc:  # e.g. the config's data or split changed since
            for pop in pops:
                pop.stop(i)
            self.storage.record_epoch(self.wid, ends=[
                TrialEnd(t.id, TrialState.FAILED, f"cannot resume this network: {exc}")])
            return False
        curves[i] = kept
        return True

    def _epoch(self, pops: list[Population], inputs: list, trials: list[TrialRecord | None],
               curves: list[list[float]], settings: PopulationSettings) -> None:
        per_fold = []
        for pop, (xtr, ytr, xva, yva, base, tg), scale in zip(pops, inputs,
                                                              self._valid_scaling):
            pop.step_epoch(xtr, ytr)
            # forecasts in the units of the standardized target, whatever the network learned
            extra = {} if tg is None else tg.measure_kwargs(pop.predict, xtr, scale)
            per_fold.append(pop.measure(xva, yva, baseline=base, scale=scale, **extra))
        names = list(per_fold[0])
        with np.errstate(invalid="ignore"):
            means = {n: np.mean([m[n] for m in per_fold], axis=0) for n in names}
        score = means[self.metric]
        # every fold keeps its weights of the epoch at which the fold mean (what the race
        # selects on) peaked, not of its own best epoch
        for pop, m in zip(pops, per_fold):
            pop.judge(m, score=score)
        values, decisions, ends = [], [], []
        ending: dict[int, TrialEnd] = {}
        for i, t in enumerate(trials):
            if t is None:
                continue
            curves[i].append(float(score[i]))
            epoch = len(curves[i]) - 1
            # and the race's metric on each fold, which lets the evaluation choose networks
            # for one fold's validation block on the others alone (nested, honest weights)
            values.append(EpochValue(t.id, epoch, float(score[i]),
                                     {n: _num(means[n][i]) for n in names}
                                     | {f"{FOLD_KEY}{j + 1}": _num(m[self.metric][i])
                                        for j, m in enumerate(per_fold)}))
            states = [pop.states[i] for pop in pops]
            if any(s is MemberState.DIVERGED for s in states) or not math.isfinite(score[i]):
                ending[i] = TrialEnd(t.id, TrialState.DIVERGED,
                                     f"loss became NaN or infinite in epoch {epoch + 1}")
            elif all(s is not MemberState.RUNNING for s in states):
                ending[i] = TrialEnd(t.id, TrialState.COMPLETE,
                                     f"early stopping after epoch {epoch + 1}",
                                     TrialEndReason.EARLY_STOPPING)
            elif epoch + 1 >= self.max_epochs:
                ending[i] = TrialEnd(t.id, TrialState.COMPLETE,
                                     f"trained {self.max_epochs} epochs")
        # the rule judges every running network at once, against the whole race's curves
        running = [i for i, t in enumerate(trials) if t is not None and i not in ending]
        if running:
            for i, d, pred in self._judge(running, curves):
                t = trials[i]
                assert t is not None
                epoch = len(curves[i]) - 1
                decisions.append(DecisionRecord(t.id, epoch, self.rule.name, d, pred))
                if d == "stop":
                    ending[i] = TrialEnd(t.id, TrialState.STOPPED,
                                         f"{self.rule.name} rule stopped it after epoch "
                                         f"{epoch + 1}")
        kept = [i for i, end in ending.items() if end.state is not TrialState.DIVERGED]
        ckpts = self._checkpoints(pops, kept, trials, curves, settings)
        for i, end in ending.items():
            t = trials[i]
            assert t is not None
            # the rule sees this worker's own finished curves from the next epoch on (other
            # workers' come with the periodic refresh), as the storage keeps them
            c = np.asarray(curves[i], dtype=float)
            self._finished_curves[t.id] = np.where(np.isfinite(c), c, np.nan)
            self._taught.add(t.id)  # its forecasts are the rule's own
            for pop in pops:
                if pop.states[i] is MemberState.RUNNING:
                    pop.stop(i)
            ends.append(end)
            trials[i] = None
        self.storage.record_epoch(self.wid, values, decisions, ends, ckpts,
                                  self._states(pops, trials, curves))
        self._target_check(values)
        self._spend_check()

    def _states(self, pops: list[Population], trials: list[TrialRecord | None],
                curves: list[list[float]]) -> list[ResumeState]:
        """The running networks' states after this epoch, each with its curve's length."""
        running = [(i, t) for i, t in enumerate(trials) if t is not None]
        blobs = save_slots(pops, [i for i, _ in running])
        return [ResumeState(t.id, len(curves[i]), blob)
                for (i, t), blob in zip(running, blobs, strict=True)]

    def _judge(self, running: list[int], curves: list[list[float]]
               ) -> list[tuple[int, str, dict[str, Any]]]:
        now = time.monotonic()
        if now - self._curves_at > 5.0:  # the race's finished curves, refreshed now and then
            self._finished_curves = self.storage.curves(self.study.id, _FINISHED)
            self._curves_at = now
            if isinstance(self.rule, LCRule):  # what other workers forecast for theirs
                new = [t for t, c in self._finished_curves.items()
                       if len(c) >= self.max_epochs and t not in self._taught]
                self._taught.update(new)
                teach(self.rule, self._finished_curves, self.storage.decisions_of(new),
                      self.goal, self.max_epochs)
        own = [np.asarray(curves[i]) for i in running]
        # in trial order, not in the order they came: a refresh (every 5 s) reads them by id,
        # this worker's own are added as they end, and the lc rule's learned gain is a float
        # sum over them, which depends on the order; a race with one worker would otherwise
        # record (and, with criterion = "improvement", decide) as its refreshes happened to fall
        others = [self._finished_curves[t] for t in sorted(self._finished_curves)]
        rows = own + others
        width = max(len(r) for r in rows)
        values = np.full((len(rows), width), np.nan)
        for r, row in enumerate(rows):
            values[r, :len(row)] = row
        budget = np.full(len(rows), float(self.max_epochs))
        mask = np.zeros(len(rows), dtype=bool)
        mask[:len(own)] = True
        target = self.plan.config.race.target
        decided = self.rule.decide(Curves(values, budget, mask, self.goal, target))
        out = []
        for r, i in enumerate(running):
            best = np.nanmax(own[r]) if self.goal is Goal.MAX else np.nanmin(own[r])
            pred: dict[str, Any] = {"observed": len(own[r]), "best": _num(best)}
            if isinstance(self.rule, LCRule) and r in self.rule.memory.last:
                pred.update(_metric_units(self.rule.memory.last[r], self.goal))
            out.append((i, decided[r].value, pred))
        return out

    def _target_check(self, values: list[EpochValue]) -> None:
        target = self.plan.config.race.target
        if target is None:
            return
        for v in values:
            hit = v.value >= target if self.goal is Goal.MAX else v.value <= target
            if math.isfinite(v.value) and hit:
                t = self.storage.trial(v.trial_id)
                self.storage.finish_study(self.study.id, RaceEndReason.TARGET_REACHED,
                                          f"target {target:g} reached by trial "
                                          f"{t.number} ({self.metric} = {v.value:.6g} at "
                                          f"epoch {v.epoch + 1})")
                return

    def _checkpoints(self, pops: list[Population], slots: list[int],
                     trials: list[TrialRecord | None], curves: list[list[float]],
                     settings: PopulationSettings) -> list[Checkpoint]:
        """The networks in ``slots`` as they are kept: their best validation state, with the
        fitted preprocessing (:mod:`netrace.race._checkpoint`)."""
        per_fold = [pop.best_weights(slots) for pop in pops]
        out = []
        for r, i in enumerate(slots):
            t = trials[i]
            assert t is not None
            targets = None
            if settings.transformed:  # with the bias correction of the kept weights
                targets = [td.fitted(settings, w[r]).as_dict()  # type: ignore[union-attr]
                           for (td, _), w in zip(self._target_data, per_fold, strict=True)]
            data = pack_checkpoint(t.params, t.seed, settings.model, settings.spec,
                                   settings.window, self.metric, [w[r] for w in per_fold],
                                   self._preprocessors, self._target_scaling, targets)
            out.append(Checkpoint(t.id, len(curves[i]) - 1, data))
        return out

    def _end_all(self, pops: list[Population], trials: list[TrialRecord | None],
                 curves: list[list[float]], settings: PopulationSettings) -> None:
        """The race is over (or this worker was asked to stop): end or release what runs."""
        if self.ctx.should_stop() and not self.over():
            return  # release_worker re-queues them when the worker exits
        _, reason = self.storage.study_state(self.study.id)
        trained = [(i, t) for i, t in enumerate(trials) if t is not None and curves[i]]
        ends = [TrialEnd(t.id, TrialState.CUT, f"{RACE_ENDED}: {reason}") for _, t in trained]
        ckpts = self._checkpoints(pops, [i for i, _ in trained], trials, curves, settings)
        self.storage.record_epoch(self.wid, ends=ends, checkpoints=ckpts)
        # a network refilled into a slot as the race ended has trained nothing: back to the
        # queue, for a resume with more budget, rather than "cut" after 0 epochs
        self.storage.unclaim(t.id for i, t in enumerate(trials) if t is not None and not curves[i])


def _standardized(y: torch.Tensor, centre: Any, scale: Any) -> torch.Tensor:
    """``(y - centre) / scale`` for scalars, or per sample (a panel's per-series statistics)."""
    if np.ndim(centre) == 0:
        return (y - centre) / scale
    return (y - torch.as_tensor(centre, dtype=y.dtype)) / torch.as_tensor(scale, dtype=y.dtype)


def _start_linear(pops: list[Population], inputs: list, settings: PopulationSettings,
                  slots: Any) -> None:
    """New networks with ``linear = "ols"`` start at each fold's least-squares fit (a resumed
    one then takes its saved state over it)."""
    if settings.linear != "ols":
        return
    for pop, (xtr, ytr, *_) in zip(pops, inputs, strict=True):
        pop.init_linear(list(slots), xtr, ytr)


class _BadPopulation(Exception):
    """The engine refused a population's settings."""


_FINISHED = (TrialState.COMPLETE, TrialState.STOPPED, TrialState.CUT, TrialState.DIVERGED,
             TrialState.FAILED)


def _num(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None
