"""The planner's shared machinery. One forward() is one control tick; its signature is the graph's.

forward(obs [obs_dim], prev_mean [H, A], noise [N], explore [1]) -> action [A], mean [H, A],
value [1], std [A]. Every random number of the tick comes from `noise` (standard normals; uniforms
are made from them through the normal CDF), so a plan is a pure function of its inputs: the torch
module and the exported graph can be compared number for number.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from tdmpc2_ros.core.world_model import WorldModel
from tdmpc2_ros.runtime.budget import PlanBudget


def normal_to_uniform(x: torch.Tensor) -> torch.Tensor:
    """Standard normal -> uniform in [0, 1) through the normal CDF."""
    return (0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))).clamp(0.0, 1.0 - 1e-6)


class Planner(nn.Module):
    """Template of a sampling planner; subclasses define `search`."""

    def __init__(self, model: WorldModel, budget: PlanBudget, discount: float):
        super().__init__()
        self.model, self.budget, self.discount = model, budget, float(discount)
        self.action_dim = model.cfg.action_dim

    # -- random numbers ---------------------------------------------------------------------
    def split_noise(self, noise: torch.Tensor) -> dict[str, torch.Tensor]:
        """Cut the flat noise vector into the named, shaped draws of budget.noise_layout."""
        b, A = self.budget, self.action_dim
        shapes = {
            "policy_trajectories": (b.horizon, b.num_pi_trajs, A),
            "samples": (b.iterations, b.horizon, b.num_random, A),
            "terminal_policy": (b.iterations, b.num_samples, A),
            "q_pairs": (b.iterations, 2),
            "selection": (1,),
            "exploration": (A,),
        }
        out, start = {}, 0
        for name, size in b.noise_layout(A):
            out[name] = noise[start : start + size].reshape(shapes[name])
            start += size
        return out

    def q_members(self, pair_noise: torch.Tensor):
        """Two distinct ensemble members, uniformly at random, from two normal draws. With an
        ensemble of 2 that is always both (their order does not matter to a mean), so the choice is
        static and the graph needs no weight gathers."""
        nq = self.model.cfg.num_q
        if nq == 2:
            return [0, 1]
        u = normal_to_uniform(pair_noise)
        first = torch.floor(u[0] * nq).clamp(max=nq - 1)
        offset = torch.floor(u[1] * (nq - 1)).clamp(max=nq - 2)
        second = torch.remainder(first + 1 + offset, nq)
        return torch.stack([first, second]).long()

    # -- the model rolled out -----------------------------------------------------------------
    def policy_trajectories(self, z0: torch.Tensor, eps: torch.Tensor):
        """Roll the policy prior from z0. Returns its actions [H, P, A] and its rollout
        (partial return, alive mask, final latent), which are the same in every iteration and so
        are computed once per tick."""
        P, H = self.budget.num_pi_trajs, self.budget.horizon
        m = self.model
        z = z0.expand(P, -1)
        ret, alive = z0.new_zeros(P, 1), z0.new_ones(P, 1)
        actions, disc = [], 1.0
        for t in range(H):
            a = m.pi(z, eps[t])[0]
            actions.append(a)
            z, ret, alive, disc = self._step(z, a, ret, alive, disc)
        return torch.stack(actions), (ret, alive, z)

    def _step(self, z, a, ret, alive, disc):
        """One model step of a rollout: accumulate the discounted reward, advance the latent."""
        m = self.model
        r = m.two_hot.decode(m.reward(z, a))
        z = m.next(z, a)
        ret = ret + disc * alive * r
        if m.cfg.episodic:
            alive = alive * (m.termination_logit(z) <= 0).to(z.dtype)
        return z, ret, alive, disc * self.discount

    def rollout(self, z: torch.Tensor, actions: torch.Tensor):
        """Roll the model along action sequences [H, S, A] from z ([S, L], or one shared [1, L]).
        Returns (sum_t gamma^t r_t [S, 1], alive [S, 1], z_H [S, L])."""
        S = actions.shape[1]
        ret, alive, disc = actions.new_zeros(S, 1), actions.new_ones(S, 1), 1.0
        for t in range(actions.shape[0]):
            z, ret, alive, disc = self._step(z, actions[t], ret, alive, disc)
        return ret, alive, z

    def terminal_value(self, ret, alive, z_last, eps_terminal, members) -> torch.Tensor:
        """Add the bootstrap gamma^H Q(z_H, pi(z_H)), Q the mean of 2 ensemble members: [S]."""
        m = self.model
        a = m.pi(z_last, eps_terminal)[0]
        q = m.Q(z_last, a, members, reduce="avg")
        return (ret + self.discount**self.budget.horizon * alive * q).squeeze(-1)

    def estimate_value(self, z: torch.Tensor, actions: torch.Tensor, eps_terminal, members) -> torch.Tensor:
        """sum_t gamma^t r_t + gamma^H Q(z_H, pi(z_H)) for each sequence [H, S, A]: [S]."""
        return self.terminal_value(*self.rollout(z, actions), eps_terminal, members)

    def elites(self, value: torch.Tensor, actions: torch.Tensor):
        """Top-K sequences by value (NaN counts as 0, as in the reference): ([K], [H, K, A])."""
        value = torch.nan_to_num(value, nan=0.0)
        elite_value, idx = torch.topk(value, self.budget.num_elites)
        return elite_value, actions.index_select(1, idx)

    def softmax_scores(self, elite_value: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.budget.temperature * (elite_value - elite_value.max()), dim=0)

    def weighted_refit(self, score: torch.Tensor, elite_actions: torch.Tensor):
        """Mean and std of the elites under weights `score` (summing to 1), std clamped."""
        w = score.reshape(1, -1, 1)
        mean = (w * elite_actions).sum(1)
        std = (w * (elite_actions - mean.unsqueeze(1)).pow(2)).sum(1).sqrt()
        return mean, std.clamp(self.budget.min_std, self.budget.max_std)

    @staticmethod
    def sample_around(mean, std, eps) -> torch.Tensor:
        """Draws from N(mean, std) clipped to [-1, 1]: [H, N, A]."""
        return (mean.unsqueeze(1) + std.unsqueeze(1) * eps).clamp(-1.0, 1.0)

    @staticmethod
    def categorical(score: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
        """Index drawn with probability `score` by inverting its CDF at `uniform`."""
        cdf = torch.cumsum(score, dim=0)
        k = (cdf < uniform * cdf[-1]).sum()
        return k.clamp(max=score.shape[0] - 1).reshape(1)

    # -- one control tick -----------------------------------------------------------------------
    def search(self, z0, pi_actions, pi_rollout, mean, noise) -> tuple[torch.Tensor, ...]:
        """pi_rollout is the policy trajectories' (return, alive, z_H). Return (elite_value [K], elite_actions [H, K, A], mean [H, A], std [H, A], chosen [1])."""
        raise NotImplementedError

    def forward(self, obs, prev_mean, noise, explore):
        n = self.split_noise(noise)
        z0 = self.model.encode(obs.unsqueeze(0))
        pi_actions, pi_rollout = self.policy_trajectories(z0, n["policy_trajectories"])
        # Warm start: last tick's mean shifted one step, zero at the end.
        mean = torch.cat([prev_mean[1:], torch.zeros_like(prev_mean[:1])], dim=0)
        elite_value, elite_actions, mean, std, chosen = self.search(z0, pi_actions, pi_rollout, mean, n)
        action = elite_actions[0].index_select(0, chosen).squeeze(0)
        # While collecting data: add std[0] * N(0, 1); evaluation (explore = 0) skips it.
        action = (action + explore * std[0] * n["exploration"]).clamp(-1.0, 1.0)
        return action, mean, elite_value.index_select(0, chosen), std[0]
