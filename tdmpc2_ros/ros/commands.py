"""Where a command vector becomes a message: the other end of runtime/observations.py. Three standard types,
one per kind of controller a robot runs (`command_type` in config/planner.yaml):

- `array`: std_msgs/Float64MultiArray, one value per actuator in the model's action order. What
  ros2_control's forward command controllers take (forward_command_controller, effort_controllers,
  velocity_controllers, position_controllers).
- `joint_trajectory`: trajectory_msgs/JointTrajectory with one point, reached one control period
  from now, for joint_trajectory_controller. Its header stamp is zero, which that controller reads
  as "start now", so the robot's clock and ours need not agree.
- `joint_state`: sensor_msgs/JointState, stamped now, as simulators' joint command topics take it
  (Isaac Sim's, for one).

For the last two, `command_joints` names the joint of each action element and `command_interface`
says which field carries the value: position (rad or m), velocity (rad/s or m/s) or effort (N m or
N), as REP-103 has them. Every value has already been scaled, clamped and rate-limited
(runtime/action_shaper.py); this only packs it, as runtime/command_fields.py lays it out (the
trainer reads raw bags' commands back from there).
"""

from __future__ import annotations

from builtin_interfaces.msg import Duration
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, MultiArrayDimension
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from tdmpc2_ros.runtime import command_fields
from tdmpc2_ros.runtime.command_fields import INTERFACES, check_command_parameters

COMMAND_TYPES = {"array": Float64MultiArray, "joint_trajectory": JointTrajectory, "joint_state": JointState}
assert tuple(COMMAND_TYPES) == command_fields.COMMAND_TYPES


class CommandWriter:
    """A command vector (physical units, one per action element) -> the configured message."""

    def __init__(self, kind: str, joints, interface: str, period_s: float, action_dim: int, clock=None):
        problems = check_command_parameters(kind, joints, interface)
        if kind != "array" and joints and len(joints) != action_dim:
            problems.append(f"command_joints names {len(joints)} joints ({', '.join(joints)}) but the model's "
                            f"action has {action_dim} elements")
        if problems:
            raise ValueError("; ".join(problems))
        self.kind, self.joints, self.interface, self.clock = kind, list(joints), interface, clock
        self.msg_type = COMMAND_TYPES[kind]
        nanoseconds = round(period_s * 1e9)
        self.reach_in = Duration(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)

    def describe(self) -> str:
        if self.kind == "array":
            return "std_msgs/Float64MultiArray"
        name = self.msg_type.__module__.split(".")[0] + "/" + self.msg_type.__name__
        return f"{name} ({self.interface} of {', '.join(self.joints)})"

    def message(self, command):
        """The message for one command; a JointState is stamped now by `clock` (the node's: sim time
        under use_sim_time)."""
        values = [float(x) for x in command]
        if self.kind == "array":
            msg = Float64MultiArray(data=values)
            msg.layout.dim = [MultiArrayDimension(label="action", size=len(values), stride=len(values))]
            return msg
        point_field, state_field = INTERFACES[self.interface]
        if self.kind == "joint_trajectory":
            point = JointTrajectoryPoint(time_from_start=self.reach_in)
            setattr(point, point_field, values)
            return JointTrajectory(joint_names=self.joints, points=[point])  # stamp zero: start now
        msg = JointState(name=self.joints)
        msg.header.stamp = self.clock.now().to_msg()
        setattr(msg, state_field, values)
        return msg
