"""MuJoCo simulation behind the ROS topic contract (no ROS, no torch here).

``SimEngine`` steps a dm_control suite task or a user's MJCF file with commands in physical units;
``tdmpc2_ros.ros.sim_node`` wraps it in a ROS 2 node.
"""

from tdmpc2_ros.sim.engine import SimEngine

__all__ = ["SimEngine"]
