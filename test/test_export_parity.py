"""Acceptance test: the exported ONNX planner graph computes what the torch planner computes.

For two task shapes, two presets and every planner, a perturbed world model is exported with
export_planner, loaded with the runtime's OnnxPlanner, and compared with make_planner's torch module
on the same obs / prev_mean / noise / explore. Each combination is its own test (exports take
10-60 s). MPPI at 1M runs the reference budget; the other combinations use a reduced budget to keep
export time down.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from core_helpers import SMALL_EXPORT, make_model
from tdmpc2_ros.core.export import export_planner
from tdmpc2_ros.core.planners import make_planner
from tdmpc2_ros.runtime import FORMAT_VERSION, OnnxPlanner, PlanBudget
from tdmpc2_ros.runtime.contract import INPUT_NAMES, OUTPUT_NAMES

TASKS = {"cartpole": (5, 1), "walker": (24, 6)}
REDUCED = dict(iterations=2, num_samples=128, num_elites=16, num_pi_trajs=8)
DISCOUNT = 0.99


def budget_for(kind: str, preset: str) -> PlanBudget:
    if kind == "mppi" and preset == "1M":
        return PlanBudget()  # the reference budget
    return PlanBudget(planner=kind, **REDUCED)


CASES = [(k, p, t) for k in ("mppi", "cem", "gradient") for p in ("1M", "5M") for t in TASKS]


def torch_plan(model, budget, obs, prev_mean, noise, explore):
    planner = make_planner(model, budget, DISCOUNT).eval()
    args = (torch.from_numpy(obs), torch.from_numpy(prev_mean), torch.from_numpy(noise), torch.tensor([float(explore)]))
    ctx = torch.enable_grad() if budget.planner == "gradient" else torch.no_grad()
    with ctx:
        action, mean, value, std = planner(*args)
    return action.detach().numpy(), mean.detach().numpy(), float(value.detach()[0]), std.detach().numpy()


@pytest.mark.parametrize("kind, preset, task", CASES, ids=[f"{k}-{p}-{t}" for k, p, t in CASES])
def test_onnx_matches_torch(tmp_path, kind, preset, task):
    obs_dim, action_dim = TASKS[task]
    seed = 17 * len(kind) + obs_dim + (1 if preset == "5M" else 0)
    model = make_model(preset, obs_dim, action_dim, seed=seed)  # all weights + 0.05 * N(0, 1)
    # Heads are non-trivial after the perturbation (reward and Q would decode to 0 at init).
    z = model.encode(torch.randn(4, obs_dim))
    assert model.two_hot.decode(model.reward(z, torch.zeros(4, action_dim))).abs().max() > 1e-3
    budget = budget_for(kind, preset)
    path = tmp_path / f"{kind}-{preset}-{task}.onnx"
    returned = export_planner(model, budget, DISCOUNT, path, task=f"{task}-test", train_step=4242,
                              checkpoint_sha256="cd" * 32)
    onnx_planner = OnnxPlanner(path, obs_dim=obs_dim, action_dim=action_dim, threads=2)

    # The contract carried by the graph is what was exported.
    c = onnx_planner.contract
    assert c == returned
    assert (c.obs.dim, c.action.dim, c.budget, c.preset) == (obs_dim, action_dim, budget, preset)
    assert (c.train_step, c.checkpoint_sha256, c.task, c.format_version) == (4242, "cd" * 32, f"{task}-test", FORMAT_VERSION)
    assert c.discount == pytest.approx(DISCOUNT)
    assert c.noise_size == budget.noise_size(action_dim)

    rng = np.random.default_rng(seed)
    for draw in range(3):
        obs = (rng.standard_normal(obs_dim) * (1 + draw)).astype(np.float32)
        prev_mean = np.clip(rng.standard_normal((budget.horizon, action_dim)), -1, 1).astype(np.float32)
        if draw == 0:
            prev_mean[:] = 0.0  # the first tick of an episode
        noise = rng.standard_normal(budget.noise_size(action_dim)).astype(np.float32)
        explore = draw == 1
        onnx_planner.prev_mean = prev_mean.copy()
        got = onnx_planner.plan(obs, explore=explore, noise=noise)
        a, mean, value, std = torch_plan(model, budget, obs, prev_mean, noise, explore)
        assert got.action.shape == (action_dim,) and got.mean.shape == (budget.horizon, action_dim)
        assert got.action.dtype == np.float32
        np.testing.assert_allclose(got.action, a, atol=1e-4, rtol=0, err_msg=f"action, draw {draw}")
        np.testing.assert_allclose(got.mean, mean, atol=1e-4, rtol=0, err_msg=f"next mean, draw {draw}")
        np.testing.assert_allclose(got.std, std, atol=1e-4, rtol=0, err_msg=f"std, draw {draw}")
        assert got.value == pytest.approx(value, rel=1e-4, abs=1e-5), f"value, draw {draw}"
        assert np.all(np.abs(got.action) <= 1.0)
        # The runtime carries the warm start to the next tick.
        np.testing.assert_array_equal(onnx_planner.prev_mean, got.mean)


def test_graph_opset_signature_and_metadata(small_onnx, small_budget):
    path, contract = small_onnx
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    opsets = {o.domain: o.version for o in proto.opset_import}
    assert opsets.get("", opsets.get("ai.onnx", 0)) >= 17, opsets
    assert [i.name for i in proto.graph.input] == list(INPUT_NAMES)
    assert [o.name for o in proto.graph.output] == list(OUTPUT_NAMES)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert "tdmpc2_ros" in meta

    planner = OnnxPlanner(path)
    c = planner.contract
    assert c.obs.dim == 5 and c.action.dim == 1
    assert c.budget == small_budget
    assert c.preset == "1M"
    assert c.format_version == FORMAT_VERSION
    assert c.checkpoint_sha256 == SMALL_EXPORT["checkpoint_sha256"]
    assert c.train_step == SMALL_EXPORT["train_step"]
    assert c.task == SMALL_EXPORT["task"]
    assert c == contract
    assert c.extra["model"]["latent_dim"] == 128
    # One standalone file (no external data), and the runtime reports what it loaded.
    assert len(list(path.parent.glob("*.data"))) == 0
    assert planner.obs_dim == 5 and planner.action_dim == 1
    assert len(planner.sha256) == 64


def test_onnx_plan_reproducible_and_seeded(small_onnx):
    path, contract = small_onnx
    a = OnnxPlanner(path, seed=3)
    b = OnnxPlanner(path, seed=3)
    obs = np.linspace(-1, 1, 5).astype(np.float32)
    for _ in range(3):
        ra, rb = a.plan(obs, explore=True), b.plan(obs, explore=True)
        np.testing.assert_array_equal(ra.action, rb.action)
        np.testing.assert_array_equal(ra.mean, rb.mean)
    c = OnnxPlanner(path, seed=4)
    assert not np.array_equal(c.plan(obs).mean, OnnxPlanner(path, seed=3).plan(obs).mean)
    # reset() forgets the warm start.
    a.reset()
    assert np.all(a.prev_mean == 0) and a.prev_mean.shape == (contract.budget.horizon, 1)


def test_onnx_matches_torch_episodic_model(tmp_path):
    """The termination branch of the value estimate (episodic tasks) survives export too."""
    from core_helpers import TINY_BUDGET

    model = make_model("1M", 4, 2, seed=3, episodic=True)
    z = model.encode(torch.randn(256, 4))
    terminates = (model.termination_logit(z) > 0).float().mean().item()
    assert 0.05 < terminates < 0.95  # both branches are exercised
    budget = PlanBudget(planner="mppi", **TINY_BUDGET)
    path = tmp_path / "episodic.onnx"
    export_planner(model, budget, DISCOUNT, path)
    onnx_planner = OnnxPlanner(path, obs_dim=4, action_dim=2)
    rng = np.random.default_rng(0)
    for draw in range(3):
        obs = rng.standard_normal(4).astype(np.float32)
        prev_mean = np.clip(rng.standard_normal((3, 2)), -1, 1).astype(np.float32)
        noise = rng.standard_normal(budget.noise_size(2)).astype(np.float32)
        onnx_planner.prev_mean = prev_mean.copy()
        got = onnx_planner.plan(obs, explore=draw == 2, noise=noise)
        a, mean, value, std = torch_plan(model, budget, obs, prev_mean, noise, draw == 2)
        np.testing.assert_allclose(got.action, a, atol=1e-4, rtol=0)
        np.testing.assert_allclose(got.mean, mean, atol=1e-4, rtol=0)
        assert got.value == pytest.approx(value, rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("kind", ["mppi", "gradient"])
def test_live_weights_actor_follows_the_weights(kind):
    """The graph that acts while training takes the weights as inputs: it must plan exactly what the
    torch planner plans, and keep doing so after the weights change in place (an update)."""
    from tdmpc2_ros.core.export import LiveOnnxActor

    obs_dim, action_dim = TASKS["cartpole"]
    model = make_model("1M", obs_dim, action_dim, seed=11)
    budget = PlanBudget(planner=kind, **REDUCED)
    actor = LiveOnnxActor(model, budget, DISCOUNT, threads=2)
    rng = np.random.default_rng(5)
    for round_ in range(2):
        if round_ == 1:
            with torch.no_grad():  # what an optimiser step does: same tensors, new values
                for p in model.parameters():
                    p.add_(0.05 * torch.randn_like(p))
        obs = rng.standard_normal(obs_dim).astype(np.float32)
        prev_mean = np.clip(rng.standard_normal((budget.horizon, action_dim)), -1, 1).astype(np.float32)
        noise = rng.standard_normal(budget.noise_size(action_dim)).astype(np.float32)
        args = (torch.from_numpy(obs), torch.from_numpy(prev_mean), torch.from_numpy(noise), torch.tensor([1.0]))
        got = actor(*args)
        want = torch_plan(model, budget, obs, prev_mean, noise, True)
        for g, w, name in zip(got, want, OUTPUT_NAMES):
            np.testing.assert_allclose(g.numpy().reshape(-1), np.asarray(w, np.float32).reshape(-1), atol=1e-4, rtol=1e-4,
                                       err_msg=f"{name}, round {round_}")
