"""The fused dense stack (hand-written backward) equals the same layers run through autograd."""

from __future__ import annotations

import itertools

import pytest
import torch

from netrace.models._dense import dense_stack
from netrace.models._layers import activate, dropout, dropout_mask, linear
from netrace.models._recurrent import recurrence

torch.set_num_threads(1)

ACTIVATIONS = ["relu", "leaky_relu", "tanh", "sigmoid", "gelu"]


def _layers(k, dims, seed=0):
    g = torch.Generator().manual_seed(seed)
    ws = [torch.randn(k, a, b, generator=g, dtype=torch.float64) / a**0.5
          for a, b in itertools.pairwise(dims)]
    bs = [torch.randn(k, b, generator=g, dtype=torch.float64) * 0.1 for b in dims[1:]]
    return [t.requires_grad_() for t in ws], [t.requires_grad_() for t in bs]


def _autograd_path(h, ws, bs, activation, p, key):
    # the layer-by-layer path the population model takes with normalization
    site = 0
    for j, (w, b) in enumerate(zip(ws, bs, strict=True)):
        h = linear(h, w, b)
        if j == len(ws) - 1:
            break
        h = activate(h, activation)
        if p is not None:
            site += 1
            h = dropout(h, p, key, site)
    return h


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("shared", [True, False], ids=["shared-input", "member-input"])
@pytest.mark.parametrize("with_dropout", [False, True], ids=["", "dropout"])
def test_fused_stack_matches_autograd(activation, shared, with_dropout):
    k, b, dims = 4, 9, [5, 7, 6, 2]
    g = torch.Generator().manual_seed(1)
    h = torch.randn(*(() if shared else (k,)), b, dims[0], generator=g, dtype=torch.float64)
    h.requires_grad_(not shared)
    p = torch.tensor([0.0, 0.3, 0.5, 0.1], dtype=torch.float64) if with_dropout else None
    key = torch.tensor([11, 12, 13, 14])
    ws, bs = _layers(k, dims)
    want = _autograd_path(h, ws, bs, activation, p, key)
    masks = None
    if with_dropout:
        masks = [dropout_mask((k, b, d), p, key, j + 1, torch.float64)
                 for j, d in enumerate(dims[1:-1])]
    got = dense_stack(h, ws, bs, activation, masks)
    assert got.shape == (k, b, dims[-1])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    upstream = torch.randn(k, b, dims[-1], generator=g, dtype=torch.float64)
    inputs = [*ws, *bs] + ([] if shared else [h])
    want_g = torch.autograd.grad(want, inputs, upstream)
    got_g = torch.autograd.grad(got, inputs, upstream)
    for a, e in zip(got_g, want_g, strict=True):
        torch.testing.assert_close(a, e, rtol=0, atol=1e-12)


def test_fused_stack_passes_gradcheck():
    ws, bs = _layers(2, [3, 4, 1], seed=2)
    h = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda h, *p: dense_stack(h, p[:2], p[2:], "tanh"), (h, *ws, *bs))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("shared", [True, False], ids=["shared-input", "member-input"])
@pytest.mark.parametrize("n_in", [2, 6], ids=["few-features", "many-features"])
def test_recurrence_passes_gradcheck_through_both_outputs(cell, shared, n_in):
    g = torch.Generator().manual_seed(3)
    k, h, t, b = 2, 3, 4, 5
    gates = 4 if cell == "lstm" else 3

    def rand(*shape, scale=0.5):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).requires_grad_()

    inp = rand(b, t, n_in, scale=1.0) if shared else rand(k, n_in, t, b, scale=1.0)
    wih, bih = rand(k, n_in, gates * h), rand(k, gates * h, scale=0.1)
    whh, bhh = rand(k, h, gates * h), rand(k, gates * h, scale=0.1)

    def run(inp, wih, bih, whh, bhh):
        seq, last = recurrence(cell, inp, wih, bih, whh, bhh if cell == "gru" else None)
        return seq.sin().sum() + (last * last).sum()  # gradients flow into both outputs

    assert torch.autograd.gradcheck(run, (inp, wih, bih, whh, bhh))
