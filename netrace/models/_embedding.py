"""A learned series embedding: every member's own table of ``series`` x d numbers, one
``(K, series, d)`` parameter, looked up by the series code each sample carries.

The code travels in-band, as the input's last feature (MLP, RNN) or channel (CNN), so that
everything that slices, batches or chunks samples (minibatches, validation chunks, bagging,
member chunks) carries it along untouched. The network splits it off, looks its series' row
up (one gather for all members) and appends that row to the data: to the flattened window of
an MLP, as d channels constant along a CNN's window, as d features at every step of an RNN.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from netrace.errors import UserError

__all__ = ["split_code", "lookup", "mlp_input", "cnn_input", "rnn_input", "WithEmbedding"]


def split_code(x: Tensor, axis: int) -> tuple[Tensor, Tensor]:
    """The data (``x`` without its last entry along ``axis``) and each sample's series code
    (B,), read from that last entry.

    >>> data, code = split_code(torch.tensor([[0.5, 1.5, 2.0], [0.1, 0.2, 0.0]]), 1)
    >>> data.shape, code.tolist()
    (torch.Size([2, 2]), [2, 0])
    """
    n = x.shape[axis]
    data = x.narrow(axis, 0, n - 1)
    code = x.narrow(axis, n - 1, 1).reshape(x.shape[0], -1)[:, 0]
    return data, code.round().long()


def lookup(table: Tensor, codes: Tensor) -> Tensor:
    """Every member's rows of its table ``(K, series, d)`` for ``codes`` (B,): ``(K, B, d)``."""
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= table.shape[1]):
        bad = codes[(codes < 0) | (codes >= table.shape[1])][0]
        raise UserError(f"series code {int(bad)} is not one of this network's "
                        f"{table.shape[1]} series (0 .. {table.shape[1] - 1})")
    return table[:, codes]


def mlp_input(x: Tensor, emb: Tensor) -> Tensor:
    """A shared flattened batch ``(B, F)`` with each member's vectors: ``(K, B, F + d)``."""
    return torch.cat([x.expand(emb.shape[0], -1, -1), emb.to(x.dtype)], dim=2)


def cnn_input(x: Tensor, emb: Tensor) -> Tensor:
    """Shared windows ``(B, C, L)`` with each member's vectors as d constant channels, member
    by member: ``(B, K * (C + d), L)``, the input of a conv with K groups."""
    k, (b, c, length), d = emb.shape[0], x.shape, emb.shape[2]
    xe = x.unsqueeze(1).expand(b, k, c, length)
    ee = emb.to(x.dtype).transpose(0, 1).unsqueeze(-1).expand(b, k, d, length)
    return torch.cat([xe, ee], dim=2).reshape(b, k * (c + d), length)


def rnn_input(x: Tensor, emb: Tensor) -> Tensor:
    """Shared sequences ``(B, T, F)`` with each member's vectors as d features at every step,
    feature-major as the recurrence reads a member's own input: ``(K, F + d, T, B)``."""
    k, (b, t, f), d = emb.shape[0], x.shape, emb.shape[2]
    xf = x.permute(2, 1, 0).unsqueeze(0).expand(k, f, t, b)
    ef = emb.to(x.dtype).transpose(1, 2).unsqueeze(2).expand(k, d, t, b)
    return torch.cat([xf, ef], dim=1)


class WithEmbedding(nn.Module):
    """torch's ``nn.Embedding`` in front of one member's network ``body``: reads the series
    code from the input's last entry along ``axis``, appends its series' vector to the data
    (flat, as constant channels or at every step, as the population does) and runs ``body``;
    a ``linear`` path, if any, reads the data alone."""

    def __init__(self, embedding: nn.Embedding, body: nn.Module, axis: int,
                 linear: nn.Linear | None = None) -> None:
        super().__init__()
        self.embedding, self.body, self.axis, self.linear = embedding, body, axis, linear

    def forward(self, x: Tensor) -> Tensor:
        data, codes = split_code(x, self.axis)
        e = self.embedding(codes)  # (B, d)
        if data.dim() == 2:
            inp = torch.cat([data, e], dim=1)
        elif self.axis == 1:  # channels first
            inp = torch.cat([data, e.unsqueeze(-1).expand(-1, -1, data.shape[2])], dim=1)
        else:  # steps first
            inp = torch.cat([data, e.unsqueeze(1).expand(-1, data.shape[1], -1)], dim=2)
        out = self.body(inp)
        if self.linear is not None:
            out = out + self.linear(data.reshape(data.shape[0], -1))
        return out
