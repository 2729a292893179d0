"""The shipped model folder is what its card says: every file's sha256 matches, every rung carries
the same source weights and training step, and the shipped graph plans exactly like the torch
planner rebuilt from the shipped weights."""

from __future__ import annotations

import json
import shlex

import numpy as np
import pytest
import torch

from ros_harness import REPO
from tdmpc2_ros.core.config import ModelConfig
from tdmpc2_ros.core.planners import make_planner
from tdmpc2_ros.core.world_model import WorldModel
from tdmpc2_ros.runtime import OnnxPlanner
from tdmpc2_ros.runtime.ladder import read_ladder
from tdmpc2_ros.runtime.digest import file_sha256

MODEL = REPO / "models" / "cartpole_swingup"


@pytest.fixture(scope="module")
def card():
    return json.loads((MODEL / "card.json").read_text())


def test_card_lists_every_file_with_its_sha256(card):
    shipped = {p.name for p in MODEL.iterdir() if p.is_file()} - {"card.json", "MODEL_CARD.md"}
    assert shipped == set(card["files"])
    for name, sha in card["files"].items():
        assert file_sha256(MODEL / name) == sha, name
    text = (MODEL / "MODEL_CARD.md").read_text()
    assert card["reproduce"] in text and str(card["evaluation"]["mean"]) in text
    assert card["evaluation"]["episodes"] == len(card["evaluation"]["returns"]) >= 10
    assert "tdmpc2-ros train" in card["reproduce"] and "--seed" in card["reproduce"]
    assert card["gradient_updates"] > 0, "a shipped model must have been trained"


def test_every_rung_is_the_same_model(card):
    rungs = read_ladder(MODEL)
    assert len(rungs) >= 2
    for rung in rungs:
        planner = OnnxPlanner(rung.path, obs_dim=5, action_dim=1, expected_sha256=rung.sha256)
        c = planner.contract
        assert c.task == card["task"] == "cartpole-swingup"
        assert c.train_step == card["env_steps"]
        assert c.checkpoint_sha256 == card["source_weights_sha256"]
        assert c.budget == rung.budget
    costs = [r.budget.iterations * r.budget.num_samples for r in rungs]
    assert costs == sorted(costs, reverse=True)  # largest first


def test_shipped_graph_plans_like_the_shipped_weights():
    w = torch.load(MODEL / "weights.pt", map_location="cpu", weights_only=False)
    model = WorldModel(ModelConfig(**w["model_config"])).eval()
    model.load_state_dict(w["model"])
    rung = read_ladder(MODEL)[-1]  # the cheapest rung: same weights, quick to compare
    onnx_planner = OnnxPlanner(rung.path, obs_dim=5, action_dim=1)
    torch_planner = make_planner(model, onnx_planner.contract.budget, onnx_planner.contract.discount)
    # Observations the model was trained on (a random walk of the real task). Far off-distribution
    # inputs can make every candidate's value tie exactly, and the order of exact ties is not part of
    # the contract.
    from tdmpc2_ros.envs import DMControlEnv

    env, rng = DMControlEnv("cartpole-swingup", seed=3), np.random.default_rng(1)
    env.reset()
    observations = [env.step(rng.uniform(-1, 1, 1))[0].astype(np.float32) for _ in range(60)][19::20]
    for obs in observations:
        noise = onnx_planner.draw_noise()
        onnx_planner.reset()
        got = onnx_planner.plan(obs, noise=noise)
        with torch.no_grad():
            want = torch_planner(torch.from_numpy(obs), torch.zeros(3, 1), torch.from_numpy(noise), torch.zeros(1))
        np.testing.assert_allclose(got.action, want[0].numpy(), atol=1e-4)


def _parses(command: str) -> list:
    """Each `tdmpc2-ros ...` part of a shell line, parsed by the CLI's own parser (argparse exits on
    an unknown flag or a missing required one)."""
    from tdmpc2_ros.cli import build_parser

    parsed = []
    for part in command.split("&&"):
        words = shlex.split(part)
        assert words[0] == "tdmpc2-ros", part
        parsed.append(build_parser().parse_args(words[1:]))
    return parsed


def test_the_cards_reproduce_command_runs_as_written(card):
    train, ship = _parses(card["reproduce"])
    assert (train.func.__name__, ship.func.__name__) == ("cmd_train", "cmd_ship")
    assert (train.task, train.preset, train.seed) == (card["task"], card["preset"], card["train_seed"])
    assert train.steps == card["env_steps"]
    assert (ship.episodes, ship.eval_seed) == (card["evaluation"]["episodes"], card["evaluation"]["eval_seed"])


def test_ship_writes_the_runs_own_training_command(tmp_path, monkeypatch):
    from tdmpc2_ros.training.ship import training_command

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({
        "task": "pendulum-swingup", "steps": 100000, "preset": "1M", "seed": 3, "planner": "mppi", "eval_freq": 20000,
        "eval_episodes": 10, "checkpoint_freq": 2000, "compile": True}))
    (train,) = _parses(training_command(str(run / "checkpoint.pt")))
    assert (train.task, train.steps, train.seed, train.compile, train.run_dir) == ("pendulum-swingup", 100000, 3, True, str(run))
    assert train.device == "cpu"  # a run from before the device option, or on the CPU: no flag
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "device": "cuda"}))
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # --device cuda parses where there is a GPU
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    (train,) = _parses(training_command(str(run / "checkpoint.pt")))
    assert train.device == "cuda"
    with pytest.raises(ValueError, match="pass --reproduce"):
        training_command(str(tmp_path / "elsewhere" / "weights.pt"))
