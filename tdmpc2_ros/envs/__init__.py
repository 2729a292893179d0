"""Environments the direct trainer drives in-process (no ROS)."""

from tdmpc2_ros.envs.dmc import DMControlEnv, make_env

__all__ = ["DMControlEnv", "make_env"]
