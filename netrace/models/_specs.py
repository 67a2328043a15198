"""Architecture specs: the shape of a population's networks, shared by all its members.

Everything that changes the shape of a parameter tensor lives here; everything shape-free
(learning rate, dropout rate, seed, ...) is per member and lives in :mod:`netrace.train`.
"""

from __future__ import annotations

from dataclasses import dataclass

from netrace.errors import UserError, did_you_mean

__all__ = [
    "ACTIVATIONS",
    "NORMS",
    "TASKS",
    "CNNSpec",
    "MLPSpec",
    "ModelSpec",
    "RNNSpec",
]

ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid", "gelu")
NORMS = ("none", "batch", "layer")
TASKS = ("regression", "binary", "multiclass")
POOLS = ("none", "max", "avg")
CELLS = ("lstm", "gru")


def _choice(what: str, given: str, allowed: tuple[str, ...]) -> None:
    if given not in allowed:
        raise UserError(
            f"unknown {what} {given!r}; allowed: {', '.join(allowed)}"
            f"{did_you_mean(str(given), allowed)}"
        )


def _positive_ints(what: str, values: tuple[int, ...], *, allow_empty: bool = True) -> None:
    if not allow_empty and not values:
        raise UserError(f"{what} must hold at least one size; got an empty tuple")
    for v in values:
        if not isinstance(v, int) or v < 1:
            raise UserError(f"{what} must be positive integers; got {values!r}")


@dataclass(frozen=True)
class _HeadSpec:
    """Fields shared by every architecture: the dense head and the task it predicts.

    ``linear_inputs`` > 0 adds a linear path: the output is a linear model of the whole input
    window, flattened to that many numbers, plus the network's own output (its correction).

    ``embedding`` = d > 0 gives the network a learned table of ``series`` x d numbers (a
    series embedding, initialized N(0, 1) as ``nn.Embedding``). Its input then carries each
    sample's series code (0 .. series - 1, as a number) as one extra last feature (MLP, RNN)
    or channel (CNN), which the network replaces by that series' row of the table: appended
    to an MLP's flattened input, as d channels constant along a CNN's window, as d features at
    every step of an RNN. ``in_features`` / ``in_channels`` count the data alone."""

    def _check_head(self) -> None:
        _choice("activation", self.activation, ACTIVATIONS)  # type: ignore[attr-defined]
        _choice("norm", self.norm, NORMS)  # type: ignore[attr-defined]
        _choice("task", self.task, TASKS)  # type: ignore[attr-defined]
        _positive_ints("hidden", tuple(self.hidden))  # type: ignore[attr-defined]
        n_out = self.n_outputs  # type: ignore[attr-defined]
        if self.task == "binary" and n_out != 1:  # type: ignore[attr-defined]
            raise UserError(f"a binary task has one output (a logit); got n_outputs={n_out}")
        if self.task == "multiclass" and n_out < 2:  # type: ignore[attr-defined]
            raise UserError(
                f"a multiclass task needs n_outputs >= 2 (one logit per class); got {n_out}"
            )
        if n_out < 1:
            raise UserError(f"n_outputs must be >= 1; got {n_out}")
        lin = self.linear_inputs  # type: ignore[attr-defined]
        if not isinstance(lin, int) or lin < 0:
            raise UserError(f"linear_inputs must be an integer >= 0 (0: no linear path); got "
                            f"{lin!r}")
        n, d = self.series, self.embedding  # type: ignore[attr-defined]
        if not isinstance(n, int) or not isinstance(d, int) or n < 0 or d < 0:
            raise UserError(f"series and embedding must be integers >= 0; got series={n!r}, "
                            f"embedding={d!r}")
        if d and not n:
            raise UserError(f"an embedding of {d} numbers per series needs the number of "
                            "series (series >= 1); got series=0")


@dataclass(frozen=True)
class MLPSpec(_HeadSpec):
    """A multilayer perceptron ``in_features -> hidden... -> n_outputs``.

    >>> MLPSpec(in_features=32, hidden=(64, 64)).n_outputs
    1
    """

    in_features: int
    hidden: tuple[int, ...] = (64,)
    activation: str = "relu"
    norm: str = "none"
    task: str = "regression"
    n_outputs: int = 1
    linear_inputs: int = 0
    series: int = 0
    embedding: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(self.hidden))
        _positive_ints("in_features", (self.in_features,))
        self._check_head()


@dataclass(frozen=True)
class CNNSpec(_HeadSpec):
    """A 1-D CNN over windows ``(batch, in_channels, length)``: conv blocks, then a dense head.

    Each conv block is conv -> normalization -> activation -> pooling (``pool`` = max, avg or
    none, window and stride ``pool_size``). ``norm`` applies to the conv blocks and the dense
    head's hidden layers: ``batch`` is ``nn.BatchNorm1d`` over each channel, ``layer``
    normalizes each window over all its channels and steps with a gain and bias per channel
    (``nn.GroupNorm(1, channels)``, the layer norm of convolutional layers).

    >>> CNNSpec(length=20, channels=(16, 16), kernel_size=3).in_channels
    1
    """

    length: int
    channels: tuple[int, ...] = (16,)
    kernel_size: int = 3
    stride: int = 1
    padding: int = 0
    pool: str = "max"
    pool_size: int = 2
    in_channels: int = 1
    hidden: tuple[int, ...] = ()
    activation: str = "relu"
    norm: str = "none"
    task: str = "regression"
    n_outputs: int = 1
    linear_inputs: int = 0
    series: int = 0
    embedding: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        object.__setattr__(self, "hidden", tuple(self.hidden))
        _positive_ints("channels", self.channels, allow_empty=False)
        _positive_ints("length, in_channels, kernel_size, stride, pool_size",
                       (self.length, self.in_channels, self.kernel_size, self.stride,
                        self.pool_size))
        if not isinstance(self.padding, int) or self.padding < 0:
            raise UserError(f"padding must be an integer >= 0; got {self.padding!r}")
        _choice("pool", self.pool, POOLS)
        self._check_head()
        if self.conv_lengths()[-1] < 1:
            raise UserError(
                f"the conv blocks shrink a window of length {self.length} to nothing; "
                f"lengths per block: {self.conv_lengths()}; use a longer window, fewer blocks, "
                "padding, or a smaller kernel_size/stride/pool_size"
            )

    def conv_lengths(self) -> list[int]:
        """The sequence length after each conv block (conv then pooling)."""
        out, n = [], self.length
        for _ in self.channels:
            n = (n + 2 * self.padding - self.kernel_size) // self.stride + 1
            if self.pool != "none" and n >= 1:
                n = n // self.pool_size
            out.append(n)
        return out


@dataclass(frozen=True)
class RNNSpec(_HeadSpec):
    """A stacked LSTM or GRU over windows ``(batch, steps, in_features)``; the last step's
    hidden state feeds the dense head.

    >>> RNNSpec(in_features=1, cell="gru", hidden_size=32).layers
    1
    """

    in_features: int
    cell: str = "lstm"
    hidden_size: int = 32
    layers: int = 1
    hidden: tuple[int, ...] = ()
    activation: str = "relu"
    norm: str = "none"
    task: str = "regression"
    n_outputs: int = 1
    linear_inputs: int = 0
    series: int = 0
    embedding: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(self.hidden))
        _choice("cell", self.cell, CELLS)
        _positive_ints("in_features, hidden_size, layers",
                       (self.in_features, self.hidden_size, self.layers))
        self._check_head()


ModelSpec = MLPSpec | CNNSpec | RNNSpec
