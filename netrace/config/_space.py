"""The search space of ``[search.space]``: what the sampler may vary, and how.

Each key is a fixed value (``norm = "layer"``), a list of choices (``model = ["mlp", "lstm"]``),
or a range table (``lr = {low = 1e-4, high = 1e-1, log = true}``; integer bounds give an integer
range). A key is either a *population* parameter (it fixes tensor shapes or the optimizer
algorithm, so networks that differ in it train in different populations) or a *member*
parameter (shape-free: every member of a population has its own).

Some keys mean something only for some values of another (``hidden_size`` only for an LSTM or
a GRU, ``beta1`` only for Adam): the space is *conditional*, as Optuna's define-by-run spaces
are. A network's parameters hold just the keys that apply to it, so an MLP never carries a
``hidden_size`` that would split its population from other MLPs' or add a dimension of noise
to the sampler's model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from netrace.errors import UserError, did_you_mean

__all__ = ["CONDITIONS", "Param", "SearchSpace", "SPACE_KEYS", "parse_space", "default_space"]

MODELS = ("mlp", "cnn", "lstm", "gru")
OPTIMIZER_NAMES = ("sgd", "momentum", "nesterov", "adagrad", "adadelta", "rmsprop", "adam",
                   "adamw")

# name -> (role, value type, allowed: tuple of choices or (low, high, low_open, high_open))
SPACE_KEYS: dict[str, tuple[str, str, Any]] = {
    "model": ("population", "str", MODELS),
    "layers": ("population", "int", (0, 16, False, False)),
    "width": ("population", "int", (1, 4096, False, False)),
    "conv_layers": ("population", "int", (1, 8, False, False)),
    "channels": ("population", "int", (1, 1024, False, False)),
    "kernel_size": ("population", "int", (1, 64, False, False)),
    "pool": ("population", "str", ("none", "max", "avg")),
    "hidden_size": ("population", "int", (1, 2048, False, False)),
    "rnn_layers": ("population", "int", (1, 8, False, False)),
    "activation": ("population", "str", ("relu", "leaky_relu", "tanh", "sigmoid", "gelu")),
    "norm": ("population", "str", ("none", "batch", "layer")),
    "optimizer": ("population", "str", OPTIMIZER_NAMES),
    "batch_size": ("population", "int", (1, 1 << 20, False, False)),
    "window": ("population", "int", (1, 100_000, False, False)),
    "loss": ("population", "str", ("mse", "mae", "huber", "gaussian_nll", "qlike", "bce",
                                   "cross_entropy")),
    "linear": ("population", "str", ("none", "on", "ols")),
    "train_window": ("population", "int", (0, 100_000_000, False, False)),
    "target_transform": ("population", "str", ("none", "log")),
    "revin": ("population", "bool", (False, True)),
    "series_embedding": ("population", "int", (0, 1024, False, False)),
    "lr": ("member", "float", (0.0, 10.0, True, False)),
    "schedule": ("member", "str", ("constant", "step", "exponential", "cosine")),
    "warmup": ("member", "int", (0, 10_000, False, False)),
    "momentum": ("member", "float", (0.0, 1.0, False, True)),
    "beta1": ("member", "float", (0.0, 1.0, False, True)),
    "beta2": ("member", "float", (0.0, 1.0, False, True)),
    "weight_decay": ("member", "float", (0.0, 10.0, False, False)),
    "l1": ("member", "float", (0.0, 10.0, False, False)),
    "dropout": ("member", "float", (0.0, 1.0, False, True)),
    "clip_norm": ("member", "float", (0.0, 1e6, True, False)),
    "init": ("member", "str", ("kaiming", "xavier", "lecun")),
    "init_dist": ("member", "str", ("uniform", "normal")),
    "bagging": ("member", "bool", (False, True)),
    "patience": ("member", "int", (1, 100_000, False, False)),
}

# key -> (the key it depends on, the values of that key for which it applies). The parent's
# default (model "mlp", optimizer "adam", as the race builds networks) counts when the space
# does not search the parent.
CONDITIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "conv_layers": ("model", ("cnn",)),
    "channels": ("model", ("cnn",)),
    "kernel_size": ("model", ("cnn",)),
    "pool": ("model", ("cnn",)),
    "hidden_size": ("model", ("lstm", "gru")),
    "rnn_layers": ("model", ("lstm", "gru")),
    "momentum": ("optimizer", ("sgd", "momentum", "nesterov", "rmsprop")),
    "beta1": ("optimizer", ("adam", "adamw")),
    "beta2": ("optimizer", ("adam", "adamw")),
    # QLIKE always learns the log of the target (netrace.race._target)
    "target_transform": ("loss", ("mse", "mae", "huber", "gaussian_nll")),
}
_PARENT_DEFAULTS = {"model": "mlp", "optimizer": "adam", "loss": "mse"}


@dataclass(frozen=True)
class Param:
    """One searched key: ``kind`` is fixed, choice, int or float."""

    name: str
    kind: str
    value: Any = None
    choices: tuple[Any, ...] = ()
    low: float = 0.0
    high: float = 0.0
    log: bool = False

    @property
    def role(self) -> str:
        return SPACE_KEYS[self.name][0]

    def distribution(self) -> Any:
        """The Optuna distribution of this key (a fixed value is a one-choice categorical)."""
        import optuna.distributions as d

        if self.kind == "fixed":
            return d.CategoricalDistribution([self.value])
        if self.kind == "choice":
            return d.CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return d.IntDistribution(int(self.low), int(self.high), log=self.log)
        return d.FloatDistribution(self.low, self.high, log=self.log)

    def values(self) -> tuple[Any, ...]:
        """The values it can take, for fixed and choice keys."""
        return (self.value,) if self.kind == "fixed" else self.choices


@dataclass(frozen=True)
class SearchSpace:
    """Validated ``[search.space]``: one :class:`Param` per key."""

    params: tuple[Param, ...]

    def __getitem__(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return any(p.name == name for p in self.params)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def distributions(self) -> dict[str, Any]:
        return {p.name: p.distribution() for p in self.params}

    def applies(self, name: str, params: dict[str, Any]) -> bool:
        """Whether key ``name`` means something for a network whose other keys are
        ``params`` (only its parent key is read).

        >>> s = parse_space({"model": ["mlp", "gru"], "hidden_size": [8, 16]})
        >>> s.applies("hidden_size", {"model": "gru"}), s.applies("hidden_size", {"model": "mlp"})
        (True, False)
        """
        if name not in CONDITIONS:
            return True
        parent, values = CONDITIONS[name]
        value = params.get(parent) if parent in self else _PARENT_DEFAULTS[parent]
        return value in values

    def ordered(self) -> tuple[Param, ...]:
        """The keys in an order where every key comes after the key it depends on."""
        return tuple(sorted(self.params, key=lambda p: p.name in CONDITIONS))


def _check_value(where: str, name: str, value: Any) -> Any:
    _, kind, allowed = SPACE_KEYS[name]
    if kind == "str":
        if not isinstance(value, str) or value not in allowed:
            raise UserError(f"{where} {name}: {value!r} is not allowed; choose from "
                            f"{', '.join(allowed)}{did_you_mean(str(value), allowed)}")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise UserError(f"{where} {name} must be true or false, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{where} {name} must be a number, got {value!r}")
    if kind == "int" and not (isinstance(value, int) or float(value).is_integer()):
        raise UserError(f"{where} {name} must be a whole number, got {value!r}")
    low, high, low_open, high_open = allowed
    if not math.isfinite(value) or (value <= low if low_open else value < low) or \
            (value >= high if high_open else value > high):
        lo = f"> {low:g}" if low_open else f">= {low:g}"
        hi = f"< {high:g}" if high_open else f"<= {high:g}"
        raise UserError(f"{where} {name} must be {lo} and {hi}, got {value!r}")
    return int(value) if kind == "int" else float(value)


def _param(where: str, name: str, spec: Any) -> Param:
    _, kind, _ = SPACE_KEYS[name]
    if isinstance(spec, list):
        if not spec:
            raise UserError(f"{where} {name} = [] has no choices; list at least one value")
        values = tuple(_check_value(where, name, v) for v in spec)
        if len(set(values)) != len(values):
            raise UserError(f"{where} {name} lists a value twice: {list(spec)!r}")
        return Param(name, "choice", choices=values) if len(values) > 1 else \
            Param(name, "fixed", value=values[0])
    if isinstance(spec, dict):
        if kind in ("str", "bool"):
            raise UserError(f"{where} {name} takes a value or a list of choices, not a range")
        unknown = set(spec) - {"low", "high", "log"}
        if unknown:
            key = sorted(unknown)[0]
            raise UserError(f"{where} {name}: unknown range key '{key}'"
                            f"{did_you_mean(key, ['low', 'high', 'log'])}; a range is "
                            "{low = ..., high = ..., log = true|false}")
        if "low" not in spec or "high" not in spec:
            raise UserError(f"{where} {name}: a range needs both low and high, got {spec!r}")
        low = _check_value(where, name, spec["low"])
        high = _check_value(where, name, spec["high"])
        log = spec.get("log", False)
        if not isinstance(log, bool):
            raise UserError(f"{where} {name}: log must be true or false, got {log!r}")
        if not low < high:
            raise UserError(f"{where} {name}: low must be below high, got low = {low}, "
                            f"high = {high}")
        if log and low <= 0:
            raise UserError(f"{where} {name}: a log range needs low > 0, got {low}")
        return Param(name, "int" if kind == "int" else "float", low=low, high=high, log=log)
    return Param(name, "fixed", value=_check_value(where, name, spec))


def parse_space(table: dict[str, Any], origin: str = "") -> SearchSpace:
    """Validate a ``[search.space]`` table.

    >>> s = parse_space({"lr": {"low": 1e-4, "high": 1e-1, "log": True}, "model": ["mlp"]})
    >>> s["lr"].kind, s["model"].value
    ('float', 'mlp')
    """
    prefix = f"{origin}: " if origin else ""
    where = f"{prefix}[search.space]"
    if not isinstance(table, dict):
        raise UserError(f"{where} must be a table of keys, got {table!r}")
    params = []
    for name, spec in table.items():
        if name not in SPACE_KEYS:
            raise UserError(f"{prefix}unknown key '{name}' in [search.space]"
                            f"{did_you_mean(name, SPACE_KEYS)} (known keys: "
                            f"{', '.join(sorted(SPACE_KEYS))})")
        params.append(_param(where, name, spec))
    space = SearchSpace(tuple(params))
    _check_conditions(where, space)
    return space


def _check_conditions(where: str, space: SearchSpace) -> None:
    """A key whose parent never takes a value it applies to would never be proposed: say so."""
    for p in space.params:
        if p.name not in CONDITIONS:
            continue
        parent, values = CONDITIONS[p.name]
        possible = space[parent].values() if parent in space else (_PARENT_DEFAULTS[parent],)
        if not any(v in values for v in possible):
            given = "not searched, so " + _PARENT_DEFAULTS[parent] if parent not in space \
                else ", ".join(map(str, possible))
            either = " or ".join([", ".join(values[:-1]), values[-1]] if len(values) > 1
                                 else values)
            raise UserError(f"{where} {p.name} applies only to {parent} = {either}, which this "
                            f"space never proposes ({parent}: "
                            f"{given}); remove {p.name} or add one of those to {parent}")


def default_space(time_series: bool) -> dict[str, Any]:
    """What netrace searches when ``[search.space]`` does not say: small networks, the common
    optimizers, log-uniform learning rate and weight decay, dropout."""
    space: dict[str, Any] = {
        "model": ["mlp", "cnn", "lstm", "gru"] if time_series else "mlp",
        "layers": {"low": 1, "high": 2},
        "width": [16, 32, 64],
        "optimizer": ["adam", "adamw", "rmsprop", "nesterov"],
        "lr": {"low": 1e-4, "high": 3e-2, "log": True},
        "weight_decay": {"low": 1e-6, "high": 1e-2, "log": True},
        "dropout": {"low": 0.0, "high": 0.5},
        "batch_size": 128,
    }
    if time_series:
        space |= {"hidden_size": [16, 32], "channels": [8, 16], "kernel_size": 3}
    return space
