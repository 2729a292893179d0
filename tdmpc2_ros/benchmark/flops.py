"""Analytic multiply-accumulate counts of one planning tick, from the model shapes and the budget."""

from __future__ import annotations


def _mlp_macs(dims: list[int]) -> int:
    return sum(a * b for a, b in zip(dims[:-1], dims[1:]))


def plan_macs(obs_dim: int, action_dim: int, enc_dim: int, mlp_dim: int, latent_dim: int, num_enc_layers: int,
              num_bins: int, budget, executed: bool = True) -> int:
    """MACs of one tick. executed=True counts what the exported graph runs (policy rollouts reused
    across iterations, the shared first-step latent computed once); executed=False counts the
    reference's straightforward loop (every candidate rolled out every iteration)."""
    L, A, M = latent_dim, action_dim, mlp_dim
    H, I, S, P = budget.horizon, budget.iterations, budget.num_samples, budget.num_pi_trajs
    enc = _mlp_macs([obs_dim] + max(num_enc_layers - 1, 1) * [enc_dim] + [L])
    dyn = _mlp_macs([L + A, M, M, L])
    rew = _mlp_macs([L + A, M, M, num_bins])
    pi = _mlp_macs([L, M, M, 2 * A])
    q = _mlp_macs([L + A, M, M, num_bins])
    terminal = S * (pi + 2 * q)  # pi(z_H) and the 2 chosen Q members
    policy = P * H * (pi + dyn + rew)
    if not executed:
        return enc + policy + I * (S * H * (dyn + rew) + terminal)
    first_step_saving = (S - P) * 2 * L * M - 2 * L * M  # latent half of [z, a] @ W done once
    per_iter = (S - P) * H * (dyn + rew) - first_step_saving + terminal
    if budget.planner == "gradient":
        # forward + backward (about 2x forward) per ascent step, plus the final evaluation
        per_iter = 3 * (S * H * (dyn + rew) + terminal)
        return enc + policy + per_iter * I + S * H * (dyn + rew) + terminal
    return enc + policy + I * per_iter
