"""Batched building blocks: every tensor carries a leading member dimension K.

Members never mix: each output element of member k depends only on member k's parameters and
the shared input, so changing one member's weights leaves the other members' results
bit-identical (the shapes, hence the kernels' blocking, never change).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["activate", "dropout", "dropout_mask", "linear", "norm"]

_M32 = 0xFFFFFFFF
_BN_MOMENTUM = 0.1  # torch.nn.BatchNorm1d's default, so member_module() matches
NORM_EPS = 1e-5


def activate(h: Tensor, name: str) -> Tensor:
    """Apply the named activation (leaky_relu uses torch's slope 0.01, gelu the exact erf)."""
    if name == "relu":
        return torch.relu(h)
    if name == "leaky_relu":
        return F.leaky_relu(h, 0.01)
    if name == "tanh":
        return torch.tanh(h)
    if name == "sigmoid":
        return torch.sigmoid(h)
    return F.gelu(h)


def linear(h: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    """``(K, B, in) @ (K, in, out) + b`` -> ``(K, B, out)``; a shared ``(B, in)`` input is seen
    by every member as a broadcast view: no copy of it, and the result comes out members first
    (half the time of one wide ``(B, in) @ (in, K*out)`` product and its re-layout)."""
    if h.dim() == 2:
        h = h.expand(w.shape[0], -1, -1)
    if b is None:
        return torch.bmm(h, w)
    return torch.baddbmm(b.unsqueeze(1), h, w)


def norm(h: Tensor, kind: str, gain: Tensor, bias: Tensor, running_mean: Tensor | None,
         running_var: Tensor | None, training: bool, update: Tensor | None) -> Tensor:
    """Batch or layer normalization of ``h`` (K, B, d) per member.

    Batch norm keeps running statistics per member (buffers (K, d)); ``update`` (K,) bool says
    which members may move them (a stopped member's statistics must stay put).
    """
    g, b = gain.unsqueeze(1), bias.unsqueeze(1)
    if kind == "layer":
        mean = h.mean(dim=2, keepdim=True)
        var = h.var(dim=2, unbiased=False, keepdim=True)
        return (h - mean) * torch.rsqrt(var + NORM_EPS) * g + b
    assert running_mean is not None and running_var is not None
    if not training:
        return (h - running_mean.unsqueeze(1)) * torch.rsqrt(running_var.unsqueeze(1) + NORM_EPS) * g + b
    mean = h.mean(dim=1, keepdim=True)
    var = h.var(dim=1, unbiased=False, keepdim=True)
    with torch.no_grad():
        n = h.shape[1]
        unbiased = var.squeeze(1) * (n / max(n - 1, 1))
        new_mean = running_mean * (1 - _BN_MOMENTUM) + mean.squeeze(1) * _BN_MOMENTUM
        new_var = running_var * (1 - _BN_MOMENTUM) + unbiased * _BN_MOMENTUM
        if update is not None:
            new_mean = torch.where(update.unsqueeze(1), new_mean, running_mean)
            new_var = torch.where(update.unsqueeze(1), new_var, running_var)
        running_mean.copy_(new_mean)
        running_var.copy_(new_var)
    return (h - mean) * torch.rsqrt(var + NORM_EPS) * g + b


def _mix32(x: Tensor) -> Tensor:
    # A 32-bit integer hash (two multiply-xorshift rounds) in int64 arithmetic; both
    # multipliers are below 2**31 so no product overflows int64, on CPU and CUDA alike.
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x5BD1E995) & _M32
    return x ^ (x >> 16)


def dropout(h: Tensor, p: Tensor, key: Tensor, site: int, member_dim: int = 0) -> Tensor:
    """Inverted dropout with a mask per member drawn from a counter-based hash.

    ``p`` (K,) are the members' rates, ``key`` (K,) int64 their per-step keys; ``site`` tells the
    dropout layers of one forward pass apart. A member's mask depends only on its own key, so
    members never share or shift each other's random streams (unlike one shared generator).
    """
    hm = h.movedim(member_dim, 0)
    mask = dropout_mask(hm.shape, p, key, site, h.dtype)
    return h * mask.movedim(0, member_dim)


def dropout_mask(shape: tuple[int, ...] | torch.Size, p: Tensor, key: Tensor, site: int,
                 dtype: torch.dtype) -> Tensor:
    """The inverted-dropout mask (0 or ``1/(1-p_k)``) of shape ``(K, ...)`` for ``site``; the
    hash counts elements in the row-major order of ``shape[1:]``."""
    k = shape[0]
    n = 1
    for d in shape[1:]:
        n *= d
    base = _mix32((key + site * 0x3C6EF372) & _M32)
    idx = torch.arange(n, device=key.device, dtype=torch.int64)
    bits = _mix32((base.unsqueeze(1) + idx.unsqueeze(0) * 0x9E3779B1) & _M32)
    u = (bits >> 8).to(dtype) * (1.0 / (1 << 24))
    pk = p.to(dtype).unsqueeze(1)
    scale = torch.where(pk < 1, 1.0 / (1.0 - pk.clamp(max=0.999999)), torch.zeros_like(pk))
    mask = (u >= pk).to(dtype) * scale
    return mask.view(k, *shape[1:])
