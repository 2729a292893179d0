"""ros2 launch tdmpc2_ros learn.launch.py — the 'learn' node set: sim, planner, recorder and trainer (the closed learning loop) of tdmpc2_ros.ros.bringup."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _description import describe  # noqa: E402


def generate_launch_description():
    return describe("learn")
