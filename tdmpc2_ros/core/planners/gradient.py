"""Gradient-based planning: start from the policy-prior trajectories, the warm-started mean and
samples around it, then climb the model's value estimate by gradient ascent on the actions.

The gradient is taken with torch.func.grad; export traces it (make_fx) into explicit backward
operators, so the ascent lives in the same single ONNX graph as everything else.
"""

from __future__ import annotations

import torch

from tdmpc2_ros.core.planners.base import Planner, normal_to_uniform


class GradientPlanner(Planner):
    def search(self, z0, pi_actions, pi_rollout, mean, n):
        b = self.budget
        z = z0.expand(b.num_samples, -1)
        std = torch.full_like(mean, b.max_std)
        # Candidates: policy prior, the warm-start mean itself, and draws around it. All of them
        # move, so nothing of the policy rollout can be reused here.
        draws = self.sample_around(mean, std, n["samples"][0][:, : b.num_random - 1])
        actions = torch.cat([pi_actions, mean.unsqueeze(1), draws], dim=1)
        for i in range(b.iterations):
            eps, members = n["terminal_policy"][i], self.q_members(n["q_pairs"][i])

            def total_value(a, eps=eps, members=members):
                return self.estimate_value(z, a, eps, members).sum()

            grad = torch.func.grad(total_value)(actions)
            # Normalise per sequence so the step size means the same in every state and task.
            scale = grad.pow(2).mean(dim=(0, 2), keepdim=True).sqrt() + 1e-8
            actions = (actions + b.grad_lr * grad / scale).clamp(-1.0, 1.0)
        last = b.iterations - 1
        value = self.estimate_value(z, actions, n["terminal_policy"][last], self.q_members(n["q_pairs"][last]))
        elite_value, elite_actions = self.elites(value, actions)
        score = self.softmax_scores(elite_value)
        mean, std = self.weighted_refit(score, elite_actions)
        chosen = self.categorical(score, normal_to_uniform(n["selection"]))
        return elite_value, elite_actions, mean, std, chosen
