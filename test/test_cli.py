"""The `tdmpc2-ros` command's help: every option of every subcommand says what it does and shows
its default, so `tdmpc2-ros <command> --help` is enough to run it."""

from __future__ import annotations

import argparse

from tdmpc2_ros.cli import build_parser


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_option_of_every_subcommand_has_help_and_shows_its_default():
    commands = _subcommands()
    assert {"train", "export", "eval", "eval-ladder", "bench", "bench-loop", "bench-learn", "ship", "demo",
            "bringup"} <= set(commands)
    for name, parser in commands.items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"tdmpc2-ros {name}: {action.option_strings or action.dest} has no help"
        text = parser.format_help()
        assert "show this help message" in text
    train = " ".join(commands["train"].format_help().split())  # as read, not as wrapped
    assert "(default: 100000)" in train and "(default: cartpole-swingup)" in train


def test_train_from_raw_bags_refuses_a_command_format_that_cannot_work(tmp_path, capsys):
    """Before anything is read or trained: joint_state commands need the joint of each action element.
    The refused run leaves no log handler behind on the captured stream (cli.main runs in-process here)."""
    import logging

    from tdmpc2_ros import cli

    code = cli.main(["train", "--bags", str(tmp_path), "--run-dir", str(tmp_path / "run"), "--raw-observation-sources",
                     "joint_state:/joint_states:position:slider", "--raw-command-topic", "/c", "--raw-reward-topic", "/r",
                     "--raw-command-type", "joint_state", "--action-low", "-1", "--action-high", "1"])
    assert code == 2
    assert "raw mode: command_type joint_state needs command_joints" in capsys.readouterr().err
    assert not logging.getLogger("tdmpc2_ros.trainer").handlers


def test_a_bad_argument_is_one_line_and_status_2_not_a_traceback(tmp_path, capsys, monkeypatch):
    """A missing model, an unknown task (with the nearest names), a corrupt model: what the user gave
    is named on one line. TDMPC2_ROS_TRACEBACK=1 brings the traceback back."""
    import pytest

    from tdmpc2_ros import cli
    from tdmpc2_ros.runtime.contract import ModelLoadError

    monkeypatch.delenv("TDMPC2_ROS_TRACEBACK", raising=False)
    missing = tmp_path / "missing.onnx"
    assert cli.main(["eval", "--model", str(missing), "--episodes", "1"]) == 2
    err = capsys.readouterr().err
    assert f"tdmpc2-ros eval: error: cannot read planner model {missing}" in err and "Traceback" not in err
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not a graph")
    assert cli.main(["eval", "--model", str(corrupt), "--episodes", "1"]) == 2
    assert "tdmpc2-ros eval: error:" in capsys.readouterr().err
    assert cli.main(["train", "--task", "cartpole-swingip", "--steps", "10", "--run-dir", str(tmp_path / "r")]) == 2
    assert "did you mean cartpole-swingup" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # nothing was started: no empty run folder left behind
    monkeypatch.setenv("TDMPC2_ROS_TRACEBACK", "1")
    with pytest.raises(ModelLoadError):
        cli.main(["eval", "--model", str(missing), "--episodes", "1"])


def test_train_from_raw_bags_reads_every_raw_option_as_the_trainer_nodes_parameter():
    """`tdmpc2-ros train --bags` builds RawTopics from its options through the trainer node's own
    check (RawTopics.from_settings): each option reaches the field of the same parameter."""
    from tdmpc2_ros import cli
    from tdmpc2_ros.training.offline import RawTopics

    args = cli.build_parser().parse_args([
        "train", "--bags", "b", "--raw-observation-sources", "joint_state:/joint_states:position:slider",
        "--raw-command-topic", "/c", "--raw-reward-topic", "/r", "--raw-episode-topic", "/e", "--raw-pace", "command",
        "--raw-reward-at", "command",
        "--raw-command-scale", "10", "--raw-reward-tolerance-s", "0.009", "--tolerance-s", "0.002",
        "--raw-episode-return-topic", "/ret", "--action-low", "-1", "--action-high", "1"])
    raw = RawTopics.from_settings(vars(args), args.action_low, args.action_high)
    assert raw == RawTopics("", "/c", "/r", "/e", 0.002, ("joint_state:/joint_states:position:slider",),
                            reward_tolerance_s=0.009, episode_return_topic="/ret", command_scale=(10.0,), pace="command",
                            reward_at="command")
    from tdmpc2_ros.runtime.observations import PACES, REWARD_TIMES

    options = {a.dest: a for a in _subcommands()["train"]._actions}
    assert tuple(options["raw_pace"].choices) == PACES  # spelt out in the CLI, which does not import the runtime
    assert tuple(options["raw_reward_at"].choices) == REWARD_TIMES  # for --help
