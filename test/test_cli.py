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
