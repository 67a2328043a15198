"""A population: K members of one architecture trained as one batched computation, in slots.

An epoch is small named steps (skorch's fit loop): ``step_epoch`` -> ``_train_batch`` ->
``_backward`` -> ``optimizer.step``; ``validate`` scores every member in one pass and keeps
the books (best state, patience). A slot can be stopped, frozen at its best validation state
or refilled with a new network at any epoch; the other members' numbers are untouched
bit for bit because the tensors keep their shapes and nothing mixes members.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from netrace.errors import UserError, did_you_mean
from netrace.models import ModelSpec, build_model
from netrace.models._layers import _M32, _mix32
from netrace.train import _metrics
from netrace.train._device import resolve_device, set_worker_threads
from netrace.train._losses import check_loss, member_losses
from netrace.train._member import MemberSpec, lr_at
from netrace.train._optim import BatchedOptimizer, clip_member_grads, member_hparams

__all__ = ["EpochResult", "MemberState", "Population", "ValidationResult"]

# Metrics where lower is better; the others (r2, accuracy, auc) are maximized.
_LOWER_IS_BETTER = ("loss", "mse", "mae", "log_loss", "qlike")
_METRICS = {"regression": ("loss", "mse", "mae", "r2", "qlike"),
            "binary": ("loss", "log_loss", "accuracy", "auc"),
            "multiclass": ("loss", "log_loss", "accuracy", "auc")}
_VALIDATION_ROWS = 512  # rows per validation chunk: bounds (K, rows, ...) activations


class MemberState(enum.Enum):
    """Where a slot's member stands."""

    RUNNING = "running"
    STOPPED = "stopped"  # kept as it is now, no more updates
    FROZEN = "frozen"  # restored to its best validation state, no more updates
    DIVERGED = "diverged"  # its loss or weights became NaN/inf; restored to its best state


@dataclass(frozen=True)
class EpochResult:
    """One training epoch: ``train_loss`` (K,) is each member's weighted data loss (without
    penalties), averaged over the epoch's samples; ``diverged`` the members newly found
    diverged."""

    epoch: int
    train_loss: np.ndarray
    states: tuple[MemberState, ...]
    diverged: tuple[int, ...]


@dataclass(frozen=True)
class ValidationResult:
    """One validation of every member: ``metrics[name]`` is a (K,) array; ``score`` the
    monitored metric; ``improved`` who reached a new best (and had it saved);
    ``early_stopped`` who ran out of patience and was frozen at its best."""

    epoch: int
    metrics: dict[str, np.ndarray]
    score: np.ndarray
    improved: np.ndarray
    early_stopped: tuple[int, ...]
    states: tuple[MemberState, ...]


class Population:
    """K networks of one architecture, trained at once with a batched optimizer.

    ``members[i]`` gives member ``i``'s seed, initialization and hyperparameters. All members
    see the same minibatches in the same order (a population-level shuffle from ``seed``);
    bagging is per member, through sample weights. ``optimizer`` is one of ``OPTIMIZERS`` for
    the whole population; ``loss`` defaults to the task's (mse, bce, cross_entropy);
    ``monitor`` is the validation metric that decides "best" and patience. A training step
    runs the members in chunks of ``member_chunk`` (default: as many as keep the step's
    activations under ``activation_budget_mb``), which bounds memory for large K and changes
    no number. ``device="auto"`` picks CUDA when available; ``threads`` sets this process's
    torch threads (one worker per core: 1).

    >>> from netrace.models import MLPSpec
    >>> pop = Population(MLPSpec(in_features=3, hidden=(8,)),
    ...                  [MemberSpec(seed=s, lr=lr) for s, lr in enumerate((1e-3, 1e-2))],
    ...                  optimizer="adam", batch_size=16, device="cpu")
    >>> x, y = torch.randn(64, 3), torch.randn(64)
    >>> pop.step_epoch(x, y).train_loss.shape
    (2,)
    >>> sorted(pop.validate(x, y).metrics)
    ['loss', 'mae', 'mse']
    """

    def __init__(self, spec: ModelSpec, members: Sequence[MemberSpec], *,
                 optimizer: str = "adam", loss: str | None = None, batch_size: int = 128,
                 monitor: str = "loss", huber_delta: float = 1.0, seed: int = 0,
                 device: str | torch.device = "auto", dtype: torch.dtype = torch.float32,
                 threads: int | None = None, member_chunk: int | None = None,
                 activation_budget_mb: float = 512.0) -> None:
        members = list(members)
        if not members:
            raise UserError("a population needs at least one member; got an empty list")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise UserError(f"batch_size must be an integer >= 1; got {batch_size!r}")
        allowed = _METRICS[spec.task]
        if monitor not in allowed:
            raise UserError(f"monitor {monitor!r} is not a {spec.task} metric; allowed: "
                            f"{', '.join(allowed)}{did_you_mean(monitor, allowed)}")
        if threads is not None:
            set_worker_threads(threads)
        for m in members:
            member_hparams(optimizer, m)  # fail early, naming the member
        self.spec, self.k = spec, len(members)
        self.loss = check_loss(spec.task, loss)
        self.batch_size, self.monitor, self.huber_delta = batch_size, monitor, huber_delta
        self.device = resolve_device(device)
        self.dtype = dtype
        self.model = build_model(spec, self.k, seeds=[m.seed for m in members],
                                 init=[m.init for m in members],
                                 init_dist=[m.init_dist for m in members],
                                 recurrent_init=[m.recurrent_init for m in members],
                                 dtype=dtype, device=self.device)
        self._flat = self.model.flat
        self._grad = torch.zeros_like(self._flat)
        self._weight_names = set(self.model.weight_names)
        self.optimizer = BatchedOptimizer([self._flat], optimizer, members)
        if member_chunk is not None and (not isinstance(member_chunk, int) or member_chunk < 1):
            raise UserError(f"member_chunk must be an integer >= 1 or None; got {member_chunk!r}")
        per_member = batch_size * self.model.activation_size() * torch.finfo(dtype).bits // 8
        # Members are independent, so a step can run them in chunks: same numbers, and the
        # activations of only one chunk in memory at a time (K=1024 LSTMs fit in a few GB).
        if member_chunk is None:
            chunk = max(1, int(activation_budget_mb * 2**20 // per_member))
            member_chunk = math.ceil(self.k / math.ceil(self.k / chunk))  # 32 + 32, not 63 + 1
        self.member_chunk = member_chunk
        self.members = members
        self.states = [MemberState.RUNNING] * self.k
        self.epoch = 0
        self.member_epochs = np.zeros(self.k, dtype=np.int64)
        self._gen = torch.Generator().manual_seed(seed)
        opts = {"dtype": dtype, "device": self.device}
        self._dropout = torch.zeros(self.k, **opts)
        self._l1 = torch.zeros(self.k, **opts)
        self._clip = torch.zeros(self.k, **opts)
        self._seed_keys = torch.zeros(self.k, dtype=torch.int64, device=self.device)
        self._batches = torch.zeros(self.k, dtype=torch.int64, device=self.device)
        self._sample_weight: Tensor | None = None
        self._best = [t.detach().clone() for t in self._state_tensors()]
        self.best_score = np.full(self.k, np.inf)  # in "lower is better" units
        self.best_epoch = np.full(self.k, -1, dtype=np.int64)
        self._bad_epochs = np.zeros(self.k, dtype=np.int64)
        for i, m in enumerate(members):
            self._write_member(i, m)

    # -- slots --------------------------------------------------------------------------
    def _write_member(self, i: int, m: MemberSpec) -> None:
        self._dropout[i] = m.dropout
        self._l1[i] = m.l1
        self._clip[i] = math.inf if m.clip_norm is None else m.clip_norm
        self._seed_keys[i] = int(_mix32(torch.tensor(m.seed & _M32)))
        self._batches[i] = 0
        if self._sample_weight is not None:
            self._sample_weight[i] = self._bootstrap(m, self._sample_weight.shape[1])

    def _bootstrap(self, m: MemberSpec, n: int) -> Tensor:
        if not m.bagging:
            return torch.ones(n, dtype=self.dtype, device=self.device)
        # Seeded by the member alone, so a slot's bootstrap never depends on its neighbours.
        gen = torch.Generator().manual_seed(m.seed * 7919 + 1)
        counts = torch.bincount(torch.randint(0, n, (n,), generator=gen), minlength=n)
        return counts.to(self.dtype).to(self.device)

    def _check_index(self, i: int) -> None:
        if not isinstance(i, int) or not 0 <= i < self.k:
            raise UserError(f"member index must be an integer in [0, {self.k}); got {i!r}")

    def stop(self, i: int) -> None:
        """Stop member ``i`` where it is: no further updates; its weights stay as they are."""
        self._check_index(i)
        self.states[i] = MemberState.STOPPED

    @torch.no_grad()
    def freeze(self, i: int) -> None:
        """Restore member ``i`` to its best validation state and stop it."""
        self._check_index(i)
        self._restore_best(i)
        self.states[i] = MemberState.FROZEN

    @torch.no_grad()
    def replace(self, i: int, member: MemberSpec) -> None:
        """Refill slot ``i`` with a new network: fresh weights from ``member.seed``, its
        hyperparameters, zero optimizer state, epoch 0. The other members are not touched."""
        self._check_index(i)
        member_hparams(self.optimizer.kind, member)
        self.model.init_members([i], [member.seed], init=member.init,
                                init_dist=member.init_dist, recurrent_init=member.recurrent_init)
        self.optimizer.reset_member(i, member)
        self.members[i] = member
        self._write_member(i, member)
        self.states[i] = MemberState.RUNNING
        self.member_epochs[i] = 0
        for best, t in zip(self._best, self._state_tensors(), strict=True):
            best[i].copy_(t[i])
        self.best_score[i], self.best_epoch[i], self._bad_epochs[i] = np.inf, -1, 0

    @torch.no_grad()
    def init_linear(self, index: Sequence[int], x: Tensor, y: Tensor) -> None:
        """Start members ``index`` (new ones: nothing trained yet) at the least-squares fit of
        ``y`` on their flattened inputs ``x``, with the network's correction at zero
        (:meth:`~netrace.models.PopulationModel.init_linear`); their best state follows."""
        for i in index:
            self._check_index(i)
        x, y = self._to_device(x, y)
        self.model.init_linear(list(index), x, y)
        for best, t in zip(self._best, self._state_tensors(), strict=True):
            for i in index:
                best[i].copy_(t[i])

    def _state_tensors(self) -> list[Tensor]:
        return [self._flat, *self.model.buffers()]

    def _restore_best(self, i: int) -> None:
        for best, t in zip(self._best, self._state_tensors(), strict=True):
            t.detach()[i].copy_(best[i])

    @property
    def active(self) -> Tensor:
        """(K,) bool: who is still training."""
        return torch.tensor([s is MemberState.RUNNING for s in self.states], device=self.device)

    def member_module(self, i: int) -> torch.nn.Module:
        """Member ``i`` as a standalone ``nn.Module`` (a copy; see PopulationModel)."""
        return self.model.member_module(i)

    # -- training -----------------------------------------------------------------------
    def step_epoch(self, x: Tensor, y: Tensor, *, order: Tensor | None = None,
                   sample_weight: Tensor | None = None) -> EpochResult:
        """Train every running member for one epoch over ``(x, y)``.

        ``order`` fixes the sample order (default: a shuffle from the population's seed);
        ``sample_weight`` (K, N) overrides the members' own (bagging) weights for this epoch.
        """
        x, y = self._to_device(x, y)
        n = x.shape[0]
        if self._sample_weight is None or self._sample_weight.shape[1] != n:
            self._sample_weight = torch.stack([self._bootstrap(m, n) for m in self.members])
        weights = self._sample_weight if sample_weight is None else \
            torch.as_tensor(sample_weight, dtype=self.dtype, device=self.device)
        if weights.shape != (self.k, n):
            raise UserError(f"sample_weight must be (K, N) = ({self.k}, {n}); "
                            f"got {tuple(weights.shape)}")
        if order is None:
            order = torch.randperm(n, generator=self._gen)
        order = torch.as_tensor(order, device=self.device)
        self._set_lr()
        active = self.active
        mask = None if bool(active.all()) else active
        self.model.train()
        total = torch.zeros(self.k, dtype=self.dtype, device=self.device)
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            total += self._train_batch(x[idx], y[idx], weights[:, idx], mask) * len(idx)
        train_loss = (total / n).detach().cpu().numpy()
        diverged = self._check_divergence(train_loss)
        self.epoch += 1
        self.member_epochs += np.array([s is MemberState.RUNNING for s in self.states])
        return EpochResult(self.epoch - 1, train_loss, tuple(self.states), diverged)

    def _to_device(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.as_tensor(x).to(self.device, self.dtype)
        y = torch.as_tensor(y).to(self.device)
        y = y.long() if self.spec.task == "multiclass" else y.to(self.dtype)
        if x.shape[0] != y.shape[0]:
            raise UserError(f"x and y must hold the same number of rows; got {x.shape[0]} "
                            f"and {y.shape[0]}")
        return x, y

    def _set_lr(self) -> None:
        # Each member's schedule runs on its own epoch count (a refilled slot starts at 0),
        # from its base rate in the member spec, not from the optimizer's current one.
        lrs = [lr_at(member_hparams(self.optimizer.kind, m)["lr"], m.schedule, int(e))
               for m, e in zip(self.members, self.member_epochs, strict=True)]
        self.optimizer.set_lr(torch.tensor(lrs, dtype=self.dtype))

    def _train_batch(self, xb: Tensor, yb: Tensor, wb: Tensor, mask: Tensor | None) -> Tensor:
        """Forward, per-member loss, backward (chunk by chunk), clip, step; returns the (K,)
        data losses."""
        use_dropout = bool((self._dropout > 0).any())
        use_l1 = bool((self._l1 > 0).any())
        key = None
        if use_dropout:
            key = _mix32((self._seed_keys + self._batches * 0x61C88647) & _M32)
        losses = []
        for start in range(0, self.k, self.member_chunk):
            sl = slice(start, min(start + self.member_chunk, self.k))
            losses.append(self._chunk_backward(xb, yb, wb[sl], sl, mask, key, use_dropout,
                                               use_l1))
        if bool(torch.isfinite(self._clip).any()):
            clip_member_grads([self._grad], self._clip)
        self.optimizer.step(mask, grads=[self._grad])
        self._batches += 1
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
                         dropout_p=self._dropout if use_dropout else None, dropout_key=key,
                         update=mask)
        losses = member_losses(out, yb, wb, self.loss, self.huber_delta)
        objective = losses
        if use_l1:
            penalty = sum(leaves[n].abs().flatten(1).sum(dim=1) for n in self._weight_names)
            objective = objective + self._l1[sl] * penalty
        # The sum's gradient for member k is member k's own: members never share a term.
        grads = torch.autograd.grad(objective.sum(), list(leaves.values()))
        rows = self._grad[sl]
        for name, g in zip(leaves, grads, strict=True):
            rows[:, self.model.slices[name]].copy_(g.reshape(g.shape[0], -1))
        return losses.detach()

    @torch.no_grad()
    def _check_divergence(self, train_loss: np.ndarray) -> tuple[int, ...]:
        finite = np.isfinite(train_loss) & torch.isfinite(self._flat).all(dim=1).cpu().numpy()
        newly = tuple(i for i in range(self.k)
                      if not finite[i] and self.states[i] is MemberState.RUNNING)
        for i in newly:
            self._restore_best(i)  # keep NaN out of the slot's tensors
            for st in self.optimizer.state:
                for t in st.values():
                    t[i].zero_()  # inactive from now on; zero keeps NaN out for good
            self.states[i] = MemberState.DIVERGED
        return newly

    # -- validation ---------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Every member's outputs (K, N, n_outputs) in evaluation mode (no dropout, batch-norm
        running statistics), computed in chunks of rows."""
        x = torch.as_tensor(x).to(self.device, self.dtype)
        self.model.eval()
        outs = [self.model(x[s:s + _VALIDATION_ROWS]) for s in range(0, x.shape[0],
                                                                     _VALIDATION_ROWS)]
        self.model.train()
        return torch.cat(outs, dim=1)

    @torch.no_grad()
    def validate(self, x: Tensor, y: Tensor, *, baseline: Tensor | None = None) -> ValidationResult:
        """Score every member on ``(x, y)`` in one pass; save new bests; apply patience.

        Regression reports loss, mse, mae and, given a ``baseline`` forecast (N,), the
        out-of-sample ``r2`` against it; binary: loss, log_loss, accuracy, auc; multiclass:
        loss, log_loss, accuracy, auc (one-vs-rest, macro). Only running members can improve
        or run out of patience. The same as :meth:`judge` of :meth:`measure`.
        """
        return self.judge(self.measure(x, y, baseline=baseline))

    @torch.no_grad()
    def measure(self, x: Tensor, y: Tensor, *, baseline: Tensor | None = None,
                scale: tuple[Any, Any] | None = None,
                forecast: Callable[[Tensor], Tensor] | None = None,
                learned: Tensor | None = None) -> dict[str, np.ndarray]:
        """Every member's validation metrics on ``(x, y)`` (see :meth:`validate`), without
        touching the books. For a regression whose ``y`` is standardized, ``scale`` = (mean,
        std) of the target (floats, or one per row of ``y``) also gives ``qlike``, in the
        target's own units. A regression network that learned another quantity than ``y`` (its
        log, its ratio to a level: :mod:`netrace.race._target`) is scored on
        ``forecast(outputs)``, its forecasts (K, N) in ``y``'s units, and its loss on
        ``learned`` (N,), what it was trained to output."""
        x, y = self._to_device(x, y)
        out = self.predict(x)
        target = y if learned is None else torch.as_tensor(learned).to(self.device, y.dtype)
        metrics = {"loss": member_losses(out, target, None, self.loss, self.huber_delta)
                   .cpu().numpy().astype(np.float64)}
        if self.spec.task == "regression":
            # a Gaussian network's second output is its log variance, not a forecast
            if forecast is not None:
                pred = forecast(out)
            else:
                pred = out.mean(dim=2) if out.shape[2] > 1 and self.loss != "gaussian_nll" \
                    else out[..., 0]
            metrics["mse"] = _metrics.mse(pred, y if y.dim() == 1 else y.mean(dim=1))
            metrics["mae"] = _metrics.mae(pred, y if y.dim() == 1 else y.mean(dim=1))
            if baseline is not None:
                base = torch.as_tensor(baseline).to(self.device, self.dtype)
                if base.shape != y.shape:
                    raise UserError(f"baseline must hold one forecast per row, shape "
                                    f"{tuple(y.shape)}; got {tuple(base.shape)}")
                metrics["r2"] = _metrics.r2_oos(pred, y, base)
            if scale is not None:
                mu, sd = (v if np.ndim(v) == 0 else torch.as_tensor(
                    v, dtype=torch.float64, device=self.device) for v in scale)
                metrics["qlike"] = _metrics.qlike(mu + sd * pred.double(),
                                                  mu + sd * y.double().expand_as(pred))
        elif self.spec.task == "binary":
            metrics["log_loss"] = _metrics.log_loss(out[..., 0], y)
            metrics["accuracy"] = _metrics.accuracy(out[..., 0], y)
            metrics["auc"] = _metrics.auc(out[..., 0], y)
        else:
            metrics["log_loss"] = _metrics.log_loss(out, y)
            metrics["accuracy"] = _metrics.accuracy(out, y)
            metrics["auc"] = _metrics.auc(out, y)
        if self.monitor not in metrics:
            need = "the target's scale; pass scale=(mean, std)" if self.monitor == "qlike" \
                else "a baseline forecast; pass baseline=..."
            raise UserError(f"monitor {self.monitor!r} needs {need} to measure()")
        return metrics

    @torch.no_grad()
    def judge(self, metrics: dict[str, np.ndarray], *, score: np.ndarray | None = None
              ) -> ValidationResult:
        """Keep the books after a validation: save the state of every running member that
        reached a new best and apply patience. ``score`` (K,), in the monitored metric's units,
        replaces ``metrics[monitor]`` as what "best" means: the race passes each network's
        mean over its folds, so that every fold keeps the weights of the epoch at which that
        mean peaked, and patience counts on it too."""
        score = metrics[self.monitor] if score is None else np.asarray(score, dtype=np.float64)
        lower = score if self.monitor in _LOWER_IS_BETTER else -score
        running = np.array([s is MemberState.RUNNING for s in self.states])
        improved = running & np.isfinite(lower) & (lower < self.best_score)
        self._save_best(improved)
        self.best_score = np.where(improved, lower, self.best_score)
        self.best_epoch = np.where(improved, self.epoch - 1, self.best_epoch)
        self._bad_epochs = np.where(improved, 0, self._bad_epochs + running)
        stopped = []
        for i in np.flatnonzero(running & ~improved):
            patience = self.members[i].patience
            if patience is not None and self._bad_epochs[i] >= patience:
                self.freeze(int(i))
                stopped.append(int(i))
        return ValidationResult(self.epoch - 1, metrics, score, improved, tuple(stopped),
                                tuple(self.states))

    def _save_best(self, improved: np.ndarray) -> None:
        if not improved.any():
            return
        mask = torch.as_tensor(improved, device=self.device)
        for best, t in zip(self._best, self._state_tensors(), strict=True):
            shape = (self.k,) + (1,) * (t.dim() - 1)
            best.copy_(torch.where(mask.view(shape), t.detach(), best))

    # -- member state: a network moved to another population, e.g. after its worker died --
    _STATE_SCALARS = ("optimizer", "optim_steps", "batches", "epochs", "best_score",
                      "best_epoch", "bad_epochs", "state")

    def _state_names(self) -> list[str]:
        """Names of ``_state_tensors()`` in a member state: ``params``, then each buffer."""
        return ["params", *(f"buffer.{name}" for name, _ in self.model.named_buffers())]

    @torch.no_grad()
    def member_states(self, index: Sequence[int], *, snapshot: bool = True
                      ) -> list[dict[str, np.ndarray | int | float | str]]:
        """Everything that decides members ``index``'s future training, one dict each, to
        continue them in a slot of another population (:meth:`load_member_state`).

        Arrays, in the population's dtype: ``params`` (the member's row of the flat
        parameters), ``buffer.<name>`` (batch-norm statistics), ``optim.<j>.<name>`` (the
        optimizer's state rows) and ``best.params`` / ``best.buffer.<name>`` (its best
        validation state; left out when equal to the current one, as after an improvement,
        which saves a quarter of the bytes). Numbers: ``optimizer`` (its kind), ``optim_steps``,
        ``batches`` (the dropout-key counter), ``epochs`` (its own epochs, which drive its
        learning-rate schedule), ``best_score``, ``best_epoch`` (counted in its own epochs, not
        the population's; right for a running member), ``bad_epochs`` and ``state``.
        Hyperparameters, seed, bootstrap weights and dropout keys come from its
        :class:`MemberSpec`. Not included: the population's minibatch order, which a member
        continued elsewhere takes from its new population. One gather per tensor for all of
        ``index``; each dict's arrays are views into those copies. With ``snapshot=False`` on
        the CPU they are views into the population's own tensors instead (no copy: for a caller
        that serializes them before the population trains again, as the race does after every
        epoch).
        """
        for i in index:
            self._check_index(i)
        idx = torch.as_tensor(list(index), dtype=torch.long, device=self.device)
        names = self._state_names()
        live = not snapshot and self.device.type == "cpu"
        rows = list(index) if live else list(range(len(index)))

        def take(t: Tensor) -> np.ndarray:
            t = t.detach()
            return t.numpy() if live else t.index_select(0, idx).cpu().numpy()

        same = torch.ones(len(idx), dtype=torch.bool, device=self.device)
        for t, b in zip(self._state_tensors(), self._best, strict=True):
            same &= (t.detach() == b).flatten(1).all(dim=1).index_select(0, idx)
        arrays = {name: take(t) for name, t in zip(names, self._state_tensors(), strict=True)}
        arrays.update({f"best.{name}": take(b) for name, b in zip(names, self._best,
                                                                  strict=True)})
        for j, st in enumerate(self.optimizer.state):
            arrays.update({f"optim.{j}.{name}": take(t) for name, t in st.items()})
        steps = self.optimizer.steps.index_select(0, idx).tolist()
        batches = self._batches.index_select(0, idx).tolist()
        same_rows = same.tolist()
        out = []
        for r, i in enumerate(index):
            state: dict[str, np.ndarray | int | float | str] = {
                name: a[rows[r]] for name, a in arrays.items()
                if not (same_rows[r] and name.startswith("best."))}
            epochs = int(self.member_epochs[i])
            start = self.epoch - epochs  # the population epoch the member started in
            state.update(optimizer=self.optimizer.kind, optim_steps=int(steps[r]),
                         batches=int(batches[r]), epochs=epochs,
                         best_score=float(self.best_score[i]),
                         best_epoch=int(self.best_epoch[i] - start)
                         if np.isfinite(self.best_score[i]) else -1,
                         bad_epochs=int(self._bad_epochs[i]), state=self.states[i].value)
            out.append(state)
        return out

    def subset(self, index: Sequence[int]) -> Population:
        """Members ``index`` alone, in a new population of their number, in that order, where
        they go on exactly as they would here: their weights, optimizer state, schedule,
        dropout keys, bagging weights, best state and patience move with them, and the new
        population draws the same minibatch order as this one would. An epoch costs about as
        much with most slots stopped as with all running (stopped slots are computed, then
        masked), so a population that can no longer refill its freed slots is best continued
        as the subset of its running members."""
        for i in index:
            self._check_index(i)
        members = [self.members[i] for i in index]
        new = Population(self.spec, members, optimizer=self.optimizer.kind, loss=self.loss,
                         batch_size=self.batch_size, monitor=self.monitor,
                         huber_delta=self.huber_delta, device=self.device, dtype=self.dtype)
        new.epoch = self.epoch  # members' best epochs keep this population's numbering
        for j, (m, state) in enumerate(zip(members, self.member_states(index), strict=True)):
            new.load_member_state(j, m, state)
        new._gen.set_state(self._gen.get_state())
        return new

    @torch.no_grad()
    def best_weights(self, index: Sequence[int]) -> list[dict[str, np.ndarray]]:
        """What members ``index`` keep when they finish: their best validation state, as copies
        in the population's dtype, one dict each: ``params`` (the member's row of the flat
        parameters) and ``buffer.<name>`` (batch-norm statistics). One gather per tensor for all
        of ``index``, and no module built: the race saves hundreds of finished networks a
        second this way. :func:`netrace.models.member_module_from` makes a member's dict a
        torch module, as :meth:`member_module` makes a live member one."""
        for i in index:
            self._check_index(i)
        if not index:
            return []
        idx = torch.as_tensor(list(index), dtype=torch.long, device=self.device)
        arrays = {name: b.index_select(0, idx).cpu().numpy()
                  for name, b in zip(self._state_names(), self._best, strict=True)}
        return [{name: a[r] for name, a in arrays.items()} for r in range(len(idx))]

    def member_state(self, i: int) -> dict[str, np.ndarray | int | float | str]:
        """Member ``i``'s state (see :meth:`member_states`)."""
        return self.member_states([i])[0]

    @torch.no_grad()
    def load_member_state(self, i: int, member: MemberSpec,
                          state: dict[str, np.ndarray | int | float | str]) -> None:
        """Put the member whose :meth:`member_state` is ``state`` into slot ``i``, as
        :meth:`replace` puts a new one: its weights, optimizer state, counters and books go on
        exactly where they were. ``member`` must be the spec it was trained with (its
        hyperparameters, seed, bootstrap weights and dropout keys come from it). Fed the same
        minibatches, it then trains exactly as it would have in its old population. The other
        members are not touched."""
        self._check_index(i)
        self._check_member_state(state)
        member_hparams(self.optimizer.kind, member)
        self.optimizer.reset_member(i, member)  # its hyperparameters; the state follows
        self.members[i] = member
        self._write_member(i, member)
        names = self._state_names()
        for name, t, best in zip(names, self._state_tensors(), self._best, strict=True):
            t.detach()[i].copy_(torch.as_tensor(state[name]))
            best[i].copy_(torch.as_tensor(state.get(f"best.{name}", state[name])))
        for j, st in enumerate(self.optimizer.state):
            for name, t in st.items():
                t[i].copy_(torch.as_tensor(state[f"optim.{j}.{name}"]))
        self.optimizer.steps[i] = int(state["optim_steps"])
        self._batches[i] = int(state["batches"])
        epochs = int(state["epochs"])
        self.member_epochs[i] = epochs
        best_epoch = int(state["best_epoch"])
        # in the population's numbering, as validate() counts: negative when the member's
        # best came before this population's first epoch
        self.best_epoch[i] = self.epoch - epochs + best_epoch if best_epoch >= 0 else -1
        self.best_score[i] = float(state["best_score"])
        self._bad_epochs[i] = int(state["bad_epochs"])
        self.states[i] = MemberState(state["state"])

    def _check_member_state(self, state: dict[str, np.ndarray | int | float | str]) -> None:
        """A member state fits only a population of the same architecture and optimizer."""
        mine = {name: tuple(t.shape[1:]) for name, t in
                zip(self._state_names(), self._state_tensors(), strict=True)}
        for j, st in enumerate(self.optimizer.state):
            mine.update({f"optim.{j}.{name}": tuple(t.shape[1:]) for name, t in st.items()})
        theirs = {name: tuple(np.shape(v)) for name, v in state.items()
                  if name not in self._STATE_SCALARS and not name.startswith("best.")}
        best_fits = all(mine.get(name[5:]) == tuple(np.shape(v)) for name, v in state.items()
                        if name.startswith("best."))
        missing = [n for n in self._STATE_SCALARS if n not in state]
        if theirs != mine or not best_fits or missing or \
                state["optimizer"] != self.optimizer.kind:
            p = mine["params"][0]
            given = theirs.get("params", ("?",))[0]
            raise UserError(
                f"this member state does not fit the population: it holds {given} parameters "
                f"for optimizer {state.get('optimizer')!r}"
                + (f" (missing {', '.join(missing)})" if missing else "")
                + f", the population's members have {p} for {self.optimizer.kind!r}; load it "
                "into a population of the same architecture and optimizer")
