"""``sim_node``: a MuJoCo simulation (``tdmpc2_ros.sim.SimEngine``) behind the ROS topic contract.

It stands in for a robot + ros2_control: it publishes joint states and the task observation, and
takes forward commands (physical units, one per actuator) on the controller's command topic.

Topics (names are parameters; defaults from ``tdmpc2_ros.ros.topics``)
------------------------------------------------------------------------
=====================  ==========================  ============  =========================================
topic                  type                        QoS           when
=====================  ==========================  ============  =========================================
joint_states_topic     sensor_msgs/JointState      SENSOR        with every observation (and after every
                                                                 physics step with joint_states_rate:
                                                                 physics); stamp = sim time;
                                                                 hinge/slide joints (rad, rad/s, m, m/s);
                                                                 effort = actuator force at the joint
                                                                 (N·m / N) if every actuator drives one
                                                                 joint, else empty
observation_topic      std_msgs/Float64MultiArray  SENSOR        after each control step and at episode
                                                                 start: the step message, labelled
                                                                 segments obs | reward | applied_action |
                                                                 episode | step | last (| commands with
                                                                 joint_states_rate: physics; see
                                                                 tdmpc2_ros/runtime/transition.py; obs
                                                                 names are logged at start). The final
                                                                 observation of an episode has last = 1
                                                                 and must not be answered with a command
reward_topic           std_msgs/Float64            EVENTS        after each control step (summed over the
                                                                 action repeat), before the observation
episode_topic          std_msgs/Int64              EVENTS        episode index (0, 1, ...) when an episode
                                                                 starts, before its first observation
episode_return_topic   std_msgs/Float64            EVENTS        at each episode end, after its last reward
clock_topic (/clock)   rosgraph_msgs/Clock         reliable, 1   with each /joint_states (publish_clock)
command_topic (sub)    std_msgs/Float64MultiArray  COMMAND       one value per actuator, clipped to the
                       (command_type: array)                     bounds: its control input
                                                                 (command_units: control, the dm_control
                                                                 action) or the force / torque at its
                                                                 joint (effort: N / N·m, as ros2_control's
                                                                 effort interface takes it)
                       trajectory_msgs/                          the first point's effort of each
                       JointTrajectory                           actuator's joint, by joint name (N / N·m;
                       (joint_trajectory) or                     needs command_units: effort); other joints
                       sensor_msgs/JointState                    are ignored, a missing one makes the
                       (joint_state)                             command malformed
=====================  ==========================  ============  =========================================

With ``command_units: effort`` the sim stands in for gz_ros2_control's forward command controller on
an effort interface: config/planner_gazebo.yaml sets it, so the Gazebo parameters can be tried on the
built-in sim first (``tdmpc2-ros bringup planner params_file:=planner_gazebo.yaml``). With
``command_type: joint_trajectory`` or ``joint_state`` it takes the planner's typed commands
(its ``command_type``, ``command_interface: effort``) read by joint name, as a simulator's joint command
topic would.

Modes: ``realtime`` steps every ``control_dt`` of wall time (steady clock) with the last valid
command; ``lockstep`` steps once per valid command and republishes the last observation (same stamp)
if no command came within ``lockstep_republish_s`` (0 disables), so a lost best-effort observation
cannot deadlock the loop. In realtime, ``start_paused`` (the default) holds the first episode at its
initial state, republished the same way, until the first valid command: a controller that is heard
only after the sim's first messages (DDS discovery takes a while) then still controls the episode from
its first step, instead of finding the cart already driven with zero force. With ``start_paused:
false`` it steps from the start with a zero command. The step message names its episode and step, so a
planner still busy with that step ignores the republished copy instead of answering it twice. In
realtime, ``command_timeout_s`` is the watchdog a robot's driver has: with no valid command for that
long (a controller killed before it could send its stop command) the sim applies zero, and says so
once per silence (``command_timeouts`` counts them).

``joint_states_rate: physics`` (realtime only) stands in for a robot whose controller manager and
joint_state_broadcaster run faster than its controller: the sim steps one physics step per
``physics_dt`` of wall time, publishes ``/joint_states`` after each, and applies a new command from the
next physics step on. The step message still comes once per control step (``action_repeat`` physics
steps); its applied_action is the command of the step's last physics step, and a ``commands`` segment
says how many different commands the step applied. Where a command came mid-step (2 or more), no one
command produced the step: the planner publishes no transition record for it (``transitions_mixed``
on /diagnostics) and warns once. Learn from the robot's topics in this mode (config/learn_robot.yaml),
with a planner on ``trigger: timer``, ``pace: command`` in reward_node and ``raw_pace: command`` in the
trainer.

Run: ``python -m tdmpc2_ros.ros.sim_node --ros-args -p task:=cartpole-swingup -p mode:=lockstep``.
"""

from __future__ import annotations

if __name__ == "__main__":  # a node process: a stop during the imports below is a clean stop too
    from tdmpc2_ros.ros import stop

    stop.take_signals()

import math
import os
import sys
import time

import numpy as np
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64, Float64MultiArray, Int64

from tdmpc2_ros.ros import qos, topics
from tdmpc2_ros.ros.commands import COMMAND_TYPES
from tdmpc2_ros.ros.messages import segmented_array
from tdmpc2_ros.ros.graph import mismatch_hint, type_name
from tdmpc2_ros.ros.params import ParameterError, declare_table
from tdmpc2_ros.ros.run import run_node, set_up_or_destroy
from tdmpc2_ros.runtime.command_fields import command_vector
from tdmpc2_ros.runtime.transition import pack
from tdmpc2_ros.sim.engine import PhysicsDiverged, SimEngine, describe

MODES = ("realtime", "lockstep")
JOINT_STATES_RATES = ("control", "physics")
# /clock: newest time only. Reliable matches both reliable and best-effort (rclpy/rclcpp) subscribers.
CLOCK_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE)

PARAMETERS = {  # name: (default, description)
    "task": ("cartpole-swingup", "dm_control suite task domain-task (ignored when mjcf_path is set)"),
    "mjcf_path": ("", "MJCF file to simulate instead of a dm_control task"),
    "reward_expression": ("", "reward of one physics step for mjcf_path (see tdmpc2_ros.sim.engine)"),
    "done_expression": ("", "optional early-termination expression for mjcf_path"),
    "reset_noise": (0.0, "mjcf_path: U(-x, x) noise on hinge/slide positions at reset"),
    "episode_steps": (500, "control steps per episode for mjcf_path (dm_control tasks use their time limit)"),
    "mode": ("realtime", "realtime (wall-clock timer) or lockstep (one step per command)"),
    "action_repeat": (2, "physics steps per control step"),
    "seed": (0, "random seed of the task (initial states)"),
    "publish_clock": (True, "publish sim time on clock_topic"),
    "lockstep_republish_s": (0.5, "lockstep (and realtime while start_paused holds the first episode): republish "
                                  "the last observation after this long without a command (0 disables)"),
    "start_paused": (True, "realtime: hold the first episode at its initial state until the first valid command "
                           "(false: step from the start with a zero command)"),
    "command_timeout_s": (0.5, "realtime: with no valid command for this long, apply zero (a controller that "
                               "died without a last command; keep it above the controller's command period; "
                               "0 = apply the last command for ever)"),
    "max_episodes": (0, "shut down after this many episodes (0 = unlimited)"),
    "joint_states_topic": (topics.JOINT_STATES, ""),
    "observation_topic": (topics.OBSERVATION, ""),
    "reward_topic": (topics.REWARD, ""),
    "episode_topic": (topics.EPISODE, ""),
    "episode_return_topic": (topics.EPISODE_RETURN, ""),
    "command_topic": (topics.COMMAND, ""),
    "clock_topic": (topics.CLOCK, ""),
    "command_units": ("control", "control: each actuator's control input (the dm_control action; a motor's gear "
                                 "turns it into force); effort: the force (N) or torque (N m) at the actuator's "
                                 "joint, as ros2_control's effort interface takes it"),
    "joint_states_rate": ("control", "control: /joint_states with each control step; physics (realtime only): after "
                                     "every physics step, each new command acting from the next one, as a "
                                     "controller manager and joint_state_broadcaster faster than the controller"),
    "command_type": ("array", "array: std_msgs/Float64MultiArray, one value per actuator; joint_trajectory / "
                              "joint_state: trajectory_msgs/JointTrajectory (its first point) or sensor_msgs/JointState, "
                              "the effort of each actuator's joint by name (needs command_units: effort)"),
}
COMMAND_UNITS = ("control", "effort")


def _choice(p, name: str, choices: tuple) -> str:
    value = str(p[name]).strip().lower()
    if value not in choices:
        raise ParameterError(name, p[name], f"expected one of {', '.join(choices)}")
    return value


def _stamp(seconds: float):
    return Time(nanoseconds=int(round(seconds * 1e9))).to_msg()


class SimNode(Node):
    """The simulator node. Counters for tests and tools: ``steps``, ``episodes``, ``malformed_commands``."""

    def __init__(self, **kwargs):
        super().__init__("sim_node", **kwargs)
        set_up_or_destroy(self, self._setup)

    # --- setup --------------------------------------------------------------------------------
    def _setup(self) -> None:
        p = declare_table(self, PARAMETERS)
        self.params = p
        self.mode = _choice(p, "mode", MODES)
        self.joint_states_rate = _choice(p, "joint_states_rate", JOINT_STATES_RATES)
        if self.joint_states_rate == "physics" and self.mode != "realtime":
            raise ParameterError("joint_states_rate", p["joint_states_rate"], "physics needs mode realtime: lockstep "
                                 "steps a whole control step per command")
        for name in ("action_repeat", "episode_steps"):
            if int(p[name]) < 1:
                raise ParameterError(name, p[name], "must be >= 1")
        if int(p["max_episodes"]) < 0:
            raise ParameterError("max_episodes", p["max_episodes"], "must be >= 0 (0 = unlimited)")
        if not float(p["command_timeout_s"]) >= 0:
            raise ParameterError("command_timeout_s", p["command_timeout_s"], "must be >= 0 (0 disables)")
        if not float(p["lockstep_republish_s"]) >= 0:
            raise ParameterError("lockstep_republish_s", p["lockstep_republish_s"], "must be >= 0 (0 disables)")
        self.engine = self._make_engine(p)
        self.command_units = _choice(p, "command_units", COMMAND_UNITS)
        self.command_type = _choice(p, "command_type", tuple(COMMAND_TYPES))
        if self.command_type != "array" and self.command_units != "effort":
            raise ParameterError("command_type", p["command_type"], "a joint_trajectory or joint_state command carries "
                                 "efforts by joint name: set command_units: effort")
        try:  # a command value per unit of actuator control
            self._per_control = (self.engine.effort_per_control() if self.command_units == "effort"
                                 else np.ones(self.engine.action_dim))
        except ValueError as e:
            raise ParameterError("command_units", p["command_units"], str(e)) from e
        self.max_episodes = int(p["max_episodes"])
        self.republish_s = float(p["lockstep_republish_s"])

        self.steps = 0  # control steps, all episodes
        self.episodes = 0  # completed episodes
        self.malformed_commands = 0
        self.clipped_commands = 0
        self.republished = 0
        self._heard = self._type_warned = False  # a command heard yet; a controller on another type named
        self.command_timeout_s = float(p["command_timeout_s"])
        self.command_timeouts = 0  # silences longer than command_timeout_s (realtime)
        self._last_command_wall, self._timed_out = time.monotonic(), False
        self.episode_returns: list[float] = []
        self.finished = False  # max_episodes reached; main() then exits
        self._return = 0.0
        self._command = self.engine.last_command.copy()  # realtime: zero (clipped) before any command
        self._obs_msg = self._joint_msg = None
        self._last_obs_wall = time.monotonic()

        self.command_topic = p["command_topic"]
        self._pub_joints = self.create_publisher(JointState, p["joint_states_topic"], qos.SENSOR)
        self._pub_obs = self.create_publisher(Float64MultiArray, p["observation_topic"], qos.SENSOR)
        self._pub_reward = self.create_publisher(Float64, p["reward_topic"], qos.EVENTS)
        self._pub_episode = self.create_publisher(Int64, p["episode_topic"], qos.EVENTS)
        self._pub_return = self.create_publisher(Float64, p["episode_return_topic"], qos.EVENTS)
        self._pub_clock = self.create_publisher(ClockMsg, p["clock_topic"], CLOCK_QOS) if p["publish_clock"] else None
        self._sub_cmd = self.create_subscription(COMMAND_TYPES[self.command_type], self.command_topic, self._on_command,
                                                 qos.COMMAND)

        log = self.get_logger()
        for line in describe(self.engine):
            log.info(line)
        if self.engine.skipped_joints:
            log.info(f"not in joint_states (free/ball joints): {', '.join(self.engine.skipped_joints)}")
        log.info(f"mode={self.mode} control_dt={self.engine.control_dt:g}s action_repeat={self.engine.action_repeat} "
                 f"joint_states_rate={self.joint_states_rate} (physics_dt={self.engine.physics_dt:g}s) "
                 f"episode_steps={self.engine.episode_steps} seed={p['seed']} commands on {self.command_topic}")
        if self.command_units == "effort":
            log.info("commands are efforts (N / N·m) at the actuators' joints: " + ", ".join(
                f"{n} [{lo:g}, {hi:g}]" for n, lo, hi in zip(self.engine.actuator_names, *self._command_bounds())))
        if self.command_type != "array":
            log.info(f"commands are {self.command_type} messages, read by joint name: "
                     + ", ".join(self.engine.actuator_joints))
        if self.get_parameter("use_sim_time").value:
            log.warning("use_sim_time is true, but this node is the clock source; its timers use steady time")

        # Timers run on the steady clock: never on /clock, which this node itself drives.
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._timers = []
        self._republish_timer = None
        self._start_episode()
        self._paused = self.mode == "realtime" and bool(p["start_paused"])
        if self.mode == "realtime" and not self._paused:
            self._start_stepping()
        elif self.republish_s > 0:
            self._republish_timer = self.create_timer(self.republish_s / 4, self._on_republish_check,
                                                      clock=self._steady)
            self._timers.append(self._republish_timer)
        if self._paused:
            log.info(f"start_paused: holding episode 0 at its initial state until the first command on "
                     f"{self.command_topic}")

    def _start_stepping(self) -> None:
        """realtime: a control step every control_dt from now on (a physics step every physics_dt with
        joint_states_rate physics)."""
        if self.joint_states_rate == "physics":
            self._timers.append(self.create_timer(self.engine.physics_dt, self._on_physics_tick, clock=self._steady))
        else:
            self._timers.append(self.create_timer(self.engine.control_dt, self._on_tick, clock=self._steady))

    def _make_engine(self, p) -> SimEngine:
        seed, repeat = int(p["seed"]), int(p["action_repeat"])
        if p["mjcf_path"]:
            path = os.path.expanduser(str(p["mjcf_path"]))
            if not os.path.isfile(path):
                raise ParameterError("mjcf_path", p["mjcf_path"], "file not found")
            if not str(p["reward_expression"]).strip():
                raise ParameterError("reward_expression", p["reward_expression"], "must be set when mjcf_path is set")
            reward = {"expression": p["reward_expression"], "done": p["done_expression"] or None}
            try:
                return SimEngine.from_mjcf(path, reward, episode_steps=int(p["episode_steps"]), action_repeat=repeat,
                                           seed=seed, reset_noise=float(p["reset_noise"]))
            except ValueError as e:
                which = "reward_expression" if "reward" in str(e) else "mjcf_path"
                raise ParameterError(which, p[which], str(e)) from e
        try:
            return SimEngine.from_task(str(p["task"]), seed=seed, action_repeat=repeat)
        except ValueError as e:
            raise ParameterError("task", p["task"], str(e)) from e

    # --- publishing ---------------------------------------------------------------------------
    def _start_episode(self) -> None:
        obs = self.engine.reset()
        self._return = 0.0
        self._command = self.engine.last_command.copy()
        self._pub_episode.publish(Int64(data=self.engine.episode))
        self._publish_state(obs, math.nan)

    def _publish_joints(self) -> JointState:
        """/clock and /joint_states of the state now; returns the joint state."""
        e = self.engine
        stamp = _stamp(e.time)
        if self._pub_clock is not None:
            self._pub_clock.publish(ClockMsg(clock=stamp))
        js = JointState()
        js.header.stamp = stamp
        js.name = list(e.joint_names)
        js.position = e.joint_positions().tolist()
        js.velocity = e.joint_velocities().tolist()
        js.effort = e.joint_efforts().tolist() if e.actuators_map_to_joints else []
        self._pub_joints.publish(js)
        return js

    def _publish_state(self, obs: np.ndarray, reward: float, last: bool = False) -> None:
        e = self.engine
        js = self._publish_joints()
        # One message carries o_t+1 with the r_t and a_t that led to it: transitions pair exactly.
        segments = [("obs", obs), ("reward", [reward]), ("applied_action", e.last_command),
                    ("episode", [e.episode]), ("step", [e.step_in_episode]), ("last", [float(last)])]
        if self.joint_states_rate == "physics":  # a command may change mid-step: say when one did
            segments.append(("commands", [e.last_step_commands]))
        dims, data = pack(segments)
        om = segmented_array(dims, data)
        self._joint_msg, self._obs_msg = js, om
        self._pub_obs.publish(om)
        self._last_obs_wall = time.monotonic()

    # --- stepping -----------------------------------------------------------------------------
    def _advance(self, command: np.ndarray) -> None:
        try:
            obs, reward, done = self.engine.step(command)
        except PhysicsDiverged as e:
            self._diverged(e)
            return
        self._after_step(obs, reward, done)

    def _after_step(self, obs: np.ndarray, reward: float, done: bool) -> None:
        """A control step is complete: its reward, its step message, and the episode's end if it ended."""
        self.steps += 1
        self._return += reward
        self._pub_reward.publish(Float64(data=float(reward)))
        self._publish_state(obs, reward, last=done)
        if not done:
            return
        self._pub_return.publish(Float64(data=float(self._return)))
        self.episode_returns.append(self._return)
        self.get_logger().info(f"episode {self.engine.episode} return {self._return:.3f} "
                               f"({self.engine.step_in_episode} steps)")
        self._next_episode()

    def _diverged(self, e: PhysicsDiverged) -> None:
        """The episode ends where the physics broke: no final observation (it would pair a command with a
        state the step never reached) and no return (the episode did not finish); a new one starts."""
        self.get_logger().error(f"{e}; episode {self.engine.episode} ends here without a final observation or a "
                                f"return ({self.engine.diverged} diverged so far); a new episode starts")
        self._next_episode()

    def _next_episode(self) -> None:
        """An episode is over: the next one starts, or the node finishes after max_episodes."""
        self.episodes += 1
        if self.max_episodes and self.episodes >= self.max_episodes:
            self._finish()
        else:
            self._start_episode()

    def _finish(self) -> None:
        self.finished = True
        for t in self._timers:
            t.cancel()
        for pub in (self._pub_reward, self._pub_return, self._pub_episode):  # don't lose the last events
            pub.wait_for_all_acked(Duration(seconds=2.0))
        self.get_logger().info(f"max_episodes={self.max_episodes} reached after {self.steps} steps; shutting down")

    def _command_values(self, msg) -> tuple[list | None, str]:
        """(the values a command message carries, one per actuator; or None and why not)."""
        if self.command_type == "array":
            return msg.data, ""
        try:  # the planner's own packing, read back (runtime/command_fields.py)
            return list(command_vector(msg, self.command_type, self.engine.actuator_joints, "effort")), ""
        except (ValueError, TypeError) as e:
            return None, f"{e}; expected the effort of joints {list(self.engine.actuator_joints)}"

    def _on_command(self, msg) -> None:
        if self.finished:
            return
        self._heard = True
        values, reason = self._command_values(msg)
        ok, reason = (False, reason) if values is None else self.engine.validate_command(values)
        if not ok:
            self.malformed_commands += 1
            self.get_logger().error(f"ignoring malformed command on {self.command_topic}: {reason} "
                                    f"({self.malformed_commands} so far)", throttle_duration_sec=1.0)
            return
        command, clipped = self.engine.clip_command(np.asarray(values, np.float64) / self._per_control)
        if clipped:
            self.clipped_commands += 1
            low, high = self._command_bounds()
            self.get_logger().warning(f"command {list(values)} outside [{low.tolist()}, {high.tolist()}] "
                                      f"({self.command_units}); clipped ({self.clipped_commands} so far)",
                                      throttle_duration_sec=1.0)
        if self.mode == "realtime":
            self._command = command
            self._last_command_wall, self._timed_out = time.monotonic(), False
            if self._paused:  # the controller is heard: the episode runs from here
                self._paused = False
                if self._republish_timer is not None:
                    self._republish_timer.cancel()
                self.get_logger().info("first command received: stepping in real time")
                self._start_stepping()
        else:
            self._advance(command)

    def _command_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The actuators' bounds in the units commands come in."""
        return self.engine.action_low * self._per_control, self.engine.action_high * self._per_control

    def _on_tick(self) -> None:
        if self.finished:
            return
        self._watchdog()
        self._advance(self._command)

    def _on_physics_tick(self) -> None:
        """joint_states_rate physics: one physics step with the newest command, then the joint state (or
        the whole step's messages, when it completes a control step)."""
        if self.finished:
            return
        self._watchdog()
        try:
            complete = self.engine.physics_step(self._command)
        except PhysicsDiverged as e:
            self._diverged(e)
            return
        if complete:
            self._after_step(*self.engine.finish_step())
        else:
            self._publish_joints()

    def _watchdog(self) -> None:
        """realtime: apply zero after command_timeout_s without a valid command."""
        silent = time.monotonic() - self._last_command_wall
        if self.command_timeout_s and silent > self.command_timeout_s and not self._timed_out:
            self._timed_out = True
            zero = self.engine.zero_command()
            if not np.array_equal(self._command, zero):  # (a zero command needs no watchdog)
                self.command_timeouts += 1
                self._command = zero
                self.get_logger().warning(f"no valid command on {self.command_topic} for {silent:.2f} s "
                                          f"(command_timeout_s {self.command_timeout_s:g}): applying zero")

    def _on_republish_check(self) -> None:
        if self.finished or self._obs_msg is None or time.monotonic() - self._last_obs_wall < self.republish_s:
            return
        if not self._heard and not self._type_warned:  # waiting for a controller: is it on another type?
            hint = mismatch_hint(self, self.command_topic, type_name(COMMAND_TYPES[self.command_type]), "command_type")
            if hint:
                self._type_warned = True
                self.get_logger().warning(f"no command heard: {hint}")
        self.republished += 1
        self._pub_joints.publish(self._joint_msg)
        self._pub_obs.publish(self._obs_msg)
        self._last_obs_wall = time.monotonic()

    def destroy_node(self):
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.close()
            self.engine = None
        return super().destroy_node()


def main(args=None) -> int:
    return run_node("sim_node", SimNode, args, done=lambda node: node.finished)


if __name__ == "__main__":
    sys.exit(main())
