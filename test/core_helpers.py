"""Constants and model builders shared by the core tests.

Test modules import these from here, not from ``conftest``: pytest imports every conftest.py that
is not inside a package under the one module name ``conftest`` (test/launch/ has its own), so
``from conftest import ...`` gets whichever conftest was loaded last.
"""

from __future__ import annotations

import torch

from tdmpc2_ros.core.config import ModelConfig
from tdmpc2_ros.core.world_model import WorldModel

# A deliberately small budget for tests that need a planner but not the reference's search.
TINY_BUDGET = dict(iterations=2, num_samples=64, num_elites=8, num_pi_trajs=8)
# What the small session-wide ONNX export (conftest's small_onnx) is built from.
SMALL_OBS_DIM, SMALL_ACTION_DIM = 5, 1
SMALL_EXPORT = dict(task="unit-test", train_step=1234, checkpoint_sha256="ab" * 32)


def perturb_(model: torch.nn.Module, scale: float = 0.05, seed: int = 0) -> torch.nn.Module:
    """Add scale * N(0, 1) to every parameter (target ensemble included) so no head is all zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model


def make_model(preset: str, obs_dim: int, action_dim: int, seed: int = 0, perturb: bool = True, **overrides) -> WorldModel:
    torch.manual_seed(seed)
    model = WorldModel(ModelConfig.from_preset(preset, obs_dim, action_dim, **overrides)).eval()
    return perturb_(model, seed=seed + 1) if perturb else model
