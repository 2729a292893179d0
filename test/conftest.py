"""Shared fixtures of the tdmpc2_ros test suite.

Everything runs on CPU with 2 threads. Exports are the expensive part of the suite (10-60 s each),
so the small planner graph that several files use is exported once per session. Constants and
model builders live in core_helpers.py (import them from there; they are re-exported here for
older imports).
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)

from core_helpers import (  # noqa: E402,F401
    SMALL_ACTION_DIM,
    SMALL_EXPORT,
    SMALL_OBS_DIM,
    TINY_BUDGET,
    make_model,
    perturb_,
)
from tdmpc2_ros.core.world_model import WorldModel  # noqa: E402
from tdmpc2_ros.runtime.budget import PlanBudget  # noqa: E402


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


@pytest.fixture(scope="module")
def ladder(tmp_path_factory):
    """The small model's budget ladder (ros_harness.small_ladder: exported once per session)."""
    from ros_harness import small_ladder

    return small_ladder(tmp_path_factory)


@pytest.fixture
def ros():
    """An rclpy context of its own (ros_harness.Ros), closed after the test."""
    from ros_harness import Ros

    r = Ros()
    yield r
    r.close()
