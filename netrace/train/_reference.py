"""The ordinary way, one network at a time: an ``nn.Module`` trained by ``torch.optim``.

It is the reference the batched engine is tested against (member ``i`` of a population must
follow it to rounding) and the "one after another" baseline of ``bench/population.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from netrace.train._member import MemberSpec, lr_at
from netrace.train._optim import member_hparams

__all__ = ["torch_optimizer", "train_reference"]


def torch_optimizer(kind: str, params: Sequence[Tensor], member: MemberSpec) -> torch.optim.Optimizer:
    """The ``torch.optim`` optimizer equivalent to ``kind`` with ``member``'s hyperparameters
    (the for-loop implementation, ``foreach=False``, as on CPU)."""
    hp = member_hparams(kind, member)
    lr, wd, eps = hp["lr"], hp["weight_decay"], hp["eps"]
    if kind in ("sgd", "momentum", "nesterov"):
        return torch.optim.SGD(params, lr=lr, momentum=hp["momentum"], dampening=hp["dampening"],
                               weight_decay=wd, nesterov=bool(hp["nesterov"]), foreach=False)
    if kind == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, lr_decay=hp["lr_decay"], weight_decay=wd,
                                   eps=eps, foreach=False)
    if kind == "adadelta":
        return torch.optim.Adadelta(params, lr=lr, rho=hp["rho"], eps=eps, weight_decay=wd,
                                    foreach=False)
    if kind == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=hp["alpha"], eps=eps, weight_decay=wd,
                                   momentum=hp["momentum"], centered=bool(hp["centered"]),
                                   foreach=False)
    cls = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
    return cls(params, lr=lr, betas=(hp["beta1"], hp["beta2"]), eps=eps, weight_decay=wd,
               foreach=False)


def _l1_weights(module: nn.Module) -> list[Tensor]:
    out: list[Tensor] = []
    for mod in module.modules():
        if isinstance(mod, nn.Linear | nn.Conv1d):
            out.append(mod.weight)
        elif isinstance(mod, nn.LSTM | nn.GRU):
            out += [p for name, p in mod.named_parameters() if name.startswith("weight")]
    return out


def _loss(out: Tensor, y: Tensor, loss: str, huber_delta: float) -> Tensor:
    """Unreduced per-sample losses (B,) written with torch's own loss functions."""
    if loss == "cross_entropy":
        return F.cross_entropy(out, y.long(), reduction="none")
    if loss == "bce":
        return F.binary_cross_entropy_with_logits(out[:, 0], y.to(out.dtype), reduction="none")
    target = (y.unsqueeze(1) if y.dim() == 1 else y).to(out.dtype)
    if loss == "mse":
        return F.mse_loss(out, target, reduction="none").mean(dim=1)
    if loss == "mae":
        return F.l1_loss(out, target, reduction="none").mean(dim=1)
    return F.huber_loss(out, target, reduction="none", delta=huber_delta).mean(dim=1)


def train_reference(module: nn.Module, kind: str, member: MemberSpec, x: Tensor, y: Tensor, *,
                    orders: Sequence[Tensor], batch_size: int, loss: str = "mse",
                    sample_weight: Tensor | None = None, huber_delta: float = 1.0) -> list[float]:
    """Train ``module`` in place, one epoch per entry of ``orders``; returns epoch losses.

    Same conventions as :class:`~netrace.train.Population`: the loss of a batch is
    ``sum(w * l) / B`` plus ``l1 * sum|W|``; the schedule is stepped after each epoch.
    """
    opt = torch_optimizer(kind, list(module.parameters()), member)
    base = opt.param_groups[0]["lr"]
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda e: lr_at(base, member.schedule, e) / base if base else 1.0)
    weights = _l1_weights(module)
    module.train()
    history = []
    for order in orders:
        total = 0.0
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            per = _loss(module(x[idx]), y[idx], loss, huber_delta)
            data = per.mean() if sample_weight is None else \
                (sample_weight[idx] * per).sum() / len(idx)
            objective = data
            if member.l1 > 0:
                objective = objective + member.l1 * sum(w.abs().sum() for w in weights)
            opt.zero_grad()
            objective.backward()
            if member.clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(module.parameters(), member.clip_norm,
                                               foreach=False)
            opt.step()
            total += float(data.detach()) * len(idx)
        sched.step()
        history.append(total / len(order))
    return history
