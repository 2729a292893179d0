"""The fixed compute budget of a planner, decided at export time.

Shared by the trainer (which bakes it into the graph) and the robot (which reads it back from the
graph's metadata), so it is plain Python.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

PLANNER_KINDS = ("mppi", "cem", "gradient")


@dataclass(frozen=True)
class PlanBudget:
    """How much search one control tick may do. Defaults are the reference TD-MPC2 MPPI settings."""

    planner: str = "mppi"
    horizon: int = 3
    iterations: int = 6
    num_samples: int = 512
    num_elites: int = 64
    num_pi_trajs: int = 24
    temperature: float = 0.5
    min_std: float = 0.05
    max_std: float = 2.0
    # Gradient planner only: step size of the ascent on the action sequence (actions live in [-1, 1]).
    grad_lr: float = 0.1

    def __post_init__(self):
        if self.planner not in PLANNER_KINDS:
            raise ValueError(f"unknown planner {self.planner!r}; expected one of {PLANNER_KINDS}")
        for name in ("horizon", "iterations", "num_samples", "num_elites"):
            if getattr(self, name) < 1:
                raise ValueError(f"budget.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.num_pi_trajs < self.num_samples:
            raise ValueError(
                f"budget.num_pi_trajs must be in [0, num_samples={self.num_samples}), got {self.num_pi_trajs}"
            )
        if self.num_elites > self.num_samples:
            raise ValueError(f"budget.num_elites ({self.num_elites}) exceeds num_samples ({self.num_samples})")
        if not 0 < self.min_std <= self.max_std:
            raise ValueError(f"budget std range [{self.min_std}, {self.max_std}] is invalid")

    @classmethod
    def reference(cls, action_dim: int, **overrides) -> "PlanBudget":
        """The reference budget: 6 iterations, or 8 for large action spaces (action_dim >= 20)."""
        base = cls(iterations=8 if action_dim >= 20 else 6)
        return replace(base, **overrides)

    @property
    def num_random(self) -> int:
        """Sequences drawn from the sampling distribution each iteration (the rest follow the policy)."""
        return self.num_samples - self.num_pi_trajs

    def noise_size(self, action_dim: int) -> int:
        """Length of the flat standard-normal noise vector the planner graph consumes per tick."""
        return sum(n for _, n in self.noise_layout(action_dim))

    def noise_layout(self, action_dim: int) -> list[tuple[str, int]]:
        """Named slices of the flat noise vector, in order. Uniform draws are made from normals
        through the normal CDF inside the graph, so one input carries every random number."""
        H, A, S, P, I = self.horizon, action_dim, self.num_samples, self.num_pi_trajs, self.iterations
        return [
            ("policy_trajectories", H * P * A),  # policy-prior sampling along its own rollouts
            ("samples", I * self.num_random * H * A),  # candidate sequences, per iteration
            ("terminal_policy", I * S * A),  # pi(z_H) for the bootstrap value, per iteration
            ("q_pairs", I * 2),  # which 2 Q members are averaged, per iteration
            ("selection", 1),  # which elite is executed
            ("exploration", A),  # std[0] * N(0, 1) while collecting data
        ]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PlanBudget":
        return cls(**d)

    def label(self) -> str:
        return f"{self.planner}-i{self.iterations}-s{self.num_samples}-e{self.num_elites}-p{self.num_pi_trajs}-h{self.horizon}"
