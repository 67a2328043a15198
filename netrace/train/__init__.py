"""netrace.train: batched optimizers, losses, metrics and the population engine.

>>> import torch
>>> from netrace.models import MLPSpec
>>> from netrace.train import MemberSpec, Population
>>> pop = Population(MLPSpec(in_features=4, hidden=(16,)),
...                  [MemberSpec(seed=i, lr=lr) for i, lr in enumerate((1e-3, 3e-3, 1e-2))],
...                  optimizer="adam", batch_size=32, device="cpu")
>>> x, y = torch.randn(128, 4), torch.randn(128)
>>> _ = pop.step_epoch(x, y)
>>> pop.validate(x, y).metrics["mse"].shape
(3,)
"""

from __future__ import annotations

from netrace.train import _metrics as metrics
from netrace.train._device import resolve_device
from netrace.train._losses import LOSSES, member_losses, sample_losses
from netrace.train._member import SCHEDULES, MemberSpec, Schedule, lr_at
from netrace.train._optim import OPTIMIZERS, BatchedOptimizer, clip_member_grads
from netrace.train._population import EpochResult, MemberState, Population, ValidationResult

__all__ = [
    "LOSSES",
    "OPTIMIZERS",
    "SCHEDULES",
    "BatchedOptimizer",
    "EpochResult",
    "MemberSpec",
    "MemberState",
    "Population",
    "Schedule",
    "ValidationResult",
    "clip_member_grads",
    "lr_at",
    "member_losses",
    "metrics",
    "resolve_device",
    "sample_losses",
]
