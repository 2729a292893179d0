"""``reward_node``: a robot's reward, computed from its own topics and published on ``/tdmpc2/reward``.

The sim publishes the reward of each step; a real robot has no such topic, and learning needs one.
This node reads the same ``observation_sources`` as the planner (runtime/observations.py: JointState
by joint name, Imu, Odometry, arrays) and, optionally, the command topic, and at every message of
the first source publishes one ``std_msgs/Float64``: the value of ``reward_expression`` on the
observation just assembled. That is the reward of the step that led to this observation, published
right after it, which is where the trainer's raw-bag alignment looks for it (bags/reader.py: "the
reward nearest T_{k+1}, within tolerance_s"). Record it beside the observation and command topics
(recorder_node's ``topics``) and the trainer learns from the robot's own bags in raw mode.

Paced by commands (``pace: command``), for a first source faster than the control rate (a
joint_state_broadcaster at 500 Hz beside a 50 Hz controller): a reward at each command instead, of
the newest observation and the command in force when it came (the one that acted in the step that
led to it; usually the command before this one, but not after a command superseded before the next
observation, as the trainer's transitions count it). That is the reward of the trainer's
``raw_pace: command`` transitions, one per step, so an episode's return sums one reward per step at
either pace. It is published at the command, so the trainer matches it there: ``raw_reward_at: command``.

The expression (runtime/expressions.py: numpy, ``cos``, ``tolerance``, ... and no builtins) sees:

==========  ========================================================================================
``obs``     the observation vector (float64), the sources concatenated in order, in their units
``action``  the command in force when the first source's newest message came (float64, physical
            units, in command_joints order; paced by observations, the newest); only with
            ``command_topic``, and no reward is published for an observation that came before any command
==========  ========================================================================================

Stamped (``stamped: true``): each reward goes out as a ``std_msgs/Float64MultiArray`` with the segments
``reward`` [1] and ``stamp`` [2] (sec, nanosec): the header stamp of the first source's message it
scored (a JointState, Imu or Odometry source). The trainer then pairs each reward with the very
observation it scored (bags/reader.py, "Stamped rewards"), where otherwise, paced by commands beside a
fast broadcaster, 2-15% of rewards score a joint state one broadcast period from the transition's: the
recorder and this node, two processes, can hear a joint state and a command in opposite orders.
Record the topic as ``Float64MultiArray`` (recorder_node's ``topics``).

Episodes: when the robot's episode topic (``episode_topic``, std_msgs/Int64: whoever resets the robot
announces the episode that starts) announces a new episode, the sum of the rewards published since
the previous announcement goes out on ``episode_return_topic`` (std_msgs/Float64), as the sim does at
each episode's end: a learning curve to watch live, and one the recorder keeps.

An expression that raises or is not finite publishes nothing for that step (a missing reward only
drops one transition; a wrong one would teach the model) and is counted, logged (throttled) and put
on ``/diagnostics`` (``tdmpc2_ros: reward``) as WARN. A syntax error refuses to start.

Parameters (``config/reward.yaml``)
------------------------------------
=====================  ========================  ==================================================
name                   default                   meaning
=====================  ========================  ==================================================
observation_sources    []                        the planner's sources; the first one's topic paces rewards
pace                   observation               observation (each message of the first source) or command
reward_expression      ""                        the reward of a step, from ``obs`` (and ``action``)
command_topic          ""                        the command topic, for ``action`` ("" = none)
command_type           array                     array, joint_trajectory or joint_state (runtime/command_fields.py)
command_joints         []                        joint_trajectory / joint_state: the joint of each action element
command_interface      effort                    position, velocity or effort
command_reliability    best_effort               the command subscription: best_effort or reliable (pace command)
reward_topic           /tdmpc2/reward            where the reward goes (std_msgs/Float64, reliable, keep last 100)
stamped                false                     the reward with the stamp of the state it scored (Float64MultiArray)
episode_topic          /tdmpc2/episode           the robot's episode announcements (std_msgs/Int64; "" = none)
episode_return_topic   /tdmpc2/episode_return    the finished episode's return, at the next announcement
diagnostics_period_s   1.0
=====================  ========================  ==================================================

Run: ``python -m tdmpc2_ros.ros.reward_node --ros-args --params-file config/reward.yaml`` (or
``use_reward:=true`` in the bringup and launch files). No torch.
"""

from __future__ import annotations

if __name__ == "__main__":  # a node process: a stop during the imports below is a clean stop too
    from tdmpc2_ros.ros import stop

    stop.take_signals()

import math
import sys
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from std_msgs.msg import Float64, Float64MultiArray, Int64

from tdmpc2_ros.ros import qos, topics
from tdmpc2_ros.ros.commands import COMMAND_TYPES
from tdmpc2_ros.ros.diagnostics import OK, WARN, status_array
from tdmpc2_ros.ros.graph import UnmatchedPublishers
from tdmpc2_ros.ros.messages import SOURCE_MESSAGES, segmented_array
from tdmpc2_ros.ros.params import ParameterError, declare_table
from tdmpc2_ros.ros.run import run_node, set_up_or_destroy
from tdmpc2_ros.runtime.command_fields import check_command_parameters, command_vector
from tdmpc2_ros.runtime.expressions import Expression
from tdmpc2_ros.runtime.observations import (
    PACES,
    STAMPED_REWARD,
    STAMPED_SOURCES,
    AdapterError,
    ObservationAssembler,
)

PARAMETERS = {  # name: (default, description)
    "observation_sources": ([], "observation sources '<type>:<topic>:<field>[:<joint>]', as the planner's; a reward "
                                "is published at each message of the first one's topic"),
    "pace": ("observation", "'observation': a reward at each message of the first source; 'command': at each "
                            "command, of the newest observation and the command then in force (observations "
                            "faster than the control rate); needs command_topic"),
    "reward_expression": ("", "the reward of a step: a numpy expression of obs (and action, with command_topic)"),
    "command_topic": ("", "the robot's command topic, for the name action ('' = none)"),
    "command_type": ("array", "the command topic's type: array, joint_trajectory or joint_state"),
    "command_joints": ([], "joint_trajectory / joint_state commands: the joint of each action element"),
    "command_interface": ("effort", "joint_trajectory / joint_state commands: position, velocity or effort"),
    "command_reliability": ("best_effort", "the command subscription: 'best_effort' hears any controller; "
                                           "'reliable' misses none of a reliable one's (the planner's), as pace "
                                           "'command' wants, but hears nothing of a best-effort one"),
    "reward_topic": (topics.REWARD, "where the reward is published (std_msgs/Float64)"),
    "stamped": (False, "publish each reward as a std_msgs/Float64MultiArray [reward, sec, nanosec] with the header "
                       "stamp of the first source's message it scored, for the trainer's exact pairing"),
    "episode_topic": (topics.EPISODE, "episode announcements (std_msgs/Int64) that end the running episode ('' = none)"),
    "episode_return_topic": (topics.EPISODE_RETURN, "where a finished episode's return is published (std_msgs/Float64)"),
    "diagnostics_period_s": (1.0, "period of the /diagnostics status"),
}


class RewardNode(Node):
    """Counters for tests and tools: ``published``, ``waiting``, ``bad``, ``last_reward``, ``problem``,
    ``episodes``, ``last_return``."""

    def __init__(self, **kwargs):
        super().__init__("reward_node", **kwargs)
        self.published = self.waiting = self.bad = self.episodes = 0
        self.last_reward, self.problem = math.nan, ""
        self.unmatched_commanders: UnmatchedPublishers | None = None  # with a command_topic
        self.episode_sum, self.episode_rewards, self.last_return = 0.0, 0, math.nan  # the running episode
        self.action: np.ndarray | None = None  # the newest command
        # When the first source's newest message came: the command then in force (the one that acted
        # in the step that led to it) and, stamped, the message's header stamp.
        self.scored_action: np.ndarray | None = None
        self.scored_stamp = (0, 0)
        set_up_or_destroy(self, self._set_up)

    def _set_up(self):
        p = self.p = declare_table(self, PARAMETERS)
        try:
            self.assembler = ObservationAssembler(list(p["observation_sources"]))
            kinds = self.assembler.topics
        except AdapterError as e:
            raise ParameterError("observation_sources", p["observation_sources"], str(e)) from None
        try:
            self.expression = Expression(p["reward_expression"], "reward_expression")
        except ValueError as e:
            raise ParameterError("reward_expression", p["reward_expression"], str(e)) from None
        if p["pace"] not in PACES or (p["pace"] == "command" and not p["command_topic"]):
            raise ParameterError("pace", p["pace"], f"pace must be one of {', '.join(PACES)}; command needs "
                                                    f"command_topic")
        first = self.assembler.sources[0]
        if p["stamped"] and first.kind not in STAMPED_SOURCES:
            raise ParameterError("stamped", p["stamped"], f"the first observation source ({first.kind} on {first.topic}) "
                                                          f"has no header stamp; stamped needs one of "
                                                          f"{', '.join(STAMPED_SOURCES)}")
        by_observation = p["pace"] == "observation"
        for topic, kind in kinds.items():
            self.create_subscription(SOURCE_MESSAGES[kind], topic, self._on_source(topic, topic == first.topic,
                                                                                   by_observation), qos.SENSOR)
        if p["command_topic"]:
            problems = check_command_parameters(p["command_type"], p["command_joints"], p["command_interface"])
            if problems:
                raise ParameterError("command_type", p["command_type"], "; ".join(problems))
            if p["command_reliability"] not in qos.RELIABILITY:
                raise ParameterError("command_reliability", p["command_reliability"],
                                     f"must be one of {', '.join(qos.RELIABILITY)}")
            # Best effort takes a reliable publisher's commands too, and paced by observations only the
            # newest matters. Paced by commands each one ends a step: a lost one costs a reward.
            reliable = p["command_reliability"] == "reliable"
            heard = qos.EVENTS if reliable else qos.SENSOR
            self.unmatched_commanders = UnmatchedPublishers(
                self, p["command_topic"], heard, "command_reliability (best_effort hears any controller)",
                self.get_logger().error)
            self.create_subscription(COMMAND_TYPES[p["command_type"]], p["command_topic"], self._on_command, heard,
                                     event_callbacks=self.unmatched_commanders.events)
        self.pub = self.create_publisher(Float64MultiArray if p["stamped"] else Float64, p["reward_topic"], qos.EVENTS)
        if p["episode_topic"]:
            self.return_pub = self.create_publisher(Float64, p["episode_return_topic"], qos.EVENTS)
            self.create_subscription(Int64, p["episode_topic"], self._on_episode, qos.EVENTS)
        self.diag_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, 10)
        self.create_timer(float(p["diagnostics_period_s"]), self._publish_diagnostics,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        pacer = first.topic if by_observation else p["command_topic"]
        self.get_logger().info(f"publishing {p['reward_expression']!r} on {p['reward_topic']} at each message of {pacer}")

    def _on_command(self, msg):
        p = self.p
        try:
            action = command_vector(msg, p["command_type"], p["command_joints"], p["command_interface"])
        except ValueError as e:
            self._refuse(f"command on {p['command_topic']} not read: {e}")
            return
        if p["pace"] == "command":
            self._publish_reward()  # the step that ends here, at the newest observation
        self.action = action

    def _on_source(self, topic: str, first: bool, by_observation: bool):
        def callback(msg):
            self.assembler.update(topic, msg, time.monotonic())
            if first:
                self.scored_action = self.action
                if self.p["stamped"]:
                    self.scored_stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
                if by_observation:
                    self._publish_reward()

        return callback

    def _publish_reward(self):
        names = {}
        if self.p["command_topic"]:
            if self.scored_action is None:
                self.waiting += 1  # no command before the observation: no step to reward
                return
            names["action"] = self.scored_action
        try:
            names["obs"] = np.asarray(self.assembler.assemble(), np.float64)
        except AdapterError:
            self.waiting += 1  # a source topic has not spoken yet
            return
        try:
            reward = self.expression.finite_value(**names)
        except Exception as e:  # noqa: BLE001 — the expression is the user's: anything it raises is reported
            self._refuse(f"no reward for this step: {type(e).__name__}: {e}")
            return
        if self.p["stamped"]:
            self.pub.publish(segmented_array(STAMPED_REWARD, [reward, *self.scored_stamp]))
        else:
            self.pub.publish(Float64(data=reward))
        self.published, self.last_reward, self.problem = self.published + 1, reward, ""
        self.episode_sum, self.episode_rewards = self.episode_sum + reward, self.episode_rewards + 1

    def _on_episode(self, msg: Int64):
        """A new episode starts: the one that ran ends with the rewards published so far (none: no
        episode to report, e.g. the first announcement)."""
        if self.episode_rewards:
            self.return_pub.publish(Float64(data=self.episode_sum))
            self.episodes, self.last_return = self.episodes + 1, self.episode_sum
        self.episode_sum, self.episode_rewards = 0.0, 0

    def _refuse(self, why: str):
        self.bad += 1
        self.problem = why
        self.get_logger().error(why, throttle_duration_sec=1.0)

    def _publish_diagnostics(self):
        # A controller whose commands cannot reach the command subscription (a best-effort one, with
        # command_reliability reliable), until it leaves: unlike a step's problem, a reward does not clear it.
        unmatched = self.unmatched_commanders.check() if self.unmatched_commanders is not None else ""
        values = {"published": self.published, "waiting": self.waiting, "bad": self.bad,
                  "last_reward": self.last_reward, "last_problem": self.problem,
                  "episodes": self.episodes, "last_episode_return": self.last_return,
                  "reward_expression": self.p["reward_expression"], "unmatched_qos": unmatched}
        problem = self.problem or unmatched
        level, message = (WARN, problem) if problem else (OK, f"publishing on {self.p['reward_topic']}")
        self.diag_pub.publish(status_array(self.get_clock().now().to_msg(), "tdmpc2_ros: reward", self.get_name(),
                                           level, message, values))


def main(args=None) -> int:
    return run_node("reward_node", RewardNode, args)


if __name__ == "__main__":
    sys.exit(main())
