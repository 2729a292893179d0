"""Shared fixtures of the tdmpc2_ros test suite.

Everything runs on CPU with 2 threads. Exports are the expensive part of the suite (10-60 s each),
so the small planner graph that several files use is exported once per session.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import pytest
import torch

torch.set_num_threads(2)

from tdmpc2_ros.core.config import ModelConfig  # noqa: E402
from tdmpc2_ros.core.world_model import WorldModel  # noqa: E402
from tdmpc2_ros.runtime.budget import PlanBudget  # noqa: E402

# A deliberately small budget for tests that need a planner but not the reference's search.
TINY_BUDGET = dict(iterations=2, num_samples=64, num_elites=8, num_pi_trajs=8)
# What the small session-wide ONNX export is built from.
SMALL_OBS_DIM, SMALL_ACTION_DIM = 5, 1
SMALL_EXPORT = dict(task="unit-test", train_step=1234, checkpoint_sha256="ab" * 32)


def perturb_(model: torch.nn.Module, scale: float = 0.05, seed: int = 0) -> torch.nn.Module:
    """Add scale * N(0, 1) to every parameter (and buffer-free target copy) so no head is all zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model


def make_model(preset: str, obs_dim: int, action_dim: int, seed: int = 0, perturb: bool = True, **overrides) -> WorldModel:
    torch.manual_seed(seed)
    model = WorldModel(ModelConfig.from_preset(preset, obs_dim, action_dim, **overrides)).eval()
    return perturb_(model, seed=seed + 1) if perturb else model


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def small_model() -> WorldModel:
    """A perturbed 1M world model with cartpole-like dims (obs 5, action 1)."""
    return make_model("1M", SMALL_OBS_DIM, SMALL_ACTION_DIM, seed=7)


@pytest.fixture(scope="session")
def small_budget() -> PlanBudget:
    return PlanBudget(planner="mppi", **TINY_BUDGET)


@pytest.fixture(scope="session")
def small_onnx(tmp_path_factory, small_model, small_budget):
    """(path, contract) of the small model's MPPI planner exported once for the whole session."""
    from tdmpc2_ros.core.export import export_planner

    path = tmp_path_factory.mktemp("onnx") / "small_planner.onnx"
    contract = export_planner(small_model, small_budget, 0.99, path, **SMALL_EXPORT)
    return path, contract
