"""A member's state, exported from its population's slot and loaded into another's.

Everything that decides a member's future training, one dict per member: arrays, in the
population's dtype, ``params`` (the member's row of the flat parameters), ``buffer.<name>``
(batch-norm statistics), ``optim.<j>.<name>`` (the optimizer's state rows) and ``best.params``
/ ``best.buffer.<name>`` (its best validation state; left out when equal to the current one,
as after an improvement, which saves a quarter of the bytes); numbers, :data:`STATE_SCALARS`:
``optimizer`` (its kind), ``optim_steps``, ``batches`` (the dropout-key counter), ``epochs``
(its own epochs, which drive its learning-rate schedule), ``best_score``, ``best_epoch``
(counted in its own epochs, not the population's; right for a running member),
``bad_epochs`` and ``state``. Hyperparameters, seed, bootstrap weights and dropout keys come
from its :class:`~netrace.train.MemberSpec`. Not included: the population's minibatch order,
which a member continued elsewhere takes from its new population.

These are :class:`~netrace.train.Population`'s own, kept apart
(:meth:`~netrace.train.Population.member_states`,
:meth:`~netrace.train.Population.load_member_state`,
:meth:`~netrace.train.Population.best_weights`): they read and write the population's parts
(model, optimizer, books, training step) row by row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from netrace.errors import UserError
from netrace.models import PopulationModel

if TYPE_CHECKING:
    from netrace.train._population import Population

__all__ = ["STATE_SCALARS", "best_rows", "check_state", "export_states", "load_state",
           "state_names"]

MemberStateDict = dict[str, np.ndarray | int | float | str]

#: the numbers of a member state (the rest are arrays)
STATE_SCALARS = ("optimizer", "optim_steps", "batches", "epochs", "best_score", "best_epoch",
                 "bad_epochs", "state")


def state_names(model: PopulationModel) -> list[str]:
    """Names of a population's state tensors in a member state: ``params``, then each
    buffer."""
    return ["params", *(f"buffer.{name}" for name, _ in model.named_buffers())]


def export_states(pop: Population, index: Sequence[int], *, snapshot: bool
                  ) -> list[MemberStateDict]:
    """Members ``index``'s states. One gather per tensor for all of ``index``; each dict's
    arrays are views into those copies. With ``snapshot=False`` on the CPU they are views into
    the population's own tensors instead (no copy)."""
    books, tensors = pop._books, pop._state_tensors()
    idx = torch.as_tensor(list(index), dtype=torch.long, device=pop.device)
    names = state_names(pop.model)
    live = not snapshot and pop.device.type == "cpu"
    rows = list(index) if live else list(range(len(index)))

    def take(t: Tensor) -> np.ndarray:
        t = t.detach()
        return t.numpy() if live else t.index_select(0, idx).cpu().numpy()

    same = torch.ones(len(idx), dtype=torch.bool, device=pop.device)
    for t, b in zip(tensors, books.best, strict=True):
        same &= (t.detach() == b).flatten(1).all(dim=1).index_select(0, idx)
    arrays = {name: take(t) for name, t in zip(names, tensors, strict=True)}
    arrays.update({f"best.{name}": take(b) for name, b in zip(names, books.best, strict=True)})
    for j, st in enumerate(pop.optimizer.state):
        arrays.update({f"optim.{j}.{name}": take(t) for name, t in st.items()})
    steps = pop.optimizer.steps.index_select(0, idx).tolist()
    batches = pop._step.batches.index_select(0, idx).tolist()
    same_rows = same.tolist()
    out = []
    for r, i in enumerate(index):
        state: MemberStateDict = {name: a[rows[r]] for name, a in arrays.items()
                                  if not (same_rows[r] and name.startswith("best."))}
        epochs = int(pop.member_epochs[i])
        start = pop.epoch - epochs  # the population epoch the member started in
        state.update(optimizer=pop.optimizer.kind, optim_steps=int(steps[r]),
                     batches=int(batches[r]), epochs=epochs,
                     best_score=float(books.score[i]),
                     best_epoch=int(books.epoch[i] - start)
                     if np.isfinite(books.score[i]) else -1,
                     bad_epochs=int(books.bad[i]), state=pop.states[i].value)
        out.append(state)
    return out


def best_rows(pop: Population, index: Sequence[int]) -> list[dict[str, np.ndarray]]:
    """Members ``index``'s best validation state, as copies: ``params`` and
    ``buffer.<name>``, one gather per tensor for all of them."""
    if not index:
        return []
    idx = torch.as_tensor(list(index), dtype=torch.long, device=pop.device)
    arrays = {name: b.index_select(0, idx).cpu().numpy()
              for name, b in zip(state_names(pop.model), pop._books.best, strict=True)}
    return [{name: a[r] for name, a in arrays.items()} for r in range(len(idx))]


def load_state(pop: Population, i: int, state: MemberStateDict) -> None:
    """Write ``state`` (checked by :func:`check_state`) into slot ``i``'s rows: weights, best
    state, optimizer state, counters and books; its :class:`~netrace.train.MemberState` is
    the caller's to set."""
    books = pop._books
    names = state_names(pop.model)
    for name, t, best in zip(names, pop._state_tensors(), books.best, strict=True):
        t.detach()[i].copy_(torch.as_tensor(state[name]))
        best[i].copy_(torch.as_tensor(state.get(f"best.{name}", state[name])))
    for j, st in enumerate(pop.optimizer.state):
        for name, t in st.items():
            t[i].copy_(torch.as_tensor(state[f"optim.{j}.{name}"]))
    pop.optimizer.steps[i] = int(state["optim_steps"])
    pop._step.batches[i] = int(state["batches"])
    epochs = int(state["epochs"])
    pop.member_epochs[i] = epochs
    best_epoch = int(state["best_epoch"])
    # in the population's numbering, as validate() counts: negative when the member's
    # best came before this population's first epoch
    books.epoch[i] = pop.epoch - epochs + best_epoch if best_epoch >= 0 else -1
    books.score[i] = float(state["best_score"])
    books.bad[i] = int(state["bad_epochs"])


def check_state(pop: Population, state: MemberStateDict) -> None:
    """A member state fits only a population of the same architecture and optimizer."""
    mine = {name: tuple(t.shape[1:]) for name, t in
            zip(state_names(pop.model), pop._state_tensors(), strict=True)}
    for j, st in enumerate(pop.optimizer.state):
        mine.update({f"optim.{j}.{name}": tuple(t.shape[1:]) for name, t in st.items()})
    theirs = {name: tuple(np.shape(v)) for name, v in state.items()
              if name not in STATE_SCALARS and not name.startswith("best.")}
    best_fits = all(mine.get(name[5:]) == tuple(np.shape(v)) for name, v in state.items()
                    if name.startswith("best."))
    missing = [n for n in STATE_SCALARS if n not in state]
    if theirs != mine or not best_fits or missing or \
            state["optimizer"] != pop.optimizer.kind:
        p = mine["params"][0]
        given = theirs.get("params", ("?",))[0]
        raise UserError(
            f"this member state does not fit the population: it holds {given} parameters "
            f"for optimizer {state.get('optimizer')!r}"
            + (f" (missing {', '.join(missing)})" if missing else "")
            + f", the population's members have {p} for {pop.optimizer.kind!r}; load it "
            "into a population of the same architecture and optimizer")
