"""Numerical pieces of TD-MPC2: symlog, two-hot discrete regression, squashed Gaussians."""

from __future__ import annotations

import math as _m

import torch
import torch.nn.functional as F


def symlog(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log1p(torch.abs(x))


def symexp(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * (torch.exp(torch.abs(x)) - 1)


class TwoHot(torch.nn.Module):
    """Discrete regression in symlog space: num_bins bins evenly spanning [vmin, vmax].

    A module so that the bins move with the world model to its device (a buffer, not saved: the
    bins follow from the config)."""

    def __init__(self, num_bins: int, vmin: float, vmax: float):
        super().__init__()
        self.num_bins, self.vmin, self.vmax = num_bins, vmin, vmax
        self.bin_size = (vmax - vmin) / (num_bins - 1)
        self.register_buffer("bins", torch.linspace(vmin, vmax, num_bins), persistent=False)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[..., 1] scalars -> [..., num_bins] two-hot targets of symlog(x)."""
        x = symlog(x).clamp(self.vmin, self.vmax).squeeze(-1)
        pos = (x - self.vmin) / self.bin_size
        lo = pos.floor().clamp(0, self.num_bins - 1)
        frac = (pos - lo).unsqueeze(-1)
        lo = lo.long().unsqueeze(-1)
        hi = (lo + 1).clamp(max=self.num_bins - 1)
        out = torch.zeros(*x.shape, self.num_bins, device=x.device, dtype=torch.float32)
        out.scatter_add_(-1, lo, 1 - frac)
        out.scatter_add_(-1, hi, frac)
        return out

    def decode(self, logits: torch.Tensor) -> torch.Tensor:
        """[..., num_bins] logits -> [..., 1] scalar: symexp of the expected bin value."""
        probs = F.softmax(logits, dim=-1)
        return symexp(probs @ self.bins.to(logits).unsqueeze(-1))

    def soft_ce(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy between predicted logits and the two-hot encoding of scalar targets."""
        return -(self.encode(target) * F.log_softmax(logits, dim=-1)).sum(-1, keepdim=True)


def squashed_log_std(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Map an unbounded output into [low, high] smoothly."""
    return low + 0.5 * (high - low) * (torch.tanh(x) + 1)


def gaussian_log_prob(eps: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log N(mu + eps*std | mu, std), summed over the last dim."""
    return (-0.5 * eps.pow(2) - log_std - 0.5 * _m.log(2 * _m.pi)).sum(-1, keepdim=True)


def tanh_squash_correction(pre_tanh: torch.Tensor) -> torch.Tensor:
    """log |d tanh(u)/du| summed over the last dim, for the change of variables through tanh."""
    return torch.log(F.relu(1 - torch.tanh(pre_tanh).pow(2)) + 1e-6).sum(-1, keepdim=True)
