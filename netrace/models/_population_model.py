"""K networks of one architecture as one module whose parameters have a leading member dim."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from netrace.errors import UserError
from netrace.models._dense import dense_stack
from netrace.models._embedding import (
    WithEmbedding,
    cnn_input,
    lookup,
    mlp_input,
    rnn_input,
    split_code,
)
from netrace.models._init import check_init, draw_weight
from netrace.models._layers import (
    _BN_MOMENTUM,
    NORM_EPS,
    activate,
    dropout,
    dropout_mask,
    linear,
    norm,
)
from netrace.models._recurrent import recurrence
from netrace.models._specs import CNNSpec, MLPSpec, ModelSpec, RNNSpec

__all__ = ["PopulationModel", "build_model"]


@dataclass(frozen=True)
class _Param:
    """How one parameter is laid out and initialized (shape excludes the member dim)."""

    name: str
    shape: tuple[int, ...]
    #: weight | recurrent | bias | gain | linear (the linear path: starts at 0) | embedding
    kind: str
    fan_in: int = 1
    fan_out: int = 1
    gates: int = 1  # recurrent/input weights are drawn one gate block at a time


class PopulationModel(nn.Module):
    """K members of one architecture; ``forward`` maps a shared batch to ``(K, B, n_outputs)``.

    Build with :func:`build_model`. Every parameter is ``(K, ...)``, a view into one flat
    ``(K, P)`` tensor ``flat`` (member ``i``'s whole network is the row ``flat[i]``), so an
    optimizer or a best-state copy touches all parameters in one operation; for that reason the
    model is built on its device and dtype and must not be moved with ``.to()``.
    ``member_module(i)`` returns member ``i`` as an ordinary ``nn.Module`` made of torch's own
    layers (``nn.Linear``, ``nn.Conv1d``, ``nn.LSTM``, ``nn.GRU``, ...) holding a copy of its
    weights.

    >>> m = build_model(MLPSpec(in_features=3, hidden=(8,)), k=4, seeds=range(4))
    >>> m(torch.zeros(5, 3)).shape
    torch.Size([4, 5, 1])
    """

    _code_axis = 1  # where the input carries the series code: a flat batch's or CNN's channels

    def __init__(self, spec: ModelSpec, k: int, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        if not isinstance(k, int) or k < 1:
            raise UserError(f"a population needs k >= 1 members; got k={k!r}")
        self.spec = spec
        self.k = k
        self._layout: list[_Param] = []
        self._dtype, self._device = dtype, device
        self._build()
        if spec.linear_inputs:  # the linear path: starts at zero (see init_linear)
            self._add("lin_w", (spec.linear_inputs, spec.n_outputs), "linear")
            self._add("lin_b", (spec.n_outputs,), "bias")
        if spec.embedding:  # the series embedding: N(0, 1), as nn.Embedding
            self._add("emb", (spec.series, spec.embedding), "embedding")
        sizes = [math.prod(p.shape) for p in self._layout]
        self.flat = torch.zeros(k, sum(sizes), dtype=dtype, device=device)
        self.slices: dict[str, slice] = {}
        offset = 0
        for p, n in zip(self._layout, sizes, strict=True):
            self.slices[p.name] = slice(offset, offset + n)
            view = self.flat[:, offset:offset + n].view(k, *p.shape)
            self.register_parameter(p.name, nn.Parameter(view))
            offset += n
        self._dense_norm_buffers()

    # -- layout -------------------------------------------------------------------------
    def _add(self, name: str, shape: tuple[int, ...], kind: str, fan_in: int = 1,
             fan_out: int = 1, gates: int = 1) -> None:
        self._layout.append(_Param(name, shape, kind, fan_in, fan_out, gates))

    def _build(self) -> None:
        raise NotImplementedError

    def _feature_size(self) -> int:
        raise NotImplementedError

    def _add_dense(self) -> None:
        dims = [self._feature_size(), *self.spec.hidden, self.spec.n_outputs]
        for j in range(len(dims) - 1):
            self._add(f"dense{j}_w", (dims[j], dims[j + 1]), "weight", dims[j], dims[j + 1])
            if not self._pre_batchnorm(j):
                self._add(f"dense{j}_b", (dims[j + 1],), "bias")
            if j < len(dims) - 2 and self.spec.norm != "none":
                self._add(f"norm{j}_g", (dims[j + 1],), "gain")
                self._add(f"norm{j}_b", (dims[j + 1],), "bias")

    def _pre_batchnorm(self, j: int) -> bool:
        # Batch norm subtracts the batch mean, so a bias before it has a gradient of exactly
        # zero up to rounding; Adam would blow that noise up into steps, so there is none.
        return self.spec.norm == "batch" and j < len(self.spec.hidden)

    def _dense_norm_buffers(self) -> None:
        if self.spec.norm != "batch":
            return
        if isinstance(self.spec, CNNSpec):
            for j, c in enumerate(self.spec.channels):
                self.register_buffer(f"cnorm{j}_mean",
                                     torch.zeros(self.k, c, dtype=self._dtype, device=self._device))
                self.register_buffer(f"cnorm{j}_var",
                                     torch.ones(self.k, c, dtype=self._dtype, device=self._device))
        for j, size in enumerate(self.spec.hidden):
            self.register_buffer(f"norm{j}_mean",
                                 torch.zeros(self.k, size, dtype=self._dtype, device=self._device))
            self.register_buffer(f"norm{j}_var",
                                 torch.ones(self.k, size, dtype=self._dtype, device=self._device))

    @property
    def param_names(self) -> tuple[str, ...]:
        """Names of the parameters, in the order they sit in ``flat``."""
        return tuple(p.name for p in self._layout)

    @property
    def weight_names(self) -> tuple[str, ...]:
        """Names of the weight matrices/kernels (what an L1 penalty applies to; not biases)."""
        return tuple(p.name for p in self._layout if p.kind in ("weight", "recurrent"))

    # -- initialization -----------------------------------------------------------------
    @torch.no_grad()
    def init_members(self, index: Sequence[int], seeds: Sequence[int], *,
                     init: Sequence[str] | str = "kaiming",
                     init_dist: Sequence[str] | str = "uniform",
                     recurrent_init: Sequence[str] | str = "orthogonal") -> None:
        """(Re)initialize the members at ``index`` from their seeds; others are untouched.

        Weights follow ``init`` (kaiming/he, xavier/glorot, lecun) drawn from ``init_dist``
        (uniform or normal); recurrent weights follow ``recurrent_init`` (orthogonal by
        default); biases start at 0, norm gains at 1, batch-norm statistics at (0, 1).
        """
        n = len(index)

        def per(v: Sequence[str] | str) -> list[str]:
            return [v] * n if isinstance(v, str) else list(v)

        inits, dists, recs = per(init), per(init_dist), per(recurrent_init)
        if not (len(seeds) == len(inits) == len(dists) == len(recs) == n):
            raise UserError(f"init_members needs one seed/init per member: {n} members, "
                            f"{len(seeds)} seeds")
        params = dict(self.named_parameters())
        for i, seed, scheme, dist, rec in zip(index, seeds, inits, dists, recs, strict=True):
            check_init(scheme, dist, rec)
            if not 0 <= i < self.k:
                raise UserError(f"member index must be in [0, {self.k}); got {i}")
            gen = torch.Generator().manual_seed(int(seed))
            for p in self._layout:
                target = params[p.name]
                if p.kind in ("bias", "linear"):
                    target[i].zero_()
                elif p.kind == "gain":
                    target[i].fill_(1.0)
                elif p.kind == "embedding":
                    target[i].copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
                else:
                    s = rec if p.kind == "recurrent" else scheme
                    target[i].copy_(self._draw(p, s, dist, gen))
            for name, buf in self.named_buffers():
                buf[i].fill_(1.0 if name.endswith("_var") else 0.0)

    def _draw(self, p: _Param, scheme: str, dist: str, gen: torch.Generator) -> Tensor:
        if p.gates == 1:
            return draw_weight(p.shape, p.fan_in, p.fan_out, scheme, dist, gen)
        # (in, G*H) recurrent/input weights: one (in, H) block per gate, as torch lays them out
        n_in, gh = p.shape
        h = gh // p.gates
        blocks = [draw_weight((h, n_in), p.fan_in, p.fan_out, scheme, dist, gen).T
                  for _ in range(p.gates)]
        return torch.cat(blocks, dim=1)

    # -- forward ------------------------------------------------------------------------
    def forward(self, x: Tensor, *, members: slice | None = None,
                params: Mapping[str, Tensor] | None = None, dropout_p: Tensor | None = None,
                dropout_key: Tensor | None = None, update: Tensor | None = None) -> Tensor:
        """Outputs ``(K, B, n_outputs)`` for a batch ``x`` shared by all members.

        ``members`` restricts the pass to a contiguous slice of members (outputs
        ``(len, B, n_outputs)``); ``params`` replaces that slice's parameters (e.g. leaf tensors
        whose gradients the caller collects). ``dropout_p`` (K,) and ``dropout_key`` (K,) int64
        switch on per-member dropout (training mode only); ``update`` (K,) bool says whose
        batch-norm statistics may move. The (K,) arguments cover all members, not the slice.
        """
        sl = slice(None) if members is None else members
        if params is None:
            params = {name: getattr(self, name)[sl] for name in self.param_names}
        buffers = {name: b[sl] for name, b in self.named_buffers()}
        ctx = None
        if self.training and dropout_p is not None:
            if dropout_key is None:
                raise UserError("dropout_p needs a dropout_key (K,) int64 to draw masks from")
            ctx = _Dropout(dropout_p[sl], dropout_key[sl])
        upd = None if update is None else update[sl]
        emb = None
        if self.spec.embedding:  # the series code rides on the input: see _embedding
            x, codes = split_code(x, self._code_axis)
            emb = lookup(params["emb"], codes)
        h = self._features(x, params, ctx, buffers, upd, emb)
        out = self._dense(h, params, buffers, ctx, upd)
        if self.spec.linear_inputs:
            out = out + self._linear_path(x, params["lin_w"], params["lin_b"])
        return out

    def _linear_path(self, x: Tensor, w: Tensor, b: Tensor) -> Tensor:
        """The linear model of the flattened window, ``(K, B, n_outputs)``."""
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] != self.spec.linear_inputs:
            raise UserError(f"the linear path reads {self.spec.linear_inputs} inputs per sample; "
                            f"got a batch of shape {tuple(x.shape)}")
        return torch.matmul(flat.to(w.dtype), w) + b.unsqueeze(1)

    @torch.no_grad()
    def init_linear(self, index: Sequence[int], x: Tensor, y: Tensor,
                    ridge: float = 1e-9) -> None:
        """Start members ``index`` at the least-squares fit of ``y`` on the flattened windows
        ``x``: the linear path takes the fit (a ridge of ``ridge`` times the mean diagonal keeps
        it defined when inputs are collinear) and the network's last layer starts at zero, so
        that each member's first output is the linear fit and the network learns a
        correction. Regression: the first output (the mean; a Gaussian network's log
        variance, its second, starts at the network's own)."""
        if not self.spec.linear_inputs or self.spec.task != "regression":
            raise UserError("init_linear needs a linear path (linear_inputs > 0) and a "
                            "regression")
        if self.spec.embedding:  # the fit reads the data, not the series code
            x = split_code(x, self._code_axis)[0]
        X = x.reshape(x.shape[0], -1).to(torch.float64)
        Xc = torch.cat([X, torch.ones(len(X), 1, dtype=torch.float64, device=X.device)], 1)
        gram = Xc.T @ Xc
        reg = ridge * float(gram.diagonal()[:-1].mean()) if len(gram) > 1 else 0.0
        eye = torch.eye(len(gram), dtype=torch.float64, device=X.device)
        eye[-1, -1] = 0.0  # no penalty on the intercept
        beta = torch.linalg.solve(gram + reg * eye, Xc.T @ y.reshape(-1).to(torch.float64))
        last = len(self.spec.hidden)
        for i in index:
            self.lin_w[i, :, 0] = beta[:-1].to(self.lin_w.dtype)
            self.lin_b[i, 0] = beta[-1].to(self.lin_b.dtype)
            getattr(self, f"dense{last}_w")[i, :, 0].zero_()
            getattr(self, f"dense{last}_b")[i, 0].zero_()

    def _features(self, x: Tensor, P: Mapping[str, Tensor], ctx: _Dropout | None,
                  buffers: Mapping[str, Tensor], update: Tensor | None,
                  emb: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def _dense(self, h: Tensor, P: Mapping[str, Tensor], buffers: Mapping[str, Tensor],
               ctx: _Dropout | None, update: Tensor | None) -> Tensor:
        n = len(self.spec.hidden)
        if self.spec.norm == "none":
            # one fused function with a hand-written backward (see _dense): the same numbers
            # as the layer-by-layer autograd path below, several times faster
            masks = None
            if ctx is not None:
                k, b = P["dense0_w"].shape[0], h.shape[-2]
                masks = [ctx.mask((k, b, d), h.dtype) for d in self.spec.hidden]
            return dense_stack(h, [P[f"dense{j}_w"] for j in range(n + 1)],
                               [P[f"dense{j}_b"] for j in range(n + 1)],
                               self.spec.activation, masks)
        for j in range(n + 1):
            h = linear(h, P[f"dense{j}_w"], P.get(f"dense{j}_b"))
            if j == n:
                break
            if self.spec.norm != "none":
                h = norm(h, self.spec.norm, P[f"norm{j}_g"], P[f"norm{j}_b"],
                         buffers.get(f"norm{j}_mean"), buffers.get(f"norm{j}_var"),
                         self.training, update)
            h = activate(h, self.spec.activation)
            if ctx is not None:
                h = ctx(h)
        return h

    def activation_size(self) -> int:
        """A rough count of the activations a training step keeps per sample and member (for
        sizing member chunks)."""
        return 4 * (self._feature_size() + sum(self.spec.hidden) + self.spec.n_outputs)

    # -- export -------------------------------------------------------------------------
    @torch.no_grad()
    def member_module(self, i: int, dropout_p: float = 0.0) -> nn.Module:
        """Member ``i`` as a standalone ``nn.Module`` of torch layers (a copy of its weights)."""
        if not 0 <= i < self.k:
            raise UserError(f"member index must be in [0, {self.k}); got {i}")
        module = self._member_module(i, dropout_p)
        lin = None
        if self.spec.linear_inputs:
            lin = nn.Linear(self.spec.linear_inputs, self.spec.n_outputs, dtype=torch.float64)
            lin.weight.copy_(self.lin_w[i].T)
            lin.bias.copy_(self.lin_b[i])
        if self.spec.embedding:
            table = nn.Embedding(self.spec.series, self.spec.embedding, dtype=torch.float64)
            table.weight.copy_(self.emb[i])
            module = WithEmbedding(table, module, self._code_axis, lin)
        elif lin is not None:
            module = _WithLinear(module, lin)
        return module.to(dtype=self._dtype, device=self._device)

    def _member_module(self, i: int, dropout_p: float) -> nn.Module:
        raise NotImplementedError

    def _dense_module(self, i: int, dropout_p: float, lead_dropout: bool = False) -> nn.Sequential:
        dims = [self._feature_size(), *self.spec.hidden, self.spec.n_outputs]
        layers: list[nn.Module] = [nn.Dropout(dropout_p)] if lead_dropout else []
        for j in range(len(dims) - 1):
            lin = nn.Linear(dims[j], dims[j + 1], bias=not self._pre_batchnorm(j),
                            dtype=torch.float64)
            lin.weight.copy_(getattr(self, f"dense{j}_w")[i].T)
            if lin.bias is not None:
                lin.bias.copy_(getattr(self, f"dense{j}_b")[i])
            layers.append(lin)
            if j == len(dims) - 2:
                break
            if self.spec.norm != "none":
                if self.spec.norm == "batch":
                    nm: nn.Module = nn.BatchNorm1d(dims[j + 1], eps=NORM_EPS, dtype=torch.float64)
                    nm.running_mean.copy_(getattr(self, f"norm{j}_mean")[i])
                    nm.running_var.copy_(getattr(self, f"norm{j}_var")[i])
                else:
                    nm = nn.LayerNorm(dims[j + 1], eps=NORM_EPS, dtype=torch.float64)
                nm.weight.copy_(getattr(self, f"norm{j}_g")[i])
                nm.bias.copy_(getattr(self, f"norm{j}_b")[i])
                layers.append(nm)
            layers.append(_activation_module(self.spec.activation))
            layers.append(nn.Dropout(dropout_p))
        return nn.Sequential(*layers)


class _Dropout:
    """Numbers the dropout sites of one forward pass so each gets its own mask."""

    def __init__(self, p: Tensor, key: Tensor) -> None:
        self.p, self.key, self.site = p, key, 0

    def __call__(self, h: Tensor, member_dim: int = 0) -> Tensor:
        self.site += 1
        return dropout(h, self.p, self.key, self.site, member_dim)

    def mask(self, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        """The next site's mask, ``(K, ...)``, as ``__call__`` would apply it."""
        self.site += 1
        return dropout_mask(shape, self.p, self.key, self.site, dtype)


def _activation_module(name: str) -> nn.Module:
    return {"relu": nn.ReLU(), "leaky_relu": nn.LeakyReLU(0.01), "tanh": nn.Tanh(),
            "sigmoid": nn.Sigmoid(), "gelu": nn.GELU()}[name]


class _MLP(PopulationModel):
    spec: MLPSpec

    def _build(self) -> None:
        self._add_dense()

    def _feature_size(self) -> int:
        return self.spec.in_features + self.spec.embedding

    def _features(self, x: Tensor, P: Mapping[str, Tensor], ctx: _Dropout | None,
                  buffers: Mapping[str, Tensor], update: Tensor | None,
                  emb: Tensor | None = None) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.spec.in_features:
            raise UserError(f"an MLP with in_features={self.spec.in_features} takes a batch "
                            f"(B, {self.spec.in_features}); got shape {tuple(x.shape)}")
        return x if emb is None else mlp_input(x, emb)

    def _member_module(self, i: int, dropout_p: float) -> nn.Module:
        return self._dense_module(i, dropout_p)


class _CNN(PopulationModel):
    spec: CNNSpec

    def _build(self) -> None:
        s = self.spec
        c_in = s.in_channels + s.embedding
        for j, c in enumerate(s.channels):
            self._add(f"conv{j}_w", (c, c_in, s.kernel_size), "weight",
                      c_in * s.kernel_size, c * s.kernel_size)
            if s.norm != "batch":  # batch norm subtracts the mean: no bias before it
                self._add(f"conv{j}_b", (c,), "bias")
            if s.norm != "none":
                self._add(f"cnorm{j}_g", (c,), "gain")
                self._add(f"cnorm{j}_b", (c,), "bias")
            c_in = c
        self._add_dense()

    def _feature_size(self) -> int:
        return self.spec.channels[-1] * self.spec.conv_lengths()[-1]

    def activation_size(self) -> int:
        s = self.spec
        conv = sum(c * n for c, n in zip(s.channels, s.conv_lengths(), strict=True))
        return 4 * conv * s.pool_size + super().activation_size()

    def _features(self, x: Tensor, P: Mapping[str, Tensor], ctx: _Dropout | None,
                  buffers: Mapping[str, Tensor], update: Tensor | None,
                  emb: Tensor | None = None) -> Tensor:
        s, k = self.spec, P["conv0_w"].shape[0]
        if x.dim() == 2 and s.in_channels == 1:
            x = x.unsqueeze(1)
        if x.dim() != 3 or x.shape[1:] != (s.in_channels, s.length):
            raise UserError(f"this CNN takes windows (B, {s.in_channels}, {s.length})"
                            f"{' or (B, ' + str(s.length) + ')' if s.in_channels == 1 else ''}; "
                            f"got shape {tuple(x.shape)}")
        # a shared input is read by all K*c filters at once; with a series embedding every
        # member reads its own channels, as later layers do
        h = x if emb is None else cnn_input(x, emb)
        first = 1 if emb is None else k
        for j, c in enumerate(s.channels):
            w = P[f"conv{j}_w"]
            # Members as conv groups: the first layer reads the shared input with all K*c
            # filters at once; later layers see only their own member's channels. (Measured
            # on CPU: faster than im2col + bmm, and max_pool1d faster than a reshape + amax.)
            bias = P.get(f"conv{j}_b")
            h = F.conv1d(h, w.reshape(k * c, w.shape[2], w.shape[3]),
                         None if bias is None else bias.reshape(k * c), s.stride, s.padding,
                         groups=first if j == 0 else k)
            if s.norm != "none":
                h = self._conv_norm(h, j, k, P, buffers, update)
            h = activate(h, s.activation)
            if s.pool == "max":
                h = F.max_pool1d(h, s.pool_size)
            elif s.pool == "avg":
                h = F.avg_pool1d(h, s.pool_size)
            if ctx is not None:
                h = ctx(h.view(h.shape[0], k, -1), member_dim=1).view(h.shape)
        return h.reshape(h.shape[0], k, -1).transpose(0, 1)

    def _conv_norm(self, h: Tensor, j: int, k: int, P: Mapping[str, Tensor],
                   buffers: Mapping[str, Tensor], update: Tensor | None) -> Tensor:
        """Normalize conv block ``j``'s output ``(B, K*c, L)``: each member's channels are
        channels of one wide batch norm, and its window one group of a group norm."""
        gain = P[f"cnorm{j}_g"].reshape(-1)
        bias = P[f"cnorm{j}_b"].reshape(-1)
        if self.spec.norm == "layer":
            return F.group_norm(h, k, gain, bias, NORM_EPS)
        mean, var = buffers[f"cnorm{j}_mean"], buffers[f"cnorm{j}_var"]
        if not self.training:
            return F.batch_norm(h, mean.reshape(-1), var.reshape(-1), gain, bias, False, 0.0,
                                NORM_EPS)
        # batch_norm moves the running statistics it is given in place (torch's momentum 0.1
        # and unbiased variance, as nn.BatchNorm1d); it gets copies, because its backward
        # keeps them, and only members allowed to move take the new values
        run_mean, run_var = mean.reshape(-1).clone(), var.reshape(-1).clone()
        out = F.batch_norm(h, run_mean, run_var, gain, bias, True, _BN_MOMENTUM, NORM_EPS)
        with torch.no_grad():
            new_mean, new_var = run_mean.view_as(mean), run_var.view_as(var)
            if update is not None:
                keep = ~update.unsqueeze(1)
                new_mean = torch.where(keep, mean, new_mean)
                new_var = torch.where(keep, var, new_var)
            mean.copy_(new_mean)
            var.copy_(new_var)
        return out

    def _member_module(self, i: int, dropout_p: float) -> nn.Module:
        s = self.spec
        layers: list[nn.Module] = []
        c_in = s.in_channels + s.embedding
        for j, c in enumerate(s.channels):
            conv = nn.Conv1d(c_in, c, s.kernel_size, s.stride, s.padding,
                             bias=s.norm != "batch", dtype=torch.float64)
            conv.weight.copy_(getattr(self, f"conv{j}_w")[i])
            if conv.bias is not None:
                conv.bias.copy_(getattr(self, f"conv{j}_b")[i])
            layers.append(conv)
            if s.norm != "none":
                if s.norm == "batch":
                    nm: nn.Module = nn.BatchNorm1d(c, eps=NORM_EPS, dtype=torch.float64)
                    nm.running_mean.copy_(getattr(self, f"cnorm{j}_mean")[i])
                    nm.running_var.copy_(getattr(self, f"cnorm{j}_var")[i])
                else:
                    nm = nn.GroupNorm(1, c, eps=NORM_EPS, dtype=torch.float64)
                nm.weight.copy_(getattr(self, f"cnorm{j}_g")[i])
                nm.bias.copy_(getattr(self, f"cnorm{j}_b")[i])
                layers.append(nm)
            layers.append(_activation_module(s.activation))
            if s.pool == "max":
                layers.append(nn.MaxPool1d(s.pool_size))
            elif s.pool == "avg":
                layers.append(nn.AvgPool1d(s.pool_size))
            layers.append(nn.Dropout(dropout_p))
            c_in = c
        return _Windowed(nn.Sequential(*layers, nn.Flatten(), *self._dense_module(i, dropout_p)),
                         unsqueeze_dim=1 if s.in_channels == 1 else None)


class _WithLinear(nn.Module):
    """A network plus a linear model of its whole (flattened) input window."""

    def __init__(self, body: nn.Module, linear: nn.Linear) -> None:
        super().__init__()
        self.body, self.linear = body, linear

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + self.linear(x.reshape(x.shape[0], -1))


class _Windowed(nn.Module):
    """Adds the channel/feature axis to a (B, L) window, then runs ``body``."""

    def __init__(self, body: nn.Module, unsqueeze_dim: int | None) -> None:
        super().__init__()
        self.body, self.unsqueeze_dim = body, unsqueeze_dim

    def forward(self, x: Tensor) -> Tensor:
        if self.unsqueeze_dim is not None and x.dim() == 2:
            x = x.unsqueeze(self.unsqueeze_dim)
        return self.body(x)


class _RNNMember(nn.Module):
    """torch's nn.LSTM / nn.GRU, the last step's hidden state, then the dense head."""

    def __init__(self, rnn: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.rnn, self.head = rnn, head

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(-1)
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


class _RNN(PopulationModel):
    spec: RNNSpec
    _code_axis = -1  # the series code is the last feature of every step

    @property
    def _gates(self) -> int:
        return 4 if self.spec.cell == "lstm" else 3

    def _build(self) -> None:
        s, g, hs = self.spec, self._gates, self.spec.hidden_size
        n_in = s.in_features + s.embedding
        for j in range(s.layers):
            self._add(f"rnn{j}_wih", (n_in, g * hs), "weight", n_in, hs, gates=g)
            self._add(f"rnn{j}_whh", (hs, g * hs), "recurrent", hs, hs, gates=g)
            self._add(f"rnn{j}_bih", (g * hs,), "bias")
            # Two biases, as torch has: the LSTM's sum is what matters, but each is trained
            # (so the sum moves twice as fast); the GRU's b_hn sits inside r * (W_hn h + b_hn).
            self._add(f"rnn{j}_bhh", (g * hs,), "bias")
            n_in = hs
        self._add_dense()

    def _feature_size(self) -> int:
        return self.spec.hidden_size

    def activation_size(self) -> int:
        # per step: the input projection and the activated gates (G*H each), c, h, and the
        # gates' gradient in the backward pass (see _recurrent)
        return self._window * self.spec.layers * self.spec.hidden_size * 14 + \
            super().activation_size()

    _window = 32  # a guess at the steps per window, for sizing only

    def _features(self, x: Tensor, P: Mapping[str, Tensor], ctx: _Dropout | None,
                  buffers: Mapping[str, Tensor], update: Tensor | None,
                  emb: Tensor | None = None) -> Tensor:
        s = self.spec
        if x.dim() == 2 and s.in_features == 1:
            x = x.unsqueeze(-1)
        if x.dim() != 3 or x.shape[2] != s.in_features:
            raise UserError(f"this {s.cell.upper()} takes windows (B, steps, {s.in_features})"
                            f"{' or (B, steps)' if s.in_features == 1 else ''}; "
                            f"got shape {tuple(x.shape)}")
        # Feature-major, as the recurrence runs (see _recurrent): (K, H, T, B) per layer.
        seq: Tensor = x if emb is None else rnn_input(x, emb)
        h_last = x  # replaced by the first layer
        for j in range(s.layers):
            bih = P[f"rnn{j}_bih"]
            if s.cell == "lstm":  # both LSTM biases simply add: fold them into the projection
                bih = bih + P[f"rnn{j}_bhh"]
            seq, h_last = recurrence(s.cell, seq, P[f"rnn{j}_wih"], bih, P[f"rnn{j}_whh"],
                                     None if s.cell == "lstm" else P[f"rnn{j}_bhh"])
            if j < s.layers - 1 and ctx is not None:
                seq = ctx(seq)
        h = h_last.transpose(1, 2)  # (K, B, H)
        if ctx is not None:
            h = ctx(h)
        return h

    def _member_module(self, i: int, dropout_p: float) -> nn.Module:
        s = self.spec
        cls = nn.LSTM if s.cell == "lstm" else nn.GRU
        rnn = cls(s.in_features + s.embedding, s.hidden_size, s.layers, batch_first=True,
                  dropout=dropout_p if s.layers > 1 else 0.0, dtype=torch.float64)
        for j in range(s.layers):
            getattr(rnn, f"weight_ih_l{j}").copy_(getattr(self, f"rnn{j}_wih")[i].T)
            getattr(rnn, f"weight_hh_l{j}").copy_(getattr(self, f"rnn{j}_whh")[i].T)
            getattr(rnn, f"bias_ih_l{j}").copy_(getattr(self, f"rnn{j}_bih")[i])
            getattr(rnn, f"bias_hh_l{j}").copy_(getattr(self, f"rnn{j}_bhh")[i])
        return _RNNMember(rnn, self._dense_module(i, dropout_p, lead_dropout=True))


def member_module_from(spec: ModelSpec, weights: Mapping[str, Any],
                       dropout_p: float = 0.0) -> nn.Module:
    """A network kept as one member's row of a population (``params``, the row of the flat
    parameters, and ``buffer.<name>``, as :meth:`netrace.train.Population.best_weights` gives
    them) as a standalone ``nn.Module`` of torch layers, in the row's dtype.

    >>> m = build_model(MLPSpec(in_features=3, hidden=(4,)), k=2)
    >>> row = {"params": m.flat[1].detach().numpy()}
    >>> x = torch.ones(5, 3)
    >>> bool(torch.equal(member_module_from(m.spec, row)(x), m.member_module(1)(x)))
    True
    """
    flat = torch.as_tensor(weights["params"])
    model = build_model(spec, 1, dtype=flat.dtype)
    if tuple(flat.shape) != tuple(model.flat.shape[1:]):
        raise UserError(f"these weights hold {tuple(flat.shape)} parameters; a "
                        f"{type(spec).__name__} like this one has {tuple(model.flat.shape[1:])}")
    with torch.no_grad():
        model.flat[0].copy_(flat)
        for name, buf in model.named_buffers():
            buf[0].copy_(torch.as_tensor(weights[f"buffer.{name}"]))
    return model.member_module(0, dropout_p)


def build_model(spec: ModelSpec, k: int, *, seeds: Sequence[int] | None = None,
                init: Sequence[str] | str = "kaiming", init_dist: Sequence[str] | str = "uniform",
                recurrent_init: Sequence[str] | str = "orthogonal",
                dtype: torch.dtype = torch.float32,
                device: torch.device | str = "cpu") -> PopulationModel:
    """A population of ``k`` members of ``spec``, member ``i`` initialized from ``seeds[i]``
    (default ``0..k-1``).

    >>> m = build_model(RNNSpec(in_features=1, cell="gru", hidden_size=8), k=3)
    >>> m(torch.zeros(2, 20)).shape
    torch.Size([3, 2, 1])
    """
    classes = {MLPSpec: _MLP, CNNSpec: _CNN, RNNSpec: _RNN}
    cls = classes.get(type(spec))
    if cls is None:
        raise UserError(f"unknown model spec {type(spec).__name__}; "
                        "allowed: MLPSpec, CNNSpec, RNNSpec")
    model = cls(spec, k, dtype, torch.device(device))
    seeds = list(range(k)) if seeds is None else list(seeds)
    model.init_members(list(range(k)), seeds,
                       init=init if isinstance(init, str) else list(init),
                       init_dist=init_dist if isinstance(init_dist, str) else list(init_dist),
                       recurrent_init=recurrent_init if isinstance(recurrent_init, str)
                       else list(recurrent_init))
    return model
