"""Hyperparameter proposals from Optuna's samplers through ask/tell.

Every worker keeps a :class:`Proposer`: an in-memory Optuna study fed with the trials of *all*
workers (read from the shared storage), so each sampler sees every result, and every network
still running as pending (TPE's constant liar spreads proposals away from those). A proposal
can fix some keys (a population's shape and optimizer, when a freed slot is refilled): those are
enqueued as fixed parameters and the sampler proposes the rest. The space is conditional
(:meth:`SearchSpace.applies`): proposals are asked define-by-run, parents first, so a proposal
holds only the keys that apply to it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from netrace.config import SearchSpace
from netrace.storage import TrialRecord, TrialState

__all__ = ["Proposer", "population_key"]

#: Finished trials the sampler is told of with a value (the others count as failed): those that
#: ran to their end, and those ended early with a real partial curve (by the rule or the race's
#: end), as the best value they reached.
_TOLD = (TrialState.COMPLETE, TrialState.STOPPED, TrialState.CUT)


def population_key(params: dict[str, Any], space: SearchSpace) -> tuple[tuple[str, Any], ...]:
    """The values of the population keys: networks sharing them can train as one population."""
    return tuple(sorted((p.name, params[p.name]) for p in space.params
                        if p.role == "population" and p.name in params))


class Proposer:
    """Optuna ask/tell over a :class:`SearchSpace`.

    >>> from netrace.config import parse_space
    >>> p = Proposer(parse_space({"lr": {"low": 1e-3, "high": 1e-1, "log": True},
    ...                           "model": ["mlp", "lstm"]}), "random", seed=1)
    >>> sorted(p.ask(2, fixed={"model": "lstm"})[0])
    ['lr', 'model']
    >>> q = Proposer(parse_space({"model": ["mlp", "gru"], "hidden_size": [8, 16]}), "random")
    >>> sorted(q.ask(1, fixed={"model": "mlp"})[0]), sorted(q.ask(1, fixed={"model": "gru"})[0])
    (['model'], ['hidden_size', 'model'])
    """

    def __init__(self, space: SearchSpace, sampler: str = "tpe", *, seed: int = 0,
                 startup: int = 16, direction: str = "minimize") -> None:
        import optuna

        optuna.logging.set_verbosity(logging.WARNING)
        self.space = space
        self.direction = direction
        self._dists = space.distributions()
        self._study = optuna.create_study(direction=direction,
                                          sampler=_sampler(sampler, seed, startup))
        self._known: set[int] = set()   # storage trial ids already told to the sampler
        self._running: dict[int, int] = {}  # storage trial id -> its pending in-memory trial
        self._pending: list[int] = []  # in-memory trials of the last ask, not yet bound

    def sync(self, trials: Iterable[TrialRecord],
             forecasts: Mapping[int, float] | None = None) -> int:
        """Tell the sampler about the study's trials (from any worker): finished ones with their
        results, running and queued ones as pending, so that TPE's constant liar steers new
        proposals away from what is already being tried. Returns how many finished trials were
        newly told.

        A stopped trial's result is the best value it reached, or, if ``forecasts`` holds it
        (by trial id), the value forecast for the end of its budget when it was stopped, as
        Domhan et al. report a terminated run to the optimizer; never worse than the best it
        reached. A trial cut off by the end of the race counts as a stopped one: the best value
        of its real, partial curve (no rule judged it hopeless, so no forecast is behind it)."""
        from optuna.trial import TrialState as OS

        added = 0
        for t in trials:
            if t.id in self._known:
                continue
            # the keys that apply to it (a record of an older netrace may hold others too)
            wanted = {k for k in self._dists if self.space.applies(k, t.params)}
            params = {k: v for k, v in t.params.items() if k in wanted}
            if set(params) != wanted:
                continue  # from another search space (the config changed): not comparable
            if not t.state.finished:
                if t.id not in self._running and self._add(params, OS.RUNNING, None):
                    self._running[t.id] = self._last_number()
                continue
            self._known.add(t.id)
            ok = t.state in _TOLD and t.best_value is not None
            value = t.best_value if ok else None
            if ok and t.state is TrialState.STOPPED and forecasts and t.id in forecasts:
                better = max if self.direction == "maximize" else min
                value = better(forecasts[t.id], value)
            number = self._running.pop(t.id, None)
            if number is not None:
                self._study.tell(number, value, state=OS.COMPLETE if ok else OS.FAIL)
            elif not self._add(params, OS.COMPLETE if ok else OS.FAIL, value):
                continue
            added += 1
        return added

    def _add(self, params: dict[str, Any], state: Any, value: float | None) -> bool:
        import optuna

        try:
            self._study.add_trial(optuna.trial.create_trial(
                params=params, distributions={k: self._dists[k] for k in params},
                value=value, state=state))
        except ValueError:  # a value outside today's ranges: skip it
            return False
        return True

    def _last_number(self) -> int:
        return self._study.get_trials(deepcopy=False)[-1].number

    def ask(self, n: int, fixed: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """``n`` proposals; ``fixed`` keys keep the given values, the sampler proposes the rest.

        Asked trials stay pending in the in-memory study, so that each proposal of a batch is
        steered away from the ones before it; :meth:`bind` names the stored trials they became,
        and their results arrive through :meth:`sync` when they finish, whichever worker ran
        them. Proposals never bound (the caller failed in between) are failed at the next ask.
        """
        from optuna.trial import TrialState as OS

        for number in self._pending:
            self._study.tell(number, state=OS.FAIL)
        self._pending = []
        out = []
        for _ in range(n):
            if fixed:
                self._study.enqueue_trial(fixed, skip_if_exists=False)
            trial = self._study.ask()
            params: dict[str, Any] = {}
            for p in self.space.ordered():
                if self.space.applies(p.name, params):
                    params[p.name] = _suggest(trial, p.name, self._dists[p.name])
            out.append(params)
            self._pending.append(trial.number)
        return out

    def bind(self, trial_ids: Iterable[int]) -> None:
        """The stored trials that the last :meth:`ask`'s proposals became, in order."""
        ids = list(trial_ids)
        if len(ids) != len(self._pending):
            raise ValueError(f"{len(ids)} trial ids for {len(self._pending)} proposals")
        self._running.update(zip(ids, self._pending))
        self._pending = []


def _suggest(trial: Any, name: str, dist: Any) -> Any:
    """``trial``'s value for ``name`` from ``dist`` (the public form of what ``study.ask(dists)``
    does for every key at once)."""
    import optuna.distributions as d

    if isinstance(dist, d.CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, d.IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, log=dist.log)


def _sampler(kind: str, seed: int, startup: int) -> Any:
    import warnings

    import optuna

    with warnings.catch_warnings():  # multivariate/group/constant_liar are marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _make_sampler(kind, seed, startup)


def _make_sampler(kind: str, seed: int, startup: int) -> Any:
    import optuna

    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "tpe":  # Optuna's TPE, with per-trial caches where they match this Optuna
        from netrace.race._tpe import tpe_sampler

        return tpe_sampler(seed=seed, n_startup_trials=startup, multivariate=True, group=True,
                           constant_liar=True)
    if kind == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
    raise ValueError(f"unknown sampler {kind!r}")
