"""The TD-MPC2 world model: encoder, latent dynamics, reward, termination, policy prior, Q ensemble.

Shapes: obs [B, obs_dim], z [B, latent_dim], a [B, action_dim]; ensemble outputs [E, B, num_bins].
Actions live in [-1, 1].
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from tdmpc2_ros.core import math
from tdmpc2_ros.core.config import ModelConfig
from tdmpc2_ros.core.layers import EnsembleMLP, SimNorm, init_weights, mlp


class WorldModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        L, A, M = cfg.latent_dim, cfg.action_dim, cfg.mlp_dim
        enc_hidden = max(cfg.num_enc_layers - 1, 1) * [cfg.enc_dim]
        self._encoder = mlp(cfg.obs_dim, enc_hidden, L, last_act=SimNorm(cfg.simnorm_dim))
        self._dynamics = mlp(L + A, [M, M], L, last_act=SimNorm(cfg.simnorm_dim))
        self._reward = mlp(L + A, [M, M], cfg.num_bins)
        self._termination = mlp(L, [M, M], 1) if cfg.episodic else None
        self._pi = mlp(L, [M, M], 2 * A)
        self._Qs = EnsembleMLP(cfg.num_q, L + A, [M, M], cfg.num_bins, dropout=cfg.dropout)
        self.apply(init_weights)
        # The reference starts reward and value predictions at exactly zero logits (uniform bins).
        nn.init.zeros_(self._reward[-1].weight)
        nn.init.zeros_(self._Qs.layers[-1].weight)
        self._target_Qs = copy.deepcopy(self._Qs).requires_grad_(False)
        self.two_hot = math.TwoHot(cfg.num_bins, cfg.vmin, cfg.vmax)

    def num_parameters(self) -> int:
        """Trainable parameters, counted as the reference does (the target ensemble excluded)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def train(self, mode: bool = True):
        super().train(mode)
        self._target_Qs.train(False)  # the target never uses dropout
        return self

    # -- components -------------------------------------------------------------------------
    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        return self._encoder(obs)

    def next(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self._forward_za(self._dynamics, z, a)

    def reward(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Reward logits [..., num_bins]."""
        return self._forward_za(self._reward, z, a)

    @staticmethod
    def _forward_za(net: nn.Sequential, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """net([z, a]). When one latent [1, L] is shared by many actions [S, A] (the planner's first
        step), the first matmul is split so the latent half is computed once, not S times."""
        if z.shape[:-1] == a.shape[:-1]:
            return net(torch.cat([z, a], dim=-1))
        first, L = net[0], z.shape[-1]
        h = F.linear(z, first.weight[:, :L]) + F.linear(a, first.weight[:, L:], first.bias)
        return net[1:](first.act(first.ln(h)))

    def termination_logit(self, z: torch.Tensor) -> torch.Tensor:
        return self._termination(z)

    def pi(self, z: torch.Tensor, eps: torch.Tensor | None = None):
        """Squashed Gaussian policy prior. Returns (action, squashed mean, log-prob of action).
        eps is the standard-normal draw; the planner passes its own so plans are reproducible."""
        mean, log_std = self._pi(z).chunk(2, dim=-1)
        log_std = math.squashed_log_std(log_std, self.cfg.log_std_min, self.cfg.log_std_max)
        if eps is None:
            eps = torch.randn_like(mean)
        pre_tanh = mean + eps * log_std.exp()
        log_prob = math.gaussian_log_prob(eps, log_std) - math.tanh_squash_correction(pre_tanh)
        return torch.tanh(pre_tanh), torch.tanh(mean), log_prob

    def Q_logits(self, z: torch.Tensor, a: torch.Tensor, members: torch.Tensor | None = None, target: bool = False):
        """Logits of the chosen ensemble members (all by default): [E, B, num_bins]."""
        net = self._target_Qs if target else self._Qs
        x = torch.cat([z, a], dim=-1)
        lead = x.shape[:-1]
        out = net(x.reshape(-1, x.shape[-1]), members)
        return out.reshape(out.shape[0], *lead, out.shape[-1])

    def Q(self, z, a, members: torch.Tensor, reduce: str, target: bool = False) -> torch.Tensor:
        """Decoded value of 2 members, combined by 'min' (TD targets) or 'avg' (planning, policy)."""
        q = self.two_hot.decode(self.Q_logits(z, a, members, target))
        return q.min(0).values if reduce == "min" else q.mean(0)

    @torch.no_grad()
    def soft_update_target(self, tau: float):
        torch._foreach_lerp_(list(self._target_Qs.parameters()), list(self._Qs.parameters()), tau)
