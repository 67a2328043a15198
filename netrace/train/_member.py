"""Per-member settings: seed, initialization and shape-free hyperparameters; lr schedules."""

from __future__ import annotations

import math
from dataclasses import dataclass

from netrace.errors import UserError, did_you_mean
from netrace.models._init import check_init

__all__ = ["SCHEDULES", "MemberSpec", "Schedule", "lr_at"]

SCHEDULES = ("constant", "step", "exponential", "cosine")


@dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule stepped once per epoch, as ``torch.optim.lr_scheduler`` is when
    ``scheduler.step()`` is called after each epoch.

    ``kind``: constant; step (x ``gamma`` every ``step_size`` epochs, like ``StepLR``);
    exponential (x ``gamma`` per epoch, ``ExponentialLR``); cosine (from the base rate to
    ``eta_min`` over ``t_max`` epochs, ``CosineAnnealingLR``). ``warmup`` > 0 multiplies by a
    linear ramp from ``warmup_start`` to 1 over that many epochs (``LinearLR``).

    >>> lr_at(0.1, Schedule("step", step_size=2, gamma=0.5), 3)
    0.05
    """

    kind: str = "constant"
    step_size: int = 10
    gamma: float = 0.1
    t_max: int = 50
    eta_min: float = 0.0
    warmup: int = 0
    warmup_start: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise UserError(f"unknown schedule {self.kind!r}; allowed: {', '.join(SCHEDULES)}"
                            f"{did_you_mean(str(self.kind), SCHEDULES)}")
        if self.step_size < 1 or self.t_max < 1 or self.warmup < 0:
            raise UserError("schedule step_size and t_max must be >= 1 and warmup >= 0; got "
                            f"step_size={self.step_size}, t_max={self.t_max}, "
                            f"warmup={self.warmup}")
        if not 0 < self.warmup_start <= 1:
            raise UserError(f"warmup_start must be in (0, 1]; got {self.warmup_start}")


def lr_at(base: float, schedule: Schedule, epoch: int) -> float:
    """The learning rate in (0-based) ``epoch`` of a member whose base rate is ``base``."""
    s = schedule
    if s.kind == "step":
        lr = base * s.gamma ** (epoch // s.step_size)
    elif s.kind == "exponential":
        lr = base * s.gamma ** epoch
    elif s.kind == "cosine":
        lr = s.eta_min + (base - s.eta_min) * (1 + math.cos(math.pi * epoch / s.t_max)) / 2
    else:
        lr = base
    if s.warmup > 0:
        lr *= s.warmup_start + (1.0 - s.warmup_start) * min(epoch, s.warmup) / s.warmup
    return lr


@dataclass(frozen=True)
class MemberSpec:
    """One member: seed, initialization and shape-free hyperparameters.

    ``None`` means "the optimizer's torch default" (``lr``, ``eps``, ``weight_decay``).
    Optimizer fields that an optimizer does not use are ignored by it: ``momentum``,
    ``dampening``, ``nesterov`` (SGD, RMSprop momentum), ``beta1``/``beta2`` (Adam, AdamW),
    ``rho`` (Adadelta), ``alpha``/``centered`` (RMSprop), ``lr_decay`` (Adagrad).
    ``weight_decay`` is the optimizer's (an L2 term added to the gradient, decoupled in AdamW,
    applied to every parameter); ``l1`` adds ``l1 * sum|w|`` over weight matrices and kernels
    (not biases) to the member's loss. ``clip_norm`` clips the member's total gradient norm.
    ``bagging`` trains on bootstrap counts drawn from the seed, as per-sample weights.
    ``patience``: early-stop (freeze at best) after this many validations without improvement.

    >>> MemberSpec(seed=3, lr=1e-2, dropout=0.1).lr
    0.01
    """

    seed: int = 0
    lr: float | None = None
    schedule: Schedule = Schedule()
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float | None = None
    rho: float = 0.9
    alpha: float = 0.99
    centered: bool = False
    lr_decay: float = 0.0
    weight_decay: float | None = None
    l1: float = 0.0
    dropout: float = 0.0
    clip_norm: float | None = None
    init: str = "kaiming"
    init_dist: str = "uniform"
    recurrent_init: str = "orthogonal"
    bagging: bool = False
    patience: int | None = None

    def __post_init__(self) -> None:
        check_init(self.init, self.init_dist, self.recurrent_init)
        for name in ("lr", "eps", "weight_decay", "clip_norm"):
            v = getattr(self, name)
            if v is not None and not (v >= 0 and math.isfinite(v)):
                raise UserError(f"{name} must be a finite number >= 0; got {v!r}")
        for name in ("momentum", "dampening", "l1", "lr_decay"):
            v = getattr(self, name)
            if not (v >= 0 and math.isfinite(v)):
                raise UserError(f"{name} must be a finite number >= 0; got {v!r}")
        for name in ("beta1", "beta2", "rho", "alpha"):
            v = getattr(self, name)
            if not 0 <= v < 1:
                raise UserError(f"{name} must be in [0, 1); got {v!r}")
        if not 0 <= self.dropout < 1:
            raise UserError(f"dropout must be a rate in [0, 1); got {self.dropout!r}")
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise UserError("nesterov needs momentum > 0 and dampening = 0; got "
                            f"momentum={self.momentum}, dampening={self.dampening}")
        if self.patience is not None and self.patience < 1:
            raise UserError(f"patience must be >= 1 (or None for no early stopping); "
                            f"got {self.patience}")
