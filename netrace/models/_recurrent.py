"""The LSTM and GRU recurrence of K members as one autograd function with a hand-written
backward through time.

Run through autograd, a recurrent step is a dozen graph nodes on ``(K, B, H)`` tensors whose
backward passes reshape, concatenate and zero-fill; for small hidden sizes that costs far
more than the matrix products. Here the whole sequence is one function and every tensor is
feature-major, ``(K, features, B)`` per step (as in :mod:`netrace.models._dense`):

* the input projections of all steps arrive as one tensor ``(K, G, T, B)`` (one wide matrix
  product for a shared input, no layout copy); step ``t`` is the view ``[:, :, t]``;
* each step is one batched product ``W_hh^T (G, H) @ h (H, B)`` plus the gate arithmetic;
* the backward pass writes the gates' gradients straight into the gradient of the input
  projections, and accumulates ``dW_hh`` with one batched product per step.

Gates are laid out as torch's (LSTM: i, f, g, o; GRU: r, z, n) and the arithmetic follows
aten's order, so a member matches ``nn.LSTM``/``nn.GRU`` to rounding.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["recurrence"]

_aten = torch.ops.aten


class _LSTM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xp: Tensor, whh: Tensor) -> tuple[Tensor, Tensor]:
        k, g4, t_len, b = xp.shape
        h_size = g4 // 4
        whh_t = whh.transpose(1, 2)  # (K, 4H, H)
        gates = xp.new_empty(t_len, k, g4, b)  # activated gates of every step
        cs = xp.new_empty(t_len, k, h_size, b)
        hs = xp.new_empty(k, h_size, t_len, b)
        h = c = None
        for t in range(t_len):
            g = gates[t]
            if h is None:
                g.copy_(xp[:, :, t])
            else:
                torch.baddbmm(xp[:, :, t], whh_t, h, out=g)
            g[:, :2 * h_size].sigmoid_()
            g[:, 2 * h_size:3 * h_size].tanh_()
            g[:, 3 * h_size:].sigmoid_()
            i, f, gg, o = g.split(h_size, dim=1)
            c_new = cs[t]
            if c is None:
                torch.mul(i, gg, out=c_new)
            else:
                torch.mul(f, c, out=c_new)
                c_new.addcmul_(i, gg)
            h_new = hs[:, :, t]
            torch.mul(o, torch.tanh(c_new), out=h_new)
            h, c = h_new, c_new
        ctx.save_for_backward(whh, gates, cs, hs)
        ctx.set_materialize_grads(False)
        return hs, hs[:, :, -1].clone()

    @staticmethod
    def backward(ctx, d_hs: Tensor | None, d_last: Tensor | None):
        whh, gates, cs, hs = ctx.saved_tensors
        t_len, k, g4, b = gates.shape
        h_size = g4 // 4
        dxp = gates.new_empty(k, g4, t_len, b)
        dwhh = torch.zeros_like(whh)
        dh = d_last.clone() if d_last is not None else gates.new_zeros(k, h_size, b)
        dc = None
        for t in range(t_len - 1, -1, -1):
            if d_hs is not None:
                dh = dh + d_hs[:, :, t]
            i, f, gg, o = gates[t].split(h_size, dim=1)
            dg = dxp[:, :, t]
            di, df, dgg, do = dg.split(h_size, dim=1)
            tc = torch.tanh(cs[t])
            _aten.sigmoid_backward.grad_input(dh * tc, o, grad_input=do)
            dc_t = _aten.tanh_backward(dh * o, tc)
            dc = dc_t if dc is None else dc.add_(dc_t)
            _aten.sigmoid_backward.grad_input(dc * gg, i, grad_input=di)
            _aten.tanh_backward.grad_input(dc * i, gg, grad_input=dgg)
            if t > 0:
                _aten.sigmoid_backward.grad_input(dc * cs[t - 1], f, grad_input=df)
                dc = dc.mul_(f)
                h_prev = hs[:, :, t - 1]
                dwhh.baddbmm_(h_prev, dg.transpose(1, 2))
                dh = torch.bmm(whh, dg)
            else:
                df.zero_()
        return dxp, dwhh


class _GRU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xp: Tensor, whh: Tensor, bhh: Tensor) -> tuple[Tensor, Tensor]:
        k, g3, t_len, b = xp.shape
        h_size = g3 // 3
        whh_t = whh.transpose(1, 2)  # (K, 3H, H)
        bias = bhh.unsqueeze(2)
        ghs = xp.new_empty(t_len, k, g3, b)  # W_hh h + b_hh of every step
        rzs = xp.new_empty(t_len, k, 2 * h_size, b)
        ns = xp.new_empty(t_len, k, h_size, b)
        hs = xp.new_empty(k, h_size, t_len, b)
        h = None
        for t in range(t_len):
            gh = ghs[t]
            if h is None:
                gh.copy_(bias.expand_as(gh))
            else:
                torch.baddbmm(bias, whh_t, h, out=gh)
            x_t = xp[:, :, t]
            rz = rzs[t]
            torch.add(x_t[:, :2 * h_size], gh[:, :2 * h_size], out=rz).sigmoid_()
            r, z = rz.split(h_size, dim=1)
            n = ns[t]
            torch.addcmul(x_t[:, 2 * h_size:], r, gh[:, 2 * h_size:], out=n).tanh_()
            h_new = hs[:, :, t]
            if h is None:
                torch.addcmul(n, n, z, value=-1, out=h_new)  # (0 - n) * z + n
            else:
                torch.sub(h, n, out=h_new)
                h_new.mul_(z).add_(n)
            h = h_new
        ctx.save_for_backward(whh, ghs, rzs, ns, hs)
        ctx.set_materialize_grads(False)
        return hs, hs[:, :, -1].clone()

    @staticmethod
    def backward(ctx, d_hs: Tensor | None, d_last: Tensor | None):
        whh, ghs, rzs, ns, hs = ctx.saved_tensors
        t_len, k, g3, b = ghs.shape
        h_size = g3 // 3
        dxp = ghs.new_empty(k, g3, t_len, b)
        dgh = ghs.new_empty(k, g3, b)
        dwhh = torch.zeros_like(whh)
        dbhh = ghs.new_zeros(k, g3)
        dh = d_last.clone() if d_last is not None else ghs.new_zeros(k, h_size, b)
        for t in range(t_len - 1, -1, -1):
            if d_hs is not None:
                dh = dh + d_hs[:, :, t]
            r, z = rzs[t].split(h_size, dim=1)
            n = ns[t]
            gh_n = ghs[t][:, 2 * h_size:]
            dx = dxp[:, :, t]
            dr, dz, dn = dx.split(h_size, dim=1)
            h_prev = hs[:, :, t - 1] if t > 0 else None
            # h = (h_prev - n) * z + n
            _aten.tanh_backward.grad_input(dh - dh * z, n, grad_input=dn)
            diff = (h_prev - n) if h_prev is not None else -n
            _aten.sigmoid_backward.grad_input(dh * diff, z, grad_input=dz)
            _aten.sigmoid_backward.grad_input(dn * gh_n, r, grad_input=dr)
            dgh[:, :2 * h_size].copy_(dx[:, :2 * h_size])
            torch.mul(dn, r, out=dgh[:, 2 * h_size:])
            dbhh.add_(dgh.sum(dim=2))
            if h_prev is not None:
                dwhh.baddbmm_(h_prev, dgh.transpose(1, 2))
                dh = torch.baddbmm(dh * z, whh, dgh)
        return dxp, dwhh, dbhh


def recurrence(cell: str, xp: Tensor, whh: Tensor, bhh: Tensor | None = None
               ) -> tuple[Tensor, Tensor]:
    """Run an LSTM or GRU layer of K members over a sequence, from zero initial states.

    ``xp`` ``(K, G, T, B)``: every step's input projection ``x_t W_ih + b`` (for the LSTM
    both biases, for the GRU ``b_ih`` only); ``whh`` ``(K, H, G)``; ``bhh`` ``(K, G)`` the
    GRU's hidden bias (it sits inside ``r * (W_hn h + b_hn)``). Returns every step's hidden
    state ``(K, H, T, B)`` and the last one ``(K, H, B)``.

    >>> xp, whh = torch.randn(3, 8, 5, 4), torch.randn(3, 2, 8)
    >>> [tuple(t.shape) for t in recurrence("lstm", xp, whh)]
    [(3, 2, 5, 4), (3, 2, 4)]
    """
    if cell == "lstm":
        return _LSTM.apply(xp, whh)
    assert bhh is not None
    return _GRU.apply(xp, whh, bhh)
