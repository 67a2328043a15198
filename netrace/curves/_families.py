"""The 11 parametric curve families of Domhan, Springenberg & Hutter (IJCAI 2015).

Each family is a pure function ``f(x, log_x, theta)`` of torch tensors that broadcasts:
``x`` and ``log_x`` have shape ``(..., n)``, ``theta`` shape ``(..., p)`` (or a tuple of its p
columns, each ``(..., 1)``); the result has the broadcast shape of ``x``. The families work in
netrace's *normalized* units (see ``_model.py``): x is divided by the last observed x, so the
observed part lies in (0, 1], and y is mapped so that the observed values lie in [0.25, 1.25].
Every family has a parameter box (the prior's support) and a few least-squares starting points
chosen for those units.

Formulas follow the authors' ``pylearningcurvepredictor/curvefunctions.py``:

>>> import torch
>>> x = torch.tensor([0.25, 0.5, 1.0], dtype=torch.float64)
>>> FAMILIES["pow3"].f(x, x.log(), torch.tensor([1.3, 0.5, 0.5], dtype=torch.float64))
tensor([0.3000, 0.5929, 0.8000], dtype=torch.float64)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["FAMILIES", "FAMILY_NAMES", "Family"]


@dataclass(frozen=True)
class Family:
    """One curve family: its function, parameter names, prior box and LS starting points."""

    name: str
    f: Callable[[Tensor, Tensor, Tensor], Tensor]
    params: tuple[str, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    starts: tuple[tuple[float, ...], ...]

    @property
    def n_params(self) -> int:
        return len(self.params)


def _p(theta: Tensor | Sequence[Tensor], i: int) -> Tensor:
    # parameter i, with a trailing axis so it broadcasts against x (..., n); the sampler passes
    # the parameters already split (a tuple of (..., 1) views: one unbind instead of a slice each)
    if isinstance(theta, tuple):
        return theta[i]
    return theta[..., i : i + 1]


# Powers are written as exp(a * log x) with log x computed once per curve: x is data, fixed
# during sampling, and exp is several times cheaper than a general power. Not exp2 or sigmoid,
# though faster on CPU: their vectorized and scalar code paths differ in the last bit, so a
# curve's result would depend on where it falls in a batch.
def _vap_pressure(x: Tensor, lx: Tensor, t: Tensor) -> Tensor:
    a, b, c = _p(t, 0), _p(t, 1), _p(t, 2)
    return torch.exp(torch.clamp(a + b / x + c * lx, -50.0, 50.0))


def _pow3(x: Tensor, lx: Tensor, t: Tensor) -> Tensor:
    c, a, alpha = _p(t, 0), _p(t, 1), _p(t, 2)
    return c - a * torch.exp(-alpha * lx)


def _loglog_linear(x: Tensor, lx: Tensor, t: Tensor) -> Tensor:
    a, b = _p(t, 0), _p(t, 1)
    return torch.log(a * lx + b)


def _dr_hill_zero_background(x: Tensor, lx: Tensor, t: Tensor) -> Tensor:
    theta, eta, kappa = _p(t, 0), _p(t, 1), _p(t, 2)
    # theta x^eta / (kappa^eta + x^eta) = theta / (1 + (kappa / x)^eta), without overflow
    return theta / (1.0 + torch.exp(eta * (torch.log(kappa) - lx)))


def _log_power(x: Tensor, lx: Tensor, t: Tensor) -> Tensor:
    a, b, c = _p(t, 0), _p(t, 1), _p(t, 2)
    return a / (1.0 + torch.exp(c * (lx - b)))  # a / (1 + (x / e^b)^c)


def _pow4(x: Tensor, lx: Tensor, t: Tensor) -> Tensor:
    c, a, b, alpha = _p(t, 0), _p(t, 1), _p(t, 2), _p(t, 3)
    return c - torch.exp(-alpha * torch.log(a * x + b))


def _mmf(x: Tensor, lx: Tensor, t: Tensor) -> Tensor:
    alpha, beta, kappa, delta = _p(t, 0), _p(t, 1), _p(t, 2), _p(t, 3)
    return alpha - (alpha - beta) / (1.0 + torch.exp(delta * (torch.log(kappa) + lx)))


def _exp4(x: Tensor, lx: Tensor, t: Tensor) -> Tensor:
    c, a, b, alpha = _p(t, 0), _p(t, 1), _p(t, 2), _p(t, 3)
    return c - torch.exp(torch.clamp(-a * torch.exp(alpha * lx) + b, -50.0, 50.0))


def _janoschek(x: Tensor, lx: Tensor, t: Tensor) -> Tensor:
    alpha, beta, kappa, delta = _p(t, 0), _p(t, 1), _p(t, 2), _p(t, 3)
    return alpha - (alpha - beta) * torch.exp(-kappa * torch.exp(delta * lx))


def _weibull(x: Tensor, lx: Tensor, t: Tensor) -> Tensor:
    alpha, beta, kappa, delta = _p(t, 0), _p(t, 1), _p(t, 2), _p(t, 3)
    return alpha - (alpha - beta) * torch.exp(-torch.exp(delta * (torch.log(kappa) + lx)))


def _ilog2(x: Tensor, lx: Tensor, t: Tensor) -> Tensor:
    c, a = _p(t, 0), _p(t, 1)
    return c - a / torch.log(x + 1.0)


_INF = 1e3
FAMILIES: dict[str, Family] = {
    fam.name: fam
    for fam in [
        Family("vap_pressure", _vap_pressure, ("a", "b", "c"),
               (-10.0, -10.0, -10.0), (10.0, 0.0, 10.0),
               ((0.2, -0.1, 0.1), (0.0, -0.02, 0.3))),
        Family("pow3", _pow3, ("c", "a", "alpha"),
               (-_INF, 0.0, 1e-3), (_INF, _INF, 10.0),
               ((1.3, 0.5, 0.5), (2.0, 1.0, 0.2))),
        Family("loglog_linear", _loglog_linear, ("a", "b"),
               (0.0, 0.0), (_INF, _INF),
               ((1.0, 4.0), (0.5, 2.5))),
        Family("dr_hill_zero_background", _dr_hill_zero_background, ("theta", "eta", "kappa"),
               (0.0, 1e-3, 1e-4), (_INF, 20.0, _INF),
               ((1.4, 1.0, 0.2), (2.0, 0.5, 0.5))),
        Family("log_power", _log_power, ("a", "b", "c"),
               (0.0, -20.0, -20.0), (_INF, 20.0, 0.0),
               ((1.4, -2.0, -1.0), (2.0, -1.0, -0.5))),
        Family("pow4", _pow4, ("c", "a", "b", "alpha"),
               (-_INF, 0.0, 0.0, 1e-3), (_INF, _INF, _INF, 10.0),
               ((1.3, 5.0, 1.0, 0.5), (2.0, 10.0, 1.0, 0.2))),
        Family("mmf", _mmf, ("alpha", "beta", "kappa", "delta"),
               (-_INF, -_INF, 1e-4, 1e-3), (_INF, _INF, _INF, 20.0),
               ((1.4, 0.0, 5.0, 1.0), (2.0, 0.2, 2.0, 0.7))),
        Family("exp4", _exp4, ("c", "a", "b", "alpha"),
               (-_INF, 0.0, -20.0, 1e-3), (_INF, _INF, 20.0, 10.0),
               ((1.3, 3.0, 0.0, 1.0), (1.5, 2.0, 0.0, 0.5))),
        Family("janoschek", _janoschek, ("alpha", "beta", "kappa", "delta"),
               (-_INF, -_INF, 0.0, 1e-3), (_INF, _INF, _INF, 20.0),
               ((1.4, 0.0, 3.0, 1.0), (2.0, 0.2, 1.5, 0.7))),
        Family("weibull", _weibull, ("alpha", "beta", "kappa", "delta"),
               (-_INF, -_INF, 0.0, 1e-3), (_INF, _INF, _INF, 20.0),
               ((1.4, 0.0, 3.0, 1.0), (2.0, 0.2, 1.5, 0.7))),
        Family("ilog2", _ilog2, ("c", "a"),
               (-_INF, 0.0), (_INF, _INF),
               ((1.3, 0.05), (1.6, 0.2))),
    ]
}
FAMILY_NAMES: tuple[str, ...] = tuple(FAMILIES)
