"""A network's training state as bytes, so that another worker can continue it.

A trial trains as one member in each fold's population; its state is those members' states
(:meth:`~netrace.train.Population.member_states`), one per fold, packed as raw arrays in the
populations' dtype (float32 in the race) behind a small JSON header. Saved after every epoch
for every running network, they are most of what a worker writes, so packing copies each
array once and adds nothing else.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence

import numpy as np

from netrace.errors import UserError
from netrace.train import MemberSpec, Population

__all__ = ["pack_states", "unpack_states", "save_slots", "load_slot"]

_MAGIC = b"NRM1"
State = dict[str, np.ndarray | int | float | str]


def pack_states(states: Sequence[State]) -> bytes:
    """One trial's member states (one per fold) as bytes.

    >>> s = {"params": np.arange(3, dtype=np.float32), "epochs": 2}
    >>> unpack_states(pack_states([s]))[0]["params"].tolist(), 2
    ([0.0, 1.0, 2.0], 2)
    """
    head, parts = [], []
    for state in states:
        arrays, numbers = [], {}
        for name, value in state.items():
            if isinstance(value, np.ndarray):
                a = np.ascontiguousarray(value)
                arrays.append([name, a.dtype.str, list(a.shape)])
                parts.append(a.reshape(-1).view(np.uint8))
            else:
                numbers[name] = value
        head.append({"arrays": arrays, "numbers": numbers})
    text = json.dumps(head).encode()
    return b"".join([_MAGIC, struct.pack("<I", len(text)), text, *parts])


def unpack_states(data: bytes) -> list[State]:
    """The member states that :func:`pack_states` packed (writable arrays)."""
    if data[:4] != _MAGIC:
        raise UserError("a saved network state is not in netrace's format (written by another "
                        "version?); it cannot be resumed")
    (n,) = struct.unpack("<I", data[4:8])
    head = json.loads(data[8:8 + n])
    buf = bytearray(data[8 + n:])
    at, out = 0, []
    for fold in head:
        state: State = dict(fold["numbers"])
        for name, dtype, shape in fold["arrays"]:
            count = int(np.prod(shape, dtype=np.int64))
            a = np.frombuffer(buf, dtype=np.dtype(dtype), count=count, offset=at)
            state[name] = a.reshape(shape)
            at += a.nbytes
        out.append(state)
    return out


def save_slots(pops: Sequence[Population], slots: Sequence[int]) -> list[bytes]:
    """The states of the networks in ``slots`` (one member per population), one blob each."""
    if not slots:
        return []
    # views into the populations' tensors: packed (copied) here, before they train again
    per_pop = [pop.member_states(slots, snapshot=False) for pop in pops]
    return [pack_states([states[r] for states in per_pop]) for r in range(len(slots))]


def load_slot(pops: Sequence[Population], i: int, member: MemberSpec, data: bytes) -> None:
    """Put the network saved as ``data`` into slot ``i`` of every population."""
    states = unpack_states(data)
    if len(states) != len(pops):
        raise UserError(f"the saved network trained on {len(states)} folds, this race has "
                        f"{len(pops)}; was the split changed?")
    for pop, state in zip(pops, states, strict=True):
        pop.load_member_state(i, member, state)
