"""Building blocks of the world model: Linear -> LayerNorm -> Mish, SimNorm, and a stacked Q ensemble.

Two details matter for deployment:
- Mish is written in the ONNX graph as x * p / (2 - p) with p = s (2 - s), s = sigmoid(x), which
  equals x * tanh(softplus(x)) exactly (tanh(log(1 + e^x)) = p / (2 - p)) and cannot overflow.
  ONNX Runtime's CPU Softplus kernel dominated a naive export (64% of the run); Sigmoid/Mul/Div are
  cheap vectorised kernels. Measured on [488, 384]: 120 us, against 168 us for an Exp-based
  rational form and 872 us for Softplus + Tanh.
- The Q ensemble keeps its members' weights stacked, so "2 random members" is a Gather plus one
  batched MatMul in the graph instead of a Python loop.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F

_EXPORTING = False


@contextlib.contextmanager
def export_friendly():
    """Inside this context the layers emit ONNX-friendly formulations of the same maths."""
    global _EXPORTING
    prev, _EXPORTING = _EXPORTING, True
    try:
        yield
    finally:
        _EXPORTING = prev


def _mish_parts(x: torch.Tensor):
    """(sigmoid(x), tanh(softplus(x))) without softplus: tanh(log(1 + e^x)) = p / (2 - p), p = s (2 - s)."""
    s = torch.sigmoid(x)
    p = s * (2.0 - s)
    return s, p / (2.0 - p)


class _CompiledMish(torch.autograd.Function):
    """Mish in the Sigmoid form with its derivative written out, for torch.compile:
    d/dx x tanh(softplus(x)) = g + x s (1 - g^2), with s = sigmoid(x), g = tanh(softplus(x)). Autograd
    of the Sigmoid form chains its six operations (four divisions per element); this is two."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * _mish_parts(x)[1]

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        s, g = _mish_parts(x)
        return grad * (g + x * s * (1.0 - g * g))


def mish(x: torch.Tensor) -> torch.Tensor:
    """x * tanh(softplus(x)): torch's kernel in eager mode; the Sigmoid form in an exported graph and
    under torch.compile, which fuses it into one loop. On [5, 768, 384] with 2 threads, forward and
    backward: compiled Sigmoid form 2.0 ms, compiled F.mish 7.2 ms, eager F.mish 6.5 ms, eager
    Sigmoid form 10.5 ms (its autograd graph is six elementwise passes). Compiled and differentiated,
    the Sigmoid form's derivative is written out (_CompiledMish): a LayerNorm + Mish block forward and
    backward on that shape, 6.2 -> 5.6 ms; a compiled 1M update, 69.5-77.5 -> 64.8-74.3 ms in five
    alternating pairs of runs (docs/benchmarks.md, session 10)."""
    compiling = torch.compiler.is_compiling()
    if compiling and torch.is_grad_enabled() and x.requires_grad:
        return _CompiledMish.apply(x)
    if _EXPORTING or compiling:
        return x * _mish_parts(x)[1]
    return F.mish(x)


class Mish(nn.Module):
    def forward(self, x):
        return mish(x)


class SparseDropout(nn.Module):
    """Dropout (each element zeroed with probability p, the rest scaled by 1 / (1 - p)) that draws
    the gaps between zeroed elements instead of one random number per element.

    Why: the Q heads' dropout of 0.01 spent 5 ms of a 90 ms update in per-element Bernoulli draws
    (6-12 ms for [5, 768, 384] on 2 threads, eager or compiled). The gaps between successes of
    independent Bernoulli(p) trials are independent Geometric(p), so drawing about N p of them gives
    exactly the same distribution of masks, with 100x fewer random numbers. Enough gaps are drawn
    to pass the end of the tensor by 8 standard deviations; no data-dependent shapes, so it
    compiles.
    """

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 < p < 1.0:
            raise ValueError(f"dropout probability must be in (0, 1), not {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        n, p = x.numel(), self.p
        mean = n * p
        draws = int(mean + 8.0 * (mean * (1.0 - p)) ** 0.5 + 8.0 / p) + 1
        u = torch.rand(draws, dtype=torch.float64, device=x.device).clamp_(min=1e-300)
        gaps = torch.floor(torch.log(u) / torch.log1p(torch.tensor(-p, dtype=torch.float64))).long() + 1
        index = (torch.cumsum(gaps, 0) - 1).clamp_(max=n)  # beyond the end -> the spare slot n
        keep = torch.full((n + 1,), 1.0 / (1.0 - p), dtype=x.dtype, device=x.device)
        keep.index_fill_(0, index, 0.0)
        return x * keep[:n].view_as(x)


class SimNorm(nn.Module):
    """Simplicial normalisation: softmax within consecutive groups of `dim` latent units."""

    def __init__(self, dim: int = 8):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        shape = x.shape
        x = x.reshape(*shape[:-1], shape[-1] // self.dim, self.dim)
        return F.softmax(x, dim=-1).reshape(shape)


class NormedLinear(nn.Linear):
    """Linear -> (Dropout) -> LayerNorm -> activation (Mish unless told otherwise)."""

    def __init__(self, in_features: int, out_features: int, act: nn.Module | None = None, dropout: float = 0.0):
        super().__init__(in_features, out_features)
        self.ln = nn.LayerNorm(out_features)
        self.act = act if act is not None else Mish()
        self.dropout = SparseDropout(dropout) if dropout else None

    def forward(self, x):
        x = super().forward(x)
        if self.dropout is not None:
            x = self.dropout(x)
        return self.act(self.ln(x))


def mlp(in_dim: int, hidden: list[int], out_dim: int, last_act: nn.Module | None = None, dropout: float = 0.0):
    """Hidden NormedLinear layers (dropout on the first only), then a plain or normed output layer."""
    dims = [in_dim, *hidden, out_dim]
    layers: list[nn.Module] = [
        NormedLinear(dims[i], dims[i + 1], dropout=dropout if i == 0 else 0.0) for i in range(len(dims) - 2)
    ]
    layers.append(NormedLinear(dims[-2], dims[-1], act=last_act) if last_act is not None else nn.Linear(dims[-2], dims[-1]))
    return nn.Sequential(*layers)


class EnsembleLinear(nn.Module):
    """E independent Linear layers with stacked weights [E, in, out], optionally followed by a
    per-member LayerNorm and Mish. Input [B, in] (shared) or [E', B, in]; output [E', B, out]."""

    def __init__(self, members: int, in_features: int, out_features: int, normed: bool, dropout: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(members, 1, out_features))
        self.normed = normed
        if normed:
            self.ln_weight = nn.Parameter(torch.ones(members, 1, out_features))
            self.ln_bias = nn.Parameter(torch.zeros(members, 1, out_features))
        self.dropout = SparseDropout(dropout) if dropout else None

    def forward(self, x: torch.Tensor, members: torch.Tensor | None = None) -> torch.Tensor:
        w, b = self.weight, self.bias
        if members is not None:
            w, b = w.index_select(0, members), b.index_select(0, members)
        x = torch.baddbmm(b, x.expand(w.shape[0], *x.shape[-2:]), w) if x.dim() == 2 else torch.baddbmm(b, x, w)
        if self.dropout is not None:
            x = self.dropout(x)
        if not self.normed:
            return x
        g, beta = self.ln_weight, self.ln_bias
        if members is not None:
            g, beta = g.index_select(0, members), beta.index_select(0, members)
        return mish(F.layer_norm(x, x.shape[-1:]) * g + beta)


class EnsembleMLP(nn.Module):
    """An ensemble of identically shaped MLPs evaluated as one stacked computation."""

    def __init__(self, members: int, in_dim: int, hidden: list[int], out_dim: int, dropout: float = 0.0):
        super().__init__()
        dims = [in_dim, *hidden, out_dim]
        self.members = members
        self.layers = nn.ModuleList(
            EnsembleLinear(members, dims[i], dims[i + 1], normed=i < len(dims) - 2, dropout=dropout if i == 0 else 0.0)
            for i in range(len(dims) - 1)
        )

    def forward(self, x: torch.Tensor, members=None) -> torch.Tensor:
        """members: None (all), an index tensor, or a static list of indices."""
        if members is not None and not self.training:
            return self.forward_chosen(x, members)
        for layer in self.layers:
            x = layer(x, members)
        return x

    def forward_chosen(self, x: torch.Tensor, members) -> torch.Tensor:
        """A few chosen members (the planner's 2), each as plain Linear -> LayerNorm -> Mish so the
        exported graph uses fused Gemm(+bias) and LayerNormalization(+affine) kernels instead of a
        batched MatMul followed by separate bias, scale and shift passes. Same maths. [M, B, out]"""
        def pick(param, i):
            if isinstance(members, (list, tuple)):  # static choice: a constant slice, folded at export
                return param[members[i]]
            return param.index_select(0, members[i : i + 1]).squeeze(0)  # a Gather on the index tensor

        outputs = []
        for i in range(len(members)):
            h = x
            for layer in self.layers:
                h = F.linear(h, pick(layer.weight, i).t(), pick(layer.bias, i).squeeze(0))
                if layer.normed:
                    ln_w, ln_b = pick(layer.ln_weight, i).squeeze(0), pick(layer.ln_bias, i).squeeze(0)
                    h = mish(F.layer_norm(h, h.shape[-1:], ln_w, ln_b))
            outputs.append(h)
        return torch.stack(outputs)


def init_weights(module: nn.Module):
    """Reference initialisation: weights truncated-normal std 0.02, biases zero (LayerNorm stays 1/0)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, EnsembleLinear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)
