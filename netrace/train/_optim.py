"""Batched optimizers: one step updates all K members, each with its own hyperparameters.

Each update follows torch.optim's single-tensor (for-loop) implementation formula for formula
and in the same order of operations, with every hyperparameter a (K,) tensor broadcast over
the member dimension, so member ``i`` tracks ``torch.optim.X`` on member ``i`` alone to
rounding. Members whose ``active`` flag is off are left exactly as they are (parameters and
state), and nothing computed for one member reads another member's numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from netrace.errors import UserError, did_you_mean
from netrace.train._member import MemberSpec

__all__ = ["OPTIMIZERS", "BatchedOptimizer", "clip_member_grads"]

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "adadelta", "rmsprop", "adam", "adamw")

# torch.optim's defaults, used where a MemberSpec leaves lr / eps / weight_decay as None.
_DEFAULT_LR = {"sgd": 1e-3, "momentum": 1e-3, "nesterov": 1e-3, "adagrad": 1e-2,
               "adadelta": 1.0, "rmsprop": 1e-2, "adam": 1e-3, "adamw": 1e-3}
_DEFAULT_EPS = {"adagrad": 1e-10, "adadelta": 1e-6, "rmsprop": 1e-8, "adam": 1e-8, "adamw": 1e-8}
_DEFAULT_WD = {"adamw": 1e-2}
_STATE = {"sgd": ("buf",), "momentum": ("buf",), "nesterov": ("buf",), "adagrad": ("sum",),
          "adadelta": ("square_avg", "acc_delta"),
          "rmsprop": ("square_avg", "grad_avg", "buf"),
          "adam": ("exp_avg", "exp_avg_sq"), "adamw": ("exp_avg", "exp_avg_sq")}
_HP = ("lr", "momentum", "dampening", "nesterov", "beta1", "beta2", "eps", "rho", "alpha",
       "centered", "lr_decay", "weight_decay")


def check_optimizer(kind: str) -> None:
    """Raise :class:`UserError` unless ``kind`` names a batched optimizer."""
    if kind not in OPTIMIZERS:
        raise UserError(f"unknown optimizer {kind!r}; allowed: {', '.join(OPTIMIZERS)}"
                        f"{did_you_mean(str(kind), OPTIMIZERS)}")


def member_hparams(kind: str, spec: MemberSpec) -> dict[str, float]:
    """The numbers the optimizer ``kind`` uses for member ``spec`` (torch defaults filled in)."""
    check_optimizer(kind)
    if kind in ("momentum", "nesterov") and spec.momentum <= 0:
        raise UserError(f"optimizer {kind!r} needs a member momentum > 0 (e.g. 0.9); "
                        f"got momentum={spec.momentum} for the member with seed {spec.seed}")
    if kind == "nesterov" and spec.dampening != 0:
        raise UserError(f"optimizer 'nesterov' needs dampening = 0; got {spec.dampening}")
    return {
        "lr": _DEFAULT_LR[kind] if spec.lr is None else spec.lr,
        "momentum": spec.momentum, "dampening": spec.dampening,
        "nesterov": float(spec.nesterov or kind == "nesterov"),
        "beta1": spec.beta1, "beta2": spec.beta2,
        "eps": _DEFAULT_EPS.get(kind, 0.0) if spec.eps is None else spec.eps,
        "rho": spec.rho, "alpha": spec.alpha, "centered": float(spec.centered),
        "lr_decay": spec.lr_decay,
        "weight_decay": _DEFAULT_WD.get(kind, 0.0) if spec.weight_decay is None
        else spec.weight_decay,
    }


class BatchedOptimizer:
    """``kind`` over parameters shaped ``(K, ...)`` with per-member hyperparameters.

    ``hp[name]`` holds a (K,) tensor per hyperparameter; ``lr`` may be rewritten every epoch
    by a schedule (:meth:`set_lr`). Gradients come from ``p.grad`` as after ``backward()``.

    >>> p = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    >>> opt = BatchedOptimizer([p], "adam", [MemberSpec(lr=0.1), MemberSpec(lr=0.2)])
    >>> p.grad = torch.ones(2, 3, dtype=torch.float64); opt.step()
    >>> [round(v, 6) for v in p[:, 0].tolist()]
    [-0.1, -0.2]
    """

    def __init__(self, params: Sequence[Tensor], kind: str, members: Sequence[MemberSpec]) -> None:
        check_optimizer(kind)
        self.kind = kind
        self.params = list(params)
        if not self.params:
            raise UserError("BatchedOptimizer needs at least one parameter")
        ref = self.params[0]
        self.k = ref.shape[0]
        if len(members) != self.k or any(p.shape[0] != self.k for p in self.params):
            raise UserError(f"every parameter needs a leading member dim of size "
                            f"len(members)={len(members)}; got shapes "
                            f"{[tuple(p.shape) for p in self.params]}")
        opts = {"dtype": ref.dtype, "device": ref.device}
        self.hp = {name: torch.zeros(self.k, **opts) for name in _HP}
        self.steps = torch.zeros(self.k, **opts)
        self.state = [{name: torch.zeros_like(p) for name in _STATE[kind]} for p in self.params]
        for i, m in enumerate(members):
            self._write_hp(i, m)

    def _write_hp(self, i: int, spec: MemberSpec) -> None:
        for name, value in member_hparams(self.kind, spec).items():
            self.hp[name][i] = value

    @torch.no_grad()
    def reset_member(self, i: int, spec: MemberSpec) -> None:
        """Member ``i`` starts afresh: new hyperparameters, zero state, step count 0."""
        self._write_hp(i, spec)
        self.steps[i] = 0
        for st in self.state:
            for t in st.values():
                t[i].zero_()

    def set_lr(self, lr: Tensor) -> None:
        """Set the (K,) learning rates for the following steps (e.g. from a schedule)."""
        self.hp["lr"].copy_(lr)

    @torch.no_grad()
    def step(self, active: Tensor | None = None, grads: Sequence[Tensor] | None = None) -> None:
        """One update of every member with ``active[i]`` (all when ``active`` is None).

        ``grads`` (one per parameter) default to ``p.grad``; they are used as scratch space.
        """
        grads = [p.grad for p in self.params] if grads is None else list(grads)
        idle = None if active is None else torch.nonzero(~active).flatten()
        if idle is not None and idle.numel() == 0:
            idle = None
        kept = None
        if idle is not None:
            # Update everyone in place, then put the idle members' rows back exactly: cheaper
            # than masking every operation, and bit-exact for them.
            kept = [[t.index_select(0, idle) for t in (p, *st.values())]
                    for p, st in zip(self.params, self.state, strict=True)]
        first = self.steps == 0
        self.steps += 1
        rule = getattr(self, f"_{'sgd' if self.kind in ('momentum', 'nesterov') else self.kind}")
        for p, g, st in zip(self.params, grads, self.state, strict=True):
            if g is None:
                continue
            shape = (self.k,) + (1,) * (p.dim() - 1)
            hp = {name: t.view(shape) for name, t in self.hp.items()}
            rule(p, g, st, hp, self.steps.view(shape), first.view(shape))
        if idle is not None and kept is not None:
            self.steps[idle] -= 1
            for (p, st), rows in zip(zip(self.params, self.state, strict=True), kept, strict=True):
                for t, r in zip((p, *st.values()), rows, strict=True):
                    t.index_copy_(0, idle, r)

    # Each rule updates the parameter and its state in place, in torch.optim's order of
    # operations (torch/optim/<name>.py, _single_tensor_<name>); where torch passes a Python
    # number as ``value=`` the per-member (K, 1, ...) tensor takes its place in the product.
    @staticmethod
    def _sgd(p: Tensor, g: Tensor, st: dict[str, Tensor], hp: dict[str, Tensor], step: Tensor,
             first: Tensor) -> None:
        g = g.addcmul_(p, hp["weight_decay"])
        m, buf = hp["momentum"], st["buf"]
        # torch starts the buffer as a copy of the first gradient (no dampening on step 1)
        buf.copy_(torch.where(first, g, buf * m + (1 - hp["dampening"]) * g))
        d_p = torch.where(hp["nesterov"] > 0, g + m * buf, buf)
        d_p = torch.where(m == 0, g, d_p)
        p.addcmul_(d_p, -hp["lr"])

    @staticmethod
    def _adagrad(p: Tensor, g: Tensor, st: dict[str, Tensor], hp: dict[str, Tensor],
                 step: Tensor, first: Tensor) -> None:
        g = g.addcmul_(p, hp["weight_decay"])
        clr = hp["lr"] / (1 + (step - 1) * hp["lr_decay"])
        st["sum"].addcmul_(g, g)
        std = st["sum"].sqrt().add_(hp["eps"])
        p.addcmul_(g.div_(std), -clr)

    @staticmethod
    def _adadelta(p: Tensor, g: Tensor, st: dict[str, Tensor], hp: dict[str, Tensor],
                  step: Tensor, first: Tensor) -> None:
        g = g.addcmul_(p, hp["weight_decay"])
        rho, eps = hp["rho"], hp["eps"]
        square_avg, acc_delta = st["square_avg"], st["acc_delta"]
        square_avg.mul_(rho).addcmul_(g * g, 1 - rho)
        std = square_avg.add(eps).sqrt_()
        delta = acc_delta.add(eps).sqrt_().div_(std).mul_(g)
        acc_delta.mul_(rho).addcmul_(delta * delta, 1 - rho)
        p.addcmul_(delta, -hp["lr"])

    @staticmethod
    def _rmsprop(p: Tensor, g: Tensor, st: dict[str, Tensor], hp: dict[str, Tensor],
                 step: Tensor, first: Tensor) -> None:
        g = g.addcmul_(p, hp["weight_decay"])
        alpha, m = hp["alpha"], hp["momentum"]
        square_avg, grad_avg, buf = st["square_avg"], st["grad_avg"], st["buf"]
        square_avg.mul_(alpha).addcmul_(g * g, 1 - alpha)
        grad_avg.lerp_(g, (1 - alpha).expand_as(g))
        avg = torch.where(hp["centered"] > 0, square_avg.addcmul(grad_avg, grad_avg, value=-1),
                          square_avg).sqrt_().add_(hp["eps"])
        step_dir = g.div_(avg)
        buf.mul_(m).add_(step_dir)
        p.addcmul_(torch.where(m > 0, buf, step_dir), -hp["lr"])

    @staticmethod
    def _adam(p: Tensor, g: Tensor, st: dict[str, Tensor], hp: dict[str, Tensor], step: Tensor,
              first: Tensor, decoupled: bool = False) -> None:
        lr, b1, b2 = hp["lr"], hp["beta1"], hp["beta2"]
        if decoupled:
            p.mul_(1 - lr * hp["weight_decay"])
        elif bool(hp["weight_decay"].any()):
            g = g.addcmul_(p, hp["weight_decay"])
        exp_avg, exp_avg_sq = st["exp_avg"], st["exp_avg_sq"]
        # Six passes over memory per step: the same formulas as torch, with the products by
        # per-member numbers merged (lerp, addcmul with out=) where torch multiplies twice.
        exp_avg.lerp_(g, (1 - b1).expand_as(g))
        exp_avg_sq.lerp_(g.mul_(g), (1 - b2).expand_as(g))
        bias_correction1 = 1 - b1 ** step
        bias_correction2 = 1 - b2 ** step
        step_size = lr / bias_correction1
        # torch's capturable form: fold -step_size into the denominator (one pass fewer)
        denom = exp_avg_sq.sqrt()
        torch.addcmul(hp["eps"] / -step_size, denom, 1 / (bias_correction2.sqrt() * -step_size),
                      out=denom)
        p.addcdiv_(exp_avg, denom)

    @classmethod
    def _adamw(cls, p: Tensor, g: Tensor, st: dict[str, Tensor], hp: dict[str, Tensor],
               step: Tensor, first: Tensor) -> None:
        cls._adam(p, g, st, hp, step, first, decoupled=True)


@torch.no_grad()
def clip_member_grads(grads: Sequence[Tensor], max_norm: Tensor) -> Tensor:
    """Clip each member's total gradient norm to ``max_norm`` (K,) (``inf`` = no clipping), as
    ``torch.nn.utils.clip_grad_norm_`` does for one network; returns the (K,) norms.

    ``grads`` are (K, ...) tensors, scaled in place."""
    norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads], dim=1)
    total = torch.linalg.vector_norm(norms, dim=1)
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        g.mul_(coef.view((-1,) + (1,) * (g.dim() - 1)))
    return total
