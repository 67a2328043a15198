"""Optuna's TPE sampler, with caches that make an ask cost what the new trials cost.

A race under an early-stopping rule tells the sampler thousands of short-lived trials, and
Optuna 5.0's :class:`~optuna.samplers.TPESampler` redoes per-trial Python work over all of them
at every ask: it re-adds every complete trial to its group decomposition (idempotent: the
groups only change with new trials), converts every trial's parameters to their internal
representation again, and reads every trial's constraints from its system attributes (netrace
never sets any). With 2,000 trials told and 256 running, in netrace's default space, an ask
cost ~90-130 ms of CPU here, mostly those loops. :class:`CachedTPESampler` keeps the same
algorithm and the same random draws: it adds each trial to the decomposition once, converts
each finished trial's parameters once (per search space), and splits trials without
constraints without looking for them: ~50 ms, most of it now Optuna's numeric core (the
Parzen estimators' densities and draws). Its proposals are the stock sampler's, to the bit
(``tests/test_tpe.py`` asks both the same questions).

It reaches into TPESampler's internals (its private methods and attributes, a private class of
Optuna's group decomposition, private functions of its TPE module), so :func:`tpe_sampler` uses
it only where it is known to hold: on the Optuna release it was checked against, when every
private hook it needs exists, and when it passes a self-check (it proposes what the stock
sampler proposes on a small seeded study, :func:`speedup_problem`). Otherwise the stock
:class:`~optuna.samplers.TPESampler` proposes, and a one-line notice (logged once per process
on the ``netrace`` logger, which Python prints on stderr) says why. Nothing private is imported
when this module is, so an Optuna release that moves those hooks costs the speed-up, never the
sampler. The ``_sample`` below is Optuna 5.0.0's (MIT licence), with ``_split_trials`` replaced.
"""

from __future__ import annotations

import copy
import functools
import heapq
import logging
import warnings
from operator import attrgetter
from types import SimpleNamespace
from typing import Any

import numpy as np
from optuna.distributions import CategoricalDistribution
from optuna.samplers import TPESampler as _TPESampler
from optuna.trial import TrialState

__all__ = ["CachedTPESampler", "already_told", "speedup_problem", "tpe_sampler"]

_CHECKED = ("5.0.",)  # Optuna releases whose TPESampler internals this matches
_log = logging.getLogger("netrace")


def tpe_sampler(**kwargs: Any) -> Any:
    """A TPE sampler with these arguments: the cached one where it holds on this Optuna (see
    the module's docstring), else Optuna's own.

    >>> import optuna
    >>> isinstance(tpe_sampler(seed=0), optuna.samplers.TPESampler)  # cached or Optuna's own
    True
    """
    import optuna

    if kwargs.get("constraints_func") or speedup_problem() is not None:
        return optuna.samplers.TPESampler(**kwargs)
    return CachedTPESampler(**kwargs)


#: problems the user has already been told of, here or by the process that started this one
_told: set[str] = set()


def already_told(problem: str) -> None:
    """Say that ``problem`` (a :func:`speedup_problem`) has been reported elsewhere, as the race
    does to its workers after it reported its own check: this process then logs it no more."""
    _told.add(problem)


@functools.cache
def speedup_problem() -> str | None:
    """Why :class:`CachedTPESampler` cannot stand in for Optuna's TPESampler here, or None if
    it can. Checked once per process, at the first call; a problem is also logged then, as a
    one-line notice, unless it is one :func:`already_told`."""
    problem = _problem()
    if problem is not None:
        problem = " ".join(problem.split())  # one line, whatever an exception's message holds
    if problem is not None and problem not in _told:
        _log.warning("netrace: notice: %s; using Optuna's own TPESampler (the same proposals, "
                     "slower asks among many trials)", problem)
    return problem


def _problem() -> str | None:
    import optuna

    version = optuna.__version__
    if not version.startswith(_CHECKED):
        return (f"netrace's TPE speed-up was checked against Optuna {', '.join(_CHECKED)}x, "
                f"not {version}")
    try:
        _hooks()
    except (ImportError, AttributeError) as exc:
        return (f"Optuna {version} lacks a private hook of netrace's TPE speed-up "
                f"({type(exc).__name__}: {exc})")
    try:
        same = _self_check()
    except Exception as exc:  # any failure of the check is a reason not to use it
        return (f"netrace's TPE speed-up failed its self-check on Optuna {version} "
                f"({type(exc).__name__}: {exc})")
    if not same:
        return (f"netrace's TPE speed-up proposes otherwise than Optuna {version}'s "
                "TPESampler on its self-check")
    return None


#: TPESampler's methods and attributes (after ``__init__``) the speed-up uses or overrides.
_SAMPLER_METHODS = ("_sample", "_get_internal_repr", "_get_params", "_build_parzen_estimator",
                    "_compute_acquisition_func", "_compare")
_SAMPLER_ATTRIBUTES = ("_group", "_group_decomposed_search_space", "_constant_liar", "_gamma",
                       "_n_ei_candidates", "_rng")


@functools.cache
def _hooks() -> SimpleNamespace:
    """The private parts of Optuna the speed-up reaches into; ImportError or AttributeError
    names the first one missing."""
    from importlib import import_module

    tpe = import_module("optuna.samplers._tpe.sampler")
    group_decomposed = import_module("optuna.search_space.group_decomposed")

    for name in _SAMPLER_METHODS:
        getattr(_TPESampler, name)
    with warnings.catch_warnings():  # multivariate/group/constant_liar are experimental
        warnings.simplefilter("ignore")
        probe = _TPESampler(seed=0, multivariate=True, group=True, constant_liar=True)
    for name in _SAMPLER_ATTRIBUTES:
        getattr(probe, name)
    probe._rng.rng  # noqa: B018 - the attribute is the check
    groups = group_decomposed._GroupDecomposedSearchSpace(include_pruned=True)
    groups._study_id, groups._search_space.add_distributions  # noqa: B018
    return SimpleNamespace(split_trials=tpe._split_trials, default_gamma=tpe.default_gamma,
                           default_gamma_multiobjective=tpe.default_gamma_multiobjective,
                           pruned_trial_score=tpe._get_pruned_trial_score,
                           groups_base=group_decomposed._GroupDecomposedSearchSpace)


def _self_check() -> bool:
    """Whether the cached sampler proposes exactly what Optuna's does on a small seeded study
    asked as netrace asks: a conditional space, trials left running (constant liar), failed,
    pruned and added ones, multivariate grouped TPE past its startup trials."""
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "Trial n finished" lines
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kw = dict(seed=7, n_startup_trials=4, multivariate=True, group=True,
                      constant_liar=True)
            return _check_study(CachedTPESampler(**kw)) == _check_study(_TPESampler(**kw))
    finally:
        optuna.logging.set_verbosity(verbosity)


def _check_study(sampler: Any, n: int = 16) -> list[dict[str, Any]]:
    import optuna
    from optuna.distributions import FloatDistribution, IntDistribution

    study = optuna.create_study(sampler=sampler)
    proposals, running = [], []
    for i in range(n):
        if i == 6:  # a trial told by another worker, whole
            study.add_trial(optuna.trial.create_trial(
                params={"model": "gru", "lr": 3e-3, "hidden": 16},
                distributions={"model": CategoricalDistribution(["mlp", "gru"]),
                               "lr": FloatDistribution(1e-4, 1e-1, log=True),
                               "hidden": IntDistribution(4, 32, step=4)}, value=0.3))
        trial = study.ask()
        p = {"model": trial.suggest_categorical("model", ["mlp", "gru"]),
             "lr": trial.suggest_float("lr", 1e-4, 1e-1, log=True)}
        if p["model"] == "mlp":
            p["width"] = trial.suggest_int("width", 8, 64, log=True)
        else:
            p["hidden"] = trial.suggest_int("hidden", 4, 32, step=4)
        proposals.append(p)
        running.append((trial, p))
        if len(running) > 3:  # the oldest ends, the others stay running
            t, q = running.pop(0)
            value = (np.log10(q["lr"]) + 2.5) ** 2 + 0.01 * q.get("width", q.get("hidden"))
            if t.number % 5 == 3:
                study.tell(t, state=TrialState.FAIL)
            elif t.number % 5 == 1:
                t.report(value + 1.0, 1)
                study.tell(t, state=TrialState.PRUNED)
            else:
                study.tell(t, value)
    return proposals


_UNFINISHED = (TrialState.RUNNING, TrialState.WAITING)


@functools.cache
def _incremental_groups() -> type:
    """The class of Optuna's group decomposition with each trial added once (made at first use:
    its base is private to Optuna)."""

    class _IncrementalGroups(_hooks().groups_base):  # type: ignore[misc, name-defined]
        """Optuna's group decomposition, each trial added once. Optuna keeps the groups
        between calls and re-adds every complete or pruned trial each time; adding a trial's
        distributions again changes nothing (every group is then inside them or apart from
        them), so adding only the trials not added before gives the same groups, in the same
        order."""

        def __init__(self) -> None:
            super().__init__(include_pruned=True)
            self._added: set[int] = set()

        def calculate(self, study: Any, use_cache: bool = False) -> Any:
            if self._study_id is None:
                self._study_id = study._study_id
            elif self._study_id != study._study_id:
                raise ValueError("`_GroupDecomposedSearchSpace` cannot handle multiple "
                                 "studies.")
            for trial in study._get_trials(deepcopy=False, states=(TrialState.COMPLETE,
                                                                  TrialState.PRUNED),
                                           use_cache=use_cache):
                if trial.number not in self._added:
                    self._added.add(trial.number)
                    self._search_space.add_distributions(trial.distributions)
            return copy.deepcopy(self._search_space)

    return _IncrementalGroups


class CachedTPESampler(_TPESampler):
    """:class:`optuna.samplers.TPESampler` whose per-trial work is done once per trial (see the
    module's docstring). Same arguments, same proposals."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self._group:
            self._group_decomposed_search_space = _incremental_groups()()
        # per search space (its names): its distributions, the finished trials' internal
        # values by trial number, which of those rows are filled
        self._rows: dict[tuple[str, ...], tuple[list[Any], np.ndarray, np.ndarray]] = {}
        self._running_rows: dict[tuple[str, ...], dict[tuple[int, int], list[Any]]] = {}
        self._plain: set[int] = set()  # finished trials seen to carry no constraints

    def _get_internal_repr(self, trials: list[Any], search_space: dict[str, Any],
                           study: Any) -> dict[str, np.ndarray]:
        """Optuna's, with every finished trial's row of internal values computed once per
        search space (rows by trial number in one array; NaN where a key is missing, which no
        internal value is); a running trial's row as Optuna computes it, kept while its
        parameters stay as many."""
        names = tuple(search_space)
        dists = [search_space[name] for name in names]
        cache = self._rows.get(names)
        if cache is None or cache[0] != dists:
            cache = (dists, np.full((0, len(names)), np.nan), np.zeros(0, dtype=bool))
            self._running_rows[names] = {}
        _, rows, filled = cache
        numbers = [t._number for t in trials]
        top = max(numbers, default=-1) + 1
        if top > len(filled):
            size = max(top, 2 * len(filled))
            rows = np.vstack([rows, np.full((size - len(rows), len(names)), np.nan)])
            filled = np.concatenate([filled, np.zeros(size - len(filled), dtype=bool)])

        def row_of(params: dict[str, Any]) -> list[Any]:
            return [dist.to_internal_repr(params[name]) if name in params else np.nan
                    for name, dist in zip(names, dists)]

        running, pending = {}, self._running_rows.setdefault(names, {})
        for t in trials:
            if t.state in _UNFINISHED:
                # a running trial's params may still grow: its row is kept by their count
                key = (t._number, len(t._params))
                if key not in pending:
                    pending[key] = row_of(self._get_params(t, study))
                running[t._number] = pending[key]
            elif not filled[t._number]:
                rows[t._number] = row_of(t.params)
                filled[t._number] = True
        self._rows[names] = (dists, rows, filled)
        if running and len(pending) > 4 * len(running) + 64:  # forget finished trials' rows
            self._running_rows[names] = {k: v for k, v in pending.items() if k[0] in running}
        picked = rows[np.asarray(numbers, dtype=np.int64)] if numbers else rows[:0]
        if running:
            for i, number in enumerate(numbers):
                if number in running:
                    picked[i] = running[number]
        picked = picked[~np.isnan(picked).any(axis=1)]
        if len(picked) == 0:
            return {name: np.asarray([]) for name in names}
        return {name: (picked[:, j].astype(np.int64)
                       if isinstance(dist, CategoricalDistribution) else picked[:, j])
                for j, (name, dist) in enumerate(zip(names, dists))}

    def _sample(self, study: Any, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
        hooks = _hooks()
        if self._constant_liar:
            states = [TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING]
        else:
            states = [TrialState.COMPLETE, TrialState.PRUNED]
        use_cache = not self._constant_liar
        trials = study._get_trials(deepcopy=False, states=states, use_cache=use_cache)

        if self._constant_liar:
            # For constant_liar, filter out the current trial.
            current = trial.number
            trials = [t for t in trials if t._number != current]

        # We divide data into below and above.
        if self._gamma is None:
            if len(study.directions) <= 1:
                self._gamma = hooks.default_gamma
            else:
                self._gamma = hooks.default_gamma_multiobjective
        running = TrialState.RUNNING
        n = sum(t.state is not running for t in trials)  # Ignore running trials.

        if len(study.directions) <= 1 and self._no_constraints(trials):
            below_trials, above_trials = _split_plain(study, trials, self._gamma(n))
        else:
            below_trials, above_trials = hooks.split_trials(study, trials, self._gamma(n))

        mpe_below = self._build_parzen_estimator(
            study, search_space, below_trials, handle_below=True
        )
        mpe_above = self._build_parzen_estimator(
            study, search_space, above_trials, handle_below=False
        )

        samples_below = mpe_below.sample(self._rng.rng, self._n_ei_candidates)
        acq_func_vals = self._compute_acquisition_func(samples_below, mpe_below, mpe_above)
        ret = _TPESampler._compare(samples_below, acq_func_vals)

        for param_name, dist in search_space.items():
            ret[param_name] = dist.to_external_repr(ret[param_name])

        return ret

    def _no_constraints(self, trials: list[Any]) -> bool:
        """Whether no finished trial here has constraints (each looked at once: a finished
        trial's constraints do not change)."""
        for t in trials:
            if t._number not in self._plain and t.state not in _UNFINISHED:
                if t.constraints:
                    return False
                self._plain.add(t._number)
        return True


def _split_plain(study: Any, trials: list[Any], n_below: int) -> tuple[list[Any], list[Any]]:
    """Optuna's ``_split_trials`` for one objective and trials without constraints: complete
    trials by value (the best ``n_below`` below), then pruned ones by their last step and
    value, running ones above; both lists by trial number."""
    from optuna.study import StudyDirection

    score = _hooks().pruned_trial_score

    complete, pruned, running = [], [], []
    for t in trials:
        state = t.state
        if state == TrialState.RUNNING:
            running.append(t)
        elif state == TrialState.COMPLETE:
            complete.append(t)
        elif state == TrialState.PRUNED:
            pruned.append(t)
        else:
            raise AssertionError(f"a trial in state {state} among the sampler's trials")
    below_n = min(n_below, len(complete))
    # the first below_n of a stable sort by value (nsmallest and nlargest are documented as
    # sorted(...)[:n] and sorted(..., reverse=True)[:n]); ``_values`` is [value] here
    pick = heapq.nlargest if study.direction == StudyDirection.MAXIMIZE else heapq.nsmallest
    below = pick(below_n, complete, key=attrgetter("_values"))
    chosen = {id(t) for t in below}
    above = [t for t in complete if id(t) not in chosen]
    rest = max(0, n_below - len(below))
    rest = min(rest, len(pruned))
    pruned.sort(key=lambda t: score(t, study))
    below += pruned[:rest]
    above += pruned[rest:] + running
    below.sort(key=attrgetter("_number"))
    above.sort(key=attrgetter("_number"))
    return below, above
