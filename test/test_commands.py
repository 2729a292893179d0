"""The planner's command message (ros/commands.py): Float64MultiArray for forward command controllers,
one-point JointTrajectory for joint_trajectory_controller, JointState for simulators' joint commands.
Packing on its own, the refusals, then each type from a running planner over DDS."""

from __future__ import annotations

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from core_helpers import SMALL_OBS_DIM
from ros_harness import Ros
from tdmpc2_ros.ros import qos
from tdmpc2_ros.ros.commands import CommandWriter
from tdmpc2_ros.ros.params import PlannerParams
from tdmpc2_ros.runtime.command_fields import command_vector

CMD_TOPIC, OBS_TOPIC = "/tdmpc2_controller/commands", "/tdmpc2/observation"


class FixedClock:
    def now(self):
        class Now:
            def to_msg(self):
                return Time(sec=12, nanosec=5)

        return Now()


def test_an_array_command_is_the_vector_in_action_order():
    msg = CommandWriter("array", (), "effort", 0.02, 2).message(np.array([0.5, -3.0]))
    assert isinstance(msg, Float64MultiArray) and list(msg.data) == [0.5, -3.0]
    assert [(d.label, d.size) for d in msg.layout.dim] == [("action", 2)]


@pytest.mark.parametrize("interface, field", [("position", "positions"), ("velocity", "velocities"), ("effort", "effort")])
def test_a_trajectory_command_is_one_point_one_period_ahead_in_the_chosen_field(interface, field):
    msg = CommandWriter("joint_trajectory", ("shoulder", "elbow"), interface, 1.5, 2).message(np.array([0.25, -1.0]))
    assert isinstance(msg, JointTrajectory) and list(msg.joint_names) == ["shoulder", "elbow"]
    (point,) = msg.points
    assert list(getattr(point, field)) == [0.25, -1.0]
    assert all(len(getattr(point, other)) == 0 for other in ("positions", "velocities", "effort") if other != field)
    assert (point.time_from_start.sec, point.time_from_start.nanosec) == (1, 500_000_000)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (0, 0)  # zero: the controller starts it now
    fast = CommandWriter("joint_trajectory", ("j",), interface, 1 / 50, 1).message([1.0]).points[0].time_from_start
    assert (fast.sec, fast.nanosec) == (0, 20_000_000)


def test_a_joint_state_command_is_stamped_by_the_nodes_clock():
    msg = CommandWriter("joint_state", ("slider",), "velocity", 0.02, 1, FixedClock()).message([0.75])
    assert isinstance(msg, JointState) and list(msg.name) == ["slider"] and list(msg.velocity) == [0.75]
    assert len(msg.position) == 0 and len(msg.effort) == 0
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (12, 5)


@pytest.mark.parametrize("kind", ["array", "joint_trajectory", "joint_state"])
@pytest.mark.parametrize("interface", ["position", "velocity", "effort"])
def test_the_trainer_reads_back_what_the_planner_packs(kind, interface):
    """runtime/command_fields.py: command_vector (raw bags, bags/reader.py) inverts the packing, joint by name."""
    joints = () if kind == "array" else ("shoulder", "elbow")
    msg = CommandWriter(kind, joints, interface, 0.02, 2, FixedClock()).message(np.array([0.5, -2.0]))
    assert command_vector(msg, kind, joints, interface).tolist() == [0.5, -2.0]
    if kind != "array":  # a controller that lists the joints in another order
        assert command_vector(msg, kind, joints[::-1], interface).tolist() == [-2.0, 0.5]
        with pytest.raises(ValueError, match=r"no .* for joints \['wrist'\]"):
            command_vector(msg, kind, ("wrist",), interface)


@pytest.mark.parametrize("kind, joints, interface, why", [
    ("twist", (), "effort", "command_type must be one of array, joint_trajectory, joint_state"),
    ("joint_state", (), "effort", "command_type joint_state needs command_joints"),
    ("joint_trajectory", ("a",), "torque", "command_interface must be one of position, velocity, effort"),
    ("joint_trajectory", ("a", "a"), "position", "command_joints must be distinct"),
    ("joint_trajectory", ("a", "b"), "position", "names 2 joints (a, b) but the model's action has 1 elements"),
])
def test_command_parameters_that_cannot_work_are_refused_with_the_reason(kind, joints, interface, why):
    with pytest.raises(ValueError, match=why.replace("(", r"\(").replace(")", r"\)")):
        CommandWriter(kind, joints, interface, 0.02, 1)
    if "model's action" not in why:  # the rest is caught with the other parameters, before any model loads
        with pytest.raises(ValueError, match="invalid planner parameters"):
            PlannerParams(command_type=kind, command_joints=joints, command_interface=interface).validate()


def start_planner(ros: Ros, ladder, **params):
    from tdmpc2_ros.ros.planner_node import PlannerNode

    overrides = {"model_path": str(ladder), "ladder_warmup": 2, "ladder_runs": 5, "trigger": "timer",
                 "max_observation_age_s": 1.0, "action_low": [-0.2], "action_high": [0.3], **params}
    return ros.add(PlannerNode(context=ros.context, parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()]))


def observe_and_collect(ros: Ros, msg_type, count: int = 20) -> list:
    n = ros.node("robot")
    got = []
    n.create_subscription(msg_type, CMD_TOPIC, got.append, qos.COMMAND)
    pub = n.create_publisher(Float64MultiArray, OBS_TOPIC, qos.SENSOR)
    rng = np.random.default_rng(0)
    n.create_timer(0.02, lambda: pub.publish(Float64MultiArray(data=list(rng.normal(0, 3, SMALL_OBS_DIM)))))
    assert ros.spin_until(lambda: len(got) >= count, 60), f"{len(got)} {msg_type.__name__} commands"
    return got


def test_the_planner_sends_trajectory_points_for_the_named_joint_within_the_limits(ros, ladder):
    node = start_planner(ros, ladder, command_type="joint_trajectory", command_joints=["slider"],
                         command_interface="position", control_rate_hz=25.0)
    got = observe_and_collect(ros, JointTrajectory)
    assert all(list(m.joint_names) == ["slider"] and len(m.points) == 1 for m in got)
    positions = np.array([m.points[0].positions[0] for m in got])
    assert np.all(positions >= -0.2 - 1e-12) and np.all(positions <= 0.3 + 1e-12) and np.ptp(positions) > 0
    assert {(m.points[0].time_from_start.sec, m.points[0].time_from_start.nanosec) for m in got} == {(0, 40_000_000)}
    assert node.published >= len(got)


def test_the_planner_sends_joint_states_stamped_with_its_clock(ros, ladder):
    node = start_planner(ros, ladder, command_type="joint_state", command_joints=["slider"], command_interface="effort")
    before = node.get_clock().now().nanoseconds
    got = observe_and_collect(ros, JointState)
    assert all(list(m.name) == ["slider"] and len(m.effort) == 1 and len(m.position) == 0 for m in got)
    stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in got]
    assert stamps == sorted(stamps) and stamps[0] >= before


def test_a_planner_whose_joints_do_not_match_the_models_action_refuses_to_start(ros, ladder):
    with pytest.raises(ValueError, match=r"command_joints names 2 joints \(slider, hinge\) but the model's action has 1"):
        start_planner(ros, ladder, command_type="joint_trajectory", command_joints=["slider", "hinge"])
