"""Checks of training on a CUDA GPU. CI has no GPU, so these are not in test/ (where a skip would
be counted as a pass); run them on a machine with one:

    python -m pytest gpu_checks/cuda_checks.py -q

They fail, not skip, where torch sees no GPU. What they hold: the world model computes the same
numbers on the GPU as on the CPU; updates train there and resume exactly from a checkpoint; a
checkpoint moves between devices; the planner acts on the GPU; compiled and CUDA-graph updates and
acts compute eager's numbers; and a model trained there exports and validates (parity with torch, spec, latency) through the offline trainer, on the CPU, as on a robot.
"""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch

from tdmpc2_ros.benchmark.core import random_buffer
from tdmpc2_ros.core.agent import TDMPC2
from tdmpc2_ros.core.config import ModelConfig, TrainConfig
from tdmpc2_ros.core.device import resolve_device
from tdmpc2_ros.core.export import export_planner
from tdmpc2_ros.core.planners import make_planner
from tdmpc2_ros.core.world_model import WorldModel
from tdmpc2_ros.runtime import OnnxPlanner, PlanBudget

OBS, ACT = 24, 6
CUDA = torch.device("cuda")


def setup_module():
    assert torch.cuda.is_available(), "these checks need a CUDA GPU that torch can see"
    assert not torch.backends.cuda.matmul.allow_tf32, "TF32 matmuls would change the numbers; TD-MPC2 trains in fp32"


def agent_on(device: str, preset: str = "1M", seed: int = 3) -> TDMPC2:
    return TDMPC2(ModelConfig.from_preset(preset, OBS, ACT), TrainConfig(), PlanBudget.reference(ACT), 0.99,
                  seed=seed, device=device, act_backend="auto")


def perturbed(model: WorldModel, seed: int = 0) -> WorldModel:
    """Every parameter off the reference initialisation's zeros, as in a trained model."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g).to(p.device))
    return model


def test_auto_and_cuda_resolve_to_the_gpu():
    assert resolve_device("auto").type == "cuda"
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ValueError, match="cuda:0..cuda:"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_the_world_model_computes_the_same_numbers_on_the_gpu():
    cpu = perturbed(WorldModel(ModelConfig.from_preset("5M", OBS, ACT))).eval()
    gpu = copy.deepcopy(cpu).to(CUDA)
    g = torch.Generator().manual_seed(1)
    obs, a = torch.randn(64, OBS, generator=g), torch.rand(64, ACT, generator=g) * 2 - 1
    eps = torch.randn(64, ACT, generator=g)
    with torch.no_grad():
        z_c, z_g = cpu.encode(obs), gpu.encode(obs.to(CUDA))
        pairs = [(z_c, z_g), (cpu.next(z_c, a), gpu.next(z_g, a.to(CUDA))),
                 (cpu.reward(z_c, a), gpu.reward(z_g, a.to(CUDA))),
                 (cpu.Q_logits(z_c, a), gpu.Q_logits(z_g, a.to(CUDA))),
                 (cpu.pi(z_c, eps)[0], gpu.pi(z_g, eps.to(CUDA))[0]),
                 (cpu.two_hot.decode(cpu.reward(z_c, a)), gpu.two_hot.decode(gpu.reward(z_g, a.to(CUDA))))]
    assert gpu.two_hot.bins.device.type == "cuda"
    for want, got in pairs:
        assert got.device.type == "cuda"
        torch.testing.assert_close(got.cpu(), want, atol=1e-4, rtol=1e-4)


def test_the_torch_planner_on_the_gpu_plans_what_the_exported_graph_plans(tmp_path):
    model = perturbed(WorldModel(ModelConfig.from_preset("1M", OBS, ACT))).eval()
    budget = PlanBudget.reference(ACT)
    path = tmp_path / "p.onnx"
    export_planner(model, budget, 0.99, path)
    onnx = OnnxPlanner(path, obs_dim=OBS, action_dim=ACT, threads=4)
    planner = make_planner(copy.deepcopy(model).to(CUDA), budget, 0.99).eval()
    rng = np.random.default_rng(0)
    for _ in range(3):
        obs = rng.standard_normal(OBS).astype(np.float32)
        noise = rng.standard_normal(budget.noise_size(ACT)).astype(np.float32)
        onnx.reset()
        got = onnx.plan(obs, noise=noise)
        with torch.no_grad():
            _, mean, value, _ = planner(torch.from_numpy(obs).to(CUDA), torch.zeros(budget.horizon, ACT, device=CUDA),
                                        torch.from_numpy(noise).to(CUDA), torch.zeros(1, device=CUDA))
        np.testing.assert_allclose(mean.cpu().numpy(), got.mean, atol=1e-3)
        assert abs(float(value) - got.value) <= 1e-3 * max(1.0, abs(got.value))


def test_updates_train_on_the_gpu_and_the_weights_stay_there():
    agent = agent_on("cuda")
    assert agent.act_backend == "torch"  # the live ONNX actor is for CPU weights
    buf = random_buffer()
    first = [agent.update(*buf.sample(256)) for _ in range(3)]
    for _ in range(60):
        last = agent.update(*buf.sample(256))
    assert agent.updates == 63
    assert all(p.device.type == "cuda" and torch.isfinite(p).all() for p in agent.model.parameters())
    assert all(np.isfinite(v) for v in last.values())
    assert last["total_loss"] < first[0]["total_loss"]


def test_a_gpu_run_resumes_exactly_from_its_checkpoint():
    buf = random_buffer()
    batches = [buf.sample(256) for _ in range(10)]
    a = agent_on("cuda")
    for b in batches[:5]:
        a.update(*b)
    # The trainers keep torch's global CPU generator (the ensemble pairs) beside the agent's state.
    saved, cpu_rng = _saved(a.state_dict()), torch.get_rng_state()
    for b in batches[5:]:
        a.update(*b)
    b_agent = agent_on("cuda", seed=99)  # different weights and generators until the checkpoint is loaded
    b_agent.load_state_dict(torch.load(io.BytesIO(saved), map_location="cpu", weights_only=False))
    torch.set_rng_state(cpu_rng)
    for b in batches[5:]:
        b_agent.update(*b)
    for (name, pa), pb in zip(a.model.state_dict().items(), b_agent.model.state_dict().values()):
        torch.testing.assert_close(pb, pa, atol=1e-6, rtol=0, msg=name)
    assert float(a.scale.value) == pytest.approx(float(b_agent.scale.value), abs=1e-6)


def test_a_checkpoint_moves_between_the_gpu_and_the_cpu():
    gpu = agent_on("cuda")
    buf = random_buffer()
    for _ in range(3):
        gpu.update(*buf.sample(256))
    state = torch.load(io.BytesIO(_saved(gpu.state_dict())), map_location="cpu", weights_only=False)
    cpu = agent_on("cpu", seed=5)
    cpu.load_state_dict(state)
    for name, p in gpu.model.state_dict().items():
        torch.testing.assert_close(cpu.model.state_dict()[name], p.cpu(), atol=0, rtol=0, msg=name)
    cpu.update(*buf.sample(256))  # the optimiser state came along and steps on the CPU
    assert cpu.updates == 4
    back = agent_on("cuda", seed=6)
    back.load_state_dict(torch.load(io.BytesIO(_saved(cpu.state_dict())), map_location="cpu", weights_only=False))
    back.update(*buf.sample(256))
    assert back.updates == 5 and next(back.model.parameters()).device.type == "cuda"


def _saved(state) -> bytes:
    f = io.BytesIO()
    torch.save(state, f)
    return f.getvalue()


def test_acting_on_the_gpu_is_reproducible_and_in_bounds():
    actions = []
    for _ in range(2):
        agent = agent_on("cuda")
        obs = np.random.default_rng(0).standard_normal((5, OBS)).astype(np.float32)
        actions.append(np.stack([agent.act(o, t0=i == 0, explore=True) for i, o in enumerate(obs)]))
    assert actions[0].shape == (5, ACT) and np.all(np.abs(actions[0]) <= 1.0)
    np.testing.assert_allclose(actions[0], actions[1], atol=1e-6)
    with pytest.raises(ValueError, match="observation spec"):
        agent.act(np.full(OBS, np.nan, np.float32))


@pytest.mark.parametrize("mode", ["default", "graphs"])
def test_compiled_updates_on_the_gpu_match_eager_ones(mode):
    buf = random_buffer()
    batches = [buf.sample(256) for _ in range(3)]
    eager, compiled = agent_on("cuda"), agent_on("cuda")
    compiled.compile(mode)
    torch._inductor.config.fallback_random = True  # the TD target's policy draw as eager draws it
    pair = torch.tensor([0, 1], device=CUDA)
    torch.cuda.manual_seed(0)
    want = [float(eager.model_loss(*[torch.as_tensor(x, device=CUDA) for x in b], pair)[0].detach()) for b in batches]
    torch.cuda.manual_seed(0)
    got = []
    for b in batches:
        compiled._new_graph_step()  # a graph's outputs are read before its next replay, as update() does
        got.append(float(compiled._model_loss(*[torch.as_tensor(x, device=CUDA) for x in b], pair)[0].detach()))
    assert got == pytest.approx(want, rel=1e-3)


def test_cuda_graph_updates_and_acts_interleave_and_match_eager_ones():
    """What `train --compile` runs on a GPU: updates and acts alternating, each captured as CUDA
    graphs. Every graph is captured (none skipped for a CPU tensor or a dynamic shape), outputs kept
    across steps are not overwritten by later replays, and the numbers are eager's."""
    from torch._dynamo.utils import counters

    buf = random_buffer()
    batches = [buf.sample(256) for _ in range(6)]
    obs = np.random.default_rng(1).standard_normal((6, OBS)).astype(np.float32)
    torch._inductor.config.fallback_random = True
    runs = {}
    for mode in ("eager", "graphs"):
        agent = agent_on("cuda")
        perturbed(agent.model, seed=1)  # ties among zero-initialised heads would let the elites differ
        if mode == "graphs":
            counters.clear()
            agent.compile("graphs")
        torch.cuda.manual_seed(0)
        metrics, actions = [], []
        for i, (b, o) in enumerate(zip(batches, obs)):
            actions.append(agent.act(o, t0=i == 0, explore=False))
            metrics.append(agent.update(*b))
        runs[mode] = (metrics, np.stack(actions), agent)
    assert counters["inductor"]["cudagraph_skips"] == 0, dict(counters["inductor"])
    assert runs["graphs"][2].graphs and hasattr(runs["graphs"][2], "_plan")
    (em, ea, _), (gm, ga, _) = runs["eager"], runs["graphs"]
    np.testing.assert_allclose(ga, ea, atol=1e-3)
    for e, g in zip(em, gm):
        for key in ("consistency_loss", "reward_loss", "value_loss", "total_loss"):
            assert g[key] == pytest.approx(e[key], rel=1e-2), (key, e, g)
    assert gm[0]["total_loss"] == pytest.approx(em[0]["total_loss"], rel=1e-3)


def test_a_model_trained_on_the_gpu_exports_and_validates_on_the_cpu(tmp_path):
    from tdmpc2_ros.runtime.model_store import ModelStore
    from tdmpc2_ros.training.offline import OfflineTrainer

    t = OfflineTrainer(tmp_path / "run", OBS, ACT, preset="1M", min_transitions=100, device="cuda",
                       budgets=[PlanBudget(iterations=2, num_samples=64, num_elites=8, num_pi_trajs=4)],
                       control_rate_hz=1.0, latency_runs=5)
    assert t.agent.device.type == "cuda" and t.config()["device"].startswith("cuda")
    rng = np.random.default_rng(0)
    for _ in range(2):  # episodes straight into the buffer: no bags needed for this check
        t.buffer.add_episode(rng.standard_normal((201, OBS)), rng.uniform(-1, 1, (200, ACT)), rng.random(200))
        t.transitions += 200
        t.longest_episode = 200
    assert t.train(20)["updates"] == 20
    manifest = t.export_and_validate(ModelStore(tmp_path / "store"))
    assert manifest is not None, t.last_failure
    assert next(t.agent.model.parameters()).device.type == "cuda"  # the export used a CPU copy
    t.save()
    resumed = OfflineTrainer(tmp_path / "run", OBS, ACT, preset="1M", min_transitions=100, device="cpu",
                             budgets=[PlanBudget(iterations=2, num_samples=64, num_elites=8, num_pi_trajs=4)])
    assert resumed.updates == 20 and resumed.agent.device.type == "cpu"
