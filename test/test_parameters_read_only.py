"""Every node reads its parameters once, at start. ROS would accept `ros2 param set` (or `ros2 param
load`) of any of them on a running node and the node would go on with the old value, without a word:
so each is declared read-only, and ROS refuses the change with the reason. The planner's two
parameters that do apply while running (ros/params.py: RUNTIME) stay writable."""

from __future__ import annotations

import rclpy
from rclpy.parameter import Parameter

from ros_harness import REPO
from tdmpc2_ros.ros import recorder_node, reward_node, sim_node, trainer_node
from tdmpc2_ros.ros.params import RUNTIME, PlannerParams


def read_only_flags(node, names) -> dict[str, bool]:
    return {d.name: d.read_only for d in node.describe_parameters(list(names))}


def assert_refused(node, name: str, value):
    before = node.get_parameter(name).value
    result = node.set_parameters([Parameter(name, value=value)])[0]
    assert not result.successful and "read-only" in result.reason and name in result.reason, result
    assert node.get_parameter(name).value == before


def test_the_planner_takes_model_path_and_deadline_fraction_while_running_and_refuses_the_rest(ros, ladder):
    from tdmpc2_ros.ros.planner_node import PlannerNode

    node = ros.add(PlannerNode(context=ros.context, parameter_overrides=[
        Parameter("model_path", value=str(ladder)), Parameter("ladder_warmup", value=2),
        Parameter("ladder_runs", value=5)]))
    names = [f.name for f in PlannerParams.__dataclass_fields__.values()]
    assert read_only_flags(node, names) == {n: n not in RUNTIME for n in names}
    assert set(RUNTIME) == {"model_path", "deadline_fraction"}
    # What `ros2 param load planner_gazebo.yaml` on a running planner would have done before: accepted, unused.
    assert_refused(node, "observation_sources", ["joint_state:/joint_states:position:slider"])
    assert_refused(node, "control_rate_hz", 10.0)
    assert_refused(node, "command_scale", [10.0])
    ok = node.set_parameters([Parameter("deadline_fraction", value=0.9)])[0]
    assert ok.successful and node.p.deadline_fraction == 0.9
    assert node.set_parameters([Parameter("use_sim_time", value=False)])[0].successful  # rclpy's own


def test_the_sim_and_the_recorder_refuse_every_change_while_running(ros, tmp_path):
    sim = ros.add(sim_node.SimNode(context=ros.context, parameter_overrides=[Parameter("mode", value="lockstep")]))
    assert read_only_flags(sim, sim_node.PARAMETERS) == {n: True for n in sim_node.PARAMETERS}
    assert_refused(sim, "mode", "realtime")
    recorder = ros.add(recorder_node.RecorderNode(context=ros.context, parameter_overrides=[
        Parameter("bag_dir", value=str(tmp_path / "bags"))]))
    assert read_only_flags(recorder, recorder_node.PARAMETERS) == {n: True for n in recorder_node.PARAMETERS}
    assert_refused(recorder, "bag_dir", str(tmp_path / "elsewhere"))


def test_the_reward_node_refuses_every_change_while_running(ros):
    import yaml

    shipped = yaml.safe_load((REPO / "config" / "reward.yaml").read_text())["reward_node"]["ros__parameters"]
    node = ros.add(reward_node.RewardNode(context=ros.context, parameter_overrides=[
        Parameter(k, value=v) for k, v in shipped.items()]))
    assert read_only_flags(node, reward_node.PARAMETERS) == {n: True for n in reward_node.PARAMETERS}
    assert_refused(node, "reward_expression", "1.0")


def test_the_trainer_declares_every_parameter_read_only(ros, tmp_path):
    """The trainer's parameter reading alone (the whole node starts a training thread): on a bare node."""
    node = ros.add(rclpy.create_node("trainer_node", context=ros.context, parameter_overrides=[
        Parameter("run_dir", value=str(tmp_path / "run")), Parameter("bag_dir", value=str(tmp_path / "b"))]))
    trainer_node.TrainerNode._read_parameters(node)
    assert read_only_flags(node, trainer_node.PARAMETERS) == {n: True for n in trainer_node.PARAMETERS}
    assert_refused(node, "batch_size", 64)
    assert_refused(node, "ladder", ["2:64:8:4"])  # a list declared untyped is read-only too


def test_an_untyped_list_parameter_given_one_string_is_one_entry(ros):
    """`-p command_joints:=slider` or a launch argument hands an empty-list parameter a plain string:
    that is one entry ('' none), not a list of its characters."""
    from tdmpc2_ros.ros.params import declare_table

    node = ros.add(rclpy.create_node("lists", context=ros.context, parameter_overrides=[
        Parameter("one", value="slider"), Parameter("none", value=""), Parameter("many", value=["a", "b"])]))
    table = {name: ([], "a list") for name in ("one", "none", "many", "unset")}
    assert declare_table(node, table) == {"one": ["slider"], "none": [], "many": ["a", "b"], "unset": []}
