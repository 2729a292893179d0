"""sim_node over real rclpy/DDS: lockstep in-process and across processes, realtime rate, malformed
commands, episode boundaries and bad parameters. Every wait has a deadline, so nothing can hang."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"  # before any rclpy context exists
os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import rclpy  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.signals import SignalHandlerOptions  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64, Float64MultiArray, Int64  # noqa: E402

from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from ros_harness import record_warnings  # noqa: E402
from tdmpc2_ros.runtime.transition import unpack  # noqa: E402
from tdmpc2_ros.ros import qos, topics  # noqa: E402
from tdmpc2_ros.ros.sim_node import ParameterError, SimNode  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PENDULUM = str(ROOT / "test" / "assets" / "pendulum.xml")
# One DDS domain per test (localhost only), so tests and concurrent runs cannot hear each other.
DOMAIN = {"lockstep": 61, "processes": 62, "realtime": 63, "malformed": 64, "bad_mode": 65, "episodes": 66,
          "bad_params": 67, "effort": 68, "typed": 69, "paused": 59, "diverged": 58, "wrong_type": 57,
          "physics": 56}


@contextmanager
def ros_session(domain_id: int):
    ctx = Context()
    rclpy.init(context=ctx, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
    executor = SingleThreadedExecutor(context=ctx)
    try:
        yield ctx, executor
    finally:
        for node in list(executor.get_nodes()):
            executor.remove_node(node)
            node.destroy_node()
        executor.shutdown(timeout_sec=1.0)
        rclpy.try_shutdown(context=ctx)


def spin_until(executor, cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        executor.spin_once(timeout_sec=0.02)
    return cond()


def spin_for(executor, seconds: float) -> None:
    spin_until(executor, lambda: False, seconds)


class Driver(Node):
    """The planner's side of the contract: records everything, optionally answers each observation."""

    def __init__(self, context, policy=None):
        super().__init__("sim_test_driver", context=context)
        self.policy, self.answer, self.limit = policy, policy is not None, None
        self.obs, self.rewards, self.episodes, self.returns, self.joints, self.clock = [], [], [], [], [], []
        self.commands_sent = 0
        self.steps = []  # every step message's segments, terminal ones included
        self.sent = []
        self.cmd = self.create_publisher(Float64MultiArray, topics.COMMAND, qos.COMMAND)
        self.create_subscription(Float64MultiArray, topics.OBSERVATION, self._on_obs, qos.SENSOR)
        self.create_subscription(Float64, topics.REWARD, lambda m: self.rewards.append(m.data), qos.EVENTS)
        self.create_subscription(Int64, topics.EPISODE, lambda m: self.episodes.append(m.data), qos.EVENTS)
        self.create_subscription(Float64, topics.EPISODE_RETURN, lambda m: self.returns.append(m.data), qos.EVENTS)
        self.create_subscription(JointState, topics.JOINT_STATES, self.joints.append, qos.SENSOR)
        self.create_subscription(Clock, topics.CLOCK, self.clock.append, qos.SENSOR)

    def _on_obs(self, msg):
        segs, _ = unpack([(d.label, d.size) for d in msg.layout.dim], msg.data)
        self.steps.append(segs)
        if segs["last"][0]:  # an episode's final observation is not answered (the contract)
            return
        self.obs.append(list(segs["obs"]))
        if self.answer and (self.limit is None or self.commands_sent < self.limit):
            self.send(self.policy(len(self.obs)))

    def send(self, values):
        self.cmd.publish(Float64MultiArray(data=[float(v) for v in values]))
        self.sent.append([float(v) for v in values])
        self.commands_sent += 1

    def connected(self) -> bool:
        return self.cmd.get_subscription_count() >= 1 and self.count_publishers(topics.REWARD) >= 1


def make_sim(ctx, **params) -> SimNode:
    return SimNode(context=ctx, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])


def test_lockstep_in_process_one_step_per_command():
    n = 30
    with ros_session(DOMAIN["lockstep"]) as (ctx, ex):
        sim = make_sim(ctx, mode="lockstep", lockstep_republish_s=0.3)
        driver = Driver(ctx)
        ex.add_node(sim), ex.add_node(driver)
        assert spin_until(ex, driver.connected, 15.0), "discovery did not complete"
        # The first observation went out before anyone listened; the republish brings it back.
        assert spin_until(ex, lambda: len(driver.obs) >= 1, 5.0)
        assert sim.steps == 0 and driver.rewards == [] and sim.republished >= 1
        assert driver.obs[0] == pytest.approx(sim.engine.observation().tolist(), abs=0)

        driver.policy, driver.limit, driver.answer = (lambda i: [math.sin(0.3 * i)]), n, True
        assert spin_until(ex, lambda: driver.commands_sent >= n, 15.0)
        assert spin_until(ex, lambda: len(driver.rewards) >= n and sim.steps >= n, 5.0)
        spin_for(ex, 0.2)
        assert sim.steps == n == len(driver.rewards)
        assert all(0.0 <= r <= 2.0 for r in driver.rewards)
        assert sim.engine.step_in_episode == n and sim.episodes == 0
        # The step message pairs o_k with the reward and the applied command of step k-1 -> k.
        fresh = [m for m in driver.steps if m["step"][0] > 0]
        assert [int(m["step"][0]) for m in fresh] == list(range(1, n + 1))
        assert [float(m["reward"][0]) for m in fresh] == driver.rewards
        assert [list(m["applied_action"]) for m in fresh] == driver.sent
        assert all(m["episode"][0] == 0 and m["last"][0] == 0 for m in driver.steps)
        assert math.isnan(driver.steps[0]["reward"][0])  # step 0 follows no action
        # joint states: stamped with sim time (a multiple of control_dt), hinge/slide names, force effort.
        js = driver.joints[-1]
        assert list(js.name) == ["slider", "hinge_1"] and len(js.position) == len(js.velocity) == 2
        assert len(js.effort) == 2
        stamp = js.header.stamp.sec + js.header.stamp.nanosec * 1e-9
        assert stamp == pytest.approx(round(stamp / 0.02) * 0.02, abs=1e-9) and 0 < stamp <= n * 0.02 + 1e-9
        assert driver.clock and driver.clock[-1].clock.sec * 1e9 + driver.clock[-1].clock.nanosec <= n * 0.02e9 + 1


def test_lockstep_across_processes_full_episode():
    env = dict(os.environ, PYTHONPATH=str(ROOT), MUJOCO_GL="egl", ROS_DOMAIN_ID=str(DOMAIN["processes"]),
               ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    cmd = [sys.executable, "-m", "tdmpc2_ros.ros.sim_node", "--ros-args", "-p", "mode:=lockstep",
           "-p", "max_episodes:=1", "-p", "seed:=5", "-p", "lockstep_republish_s:=0.3"]
    with ros_session(DOMAIN["processes"]) as (ctx, ex):
        driver = Driver(ctx, policy=lambda i: [math.sin(0.05 * i)])
        ex.add_node(driver)
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            assert spin_until(ex, lambda: len(driver.returns) >= 1 or proc.poll() is not None, 120.0), \
                f"no episode return; rewards={len(driver.rewards)}"
            spin_until(ex, lambda: proc.poll() is not None, 20.0)
            spin_for(ex, 0.2)
            assert len(driver.returns) == 1, (driver.returns, len(driver.rewards))
            assert len(driver.rewards) == 500
            # The episode's final observation is published (last = 1) and was not answered.
            final = driver.steps[-1]
            assert final["last"][0] == 1 and final["step"][0] == 500 and final["reward"][0] == driver.rewards[-1]
            assert driver.commands_sent == 500
            assert driver.returns[0] == pytest.approx(sum(driver.rewards), abs=1e-9)
            out, _ = proc.communicate(timeout=20)
            assert proc.returncode == 0, out[-3000:]
            assert "episode 0 return" in out and "max_episodes=1 reached" in out
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


def test_realtime_rate():
    with ros_session(DOMAIN["realtime"]) as (ctx, ex):
        sim = make_sim(ctx, mode="realtime", start_paused=False)
        driver = Driver(ctx)
        ex.add_node(sim), ex.add_node(driver)
        assert spin_until(ex, lambda: len(driver.obs) >= 1, 15.0)
        assert sim.engine.control_dt == pytest.approx(0.02)
        obs0, steps0, t0 = len(driver.obs), sim.steps, time.monotonic()
        spin_for(ex, 2.0)
        elapsed = time.monotonic() - t0
        expected = elapsed / sim.engine.control_dt
        assert len(driver.obs) - obs0 >= 0.5 * expected, (len(driver.obs) - obs0, expected)
        assert sim.steps - steps0 >= 0.5 * expected
        assert len(driver.rewards) >= 0.5 * expected
        stamps = [c.clock.sec + c.clock.nanosec * 1e-9 for c in driver.clock]
        assert len(stamps) >= 10 and all(b > a for a, b in zip(stamps, stamps[1:]))
        # No command yet: the cart is driven with zero force; then the last command is held, until the
        # controller has been silent for command_timeout_s (0.5 s): then zero, said once.
        assert sim.engine.last_command.tolist() == [0.0] and sim.command_timeouts == 0
        warnings = record_warnings(sim)
        driver.send([0.7])
        assert spin_until(ex, lambda: sim.engine.last_command.tolist() == [0.7], 5.0)
        held_from = time.monotonic()
        assert spin_until(ex, lambda: sim.engine.last_command.tolist() == [0.0], 5.0)
        assert time.monotonic() - held_from >= 0.3 and sim.command_timeouts == 1
        spin_for(ex, 0.7)
        assert sim.command_timeouts == 1 and sum("no valid command" in w for w in warnings) == 1
        driver.send([0.4])  # a controller heard again is obeyed again
        assert spin_until(ex, lambda: sim.engine.last_command.tolist() == [0.4], 5.0)


def test_realtime_at_the_physics_rate_publishes_a_joint_state_per_physics_step():
    """joint_states_rate physics, as a joint_state_broadcaster faster than the controller: a joint
    state (and /clock) after every physics step, stamped physics_dt apart, action_repeat of them per
    control step, whose step message comes with the last; a command is taken at the next physics step."""
    with ros_session(DOMAIN["physics"]) as (ctx, ex):
        sim = make_sim(ctx, mode="realtime", start_paused=False, joint_states_rate="physics",
                       command_timeout_s=0.0)  # (no watchdog: the command below must still act 5 steps later)
        driver = Driver(ctx)
        ex.add_node(sim), ex.add_node(driver)
        assert spin_until(ex, lambda: len(driver.obs) >= 30, 15.0)
        assert (sim.engine.physics_dt, sim.engine.action_repeat) == (pytest.approx(0.01), 2)
        ns = [j.header.stamp.sec * 1_000_000_000 + j.header.stamp.nanosec for j in driver.joints]
        gaps = np.diff(ns)
        # Consecutive physics steps, 10 ms of sim time apart (a lost best-effort message may leave one gap).
        assert np.all(gaps % 10_000_000 == 0) and np.mean(gaps == 10_000_000) >= 0.9, gaps
        assert np.sum(gaps == 10_000_000) >= 30
        # Half of them end a control step (a multiple of 20 ms): the step messages' joint states.
        ends = sum(n % 20_000_000 == 0 for n in ns)
        assert 0.4 * len(ns) <= ends <= 0.6 * len(ns) + 1, (ends, len(ns))
        assert len(driver.clock) >= len(ns) * 0.9
        driver.send([0.7])
        assert spin_until(ex, lambda: sim.engine.last_command.tolist() == [0.7], 5.0)
        steps = sim.steps
        assert spin_until(ex, lambda: sim.steps >= steps + 5, 5.0)
        assert driver.steps[-1]["applied_action"].tolist() == [0.7]
        # Each step message says how many different commands its step applied: one, but for the step
        # that 0.7 reached mid-step, if it did (then no one command produced that step).
        commands = [s["commands"][0] for s in driver.steps if s["step"][0] > 0]
        assert set(commands) <= {1.0, 2.0} and commands.count(2.0) <= 1 and commands[-1] == 1.0, commands


def test_realtime_holds_the_first_episode_until_the_first_command():
    """start_paused (the default): no control step before a controller is heard; the initial
    observation is republished meanwhile (for a controller discovered late), and the first valid
    command starts real-time stepping with that command. A malformed one does not."""
    with ros_session(DOMAIN["paused"]) as (ctx, ex):
        sim = make_sim(ctx, mode="realtime", lockstep_republish_s=0.2)
        driver = Driver(ctx)
        ex.add_node(sim), ex.add_node(driver)
        assert spin_until(ex, lambda: driver.connected() and len(driver.obs) >= 3, 15.0)  # republished
        assert sim.steps == 0 and driver.rewards == [] and sim.republished >= 2
        assert all(o == driver.obs[0] for o in driver.obs) and {s["step"][0] for s in driver.steps} == {0.0}
        driver.send([float("nan")])
        spin_for(ex, 0.3)
        assert sim.steps == 0 and sim.malformed_commands == 1
        driver.send([0.5])
        assert spin_until(ex, lambda: sim.steps >= 10 and len(driver.rewards) >= 10, 5.0)
        assert sim.engine.last_command.tolist() == [0.5]
        republished = sim.republished
        spin_for(ex, 0.5)
        assert sim.republished == republished  # stepping now: nothing is held


def test_malformed_commands_are_ignored_and_counted():
    with ros_session(DOMAIN["malformed"]) as (ctx, ex):
        sim = make_sim(ctx, mode="lockstep", lockstep_republish_s=0.3)
        driver = Driver(ctx)
        ex.add_node(sim), ex.add_node(driver)
        assert spin_until(ex, lambda: driver.connected() and len(driver.obs) >= 1, 15.0)
        before = sim.engine.observation()
        for i, bad in enumerate(([0.1, 0.2], [float("nan")], [], [float("inf")]), start=1):
            driver.send(bad)
            assert spin_until(ex, lambda: sim.malformed_commands >= i, 5.0), bad
        spin_for(ex, 0.1)
        assert sim.malformed_commands == 4 and sim.steps == 0 and driver.rewards == []
        assert sim.engine.observation().tolist() == before.tolist()
        # Still alive: a valid (out-of-range) command is clipped and steps the sim once.
        driver.send([5.0])
        assert spin_until(ex, lambda: sim.steps == 1 and len(driver.rewards) == 1, 5.0)
        assert sim.clipped_commands == 1 and sim.engine.last_command.tolist() == [1.0]
        assert sim.malformed_commands == 4


def test_effort_commands_are_newtons_at_the_joint():
    """command_units: effort (gz_ros2_control's effort interface): the cart-pole's motor has gear 10, so
    5 N is control 0.5, and /joint_states reports the 5 N back at the slider; 15 N is clipped to 10 N."""
    with ros_session(DOMAIN["effort"]) as (ctx, ex):
        sim = make_sim(ctx, mode="lockstep", command_units="effort", lockstep_republish_s=0.3)
        driver = Driver(ctx)
        ex.add_node(sim), ex.add_node(driver)
        assert spin_until(ex, lambda: driver.connected() and len(driver.obs) >= 1, 15.0)
        slider = list(sim.engine.joint_names).index("slider")
        for i, (newtons, control, applied) in enumerate(((5.0, 0.5, 5.0), (-2.5, -0.25, -2.5), (15.0, 1.0, 10.0)), 1):
            driver.send([newtons])
            assert spin_until(ex, lambda: sim.steps == i and len(driver.joints) > i, 5.0), newtons
            assert sim.engine.last_command.tolist() == [control]
            assert driver.joints[-1].effort[slider] == pytest.approx(applied, abs=1e-9)
        assert sim.clipped_commands == 1


@pytest.mark.parametrize("command_type", ["joint_state", "joint_trajectory"])
def test_typed_commands_are_read_by_joint_name(command_type):
    """command_type joint_state / joint_trajectory: the planner's CommandWriter (command_interface: effort,
    the same class the planner publishes with) names the slider among other joints, in any order; the
    sim reads the slider's effort in newtons. A message without the slider, or with an effort missing,
    steps nothing and is counted as malformed."""
    from tdmpc2_ros.ros.commands import CommandWriter

    with ros_session(DOMAIN["typed"]) as (ctx, ex):
        sim = make_sim(ctx, mode="lockstep", command_units="effort", command_type=command_type,
                       command_topic="/joint_commands", lockstep_republish_s=0.3)
        driver = Driver(ctx)
        joints = ["hinge_1", "slider", "wheel"]
        writer = CommandWriter(command_type, joints, "effort", 0.02, 3, clock=driver.get_clock())
        pub = driver.create_publisher(writer.msg_type, "/joint_commands", qos.COMMAND)
        ex.add_node(sim), ex.add_node(driver)
        assert spin_until(ex, lambda: pub.get_subscription_count() >= 1 and len(driver.obs) >= 1, 15.0)
        slider = list(sim.engine.joint_names).index("slider")
        for i, newtons in enumerate((5.0, -2.5), 1):
            pub.publish(writer.message([99.0, newtons, -99.0]))  # the other joints' efforts are not the slider's
            assert spin_until(ex, lambda: sim.steps == i and len(driver.joints) > i, 5.0), newtons
            assert sim.engine.last_command.tolist() == [newtons / 10.0]
            assert driver.joints[-1].effort[slider] == pytest.approx(newtons, abs=1e-9)
        no_slider = CommandWriter(command_type, ["hinge_1"], "effort", 0.02, 1, clock=driver.get_clock()).message([1.0])
        short = writer.message([1.0, 2.0, 3.0])
        if command_type == "joint_state":
            short.effort = [1.0]
        else:
            short.points[0].effort = [1.0]
        nan = writer.message([0.0, float("nan"), 0.0])
        for k, bad in enumerate((no_slider, short, nan), 1):
            pub.publish(bad)
            assert spin_until(ex, lambda: sim.malformed_commands == k, 5.0), k
        spin_for(ex, 0.1)
        assert sim.steps == 2 and sim.malformed_commands == 3 and sim.clipped_commands == 0


def test_mjcf_episodes_and_max_episodes():
    with ros_session(DOMAIN["episodes"]) as (ctx, ex):
        sim = make_sim(ctx, mode="lockstep", mjcf_path=PENDULUM, reward_expression="cos(qpos[0])",
                       episode_steps=5, max_episodes=2, lockstep_republish_s=0.3)
        driver = Driver(ctx, policy=lambda i: [1.0])
        ex.add_node(sim), ex.add_node(driver)
        assert spin_until(ex, lambda: sim.finished, 20.0), (sim.steps, sim.episodes)
        spin_until(ex, lambda: len(driver.returns) >= 2, 2.0)
        assert sim.episodes == 2 and sim.steps == 10 and len(driver.rewards) == 10
        assert driver.returns == pytest.approx([sum(driver.rewards[:5]), sum(driver.rewards[5:])], abs=1e-9)
        assert driver.returns == pytest.approx(sim.episode_returns, abs=1e-12)
        assert 1 in driver.episodes  # the second episode was announced (episode 0 may predate discovery)
        assert list(driver.joints[-1].name) == ["hinge"] and list(driver.joints[-1].effort) == [1.0]
        n_obs, n_steps = len(driver.obs), sim.steps
        driver.send([1.0])  # after max_episodes, commands no longer step anything
        spin_for(ex, 0.5)
        assert sim.steps == n_steps and len(driver.obs) == n_obs


def test_a_diverging_simulation_ends_its_episode_and_the_sim_goes_on(tmp_path):
    """A wild command to an unlimited actuator makes MuJoCo find the state bad (and reset it itself):
    the episode ends there, with no final observation and no return that a learner could take for a
    transition, and the next episode starts."""
    wild = tmp_path / "wild.xml"  # the test pendulum with its motor unlimited
    wild.write_text(Path(PENDULUM).read_text().replace(' ctrlrange="-2 2"', ""))
    with ros_session(DOMAIN["diverged"]) as (ctx, ex):
        sim = make_sim(ctx, mode="lockstep", mjcf_path=str(wild), reward_expression="cos(qpos[0])",
                       episode_steps=50, lockstep_republish_s=0.2)
        driver = Driver(ctx)
        ex.add_node(sim), ex.add_node(driver)
        assert spin_until(ex, lambda: driver.connected() and len(driver.obs) >= 1, 15.0)
        driver.send([0.5])
        assert spin_until(ex, lambda: sim.steps == 1, 5.0)
        driver.send([1e9])
        assert spin_until(ex, lambda: sim.engine.diverged == 1 and 1 in driver.episodes, 5.0)
        assert sim.steps == 1 and sim.episodes == 1 and sim.engine.episode == 1 and driver.returns == []
        assert all(m["episode"][0] == 0 and m["step"][0] <= 1 or m["episode"][0] == 1 for m in driver.steps)
        assert not any(m["last"][0] for m in driver.steps)  # no final observation of the broken episode
        driver.send([0.5])  # the new episode steps as usual
        assert spin_until(ex, lambda: sim.steps == 2 and sim.engine.step_in_episode == 1, 5.0)
        assert all(math.isfinite(v) for v in driver.obs[-1])


def test_a_controller_publishing_another_command_type_is_named():
    """A JointTrajectory controller on a sim that takes Float64MultiArray commands is never matched (DDS
    delivers nothing, ROS says nothing): the waiting sim names the type the topic is published as."""
    with ros_session(DOMAIN["wrong_type"]) as (ctx, ex), ros_session(DOMAIN["wrong_type"]) as (ctx2, ex2):
        sim = make_sim(ctx, mode="lockstep", lockstep_republish_s=0.2)
        warnings = record_warnings(sim)
        ex.add_node(sim)
        controller = Node("trajectory_controller_stand_in", context=ctx2)  # a second participant
        ex2.add_node(controller)
        controller.create_publisher(JointTrajectory, topics.COMMAND, qos.COMMAND)
        assert spin_until(ex, lambda: any(w.startswith("no command heard") for w in warnings), 20.0), warnings
        spin_for(ex, 1.0)
        named = [w for w in warnings if w.startswith("no command heard")]
        assert named == [f"no command heard: {topics.COMMAND} is published as trajectory_msgs/msg/JointTrajectory, "
                         f"not std_msgs/msg/Float64MultiArray: check command_type"]  # once
        assert sim.steps == 0


def test_bad_parameters_name_the_parameter(tmp_path):
    servo = tmp_path / "servo.xml"  # a position servo: its control is a target angle, not a multiple of a torque
    servo.write_text(Path(PENDULUM).read_text().replace('<motor name="torque" joint="hinge" gear="1"',
                                                         '<position name="servo" joint="hinge" kp="10"'))
    with ros_session(DOMAIN["bad_params"]) as (ctx, ex):
        for params, name in (({"mode": "fast"}, "mode"), ({"task": "cartpole-flyaway"}, "task"),
                             ({"mjcf_path": str(tmp_path / "missing.xml"), "reward_expression": "1.0"}, "mjcf_path"),
                             ({"mjcf_path": PENDULUM}, "reward_expression"),
                             ({"mjcf_path": PENDULUM, "reward_expression": "qpos["}, "reward_expression"),
                             ({"action_repeat": 0}, "action_repeat"), ({"command_units": "newtons"}, "command_units"),
                             ({"mjcf_path": str(servo), "reward_expression": "1.0", "command_units": "effort"},
                              "command_units"), ({"command_type": "twist"}, "command_type"),
                             ({"command_type": "joint_state"}, "command_type"),  # without command_units: effort
                             ({"joint_states_rate": "fast"}, "joint_states_rate"),
                             ({"mode": "lockstep", "joint_states_rate": "physics"}, "joint_states_rate")):
            with pytest.raises(ParameterError, match=f"'{name}'") as info:
                make_sim(ctx, **params)
            assert info.value.parameter == name


def test_bad_mode_fails_at_start_in_a_process():
    env = dict(os.environ, PYTHONPATH=str(ROOT), MUJOCO_GL="egl", ROS_DOMAIN_ID=str(DOMAIN["bad_mode"]),
               ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    result = subprocess.run([sys.executable, "-m", "tdmpc2_ros.ros.sim_node", "--ros-args", "-p", "mode:=turbo"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "mode" in result.stderr and "turbo" in result.stderr, result.stderr[-2000:]
