"""The LSTM and GRU recurrence of K members as one autograd function with a hand-written
backward through time.

Run through autograd, a recurrent step is a dozen graph nodes on ``(K, B, H)`` tensors whose
backward passes reshape, concatenate and zero-fill; for small hidden sizes that costs far
more than the matrix products. Here the whole sequence is one function and every tensor is
feature-major, ``(K, features, B)`` per step (as in :mod:`netrace.models._dense`):

* the input projections of all steps are computed up front, each step's block contiguous
  (for a batch shared by all members, ``(K*G, in) @ (in, B)`` per step, as broadcast
  products when there are only a few input features);
* each step is one batched product ``W_hh^T (G, H) @ h (H, B)`` plus the gate arithmetic;
* the backward pass writes the gates' gradients for all steps into one ``(K, G, T, B)``
  tensor and then gets ``dW_hh`` and ``dW_ih`` from one long product each (inner dimension
  ``T*B``), instead of one small product per step.

Gates are laid out as torch's (LSTM: i, f, g, o; GRU: r, z, n) and the arithmetic follows
aten's order, so a member matches ``nn.LSTM``/``nn.GRU`` to rounding.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["recurrence"]

_aten = torch.ops.aten


_SMALL_INPUT = 4  # up to this many shared input features, projections are broadcast products


class _Projection:
    """Every step's input projection ``x_t W_ih + b`` as ``(K, G, B)``, written on demand by
    :meth:`into`. A shared input with a few features is projected step by step with broadcast
    products straight into the gate buffer (no ``(T, K, G, B)`` tensor, no copy); otherwise
    all steps are computed up front, each step's block contiguous for a shared input."""

    def __init__(self, inp: Tensor, wih: Tensor, bih: Tensor) -> None:
        k, _, g = wih.shape
        self.k, self.g = k, g
        self.shared = inp.dim() == 3
        self._steps: list[Tensor] | None = None
        if self.shared:  # (B, T, in)
            self.b, self.t_len, n_in = inp.shape
            self.saved = inp.permute(1, 2, 0).contiguous()  # (T, in, B)
            w = wih.transpose(1, 2).reshape(k * g, n_in)
            if n_in <= _SMALL_INPUT:
                self._w = w.t().reshape(n_in, k, g, 1)  # (in, K, G, 1)
                self._b = bih.unsqueeze(2)
            else:
                xp = torch.matmul(w, self.saved).add_(bih.reshape(1, k * g, 1))
                self._steps = list(xp.view(self.t_len, k, g, self.b).unbind(0))
        else:  # (K, in, T, B), the previous layer's outputs
            _, n_in, self.t_len, self.b = inp.shape
            self.saved = inp
            xp = torch.baddbmm(bih.unsqueeze(2), wih.transpose(1, 2),
                               inp.reshape(k, n_in, self.t_len * self.b))
            self._steps = list(xp.view(k, g, self.t_len, self.b).unbind(2))

    def into(self, t: int, out: Tensor) -> Tensor:
        """Write step ``t``'s projection into ``out`` ``(K, G, B)``."""
        if self._steps is not None:
            return out.copy_(self._steps[t])
        x_t = self.saved[t].unsqueeze(1).unsqueeze(1)  # (in, 1, 1, B)
        torch.addcmul(self._b, self._w[0], x_t[0], out=out)
        for i in range(1, self._w.shape[0]):
            out.addcmul_(self._w[i], x_t[i])
        return out


def _project_backward(dxp: Tensor, saved_inp: Tensor, wih: Tensor, shared: bool,
                      input_grad: bool) -> tuple[Tensor | None, Tensor, Tensor]:
    """Gradients of the input projection: (input, W_ih, b_ih) from ``dxp`` ``(K, G, T, B)``;
    the input's only when ``input_grad``."""
    k, g, t_len, b = dxp.shape
    flat = dxp.reshape(k, g, t_len * b)
    if shared:
        n_in = saved_inp.shape[1]
        rows = saved_inp.transpose(0, 1).reshape(n_in, t_len * b)  # (in, T*B), order (t, b)
        by_row = flat.reshape(k * g, t_len * b)
        # one pass over the gradient per feature (a product with 1-2 columns is slow)
        dw = torch.stack([torch.mv(by_row, rows[i]) for i in range(n_in)], dim=1) \
            if n_in <= _SMALL_INPUT else torch.mm(by_row, rows.t())
        dw = dw.view(k, g, n_in).transpose(1, 2)
        d_inp = None
        if input_grad:
            w = wih.transpose(1, 2).reshape(k * g, n_in)
            d_inp = torch.mm(w.t(), by_row).view(n_in, t_len, b).permute(2, 1, 0)
        return d_inp, dw, flat.sum(dim=2)
    n_in = saved_inp.shape[1]
    inp = saved_inp.reshape(k, n_in, t_len * b)
    d_inp = torch.bmm(wih, flat).view(k, n_in, t_len, b) if input_grad else None
    return d_inp, torch.bmm(inp, flat.transpose(1, 2)), flat.sum(dim=2)


def _prev_and_grad(hs: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
    """``h_{t-1}`` for t = 1..T-1 as ``(K, H, (T-1)*B)`` and the matching gradient columns of
    ``d`` ``(K, G', T, B)`` as ``(K, (T-1)*B, G')``: their product is ``dW_hh``."""
    k, h, t_len, b = hs.shape
    prev = hs[:, :, :-1].reshape(k, h, (t_len - 1) * b)
    grad = d[:, :, 1:].reshape(d.shape[0], d.shape[1], (t_len - 1) * b).transpose(1, 2)
    return prev, grad


class _LSTM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, inp: Tensor, wih: Tensor, bih: Tensor, whh: Tensor
                ) -> tuple[Tensor, Tensor]:
        proj = _Projection(inp, wih, bih)
        t_len, k, g4, b = proj.t_len, proj.k, proj.g, proj.b
        h_size = g4 // 4
        whh_t = whh.transpose(1, 2)  # (K, 4H, H)
        gates = whh.new_empty(t_len, k, g4, b)  # activated gates of every step
        cs = whh.new_empty(t_len, k, h_size, b)
        tcs = whh.new_empty(t_len, k, h_size, b)  # tanh(c), kept for the backward pass
        hs = whh.new_empty(k, h_size, t_len, b)
        h = c = None
        for t in range(t_len):
            g = proj.into(t, gates[t])
            if h is not None:
                g.baddbmm_(whh_t, h)
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
            torch.mul(o, torch.tanh(c_new, out=tcs[t]), out=h_new)
            h, c = h_new, c_new
        saved_inp = proj.saved
        ctx.shared = inp.dim() == 3
        ctx.save_for_backward(saved_inp, wih, whh, gates, cs, tcs, hs)
        ctx.set_materialize_grads(False)
        return hs, hs[:, :, -1].clone()

    @staticmethod
    def backward(ctx, d_hs: Tensor | None, d_last: Tensor | None):
        saved_inp, wih, whh, gates, cs, tcs, hs = ctx.saved_tensors
        t_len, k, g4, b = gates.shape
        h_size = g4 // 4
        dxp = gates.new_empty(k, g4, t_len, b)
        dh = d_last.clone() if d_last is not None else gates.new_zeros(k, h_size, b)
        dc = None
        for t in range(t_len - 1, -1, -1):
            if d_hs is not None:
                dh = dh + d_hs[:, :, t]
            i, f, gg, o = gates[t].split(h_size, dim=1)
            dg = dxp[:, :, t]
            di, df, dgg, do = dg.split(h_size, dim=1)
            tc = tcs[t]
            _aten.sigmoid_backward.grad_input(dh * tc, o, grad_input=do)
            dc_t = _aten.tanh_backward(dh * o, tc)
            dc = dc_t if dc is None else dc.add_(dc_t)
            _aten.sigmoid_backward.grad_input(dc * gg, i, grad_input=di)
            _aten.tanh_backward.grad_input(dc * i, gg, grad_input=dgg)
            if t > 0:
                _aten.sigmoid_backward.grad_input(dc * cs[t - 1], f, grad_input=df)
                dc = dc.mul_(f)
                dh = torch.bmm(whh, dg)
            else:
                df.zero_()
        dwhh = torch.bmm(*_prev_and_grad(hs, dxp)) if t_len > 1 else torch.zeros_like(whh)
        d_inp, dwih, dbih = _project_backward(dxp, saved_inp, wih, ctx.shared,
                                              ctx.needs_input_grad[0])
        return d_inp, dwih, dbih, dwhh


class _GRU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, inp: Tensor, wih: Tensor, bih: Tensor, whh: Tensor, bhh: Tensor
                ) -> tuple[Tensor, Tensor]:
        proj = _Projection(inp, wih, bih)
        t_len, k, g3, b = proj.t_len, proj.k, proj.g, proj.b
        h_size = g3 // 3
        whh_t = whh.transpose(1, 2)  # (K, 3H, H)
        bias = bhh.unsqueeze(2)
        ghs = whh.new_empty(t_len, k, g3, b)  # W_hh h + b_hh of every step
        rzs = whh.new_empty(t_len, k, 2 * h_size, b)
        ns = whh.new_empty(t_len, k, h_size, b)
        hs = whh.new_empty(k, h_size, t_len, b)
        x_t = whh.new_empty(k, g3, b)
        h = None
        for t in range(t_len):
            gh = ghs[t]
            if h is None:
                gh.copy_(bias.expand_as(gh))
            else:
                torch.baddbmm(bias, whh_t, h, out=gh)
            proj.into(t, x_t)
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
        saved_inp = proj.saved
        ctx.shared = inp.dim() == 3
        ctx.save_for_backward(saved_inp, wih, whh, ghs, rzs, ns, hs)
        ctx.set_materialize_grads(False)
        return hs, hs[:, :, -1].clone()

    @staticmethod
    def backward(ctx, d_hs: Tensor | None, d_last: Tensor | None):
        saved_inp, wih, whh, ghs, rzs, ns, hs = ctx.saved_tensors
        t_len, k, g3, b = ghs.shape
        h_size = g3 // 3
        dxp = ghs.new_empty(k, g3, t_len, b)
        dghn = ghs.new_empty(k, h_size, t_len, b)  # gradient of W_hn h + b_hn
        w_rz, w_n = whh[:, :, :2 * h_size], whh[:, :, 2 * h_size:]
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
            dgn = dghn[:, :, t]
            torch.mul(dn, r, out=dgn)
            if h_prev is not None:
                dh = torch.baddbmm(dh * z, w_rz, dx[:, :2 * h_size])
                dh.baddbmm_(w_n, dgn)
        dwhh = torch.zeros_like(whh)
        if t_len > 1:
            prev, grad_rz = _prev_and_grad(hs, dxp[:, :2 * h_size])
            dwhh[:, :, :2 * h_size] = torch.bmm(prev, grad_rz)
            dwhh[:, :, 2 * h_size:] = torch.bmm(prev, _prev_and_grad(hs, dghn)[1])
        dbhh = torch.cat([dxp[:, :2 * h_size].sum(dim=(2, 3)), dghn.sum(dim=(2, 3))], dim=1)
        d_inp, dwih, dbih = _project_backward(dxp, saved_inp, wih, ctx.shared,
                                              ctx.needs_input_grad[0])
        return d_inp, dwih, dbih, dwhh, dbhh


def recurrence(cell: str, inp: Tensor, wih: Tensor, bih: Tensor, whh: Tensor,
               bhh: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Run an LSTM or GRU layer of K members over a sequence, from zero initial states.

    ``inp`` is a batch of windows shared by all members ``(B, T, in)``, or the previous
    layer's outputs ``(K, in, T, B)``; ``wih`` ``(K, in, G)`` and ``bih`` ``(K, G)`` make the
    input projection (for the LSTM pass both biases' sum as ``bih``); ``whh`` ``(K, H, G)``;
    ``bhh`` ``(K, G)`` the GRU's hidden bias (it sits inside ``r * (W_hn h + b_hn)``).
    Returns every step's hidden state ``(K, H, T, B)`` and the last one ``(K, H, B)``.

    >>> x, wih, bih = torch.randn(4, 5, 1), torch.randn(3, 1, 8), torch.zeros(3, 8)
    >>> [tuple(t.shape) for t in recurrence("lstm", x, wih, bih, torch.randn(3, 2, 8))]
    [(3, 2, 5, 4), (3, 2, 4)]
    """
    if cell == "lstm":
        return _LSTM.apply(inp, wih, bih, whh)
    assert bhh is not None
    return _GRU.apply(inp, wih, bih, whh, bhh)
