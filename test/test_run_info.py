"""`tdmpc2-ros info RUN_DIR`: where a training run stands, read from its logs (never its checkpoint):
the trainer from bags' run folder as the trainer writes it, the direct trainer's shipped benchmark run,
and a damaged one (exit 1, each problem named)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ros_harness import REPO
from tdmpc2_ros import cli
from tdmpc2_ros.training.run_info import is_run_folder, run_info
from test_offline_trainer import make_trainer, write_raw_bag, write_robot_bag

PENDULUM_RUN = REPO / "benchmark" / "results" / "pendulum-100k-s1"


def test_a_trainer_run_folder_shows_its_curve_bags_and_files(tmp_path, capsys):
    from tdmpc2_ros.training.offline import RawTopics

    rng = np.random.default_rng(7)
    raw = RawTopics("/obs", "/cmd", "/reward", "/episode", reward_tolerance_s=0.005, episode_return_topic="/return")
    _, returns = write_robot_bag(tmp_path / "bags", rng, [0, 1, 2])
    skipped = write_raw_bag(tmp_path / "bags", rng, rewards=False)  # no rewards: the ledger marks it skipped
    trainer = make_trainer(tmp_path / "run", raw=raw, action_low=[-2.0], action_high=[2.0], action_repeat=2)
    trainer.ingest_pending(tmp_path / "bags")
    trainer.save()
    assert is_run_folder(tmp_path / "run") and not is_run_folder(tmp_path / "bags")

    info = run_info(tmp_path / "run")
    assert info["kind"] == "run folder (trainer from bags)" and info["problems"] == []
    assert (info["task"], info["preset"], info["dims"]) == ("cartpole-swingup", "1M", {"obs": 5, "action": 1})
    curve = info["curve"]
    assert curve["episodes"] == 3 and curve["last_step"] == 57 * 2
    assert curve["last_return"] == pytest.approx(returns[-1], abs=1e-4)
    assert curve["mean_last_3"] == pytest.approx(np.mean(returns), abs=1e-2)
    assert info["bags"]["ingested"] == 1 and info["bags"]["transitions"] == 57 and info["bags"]["skipped"] == 1
    assert info["bags"]["last_skipped"].startswith(f"{skipped.name}: no rewards")
    assert info["files"]["checkpoint.pt"]["mb"] > 0 and info["files"]["weights.pt"] is None
    assert cli.main(["info", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "train.csv: 3 episodes to step 114" in out and "bags: 1 ingested (57 transitions)" in out
    assert cli.main(["info", str(tmp_path / "run"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["curve"]["episodes"] == 3


def test_the_shipped_pendulum_run_shows_its_final_evaluation(capsys):
    summary = json.loads((PENDULUM_RUN / "summary.json").read_text())
    info = run_info(PENDULUM_RUN)
    assert info["kind"] == "run folder (direct trainer)" and info["problems"] == []
    assert info["last_eval"]["return"] == summary["final_eval_return"] and info["last_eval"]["step"] == 100_000
    assert info["curve"]["last_step"] == 100_000 and info["steps_planned"] == 100_000
    assert cli.main(["info", str(PENDULUM_RUN)]) == 0
    assert f"final evaluation (summary.json): {summary['final_eval_return']}" in capsys.readouterr().out


def test_a_damaged_run_folder_names_each_problem_and_exits_1(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"task": "cartpole-swingup", "preset": "1M", "seed": 1}))
    (run / "train.csv").write_text("step,episode,episode_reward,length\n1000,1,12.5,500\n2000,2,oops,500\n")
    (run / "ingest_ledger.jsonl").write_text('{"bag": "a", "status": "ingested", "transitions": 10}\n{"bag": "b", "sta')
    info = run_info(run)
    assert any("train.csv" in p and "oops" in p for p in info["problems"]), info["problems"]
    assert any("ingest_ledger.jsonl line 2" in p for p in info["problems"]), info["problems"]
    assert info["bags"]["ingested"] == 1  # what could be read is still shown
    assert cli.main(["info", str(run)]) == 1
    assert "PROBLEM: ingest_ledger.jsonl line 2" in capsys.readouterr().out
