"""MPPI, the reference TD-MPC2 planner: refit mean and std as softmax(temperature * value)-weighted
statistics of the elites; execute an elite drawn by those weights."""

from __future__ import annotations

import torch

from tdmpc2_ros.core.planners.base import Planner, normal_to_uniform


class MPPIPlanner(Planner):
    def refit(self, elite_value, elite_actions):
        score = self.softmax_scores(elite_value)
        mean, std = self.weighted_refit(score, elite_actions)
        return score, mean, std

    def search(self, z0, pi_actions, pi_rollout, mean, n):
        b = self.budget
        std = torch.full_like(mean, b.max_std)  # std restarts at its maximum every tick
        for i in range(b.iterations):
            samples = self.sample_around(mean, std, n["samples"][i])
            # Only the new samples are rolled out; the policy trajectories' rollout is reused.
            rollout = [torch.cat(pair) for pair in zip(pi_rollout, self.rollout(z0, samples))]
            value = self.terminal_value(*rollout, n["terminal_policy"][i], self.q_members(n["q_pairs"][i]))
            actions = torch.cat([pi_actions, samples], dim=1)
            elite_value, elite_actions = self.elites(value, actions)
            score, mean, std = self.refit(elite_value, elite_actions)
        chosen = self.categorical(score, normal_to_uniform(n["selection"]))
        return elite_value, elite_actions, mean, std, chosen
