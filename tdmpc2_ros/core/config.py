"""Model-size presets and training hyper-parameters, as plain dataclasses (no global config object).

Numbers are the reference TD-MPC2 values (ICLR 2024, state observations).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

# preset -> (enc_dim, mlp_dim, latent_dim, num_enc_layers, num_q)
PRESETS: dict[str, tuple[int, int, int, int, int]] = {
    "1M": (256, 384, 128, 2, 2),
    "5M": (256, 512, 512, 2, 5),
    "19M": (1024, 1024, 768, 3, 5),
    "48M": (1792, 1792, 768, 4, 5),
    "317M": (4096, 4096, 1376, 5, 8),
}


@dataclass(frozen=True)
class ModelConfig:
    """Shapes of the world model. obs_dim/action_dim come from the task."""

    obs_dim: int
    action_dim: int
    preset: str = "5M"
    enc_dim: int = 256
    mlp_dim: int = 512
    latent_dim: int = 512
    num_enc_layers: int = 2
    num_q: int = 5
    simnorm_dim: int = 8
    num_bins: int = 101
    vmin: float = -10.0
    vmax: float = 10.0
    dropout: float = 0.01
    log_std_min: float = -10.0
    log_std_max: float = 2.0
    episodic: bool = False

    def __post_init__(self):
        if self.obs_dim < 1 or self.action_dim < 1:
            raise ValueError(f"obs_dim and action_dim must be positive, got {self.obs_dim}, {self.action_dim}")
        if self.latent_dim % self.simnorm_dim:
            raise ValueError(f"latent_dim {self.latent_dim} is not a multiple of simnorm_dim {self.simnorm_dim}")
        if self.num_q < 2:
            raise ValueError("num_q must be >= 2 (targets use 2 random members)")

    @classmethod
    def from_preset(cls, preset: str, obs_dim: int, action_dim: int, **overrides) -> "ModelConfig":
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose from {list(PRESETS)}")
        enc, mlp, latent, layers, nq = PRESETS[preset]
        cfg = cls(obs_dim, action_dim, preset, enc, mlp, latent, layers, nq)
        return replace(cfg, **overrides)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TrainConfig:
    """The update's hyper-parameters."""

    batch_size: int = 256
    horizon: int = 3
    rho: float = 0.5
    lr: float = 3e-4
    enc_lr_scale: float = 0.3
    grad_clip_norm: float = 20.0
    consistency_coef: float = 20.0
    reward_coef: float = 0.1
    value_coef: float = 0.1
    termination_coef: float = 1.0
    entropy_coef: float = 1e-4
    tau: float = 0.01
    discount: float | None = None  # None: the heuristic from the episode length
    buffer_size: int = 1_000_000

    def to_dict(self) -> dict:
        return asdict(self)


def heuristic_discount(episode_length: int, lo: float = 0.95, hi: float = 0.995) -> float:
    """clip((L/5 - 1) / (L/5), 0.95, 0.995) for an episode of L agent steps."""
    frac = episode_length / 5
    return float(min(max((frac - 1) / frac, lo), hi))


def seed_steps_for(episode_length: int) -> int:
    """Random-action steps before learning starts: max(1000, 5 episodes)."""
    return max(1000, 5 * episode_length)
