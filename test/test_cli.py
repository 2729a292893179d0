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
