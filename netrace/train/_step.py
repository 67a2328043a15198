"""A population's training step on one minibatch, and what each member trains with.

:meth:`BatchedStep.train_batch` runs every member's forward pass, its own loss and backward
chunk by chunk of members (``member_chunk`` at a time, which bounds memory and changes no
number), clips each member's gradient to its own norm and steps the batched optimizer. Each
member trains with its own dropout rate, L1 penalty, gradient-norm clip, dropout keys (from
its seed, advanced once per batch) and bootstrap weights; a slot's are rewritten when a new
member comes into it (:meth:`BatchedStep.write`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from netrace.errors import UserError
from netrace.models import PopulationModel
from netrace.models._layers import _M32, _mix32
from netrace.train._losses import member_losses
from netrace.train._member import MemberSpec, lr_at
from netrace.train._optim import BatchedOptimizer, clip_member_grads, member_hparams

__all__ = ["BatchedStep"]


class BatchedStep:
    """The training step of ``model``'s ``k`` members with ``optimizer``, on loss ``loss``.

    Per member (a (K,) tensor each): ``dropout``, ``l1``, ``clip`` (inf: none), ``seed_keys``
    (the dropout keys' seeds) and ``batches`` (the batches it trained on, which advance its
    dropout keys); ``sample_weight`` (K, N) its bootstrap weights on the last training set.
    """

    def __init__(self, model: PopulationModel, optimizer: BatchedOptimizer, k: int, *,
                 loss: str, huber_delta: float, member_chunk: int, dtype: torch.dtype,
                 device: torch.device) -> None:
        self.model, self.optimizer, self.k = model, optimizer, k
        self.loss, self.huber_delta, self.member_chunk = loss, huber_delta, member_chunk
        self.dtype, self.device = dtype, device
        self.grad = torch.zeros_like(model.flat)
        self.weight_names = set(model.weight_names)
        opts = {"dtype": dtype, "device": device}
        self.dropout = torch.zeros(k, **opts)
        self.l1 = torch.zeros(k, **opts)
        self.clip = torch.zeros(k, **opts)
        self.seed_keys = torch.zeros(k, dtype=torch.int64, device=device)
        self.batches = torch.zeros(k, dtype=torch.int64, device=device)
        self.sample_weight: Tensor | None = None

    def write(self, i: int, m: MemberSpec) -> None:
        """Slot ``i`` trains member ``m`` from now on, from its first batch."""
        self.dropout[i] = m.dropout
        self.l1[i] = m.l1
        self.clip[i] = math.inf if m.clip_norm is None else m.clip_norm
        self.seed_keys[i] = int(_mix32(torch.tensor(m.seed & _M32)))
        self.batches[i] = 0
        if self.sample_weight is not None:
            self.sample_weight[i] = self.bootstrap(m, self.sample_weight.shape[1])

    def bootstrap(self, m: MemberSpec, n: int) -> Tensor:
        """Member ``m``'s sample weights on ``n`` samples: ones, or its bootstrap counts."""
        if not m.bagging:
            return torch.ones(n, dtype=self.dtype, device=self.device)
        # Seeded by the member alone, so a slot's bootstrap never depends on its neighbours.
        gen = torch.Generator().manual_seed(m.seed * 7919 + 1)
        counts = torch.bincount(torch.randint(0, n, (n,), generator=gen), minlength=n)
        return counts.to(self.dtype).to(self.device)

    def set_lr(self, members: Sequence[MemberSpec], epochs: np.ndarray) -> None:
        """Each member's learning rate for its epoch ``epochs[i]`` of its schedule."""
        # Each member's schedule runs on its own epoch count (a refilled slot starts at 0),
        # from its base rate in the member spec, not from the optimizer's current one.
        lrs = [lr_at(member_hparams(self.optimizer.kind, m)["lr"], m.schedule, int(e))
               for m, e in zip(members, epochs, strict=True)]
        self.optimizer.set_lr(torch.tensor(lrs, dtype=self.dtype))

    def weights(self, members: Sequence[MemberSpec], n: int,
                sample_weight: Tensor | None) -> Tensor:
        """The (K, N) sample weights of an epoch on ``n`` samples: ``sample_weight`` when
        given, else the members' own (bootstrap) weights."""
        if self.sample_weight is None or self.sample_weight.shape[1] != n:
            self.sample_weight = torch.stack([self.bootstrap(m, n) for m in members])
        weights = self.sample_weight if sample_weight is None else \
            torch.as_tensor(sample_weight, dtype=self.dtype, device=self.device)
        if weights.shape != (self.k, n):
            raise UserError(f"sample_weight must be (K, N) = ({self.k}, {n}); "
                            f"got {tuple(weights.shape)}")
        return weights

    def train_batch(self, xb: Tensor, yb: Tensor, wb: Tensor, mask: Tensor | None) -> Tensor:
        """Forward, per-member loss, backward (chunk by chunk), clip, step; returns the (K,)
        data losses."""
        use_dropout = bool((self.dropout > 0).any())
        use_l1 = bool((self.l1 > 0).any())
        key = None
        if use_dropout:
            key = _mix32((self.seed_keys + self.batches * 0x61C88647) & _M32)
        losses = []
        for start in range(0, self.k, self.member_chunk):
            sl = slice(start, min(start + self.member_chunk, self.k))
            losses.append(self._chunk_backward(xb, yb, wb[sl], sl, mask, key, use_dropout,
                                               use_l1))
        if bool(torch.isfinite(self.clip).any()):
            clip_member_grads([self.grad], self.clip)
        self.optimizer.step(mask, grads=[self.grad])
        self.batches += 1
        return torch.cat(losses)

    def _chunk_backward(self, xb: Tensor, yb: Tensor, wb: Tensor, sl: slice,
                        mask: Tensor | None, key: Tensor | None, use_dropout: bool,
                        use_l1: bool) -> Tensor:
        """Gradients of members ``sl`` into their rows of the flat gradient buffer."""
        # contiguous copies: the views into the flat buffer have a member stride that would make
        # every batched matrix product copy its weights again
        leaves = {name: getattr(self.model, name)[sl].detach().contiguous().requires_grad_()
                  for name in self.model.param_names}
        out = self.model(xb, members=sl, params=leaves,
                         dropout_p=self.dropout if use_dropout else None, dropout_key=key,
                         update=mask)
        losses = member_losses(out, yb, wb, self.loss, self.huber_delta)
        objective = losses
        if use_l1:
            penalty = sum(leaves[n].abs().flatten(1).sum(dim=1) for n in self.weight_names)
            objective = objective + self.l1[sl] * penalty
        # The sum's gradient for member k is member k's own: members never share a term.
        grads = torch.autograd.grad(objective.sum(), list(leaves.values()))
        rows = self.grad[sl]
        for name, g in zip(leaves, grads, strict=True):
            rows[:, self.model.slices[name]].copy_(g.reshape(g.shape[0], -1))
        return losses.detach()
