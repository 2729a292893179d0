"""reward_node: a robot's reward from its own topics. The shipped expression (config/reward.yaml) is
dm_control's cartpole-swingup reward, checked against dm_control itself; over DDS, the node answers
each JointState with that reward once a command has come, publishes nothing for a step whose reward
is not finite, says so on /diagnostics, and refuses a bad configuration by name."""

from __future__ import annotations

import os
import signal

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"  # before any rclpy context exists

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.qos import ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64, Float64MultiArray, Int64  # noqa: E402

from ros_harness import REPO, Ros, cleaned_up, finish_process, start_node_process  # noqa: E402
from tdmpc2_ros.ros import qos, topics  # noqa: E402
from tdmpc2_ros.runtime.expressions import Expression  # noqa: E402

SHIPPED = yaml.safe_load((REPO / "config" / "reward.yaml").read_text())["reward_node"]["ros__parameters"]


def dm_control_reward(states):
    """dm_control's own cartpole-swingup reward of one 0.01 s step, at each (x, theta, xdot, thetadot, newtons)."""
    from dm_control import suite

    env = suite.load("cartpole", "swingup")
    physics, task = env.physics, env.task
    out = []
    for x, theta, xdot, thetadot, newtons in states:
        with physics.reset_context():
            physics.named.data.qpos["slider"], physics.named.data.qpos["hinge_1"] = x, theta
            physics.named.data.qvel["slider"], physics.named.data.qvel["hinge_1"] = xdot, thetadot
        physics.data.ctrl[:] = newtons / 10.0  # the motor's gear: control 1 = 10 N
        out.append(float(task.get_reward(physics)))
    return np.array(out)


def random_states(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(-3, 3, n), rng.uniform(-np.pi, np.pi, n), rng.uniform(-4, 4, n),
                     rng.uniform(-12, 12, n), rng.uniform(-14, 14, n)], axis=1)


def test_the_shipped_expression_is_dm_controls_cartpole_swingup_reward_per_50_hz_step():
    states = random_states(200)
    states[:20, 1] = 0.0  # upright, centred, still: the reward's top
    states[:20, [0, 2, 3, 4]] = 0.0
    expression = Expression(SHIPPED["reward_expression"], "reward_expression")
    mine = np.array([expression.finite_value(obs=np.array([x, np.cos(t), np.sin(t), xd, td]), action=np.array([u]))
                     for x, t, xd, td, u in states])
    # Two 0.01 s dm_control steps per 50 Hz step, as the sim's action repeat sums them.
    np.testing.assert_allclose(mine, 2 * dm_control_reward(states), rtol=1e-9, atol=1e-12)
    assert mine[:20] == pytest.approx(2.0) and mine.min() < 0.5  # the whole range is exercised


def joint_state(x, theta, xdot, thetadot, stamp_ns: int = 0) -> JointState:
    # The broadcaster's order need not be the model's: the sources read by joint name.
    msg = JointState(name=["hinge_1", "slider"], position=[theta, x], velocity=[thetadot, xdot], effort=[0.0, 0.0])
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp_ns), 10**9)
    return msg


def robot(ros, stamps: list | None = None):
    """The robot's side of reward_node, in this process: -> (node, joint state, command and episode
    publishers, the rewards and returns heard, reward_node's newest /diagnostics values). With `stamps`,
    the rewards are stamped (reward_node's stamped: true) and their stamps (ns) go there."""
    node = ros.node("robot")
    states_pub = node.create_publisher(JointState, topics.JOINT_STATES, qos.SENSOR)
    command_pub = node.create_publisher(Float64MultiArray, topics.COMMAND, qos.COMMAND)
    episode_pub = node.create_publisher(Int64, topics.EPISODE, qos.EVENTS)
    rewards, returns = [], []
    if stamps is None:
        node.create_subscription(Float64, topics.REWARD, lambda m: rewards.append(m.data), qos.EVENTS)
    else:
        def on_stamped(m):  # segments reward [1], stamp [2] (sec, nanosec)
            assert [(d.label, d.size) for d in m.layout.dim] == [("reward", 1), ("stamp", 2)], m.layout
            stamps.append(int(m.data[1]) * 10**9 + int(m.data[2]))
            rewards.append(m.data[0])

        node.create_subscription(Float64MultiArray, topics.REWARD, on_stamped, qos.EVENTS)
    node.create_subscription(Float64, topics.EPISODE_RETURN, lambda m: returns.append(m.data), qos.EVENTS)
    return node, states_pub, command_pub, episode_pub, rewards, returns, reward_status(node)


def reward_status(node) -> dict:
    """reward_node's newest /diagnostics values (and 'level'), kept up to date as the node spins."""
    diag = {}

    def on_diag(msg):
        for s in msg.status:
            if s.name == "tdmpc2_ros: reward":
                diag.update({kv.key: kv.value for kv in s.values}, level=s.level)

    node.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, on_diag, 10)
    return diag


def test_reward_node_answers_each_observation_after_the_first_command(tmp_path):
    ros = Ros()
    proc = start_node_process("reward_node", ros.domain, tmp_path, **{**SHIPPED, "diagnostics_period_s": 0.2})
    node, states_pub, command_pub, episode_pub, rewards, returns, diag = robot(ros)
    with cleaned_up(proc, ros=ros):
        assert ros.spin_until(lambda: states_pub.get_subscription_count() > 0 and node.count_publishers(topics.REWARD) > 0
                              or proc.poll() is not None, 60), "reward_node did not start"
        assert proc.poll() is None, finish_process(proc)[1][-4000:]
        # The first announcement ends no episode: nothing was scored before it.
        episode_pub.publish(Int64(data=0))
        # Before any command there is no step to reward: nothing is published, the wait is counted.
        assert ros.spin_until(lambda: states_pub.publish(joint_state(0.1, 0.2, 0.0, 0.0)) or  # best effort: again
                              diag.get("waiting", "0") != "0", 10), diag
        assert rewards == []
        states = random_states(20, seed=1)
        for x, theta, xdot, thetadot, newtons in states:
            command_pub.publish(Float64MultiArray(data=[newtons]))
            ros.spin_for(0.03)  # the command arrives before the state it led to, as on a robot
            before = len(rewards)
            states_pub.publish(joint_state(x, theta, xdot, thetadot))
            assert ros.spin_until(lambda: len(rewards) > before, 5), f"no reward for state {len(rewards)}"
        np.testing.assert_allclose(rewards, 2 * dm_control_reward(states), rtol=1e-9)
        # A state the expression cannot score (a NaN joint reading): no reward, counted, WARN.
        states_pub.publish(joint_state(float("nan"), 0.0, 0.0, 0.0))
        assert ros.spin_until(lambda: diag.get("bad") == "1", 10), diag
        assert diag["level"] == b"\x01" and "nan" in diag["last_problem"], diag
        ros.spin_for(0.3)
        assert len(rewards) == len(states)
        # The next good state is scored again, and the warning clears.
        states_pub.publish(joint_state(0.0, 0.0, 0.0, 0.0))
        assert ros.spin_until(lambda: len(rewards) == len(states) + 1, 5)
        assert ros.spin_until(lambda: diag.get("level") == b"\x00" and diag.get("published") == str(len(states) + 1), 5), diag
        # The next episode's announcement ends this one: its return is the sum of its rewards.
        assert returns == []
        episode_pub.publish(Int64(data=1))
        assert ros.spin_until(lambda: returns, 5), "no episode return"
        assert returns == [pytest.approx(sum(rewards))] and diag["published"] == str(len(rewards))
        code, out = finish_process(proc, signal.SIGINT, timeout=30, what="reward_node")
    assert code == 0, out[-4000:]
    assert "no reward for this step" in out and "nan" in out


@pytest.mark.parametrize("stamped", [False, True])
def test_paced_by_commands_a_reward_per_command_for_a_fast_broadcaster(stamped, tmp_path):
    """pace: command, as beside a joint_state_broadcaster faster than the controller: several
    /joint_states per command, a reward only at each command, of the newest state and the command in
    force when it came (the one that acted in the step that led to that state: the command before,
    also after a command superseded before the next state), and an episode's return sums one reward
    per command. Stamped: each reward carries the stamp of the state it scored."""
    ros = Ros()
    proc = start_node_process("reward_node", ros.domain, tmp_path,
                              **{**SHIPPED, "pace": "command", "command_reliability": "reliable", "stamped": stamped})
    stamps = [] if stamped else None
    node, states_pub, command_pub, episode_pub, rewards, returns, diag = robot(ros, stamps)
    with cleaned_up(proc, ros=ros):
        assert ros.spin_until(lambda: command_pub.get_subscription_count() > 0 and states_pub.get_subscription_count() > 0
                              and node.count_publishers(topics.REWARD) > 0 or proc.poll() is not None, 60), \
            "reward_node did not start"
        assert proc.poll() is None, finish_process(proc)[1][-4000:]
        # Each command ends a step: the node subscribes reliably, as asked, and a reliable controller's
        # commands all arrive (best effort may lose some).
        heard = [i.qos_profile.reliability for i in node.get_subscriptions_info_by_topic(topics.COMMAND)]
        assert heard == [ReliabilityPolicy.RELIABLE], heard
        states = random_states(12, seed=2)
        noise = random_states(12 * 4, seed=3)  # the broadcaster's other messages between two commands
        # Until both subscriptions have matched: a state and a command at a time, until one is scored.
        assert ros.spin_until(lambda: states_pub.publish(joint_state(*states[0, :4])) or ros.spin_for(0.05) or
                              command_pub.publish(Float64MultiArray(data=[float(states[0, 4])])) or rewards, 20)
        ros.spin_for(0.3)
        episode_pub.publish(Int64(data=0))  # the warm-up's episode ends: its return, then a clean start
        assert ros.spin_until(lambda: returns, 5), "no episode return"
        rewards.clear(), returns.clear()
        if stamped:
            stamps.clear()
        steps = []  # the step (its newest state) each reward scored
        for k in range(1, len(states)):
            for i, (x, theta, xdot, thetadot, _) in enumerate(noise[4 * k : 4 * k + 4]):
                states_pub.publish(joint_state(x, theta, xdot, thetadot, 1_700_000_000 * 10**9 + k * 10**7 + i))
            states_pub.publish(joint_state(*states[k, :4], 1_700_000_000 * 10**9 + k * 10**7 + 5))  # the newest
            ros.spin_for(0.05)
            assert len(rewards) == len(steps), "a reward at a /joint_states message"
            # Command 6 is first sent as 9.0 and superseded before the next state came: a reward at each,
            # both under command 5, in force when state 6 came.
            for value in ([9.0] if k == 6 else []) + [float(states[k, 4])]:
                command_pub.publish(Float64MultiArray(data=[value]))
                steps.append(k)
                assert ros.spin_until(lambda: len(rewards) == len(steps), 5), f"no reward at command {k}"
        # Step k: the state newest at command k, under command k-1.
        steps = np.array(steps)
        scored = np.concatenate([states[steps, :4], states[steps - 1, 4:]], axis=1)
        np.testing.assert_allclose(rewards, 2 * dm_control_reward(scored), rtol=1e-9)
        if stamped:  # the stamp of the state each reward scored
            assert stamps == [1_700_000_000 * 10**9 + k * 10**7 + 5 for k in steps], stamps
        episode_pub.publish(Int64(data=1))
        assert ros.spin_until(lambda: returns, 5), "no episode return"
        assert returns == [pytest.approx(sum(rewards))]
        # A best-effort controller beside it: DDS delivers none of its commands to a reliable
        # subscription, and only an event says so. The node names the parameter on /diagnostics.
        best_effort = node.create_publisher(Float64MultiArray, topics.COMMAND, qos.SENSOR)
        assert ros.spin_until(lambda: "check command_reliability" in diag.get("unmatched_qos", ""), 10), diag
        assert diag["level"] == b"\x01" and "(reliability)" in diag["unmatched_qos"], diag
        node.destroy_publisher(best_effort)  # once it has left, the warning clears
        assert ros.spin_until(lambda: diag["level"] == b"\x00" and diag["unmatched_qos"] == "", 10), diag
        code, out = finish_process(proc, signal.SIGINT, timeout=30, what="reward_node")
    assert code == 0, out[-4000:]


@pytest.mark.parametrize("params, name", [
    ({"reward_expression": "obs[0] +"}, "reward_expression"),
    ({"reward_expression": ""}, "reward_expression"),
    ({"observation_sources": []}, "observation_sources"),
    ({"observation_sources": ["joint_state:/joint_states:torque:slider"]}, "observation_sources"),
    ({"command_type": "joint_trajectory"}, "command_type"),  # without command_joints
    ({"pace": "tick"}, "pace"),
    ({"pace": "command", "command_topic": ""}, "pace"),  # paced by commands it never reads
    ({"command_reliability": "sometimes"}, "command_reliability"),
    ({"stamped": True, "observation_sources": ["array:/obs:all"]}, "stamped"),  # an array has no header stamp
])
def test_a_bad_configuration_is_refused_naming_the_parameter(params, name):
    from rclpy.parameter import Parameter

    from tdmpc2_ros.ros.params import ParameterError
    from tdmpc2_ros.ros.reward_node import RewardNode

    ros = Ros()
    try:
        # An empty list is left out (it has no type to give): the node's default, none, stands.
        overrides = [Parameter(k, value=v) for k, v in {**SHIPPED, **params}.items() if v != []]
        with pytest.raises(ParameterError, match=f"'{name}'"):
            RewardNode(context=ros.context, parameter_overrides=overrides)
    finally:
        ros.close()
