"""Where training runs (core/device.py, the agent's and trainers' `device`). This machine class has
no GPU: here the checks are that CPU training is unchanged, that a GPU asked for where there is none
is refused with a message, and that 'auto' falls back to the CPU. The same code on a GPU is checked
by gpu_checks/cuda_checks.py on a machine that has one (docs/benchmarks.md, "Training on a GPU")."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from ros_harness import REPO
from tdmpc2_ros.benchmark.core import random_buffer
from tdmpc2_ros.core.agent import TDMPC2
from tdmpc2_ros.core.config import ModelConfig, TrainConfig
from tdmpc2_ros.core.device import resolve_device
from tdmpc2_ros.core.world_model import WorldModel
from tdmpc2_ros.runtime import PlanBudget


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def test_cpu_and_auto_without_a_gpu_are_the_cpu(no_gpu):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:1"])
def test_a_gpu_where_torch_sees_none_is_refused_with_what_to_do(no_gpu, name):
    with pytest.raises(ValueError, match=rf"device '{name}': torch .* sees no CUDA GPU.*use device cpu, or auto"):
        resolve_device(name)


@pytest.mark.parametrize("name", ["tpu", "gpu", "", "cuda:x", "mps"])
def test_an_unknown_device_is_refused_naming_the_choices(name):
    with pytest.raises(ValueError, match=r"device must be one of cpu, cuda, auto \(or cuda:N\)"):
        resolve_device(name)


def test_an_agent_asked_for_a_missing_gpu_is_refused_before_it_builds_anything(no_gpu):
    with pytest.raises(ValueError, match="sees no CUDA GPU"):
        TDMPC2(ModelConfig.from_preset("1M", 5, 1), TrainConfig(), PlanBudget.reference(1), 0.99, device="cuda")


def test_act_backend_auto_is_onnx_on_the_cpu_and_unknown_backends_are_refused():
    cfg = ModelConfig.from_preset("1M", 5, 1)
    agent = TDMPC2(cfg, TrainConfig(), PlanBudget.reference(1), 0.99, act_backend="auto")
    assert agent.act_backend == "onnx" and agent.device == torch.device("cpu")
    with pytest.raises(ValueError, match="act_backend must be 'auto', 'torch' or 'onnx'"):
        TDMPC2(cfg, TrainConfig(), PlanBudget.reference(1), 0.99, act_backend="jax")


def test_the_bins_move_with_the_model_and_are_not_saved():
    """Two-hot bins are a buffer so .to(device) carries them, but not a saved one: every weights.pt
    and checkpoint written before (the shipped model's too) loads unchanged."""
    model = WorldModel(ModelConfig.from_preset("1M", 5, 1))
    assert "two_hot.bins" in dict(model.named_buffers())
    assert not any("two_hot" in k for k in model.state_dict())
    shipped = torch.load(REPO / "models" / "cartpole_swingup" / "weights.pt", map_location="cpu", weights_only=False)
    model.load_state_dict(shipped["model"])  # strict: no key missing, none unexpected
    assert model.two_hot.bins.to(torch.float64).sub(torch.linspace(-10, 10, 101, dtype=torch.float64)).abs().max() < 1e-6


def test_a_cpu_agent_keeps_its_state_on_the_cpu_and_saves_no_gpu_generator():
    agent = TDMPC2(ModelConfig.from_preset("1M", 24, 6), TrainConfig(), PlanBudget.reference(6), 0.99, device="cpu")
    buf = random_buffer(episodes=1)
    metrics = agent.update(*buf.sample(32))
    assert np.isfinite(metrics["total_loss"]) and agent.updates == 1
    state = agent.state_dict()
    assert "cuda_rng" not in state
    assert state["scale"]["value"].device.type == "cpu" and state["prev_mean"].device.type == "cpu"


def test_bench_train_writes_json_and_a_table(tmp_path):
    out = tmp_path / "train.json"
    run = subprocess.run([sys.executable, "-m", "tdmpc2_ros.cli", "bench-train", "--device", "cpu", "--presets", "1M",
                          "--modes", "eager", "--repeats", "2", "--batch-size", "32", "--out", str(out)],
                         capture_output=True, text=True, timeout=600, cwd=REPO)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert (row["preset"], row["mode"], row["parameters"]) == ("1M", "eager", 1_214_651)
    assert row["update"]["n"] == 2 and row["update"]["median_ms"] > 0 and row["act"]["n"] == 2
    assert "peak_gpu_mb" not in row and result["machine"]["device"] == "cpu" and result["batch_size"] == 32
    table = out.with_suffix(".md").read_text()
    assert "| 1M | 1,214,651 | eager |" in table and "Training on cpu" in table


def test_bench_train_refuses_unknown_modes(tmp_path):
    run = subprocess.run([sys.executable, "-m", "tdmpc2_ros.cli", "bench-train", "--device", "cpu", "--modes", "fast",
                          "--out", str(tmp_path / "t.json")], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert run.returncode != 0 and "--modes takes auto or a list of eager, compiled, graphs" in run.stderr
    run = subprocess.run([sys.executable, "-m", "tdmpc2_ros.cli", "bench-train", "--device", "cpu", "--modes", "graphs",
                          "--out", str(tmp_path / "t.json")], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert run.returncode != 0 and "--modes graphs (CUDA graphs) needs --device cuda" in run.stderr


def test_compile_modes_on_a_cpu():
    """CUDA graphs need a GPU: asked for on a CPU they are refused, and "auto" there is plain
    torch.compile, which leaves acting to ONNX Runtime."""
    agent = TDMPC2(ModelConfig.from_preset("1M", 5, 1), TrainConfig(), PlanBudget.reference(1), 0.99, device="cpu")
    with pytest.raises(ValueError, match="'graphs' .CUDA graphs. needs a GPU; this agent is on cpu"):
        agent.compile("graphs")
    with pytest.raises(ValueError, match="compile mode must be 'auto', 'default' or 'graphs', not 'fast'"):
        agent.compile("fast")
    assert not hasattr(agent, "_model_loss")  # a refused compile changed nothing
    agent.compile("auto")
    assert hasattr(agent, "_model_loss") and hasattr(agent, "_pi_value")
    assert not agent.graphs and not hasattr(agent, "_plan")


def test_the_cli_refuses_a_device_this_machine_lacks_as_a_usage_error(capsys):
    from tdmpc2_ros.cli import build_parser

    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["train", "--device", "tpu"])
    assert info.value.code == 2
    assert "argument --device: device must be one of cpu, cuda, auto" in capsys.readouterr().err
    args = build_parser().parse_args(["train", "--device", "auto"])
    assert args.device == ("cuda" if torch.cuda.is_available() else "cpu")  # recorded as what it chose
    assert build_parser().parse_args(["bench-train"]).device == args.device
