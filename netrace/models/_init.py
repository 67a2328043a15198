"""Per-member weight initialization: each member draws from its own seeded generator.

A member's draws depend only on its seed and the architecture, never on the other members, so
refilling a slot with the same seed reproduces the same network.
"""

from __future__ import annotations

import math

import torch

from netrace.errors import UserError, did_you_mean

__all__ = ["INIT_DISTS", "INIT_SCHEMES", "RECURRENT_INITS", "check_init", "draw_weight"]

INIT_SCHEMES = ("kaiming", "he", "xavier", "glorot", "lecun")
INIT_DISTS = ("uniform", "normal")
RECURRENT_INITS = ("orthogonal", *INIT_SCHEMES)


def check_init(scheme: str, dist: str, recurrent: str) -> None:
    """Raise :class:`UserError` unless the three names are known."""
    for what, given, allowed in (("init", scheme, INIT_SCHEMES), ("init_dist", dist, INIT_DISTS),
                                 ("recurrent_init", recurrent, RECURRENT_INITS)):
        if given not in allowed:
            raise UserError(f"unknown {what} {given!r}; allowed: {', '.join(allowed)}"
                            f"{did_you_mean(str(given), allowed)}")


def _std(scheme: str, fan_in: int, fan_out: int) -> float:
    if scheme in ("kaiming", "he"):
        return math.sqrt(2.0 / fan_in)
    if scheme in ("xavier", "glorot"):
        return math.sqrt(2.0 / (fan_in + fan_out))
    return math.sqrt(1.0 / fan_in)  # lecun


def draw_weight(shape: tuple[int, ...], fan_in: int, fan_out: int, scheme: str, dist: str,
                gen: torch.Generator) -> torch.Tensor:
    """One member's weight tensor (float64, CPU) of ``shape``.

    ``scheme`` = "orthogonal" draws a (semi-)orthogonal matrix for the last two dimensions
    flattened as ``(shape[0], prod(rest))`` (used for recurrent weights, one gate block at a
    time by the caller).
    """
    if scheme == "orthogonal":
        w = torch.empty(shape, dtype=torch.float64)
        torch.nn.init.orthogonal_(w, generator=gen)
        return w
    std = _std(scheme, fan_in, fan_out)
    if dist == "normal":
        return torch.randn(shape, generator=gen, dtype=torch.float64) * std
    bound = math.sqrt(3.0) * std  # a uniform on [-b, b] has std b / sqrt(3)
    return (torch.rand(shape, generator=gen, dtype=torch.float64) * 2.0 - 1.0) * bound
