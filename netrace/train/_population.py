"""A population: K members of one architecture trained as one batched computation, in slots.

An epoch is small named steps (skorch's fit loop): ``step_epoch`` -> the batched step's
``train_batch`` (:mod:`._step`) -> ``_chunk_backward`` -> ``optimizer.step``; ``validate``
scores every member in one pass (:mod:`._measure`) and keeps the books (best state, patience:
:mod:`._books`). A slot can be stopped, frozen at its best validation state or refilled with a
new network at any epoch, and a member's state moved to a slot of another population
(:mod:`._member_state`); the other members' numbers are untouched bit for bit because the
tensors keep their shapes and nothing mixes members.
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
from netrace.train._books import Books
from netrace.train._device import resolve_device
from netrace.train._losses import check_loss, member_losses
from netrace.train._measure import class_metrics, regression_metrics
from netrace.train._member import MemberSpec
from netrace.train._member_state import (
    MemberStateDict,
    best_rows,
    check_state,
    export_states,
    load_state,
)
from netrace.train._optim import BatchedOptimizer, member_hparams
from netrace.train._step import BatchedStep
from netrace.vocabulary import MAXIMIZED, MEASURED_METRICS

__all__ = ["EpochResult", "MemberState", "Population", "ValidationResult"]

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
        _check_arguments(spec, members, batch_size, monitor)
        if threads is not None:  # torch's threads only; a worker process's whole setup is
            _set_threads(threads)  # netrace.backends.set_worker_threads
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
        self.optimizer = BatchedOptimizer([self._flat], optimizer, members)
        per_member = batch_size * self.model.activation_size() * torch.finfo(dtype).bits // 8
        self.member_chunk = _member_chunk(member_chunk, self.k, per_member, activation_budget_mb)
        self.members = members
        self.states = [MemberState.RUNNING] * self.k
        self.epoch = 0
        self.member_epochs = np.zeros(self.k, dtype=np.int64)
        self._gen = torch.Generator().manual_seed(seed)
        self._step = BatchedStep(self.model, self.optimizer, self.k, loss=self.loss,
                                 huber_delta=huber_delta, member_chunk=self.member_chunk,
                                 dtype=dtype, device=self.device)
        self._books = Books(self._state_tensors(), self.k, self.device)
        for i, m in enumerate(members):
            self._step.write(i, m)

    @property
    def best_score(self) -> np.ndarray:
        """(K,) each member's best validation score, in "lower is better" units (inf: none
        yet)."""
        return self._books.score

    @property
    def best_epoch(self) -> np.ndarray:
        """(K,) the population epoch of each member's best validation score (-1: none yet)."""
        return self._books.epoch

    # -- slots --------------------------------------------------------------------------
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
        self._books.restore(i, self._state_tensors())
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
        self._step.write(i, member)
        self.states[i] = MemberState.RUNNING
        self.member_epochs[i] = 0
        self._books.reset(i, self._state_tensors())

    @torch.no_grad()
    def init_linear(self, index: Sequence[int], x: Tensor, y: Tensor) -> None:
        """Start members ``index`` (new ones: nothing trained yet) at the least-squares fit of
        ``y`` on their flattened inputs ``x``, with the network's correction at zero
        (:meth:`~netrace.models.PopulationModel.init_linear`); their best state follows."""
        for i in index:
            self._check_index(i)
        x, y = self._to_device(x, y)
        self.model.init_linear(list(index), x, y)
        self._books.keep(index, self._state_tensors())

    def _state_tensors(self) -> list[Tensor]:
        return [self._flat, *self.model.buffers()]

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
        weights = self._step.weights(self.members, n, sample_weight)
        if order is None:
            order = torch.randperm(n, generator=self._gen)
        order = torch.as_tensor(order, device=self.device)
        self._step.set_lr(self.members, self.member_epochs)
        active = self.active
        mask = None if bool(active.all()) else active
        self.model.train()
        total = torch.zeros(self.k, dtype=self.dtype, device=self.device)
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            total += self._step.train_batch(x[idx], y[idx], weights[:, idx], mask) * len(idx)
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

    @torch.no_grad()
    def _check_divergence(self, train_loss: np.ndarray) -> tuple[int, ...]:
        finite = np.isfinite(train_loss) & torch.isfinite(self._flat).all(dim=1).cpu().numpy()
        newly = tuple(i for i in range(self.k)
                      if not finite[i] and self.states[i] is MemberState.RUNNING)
        for i in newly:
            self._books.restore(i, self._state_tensors())  # keep NaN out of the slot's tensors
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
            metrics.update(regression_metrics(out, y, loss=self.loss, dtype=self.dtype,
                                              device=self.device, baseline=baseline,
                                              scale=scale, forecast=forecast))
        else:
            metrics.update(class_metrics(out, y, self.spec.task))
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
        lower = -score if self.monitor in MAXIMIZED else score
        running = np.array([s is MemberState.RUNNING for s in self.states])
        improved = self._books.record(lower, running, self.epoch - 1, self._state_tensors())
        stopped = []
        for i in np.flatnonzero(running & ~improved):
            patience = self.members[i].patience
            if patience is not None and self._books.bad[i] >= patience:
                self.freeze(int(i))
                stopped.append(int(i))
        return ValidationResult(self.epoch - 1, metrics, score, improved, tuple(stopped),
                                tuple(self.states))

    # -- member state: a network moved to another population, e.g. after its worker died --
    @torch.no_grad()
    def member_states(self, index: Sequence[int], *, snapshot: bool = True
                      ) -> list[MemberStateDict]:
        """Everything that decides members ``index``'s future training, one dict each, to
        continue them in a slot of another population (:meth:`load_member_state`): their rows
        of the parameters, buffers, optimizer state and best state, and their counters and
        books (the keys: :mod:`netrace.train._member_state`). One gather per tensor for all of
        ``index``; each dict's arrays are views into those copies. With ``snapshot=False`` on
        the CPU they are views into the population's own tensors instead (no copy: for a caller
        that serializes them before the population trains again, as the race does after every
        epoch).
        """
        for i in index:
            self._check_index(i)
        return export_states(self, index, snapshot=snapshot)

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
        return best_rows(self, index)

    def member_state(self, i: int) -> MemberStateDict:
        """Member ``i``'s state (see :meth:`member_states`)."""
        return self.member_states([i])[0]

    @torch.no_grad()
    def load_member_state(self, i: int, member: MemberSpec, state: MemberStateDict) -> None:
        """Put the member whose :meth:`member_state` is ``state`` into slot ``i``, as
        :meth:`replace` puts a new one: its weights, optimizer state, counters and books go on
        exactly where they were. ``member`` must be the spec it was trained with (its
        hyperparameters, seed, bootstrap weights and dropout keys come from it). Fed the same
        minibatches, it then trains exactly as it would have in its old population. The other
        members are not touched."""
        self._check_index(i)
        check_state(self, state)
        member_hparams(self.optimizer.kind, member)
        self.optimizer.reset_member(i, member)  # its hyperparameters; the state follows
        self.members[i] = member
        self._step.write(i, member)
        load_state(self, i, state)
        self.states[i] = MemberState(state["state"])


def _set_threads(n: int) -> None:
    """``n`` torch threads in this process (no more: a worker's setup is the backend's)."""
    if not isinstance(n, int) or n < 1:
        raise UserError(f"threads must be an integer >= 1; got {n!r}")
    torch.set_num_threads(n)


def _check_arguments(spec: ModelSpec, members: list[MemberSpec], batch_size: int,
                     monitor: str) -> None:
    if not members:
        raise UserError("a population needs at least one member; got an empty list")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    allowed = MEASURED_METRICS[spec.task]
    if monitor not in allowed:
        raise UserError(f"monitor {monitor!r} is not a {spec.task} metric; allowed: "
                        f"{', '.join(allowed)}{did_you_mean(monitor, allowed)}")


def _member_chunk(member_chunk: int | None, k: int, per_member: int,
                  activation_budget_mb: float) -> int:
    """``member_chunk``, checked; by default as many members as keep a step's activations
    (``per_member`` bytes each) under the budget, in chunks of equal size."""
    if member_chunk is not None and (not isinstance(member_chunk, int) or member_chunk < 1):
        raise UserError(f"member_chunk must be an integer >= 1 or None; got {member_chunk!r}")
    # Members are independent, so a step can run them in chunks: same numbers, and the
    # activations of only one chunk in memory at a time (K=1024 LSTMs fit in a few GB).
    if member_chunk is None:
        chunk = max(1, int(activation_budget_mb * 2**20 // per_member))
        member_chunk = math.ceil(k / math.ceil(k / chunk))  # 32 + 32, not 63 + 1
    return member_chunk
