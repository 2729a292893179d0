"""How a command vector sits in each command message type, with no ROS imported: the planner packs
commands this way (ros/commands.py), and the trainer reads them back from raw bags the same way
(bags/reader.py: episodes_from_raw), so the two cannot disagree on a field or a joint order.

- `array`: std_msgs/Float64MultiArray, the vector itself;
- `joint_trajectory`: trajectory_msgs/JointTrajectory, the first point's field, joint by joint name;
- `joint_state`: sensor_msgs/JointState, its field, joint by joint name.
"""

from __future__ import annotations

import numpy as np

COMMAND_TYPES = ("array", "joint_trajectory", "joint_state")
# command_interface -> (the JointTrajectoryPoint field, the JointState field)
INTERFACES = {"position": ("positions", "position"), "velocity": ("velocities", "velocity"), "effort": ("effort", "effort")}


def check_command_parameters(kind: str, joints, interface: str) -> list[str]:
    """What is wrong with a command format on its own (its length against the model's action is
    checked where the model is known)."""
    problems = []
    if kind not in COMMAND_TYPES:
        problems.append(f"command_type must be one of {', '.join(COMMAND_TYPES)} (got {kind!r})")
    if interface not in INTERFACES:
        problems.append(f"command_interface must be one of {', '.join(INTERFACES)} (got {interface!r})")
    if kind in ("joint_trajectory", "joint_state") and not joints:
        problems.append(f"command_type {kind} needs command_joints: the joint of each action element, in order")
    if len(set(joints)) != len(joints) or any(not str(j).strip() for j in joints):
        problems.append(f"command_joints must be distinct, non-empty joint names (got {list(joints)})")
    return problems


def command_vector(msg, kind: str, joints, interface: str) -> np.ndarray:
    """The command vector a message carries, in `joints` order (the inverse of ros/commands.py's
    packing). Raises ValueError naming what is missing."""
    if kind == "array":
        return np.asarray(msg.data, np.float64)
    point_field, state_field = INTERFACES[interface]
    if kind == "joint_trajectory":
        if not len(msg.points):
            raise ValueError("a JointTrajectory without points")
        names, values = list(msg.joint_names), getattr(msg.points[0], point_field)
    else:
        names, values = list(msg.name), getattr(msg, state_field)
    missing = [j for j in joints if j not in names]
    if missing or len(values) != len(names):
        raise ValueError(f"no {interface} for joints {missing or list(joints)} (the message names {names} and "
                         f"carries {len(values)} {interface} values)")
    return np.array([float(values[names.index(j)]) for j in joints])
