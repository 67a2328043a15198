"""The dense stack of K members as one autograd function with a hand-written backward.

Autograd over ``(K, B, features)`` activations spends most of a small network's step outside
the matrix products: strided activation backwards, layout copies and one graph node per
operation. Here every activation is kept feature-major, ``(K, features, B)``, so that

* every layer is one batched product ``W_k^T (out, in) @ A_k (in, B)``; a batch shared by all
  members enters as ``A_k = X^T`` for every k, a broadcast view (no copy of X, and none of the
  weights either, which a single wide ``(K*out, in) @ (in, B)`` product would need);
* the backward pass reuses the saved activations in place, two products per layer (the
  weight gradient and the input gradient) plus one fused activation backward (aten's own
  ``threshold_backward``, ``tanh_backward``, ... as autograd would call them).

Members never mix: every product is per member (the wide one is per output row), so a
member's numbers do not depend on its neighbours.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["dense_stack"]

_LEAKY_SLOPE = 0.01


def _act_forward(z: Tensor, name: str) -> Tensor:
    """The activation, in place where the backward can work from the output alone."""
    if name == "relu":
        return z.relu_()
    if name == "leaky_relu":
        return torch.nn.functional.leaky_relu_(z, _LEAKY_SLOPE)
    if name == "tanh":
        return z.tanh_()
    if name == "sigmoid":
        return z.sigmoid_()
    return torch.nn.functional.gelu(z)  # gelu's backward needs its input: not in place


def _act_backward(grad: Tensor, out: Tensor, pre: Tensor | None, name: str) -> Tensor:
    """d activation: ``grad`` w.r.t. the output -> w.r.t. the input, written over ``grad`` (a
    fresh product's result, read once: no new (K, features, B) tensor whose first writes would
    have to pull cold memory in); ``out`` is the activation's output (its sign is enough for
    relu and leaky_relu), ``pre`` for gelu its input."""
    aten = torch.ops.aten
    if name == "relu":  # a float 0: twice as fast as an int
        return aten.threshold_backward.grad_input(grad, out, 0.0, grad_input=grad)
    if name == "leaky_relu":
        return aten.leaky_relu_backward.grad_input(grad, out, _LEAKY_SLOPE, True,
                                                   grad_input=grad)
    if name == "tanh":
        return aten.tanh_backward.grad_input(grad, out, grad_input=grad)
    if name == "sigmoid":
        return aten.sigmoid_backward.grad_input(grad, out, grad_input=grad)
    assert pre is not None
    return aten.gelu_backward.grad_input(grad, pre, grad_input=grad)


class _DenseStack(torch.autograd.Function):
    """``h`` -> dense layers -> ``(K, B, n_out)``; see :func:`dense_stack`."""

    @staticmethod
    def forward(ctx, h: Tensor, activation: str, masks: Sequence[Tensor | None],
                n_layers: int, *params: Tensor) -> Tensor:
        weights, biases = params[:n_layers], params[n_layers:]
        shared = h.dim() == 2
        k = weights[0].shape[0]
        # (K, in, B); a shared batch is one (in, B) matrix seen by every member
        a = h.t().expand(k, -1, -1) if shared else h.transpose(1, 2)
        saved: list[Tensor] = []  # each layer's input, feature-major
        pres: list[Tensor | None] = []
        for j, (w, b) in enumerate(zip(weights, biases, strict=True)):
            saved.append(a)
            z = torch.baddbmm(b.unsqueeze(2), w.transpose(1, 2), a)
            if j == n_layers - 1:
                break
            # what the activation's backward reads: gelu its input; tanh and sigmoid their
            # output before dropout; relu and leaky_relu the output's sign, which dropout
            # keeps wherever the gradient is not zeroed anyway
            pre = z.clone() if activation == "gelu" else None
            z = _act_forward(z, activation)
            if masks[j] is not None:
                if pre is None and activation in ("tanh", "sigmoid"):
                    pre = z
                z = z * masks[j].transpose(1, 2)
            pres.append(pre)
            a = z
        ctx.activation, ctx.shared, ctx.n_layers = activation, shared, n_layers
        # the activations' outputs are the next layers' inputs: saved[j + 1]
        ctx.save_for_backward(*saved, *[p for p in pres if p is not None], *weights)
        ctx.masks = list(masks)
        ctx.has_pre = [p is not None for p in pres]
        return z.transpose(1, 2)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        n = ctx.n_layers
        tensors = ctx.saved_tensors
        saved = tensors[:n]
        n_pre = sum(ctx.has_pre)
        pres_iter = iter(tensors[n:n + n_pre])
        pres = [next(pres_iter) if has else None for has in ctx.has_pre]
        weights = tensors[n + n_pre:]
        dz = grad_out.transpose(1, 2)  # (K, out, B)
        dws: list[Tensor] = [None] * n  # type: ignore[list-item]
        dbs: list[Tensor] = [None] * n  # type: ignore[list-item]
        dh = None
        for j in range(n - 1, -1, -1):
            a, w = saved[j], weights[j]
            dbs[j] = dz.sum(dim=2)
            dws[j] = torch.bmm(a, dz.transpose(1, 2))
            if j == 0 and ctx.shared:
                break  # a shared batch needs no gradient
            # (K, in, B); a single output is an outer product, far faster as a broadcast
            da = w * dz if w.shape[2] == 1 else torch.bmm(w, dz)
            if j == 0:
                dh = da.transpose(1, 2)
                break
            mask = ctx.masks[j - 1]
            if mask is not None:
                da = da.mul_(mask.transpose(1, 2))
            pre = pres[j - 1]
            out = pre if pre is not None and ctx.activation != "gelu" else saved[j]
            dz = _act_backward(da, out, pre, ctx.activation)
        return (dh, None, None, None, *dws, *dbs)


def dense_stack(h: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor],
                activation: str, masks: Sequence[Tensor | None] | None = None) -> Tensor:
    """Dense layers ``h @ W_j + b_j`` with ``activation`` between them (none after the last).

    ``h`` is a batch shared by all members ``(B, in)`` or one per member ``(K, B, in)``;
    ``weights[j]`` are ``(K, in_j, out_j)``, ``biases[j]`` ``(K, out_j)``; ``masks[j]``, if
    given, multiplies hidden layer ``j``'s activations (``(K, B, out_j)``, inverted dropout).
    Returns ``(K, B, n_out)``.

    >>> w = [torch.randn(3, 4, 5), torch.randn(3, 5, 1)]
    >>> b = [torch.zeros(3, 5), torch.zeros(3, 1)]
    >>> dense_stack(torch.randn(8, 4), w, b, "relu").shape
    torch.Size([3, 8, 1])
    """
    n = len(weights)
    masks = [None] * (n - 1) if masks is None else list(masks)
    return _DenseStack.apply(h, activation, masks, n, *weights, *biases)
