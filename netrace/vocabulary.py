"""netrace's vocabulary: the words a config, the race, the trainer and the rules share, each
defined once here.

- tasks and their metrics: what a population measures (:data:`MEASURED_METRICS`), what a
  race may score networks by (:data:`RACE_METRICS`, the default first), which are maximized
  (:data:`MAXIMIZED`, :func:`direction`);
- the termination rules (:data:`RULES`), each rule's options with their types, defaults and
  allowed values (:data:`RULE_OPTIONS`), checked by :func:`rule_options` and
  :func:`check_option`; the lc rule's forecast methods and criteria;
- the built-in data sources;
- the race's default budget (:func:`default_budget`).

This module imports nothing of netrace but its errors, so any package may use it: a config is
validated here without importing the rules (``netrace.curves``), and the rules take their
options' ranges from here.

>>> direction("auc"), direction("mse")
('maximize', 'minimize')
>>> DEFAULT_METRIC["binary"]
'auc'
>>> default_budget(population=64, max_epochs=100)
25600
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from netrace.errors import UserError, did_you_mean

__all__ = [
    "CRITERIA",
    "DEFAULT_BUDGET_FACTOR",
    "DEFAULT_METRIC",
    "FORECAST_METHODS",
    "MAXIMIZED",
    "MEASURED_METRICS",
    "METRICS",
    "PATIENCE_OPTIONS",
    "PRICE_SOURCES",
    "RACE_METRICS",
    "RULES",
    "RULE_OPTIONS",
    "SOURCES",
    "TABULAR_SOURCES",
    "TASKS",
    "Option",
    "check_option",
    "default_budget",
    "direction",
    "rule_options",
    "unknown_rule",
]

# --- tasks and metrics -------------------------------------------------------------------

TASKS = ("regression", "binary", "multiclass")
#: The metrics a population measures on validation data, per task (and may monitor).
MEASURED_METRICS: dict[str, tuple[str, ...]] = {
    "regression": ("loss", "mse", "mae", "r2", "qlike"),
    "binary": ("loss", "log_loss", "accuracy", "auc"),
    "multiclass": ("loss", "log_loss", "accuracy", "auc"),
}
#: The metrics a race may score networks by (``[race] metric``), per task; the first is the
#: default.
RACE_METRICS: dict[str, tuple[str, ...]] = {
    "regression": ("r2", "mse", "mae", "loss", "qlike"),
    "binary": ("auc", "log_loss", "accuracy", "loss"),
    "multiclass": ("accuracy", "auc", "log_loss", "loss"),
}
#: Every metric ``[race] metric`` names, whatever the task.
METRICS = ("r2", "mse", "mae", "loss", "qlike", "log_loss", "accuracy", "auc")
#: The metric a race scores networks by, per task, when ``[race] metric`` does not say.
DEFAULT_METRIC = {task: metrics[0] for task, metrics in RACE_METRICS.items()}
#: Metrics where higher is better; the others (losses and errors) are minimized.
MAXIMIZED = ("r2", "accuracy", "auc")

assert all(set(RACE_METRICS[t]) <= set(MEASURED_METRICS[t]) for t in TASKS)  # scored = measured
assert set(METRICS) == {m for ms in RACE_METRICS.values() for m in ms}


def direction(metric: str) -> str:
    """``"maximize"`` or ``"minimize"``: which way ``metric`` gets better."""
    return "maximize" if metric in MAXIMIZED else "minimize"


# --- data ----------------------------------------------------------------------------------

#: Built-in data (loaded offline from packages that ship it): daily OHLCV prices, then
#: scikit-learn's bundled i.i.d. tabular sets.
#: daily series shipped by ``arch.data`` (a ``Date`` column): OHLCV, or a close, or a level
PRICE_SOURCES = ("sp500", "nasdaq", "wti", "vix")
TABULAR_SOURCES = ("iris", "wine", "breast_cancer", "diabetes", "digits")
SOURCES = PRICE_SOURCES + TABULAR_SOURCES

# --- the race's budget ---------------------------------------------------------------------

#: Without ``[race] budget``: this many full populations' worth of network-epochs.
DEFAULT_BUDGET_FACTOR = 4


def default_budget(population: int, max_epochs: int) -> int:
    """The race's budget in network-epochs when ``[race] budget`` does not say."""
    return DEFAULT_BUDGET_FACTOR * population * max_epochs


# --- termination rules and their options ---------------------------------------------------

#: How the lc rule forecasts a curve: the ensemble sampler, or the network trained on it.
FORECAST_METHODS = ("sampler", "amortized")
#: What makes the lc rule call a curve hopeless: a low chance of reaching the threshold, or
#: a small expected gain over it.
CRITERIA = ("probability", "improvement")


@dataclass(frozen=True)
class Option:
    """One option of a rule: its ``default`` (whose type is the option's type: bool, int,
    float, str, or a tuple of whole numbers), ``ok(value)`` the test of an allowed value and
    ``must`` what it says ("lie in (0, 1)"), and ``applies``: (other option, value) when the
    option applies only with the other at that value."""

    default: Any
    ok: Callable[[Any], bool] = lambda v: True
    must: str = ""
    applies: tuple[str, Any] | None = None


def _increasing(r: Any) -> bool:
    return len(r) > 0 and r[0] >= 1 and all(a < b for a, b in zip(r, r[1:]))


_AT_LEAST_1 = Option(1, lambda v: v >= 1, "be at least 1")
_KEEP = Option(1.0 / 3.0, lambda v: 0.0 < v <= 1.0, "lie in (0, 1] (the fraction kept)")

#: Each rule's options (``[race.<rule>]``, ``netrace replay --option``), in the order they are
#: checked, with their defaults and allowed values.
RULE_OPTIONS: dict[str, dict[str, Option]] = {
    "lc": {
        "epsilon": Option(0.05, lambda v: 0.0 < v < 1.0, "lie in (0, 1)",
                          applies=("criterion", "probability")),
        "min_observed": Option(3, _AT_LEAST_1.ok, _AT_LEAST_1.must),
        "growth": Option(1.5, lambda v: 1.0 < v < math.inf, "be a finite number > 1"),
        "prior_weight": Option(10.0, lambda v: v > 0,
                               "be > 0 (inf: do not learn from the race)"),
        "method": Option("amortized", lambda v: v in FORECAST_METHODS,
                         f"be one of {', '.join(FORECAST_METHODS)}"),
        "criterion": Option("probability", lambda v: v in CRITERIA,
                            f"be one of {', '.join(CRITERIA)}"),
        "delta": Option(0.002, lambda v: 0.0 < v < 1.0, "lie in (0, 1)",
                        applies=("criterion", "improvement")),
    },
    "median": {
        "percentile": Option(50.0, lambda v: 0.0 <= v <= 100.0, "lie in [0, 100]"),
        "min_observed": Option(5, _AT_LEAST_1.ok, _AT_LEAST_1.must),
        "min_curves": Option(5, _AT_LEAST_1.ok, _AT_LEAST_1.must),
        "finished_only": Option(False),
    },
    "hyperband": {
        "rungs": Option((3, 9, 27, 81, 243), _increasing,
                        "be increasing evaluation counts >= 1, e.g. [3, 9, 27]"),
        "keep": _KEEP,
    },
    "topk": {
        "keep": _KEEP,
        "at": Option(0.1, lambda v: 0.0 < v <= 1.0, "lie in (0, 1] (a fraction of the budget)"),
        "min_observed": Option(2, _AT_LEAST_1.ok, _AT_LEAST_1.must),
    },
    "none": {},
}
#: The termination rules (``[race] rule``).
RULES = tuple(RULE_OPTIONS)
#: The options of patience around a rule (``[race] rule_patience``; Optuna's PatientPruner).
PATIENCE_OPTIONS: dict[str, Option] = {
    "patience": Option(1, lambda v: v >= 0, "be at least 0"),
    "min_delta": Option(0.0, lambda v: v >= 0.0, "be at least 0"),
}


def unknown_rule(name: str) -> UserError:
    """The error for a rule name that is not one of :data:`RULES`."""
    return UserError(f"unknown rule '{name}'; allowed: {', '.join(RULES)}"
                     f"{did_you_mean(name, RULES)}. Pass one of them, e.g. --rule lc.")


def no_option(name: str, key: str) -> UserError:
    """The error for an option ``key`` that rule ``name`` does not have."""
    options = RULE_OPTIONS[name]
    return UserError(f"rule '{name}' has no option '{key}'{did_you_mean(key, options)}; "
                     f"its options: {', '.join(options) or 'none'}.")


def check_option(rule: str, option: str, value: Any, spec: Option | None = None) -> None:
    """Raise :class:`UserError` unless ``value`` is allowed for ``option`` of ``rule`` (a name
    of :data:`RULES`, or ``spec`` given).

    >>> check_option("lc", "epsilon", 0.5)
    >>> check_option("lc", "epsilon", 2.0)
    Traceback (most recent call last):
    netrace.errors.UserError: lc epsilon must lie in (0, 1); got 2.0.
    """
    spec = spec or RULE_OPTIONS[rule][option]
    if not spec.ok(value):
        raise UserError(f"{rule} {option} must {spec.must}; got {value!r}.")


def rule_options(name: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """``given`` (as read from TOML or the command line) checked and converted into the options
    of the rule called ``name``; raises :class:`UserError` naming the option and what it takes.

    >>> rule_options("hyperband", {"rungs": [2, 6, 18], "keep": 0.5})
    {'rungs': (2, 6, 18), 'keep': 0.5}
    >>> rule_options("lc", {"epsilon": 2})
    Traceback (most recent call last):
    netrace.errors.UserError: lc epsilon must lie in (0, 1); got 2.0.
    """
    if name not in RULE_OPTIONS:
        raise unknown_rule(name)
    specs = RULE_OPTIONS[name]
    out: dict[str, Any] = {}
    for key, value in given.items():
        if key not in specs:
            raise no_option(name, key)
        out[key] = _option_value(name, key, value, specs[key].default)
    for key, spec in specs.items():  # in the order the rule checks them
        if key in out:
            check_option(name, key, out[key], spec)
    for key in out:  # no option set that the others make idle
        if specs[key].applies is not None:
            other, need = specs[key].applies
            has = out.get(other, specs[other].default)
            if has != need:
                raise UserError(f"{name} {key} applies only with {other} = {json.dumps(need)}, "
                                f"and {other} is {json.dumps(has)}; remove {key} or set "
                                f"{other} = {json.dumps(need)}.")
    return out


def _option_value(rule: str, key: str, value: Any, default: Any) -> Any:
    """``value`` as the type of the option's default."""
    def bad(what: str, example: str) -> UserError:
        return UserError(f"{rule} {key} must be {what}, got {value!r}; e.g. {key} = {example}.")

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad("true or false", "true")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("a whole number", str(default))
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise bad("a number", f"{default:g}")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise bad("a string", f'"{default}"')
        return value
    # a tuple of whole numbers (hyperband's rungs)
    if (not isinstance(value, (list, tuple))
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise bad("a list of whole numbers", str(list(default)))
    return tuple(value)
