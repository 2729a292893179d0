"""CEM: the same loop as MPPI with a uniform refit over the elites (the seed design's variant);
executes the highest-valued elite of the last iteration."""

from __future__ import annotations

import torch

from tdmpc2_ros.core.planners.mppi import MPPIPlanner


class CEMPlanner(MPPIPlanner):
    def refit(self, elite_value, elite_actions):
        uniform = torch.full_like(elite_value, 1.0 / elite_value.shape[0])
        mean, std = self.weighted_refit(uniform, elite_actions)
        return uniform, mean, std

    def search(self, z0, pi_actions, pi_rollout, mean, n):
        elite_value, elite_actions, mean, std, _ = super().search(z0, pi_actions, pi_rollout, mean, n)
        best = torch.zeros(1, dtype=torch.long, device=elite_value.device)  # topk sorts descending: elite 0 is the best
        return elite_value, elite_actions, mean, std, best
