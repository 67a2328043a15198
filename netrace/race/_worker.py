"""A race worker: populations of networks, trained, validated, judged and refilled every epoch.

One worker runs one population at a time (one per fold when the split has folds; a network's
score per epoch is its mean over folds), a :class:`Heat`: its populations, their inputs, and a
:class:`Slot` record (the trial and its curve) per member. Every epoch goes through named
steps, each a method of :class:`_Worker` that can be run alone:

1. **train** every fold's population one epoch;
2. **score** it on validation (each network's mean over folds, the curves grow by it);
3. **judge**: which networks end (they diverged, stopped early or ran their epochs, or the
   race's rule stops them, :mod:`netrace.race._judge`);
4. **record** the epoch in one transaction: the values, the rule's decisions, the ends with a
   checkpoint of the ended networks' best state, and the whole training state of every network
   still running, so that if this worker dies another one continues those networks where they
   were (re-queued trials are claimed before new proposals);
5. **refill** freed slots from the sampler, which has seen the results of every worker (and,
   once no refill is left, **narrow** a half-empty population to its running members).

A resumed network sees its new population's minibatch order from then on; its weights,
optimizer state, schedule, dropout keys, bagging weights, best state and patience go on
exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from netrace.backends import WorkerContext
from netrace.config import Config, default_space, parse_space
from netrace.curves import Goal, Rule, make_rule, patient
from netrace.errors import UserError
from netrace.race._build import (
    PopulationSettings,
    member_spec,
    population_settings,
)
from netrace.race._checkpoint import pack_checkpoint, pack_preprocessors
from netrace.race._folds import FoldInputs, fold_inputs, load_folds, start_linear
from netrace.race._judge import Judge, natural_end, stop_forecasts, teach
from netrace.race._proposer import Proposer, population_key
from netrace.race._resume import load_slot, save_slots
from netrace.race._target import FoldTarget
from netrace.storage import (
    RACE_ENDED,
    Checkpoint,
    DecisionRecord,
    EpochValue,
    RaceEndReason,
    ResumeState,
    Storage,
    TrialEnd,
    TrialRecord,
    TrialState,
)
from netrace.train import MemberState, Population
from netrace.vocabulary import (
    DEFAULT_BUDGET_FACTOR,
    DEFAULT_METRIC,
    MAXIMIZED,
    RACE_METRICS,
    default_budget,
    direction,
)

__all__ = ["RacePlan", "worker_main", "race_metric", "race_rule", "search_space",
           "DEFAULT_BUDGET_FACTOR", "Slot", "Heat", "Judgement", "stop_forecasts", "teach"]

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
    #: the TPE speed-up's problem the race already reported (``_tpe.speedup_problem``), which
    #: a worker with the same problem does not report again
    tpe_notice: str | None = None


def race_metric(config: Config) -> tuple[str, str]:
    """The metric networks are judged by and its direction."""
    task = config.task.type
    metric = config.race.metric or DEFAULT_METRIC[task]
    allowed = RACE_METRICS[task]
    if metric not in allowed:
        raise UserError(f"[race] metric = {metric!r} does not apply to a {task} task; choose one "
                        f"of {', '.join(allowed)}")
    return metric, direction(metric)


def search_space(config: Config) -> Any:
    return config.search.space or parse_space(default_space(config.is_time_series))


def budget_of(config: Config) -> int:
    r = config.race
    return r.budget or default_budget(r.population, r.max_epochs)


def oriented_bounds(metric: str) -> tuple[float, float]:
    """The metric's range with higher better (a minimized metric negated): R², accuracy and
    AUC are at most 1 (the last two at least 0); MSE, MAE, log-loss and the loss at least 0."""
    if metric not in MAXIMIZED:
        return (-math.inf, 0.0)
    return (-math.inf, 1.0) if metric == "r2" else (0.0, 1.0)


def race_rule(config: Config, metric: str) -> Rule:
    """The race's termination rule: ``[race] rule`` with its options from ``[race.<rule>]``;
    the lc rule also gets the metric's range; with ``[race] rule_patience``, it is patient
    (:func:`netrace.curves.patient`)."""
    options = dict(getattr(config.race, config.race.rule, None) or {})
    if config.race.rule == "lc":
        options["bounds"] = oriented_bounds(metric)
    rule = make_rule(config.race.rule, **options)
    return rule if config.race.rule_patience is None else patient(rule, config.race.rule_patience)


def worker_main(ctx: WorkerContext, plan: RacePlan) -> None:
    """Entry point of a worker process (handed to a backend)."""
    _Worker(ctx, plan).run()


@dataclass
class Slot:
    """A network in a population slot: its trial and its validation curve so far (the race's
    metric after each epoch, the mean over folds)."""

    trial: TrialRecord
    curve: list[float] = field(default_factory=list)


@dataclass
class Heat:
    """One population under way: its populations (one per fold) with their inputs, a
    :class:`Slot` per member (None: a free slot), the population's ``settings`` and its key
    ``fixed`` (what every network in it shares), and the networks ``started`` in it so far,
    refills included."""

    settings: PopulationSettings
    fixed: dict[str, Any]
    pops: list[Population]
    inputs: list[FoldInputs]
    slots: list[Slot | None]
    started: int = 0

    def running(self) -> list[int]:
        return [i for i, s in enumerate(self.slots) if s is not None]

    def slot(self, i: int) -> Slot:
        s = self.slots[i]
        assert s is not None, f"slot {i} is free"
        return s


@dataclass
class Judgement:
    """What the judge step decided after an epoch: the rule's ``decisions`` on the networks
    that did not end on their own, and the networks that end now, by slot (those that ended
    on their own first, then those the rule stopped, each in slot order)."""

    decisions: list[DecisionRecord]
    ending: dict[int, TrialEnd]


class _Worker:
    """One worker process of the race: populations one after another, each epoch by the
    steps train, score, judge, record, refill (:meth:`_run_population`)."""

    def __init__(self, ctx: WorkerContext, plan: RacePlan) -> None:
        self.ctx, self.plan, cfg = ctx, plan, plan.config
        self.storage = Storage(plan.storage_url)
        self.study = self.storage.get_study(plan.study)
        self.wid = self.storage.register_worker(self.study.id,
                                                heartbeat_timeout=cfg.race.heartbeat_timeout)
        self.metric, self.direction = race_metric(cfg)
        self.goal = Goal.MAX if self.direction == "maximize" else Goal.MIN
        self.space = search_space(cfg)
        if plan.tpe_notice is not None:
            from netrace.race._tpe import already_told

            already_told(plan.tpe_notice)
        self.proposer = Proposer(self.space, cfg.search.sampler,
                                 seed=cfg.search.seed * 100_003 + self.wid,
                                 startup=cfg.search.startup, direction=self.direction)
        self.rng = np.random.default_rng([plan.seed, self.wid])
        self.k, self.max_epochs = cfg.race.population, cfg.race.max_epochs
        self.budget = budget_of(cfg)
        self.folds, self.shape = load_folds(cfg)
        self._preprocessors = pack_preprocessors([f.preprocessor for f in self.folds])
        self.judge = Judge(race_rule(cfg, self.metric), self.goal, self.max_epochs,
                           cfg.race.target, self.storage, self.study.id)
        self._seen: set[int] = set()  # stopped trials whose decisions were read
        self._synced_to = 0  # the sampler has seen the trials up to this id ...
        self._unfinished: set[int] = set()  # ... and these as unfinished

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

    def _run_population(self) -> None:
        """One population, from its start to its last network's end: every epoch the steps
        train, score, judge, record, then refill (and narrow)."""
        heat = self._start()
        while heat.running():
            if self.ctx.should_stop() or self.over():
                self._end_all(heat)
                return
            self._train(heat)
            values = self._score(heat)
            self._record(heat, values, self._judge(heat))
            self._refill(heat)
            self._narrow(heat)

    # -- a population's start ---------------------------------------------------------------
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

    def _start(self) -> Heat:
        """A new population: a re-queued trial or a proposal, and networks that share its
        population key to fill it; each one resumed where it was if it was re-queued."""
        queued = self.storage.claim_queued(self.study.id, self.wid, 1)
        first = queued[0] if queued else self._new_trials(1, None)[0]
        fixed = dict(population_key(first.params, self.space))
        trials = [first, *self._new_trials(self.k - 1, fixed)]
        pop_seed = int(self.rng.integers(0, 2**31 - 1))
        try:
            settings = population_settings(first.params, self.shape)
            members = [member_spec(t.params, t.seed, settings.optimizer, self.max_epochs)
                       for t in trials]
            pops = [Population(settings.spec, members, optimizer=settings.optimizer,
                               loss=settings.loss, batch_size=settings.batch_size,
                               monitor=self.metric, seed=pop_seed, device=self.plan.device)
                    for _ in self.folds]
            targets = [FoldTarget.of(f.target_data, settings, f.x_valid, f.y_valid_raw)
                       for f in self.folds]
        except UserError as exc:  # a combination the engine refuses: those trials fail
            self.storage.record_epoch(self.wid, ends=[
                TrialEnd(t.id, TrialState.FAILED, f"cannot build this network: {exc}")
                for t in trials])
            raise _BadPopulation(str(exc)) from None
        inputs = fold_inputs(self.folds, targets, settings)
        start_linear(pops, inputs, settings, range(len(trials)))
        heat = Heat(settings, fixed, pops, inputs, [Slot(t) for t in trials], len(trials))
        for i in range(len(trials)):
            if not self._resume(heat, i):
                heat.slots[i] = None
        return heat

    def _resume(self, heat: Heat, i: int) -> bool:
        """Slot ``i`` holds its trial as a new network; if the trial was re-queued with a saved
        state, that state takes the slot and the slot's curve goes on from the kept one. False
        if the state does not fit (the trial fails, the slot is to be freed)."""
        t = heat.slot(i).trial
        saved = self.storage.resume_state(t.id) if t.epochs > 0 else None
        if saved is None:
            return True  # starts over; a kept curve (a checkpoint's) is overwritten epoch by epoch
        _, kept = self.storage.curve(t.id)
        try:
            if len(kept) != saved.epochs:
                raise UserError(f"its saved state is from epoch {saved.epochs}, its curve has "
                                f"{len(kept)} epochs")
            load_slot(heat.pops, i, member_spec(t.params, t.seed, heat.settings.optimizer,
                                                self.max_epochs), saved.data)
        except UserError as exc:  # e.g. the config's data or split changed since
            for pop in heat.pops:
                pop.stop(i)
            self.storage.record_epoch(self.wid, ends=[
                TrialEnd(t.id, TrialState.FAILED, f"cannot resume this network: {exc}")])
            return False
        heat.slot(i).curve = kept
        return True

    # -- the steps of an epoch ----------------------------------------------------------------
    def _train(self, heat: Heat) -> None:
        """Train: every fold's population one epoch."""
        for pop, inp in zip(heat.pops, heat.inputs, strict=True):
            pop.step_epoch(inp.x_train, inp.y_train)

    def _score(self, heat: Heat) -> list[EpochValue]:
        """Score: every network on each fold's validation part, and its mean over folds, the
        race's score, which every slot's curve gains; each fold keeps the weights of the epoch
        at which that mean (what the race selects on) peaked, not of its own best epoch. The
        epoch's values, with every metric's mean and the race's metric on each fold (which lets
        the evaluation choose networks for one fold's validation block on the others alone)."""
        per_fold = []
        for pop, inp, fold in zip(heat.pops, heat.inputs, self.folds, strict=True):
            scale = fold.valid_scaling
            # forecasts in the units of the standardized target, whatever the network learned
            extra = {} if inp.target is None else \
                inp.target.measure_kwargs(pop.predict, inp.x_train, scale)
            per_fold.append(pop.measure(inp.x_valid, inp.y_valid, baseline=inp.baseline,
                                        scale=scale, **extra))
        names = list(per_fold[0])
        with np.errstate(invalid="ignore"):
            means = {n: np.mean([m[n] for m in per_fold], axis=0) for n in names}
        score = means[self.metric]
        for pop, m in zip(heat.pops, per_fold):
            pop.judge(m, score=score)
        values = []
        for i in heat.running():
            slot = heat.slot(i)
            slot.curve.append(float(score[i]))
            values.append(EpochValue(slot.trial.id, len(slot.curve) - 1, float(score[i]),
                                     {n: _num(means[n][i]) for n in names}
                                     | {f"{FOLD_KEY}{j + 1}": _num(m[self.metric][i])
                                        for j, m in enumerate(per_fold)}))
        return values

    def _judge(self, heat: Heat) -> Judgement:
        """Judge: the networks that end on their own, then the rule's verdicts on every other
        running network at once, against the whole race's curves."""
        ending: dict[int, TrialEnd] = {}
        for i in heat.running():
            slot = heat.slot(i)
            end = natural_end(slot.trial.id, slot.curve, [pop.states[i] for pop in heat.pops],
                              self.max_epochs)
            if end is not None:
                ending[i] = end
        decisions = []
        judged = [i for i in heat.running() if i not in ending]
        if judged:
            verdicts = self.judge.verdicts([heat.slot(i).curve for i in judged])
            name = self.judge.rule.name
            for i, (verdict, prediction) in zip(judged, verdicts, strict=True):
                t, epoch = heat.slot(i).trial, len(heat.slot(i).curve) - 1
                decisions.append(DecisionRecord(t.id, epoch, name, verdict.value, prediction))
                if verdict.stop:
                    ending[i] = TrialEnd(t.id, TrialState.STOPPED,
                                         f"{name} rule stopped it after epoch {epoch + 1}")
        return Judgement(decisions, ending)

    def _record(self, heat: Heat, values: list[EpochValue], judgement: Judgement) -> None:
        """Record: the epoch's values, decisions and ends, the ended networks' checkpoints
        (but a diverged one's) and the running ones' training states, in one transaction; the
        ended networks' slots are freed. Then the race's target and budget are checked."""
        kept = [i for i, end in judgement.ending.items()
                if end.state is not TrialState.DIVERGED]
        ckpts = self._checkpoints(heat, kept)
        for i in judgement.ending:
            slot = heat.slot(i)
            self.judge.ended(slot.trial.id, slot.curve)
            for pop in heat.pops:
                if pop.states[i] is MemberState.RUNNING:
                    pop.stop(i)
            heat.slots[i] = None
        self.storage.record_epoch(self.wid, values, judgement.decisions,
                                  list(judgement.ending.values()), ckpts, self._states(heat))
        self._target_check(values)
        self._spend_check()

    def _refill(self, heat: Heat) -> None:
        """Refill: freed slots take new networks (re-queued ones of this population first),
        while the population has started fewer than ``refill_factor`` x population."""
        free = [i for i, s in enumerate(heat.slots) if s is None]
        room = self.plan.refill_factor * self.k - heat.started
        if not (free and room > 0 and not self.over() and not self.ctx.should_stop()):
            return
        new = self._new_trials(min(len(free), room), heat.fixed)
        for i, t in zip(free, new):
            m = member_spec(t.params, t.seed, heat.settings.optimizer, self.max_epochs)
            for pop in heat.pops:
                pop.replace(i, m)
            start_linear(heat.pops, heat.inputs, heat.settings, [i])
            heat.slots[i] = Slot(t)
            if not self._resume(heat, i):
                heat.slots[i] = None
        heat.started += len(new)

    def _narrow(self, heat: Heat) -> None:
        """No more refills (the last may have been just now) and at most half the slots
        running: the last networks go on in a population of their size, which trains an epoch
        in a fraction of the time the half-empty one takes."""
        running = heat.running()
        if self.plan.refill_factor * self.k - heat.started <= 0 \
                and 0 < len(running) <= len(heat.slots) // 2:
            heat.pops = [pop.subset(running) for pop in heat.pops]
            heat.slots = [heat.slots[i] for i in running]

    # -- what an epoch writes -------------------------------------------------------------------
    def _states(self, heat: Heat) -> list[ResumeState]:
        """The running networks' states after this epoch, each with its curve's length."""
        running = heat.running()
        blobs = save_slots(heat.pops, running)
        return [ResumeState(heat.slot(i).trial.id, len(heat.slot(i).curve), blob)
                for i, blob in zip(running, blobs, strict=True)]

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

    def _checkpoints(self, heat: Heat, slots: list[int]) -> list[Checkpoint]:
        """The networks in ``slots`` as they are kept: their best validation state, with the
        fitted preprocessing (:mod:`netrace.race._checkpoint`)."""
        settings = heat.settings
        per_fold = [pop.best_weights(slots) for pop in heat.pops]
        out = []
        for r, i in enumerate(slots):
            slot = heat.slot(i)
            targets = None
            if settings.transformed:  # with the bias correction of the kept weights
                targets = [f.target_data.fitted(settings, w[r]).as_dict()  # type: ignore[union-attr]
                           for f, w in zip(self.folds, per_fold, strict=True)]
            data = pack_checkpoint(slot.trial.params, slot.trial.seed, settings.model,
                                   settings.spec, settings.window, self.metric,
                                   [w[r] for w in per_fold], self._preprocessors,
                                   [f.target_scaling for f in self.folds], targets)
            out.append(Checkpoint(slot.trial.id, len(slot.curve) - 1, data))
        return out

    def _end_all(self, heat: Heat) -> None:
        """The race is over (or this worker was asked to stop): end or release what runs."""
        if self.ctx.should_stop() and not self.over():
            return  # release_worker re-queues them when the worker exits
        _, reason = self.storage.study_state(self.study.id)
        trained = [i for i in heat.running() if heat.slot(i).curve]
        ends = [TrialEnd(heat.slot(i).trial.id, TrialState.CUT, f"{RACE_ENDED}: {reason}")
                for i in trained]
        self.storage.record_epoch(self.wid, ends=ends, checkpoints=self._checkpoints(heat, trained))
        # a network refilled into a slot as the race ended has trained nothing: back to the
        # queue, for a resume with more budget, rather than "cut" after 0 epochs
        self.storage.unclaim(heat.slot(i).trial.id for i in heat.running()
                             if not heat.slot(i).curve)


class _BadPopulation(Exception):
    """The engine refused a population's settings."""


def _num(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None
