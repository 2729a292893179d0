"""The node executables' console-script entry points (setup.py), which `ros2 run` and launch files start.

Why not `tdmpc2_ros.ros.planner_node:main` directly: a console script imports its target's module
before it calls the function, and a node module imports rclpy, onnxruntime and (the trainer) torch,
up to a few seconds. A stop in that window would be a KeyboardInterrupt traceback out of an import.
This module imports nothing heavy. Each entry point runs its node module as `python -m` does, as
`__main__`, so the module takes its stop signals before its own imports (see the `__main__` block at
the top of each node module): the console script and the bringup start a node the same way.
"""

from __future__ import annotations

import runpy


def _run_as_main(node: str) -> None:
    """`python -m tdmpc2_ros.ros.<node>`: its last line exits with the node's return code."""
    runpy.run_module(f"tdmpc2_ros.ros.{node}", run_name="__main__", alter_sys=True)


def planner_node() -> None:
    _run_as_main("planner_node")


def sim_node() -> None:
    _run_as_main("sim_node")


def recorder_node() -> None:
    _run_as_main("recorder_node")


def trainer_node() -> None:
    _run_as_main("trainer_node")


def reward_node() -> None:
    _run_as_main("reward_node")
