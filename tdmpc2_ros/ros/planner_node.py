"""planner_node: observations in, one ONNX Runtime call per control tick, commands out.

A thin adapter around tdmpc2_ros.runtime (numpy + onnxruntime; no torch):
- observation adapters (adapters.py) turn the subscribed messages into the model's vector;
- at start-up the budget ladder is measured and the largest rung that fits the period is chosen;
- each tick plans in a worker thread with a deadline. A late plan is replaced by the previous
  plan's next action (from its warm-start mean) and counted as a miss; bad or stale input yields
  the configured safe action. Nothing malformed or out of limits is ever published.
"""

from __future__ import annotations

import concurrent.futures as futures
import math
import sys
import threading
import time

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import Float32MultiArray, Float64MultiArray, Int64, MultiArrayDimension

from tdmpc2_ros.ros import qos, topics
from tdmpc2_ros.ros.adapters import AdapterError, ObservationAssembler
from tdmpc2_ros.ros.diagnostics import ERROR, OK, WARN, RollingStats, status_array
from tdmpc2_ros.ros.params import PlannerParams, declare_and_read
from tdmpc2_ros.ros.paths import default_model
from tdmpc2_ros.runtime import OnnxPlanner, SpecMismatch
from tdmpc2_ros.runtime.ladder import choose_rung, measure_latency, read_ladder

MESSAGE_TYPES = {"array": Float64MultiArray, "array32": Float32MultiArray, "joint_state": JointState, "imu": Imu,
                 "odometry": Odometry}


class ActionShaper:
    """Normalised action in [-1, 1] -> physical command: scaled to the model's action spec, clamped
    to the configured limits, rate-limited. The only way a command leaves the node."""

    def __init__(self, model_low, model_high, limit_low, limit_high, max_rate: float, period_s: float, scale=()):
        # scale: per-element factor from the model's action units to the command topic's (e.g. a
        # motor gear, when a ros2_control effort controller takes N or N m).
        scale = np.asarray(scale if len(scale) else np.ones(len(model_low)), float)
        self.model_low, self.model_high = np.asarray(model_low, float) * scale, np.asarray(model_high, float) * scale
        self.low = np.asarray(limit_low if len(limit_low) else model_low, float)
        self.high = np.asarray(limit_high if len(limit_high) else model_high, float)
        if not (self.low.shape == self.high.shape == self.model_low.shape == scale.shape):
            raise SpecMismatch(f"action limits of length {self.low.shape[0]}/{self.high.shape[0]} or command_scale of length "
                               f"{scale.shape[0]} do not match the model's action dim {self.model_low.shape[0]}")
        self.max_step = max_rate * period_s if max_rate > 0 else math.inf
        self.last = np.clip(np.zeros_like(self.low), self.low, self.high)

    def physical(self, normalised) -> np.ndarray:
        a = np.clip(np.asarray(normalised, float), -1.0, 1.0)
        return self.model_low + (a + 1.0) * 0.5 * (self.model_high - self.model_low)

    def shape(self, physical) -> np.ndarray:
        cmd = np.clip(np.asarray(physical, float), self.low, self.high)
        cmd = self.last + np.clip(cmd - self.last, -self.max_step, self.max_step)
        if not np.all(np.isfinite(cmd)):  # cannot happen after the clips above; kept as the last guard
            cmd = self.last
        self.last = cmd
        return cmd

    def safe(self, mode: str) -> np.ndarray:
        return self.shape(self.last if mode == "hold" else np.zeros_like(self.low))


class PlannerNode(Node):
    def __init__(self, **kwargs):
        super().__init__("planner_node", **kwargs)
        self.p: PlannerParams = declare_and_read(self)
        self.period = 1.0 / self.p.control_rate_hz
        self.assembler = ObservationAssembler(list(self.p.observation_sources))
        self.planner, self.ladder_report = self._load_model()
        c = self.planner.contract
        self.shaper = ActionShaper(c.action.low or [-1.0] * c.action.dim, c.action.high or [1.0] * c.action.dim,
                                   self.p.action_low, self.p.action_high, self.p.max_action_rate, self.period,
                                   self.p.command_scale)
        self.worker = futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="plan")
        self.pending: futures.Future | None = None
        self.lock = threading.Lock()
        self.last_mean = np.zeros((c.budget.horizon, c.action.dim), np.float32)
        self.consecutive_misses = 0
        self.reset_requested = True
        # Counters and statistics for /diagnostics (and tests).
        self.ticks = self.missed_deadlines = self.safe_actions = self.published = 0
        self.tick_latency, self.plan_latency, self.obs_to_action = RollingStats(), RollingStats(), RollingStats()
        self.last_obs_age = math.nan
        self.last_problem = ""
        self.level = OK

        self.cmd_pub = self.create_publisher(Float64MultiArray, self.p.action_topic, qos.COMMAND)
        self.diag_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, 10)
        for topic, kind in self.assembler.topics.items():
            self.create_subscription(MESSAGE_TYPES[kind], topic, self._make_callback(topic), qos.SENSOR)
        self.create_subscription(Int64, self.p.episode_topic, self._on_episode, qos.EVENTS)
        # The control loop and its health report run on the steady clock: with use_sim_time a
        # /clock-driven timer would stall whenever the sim does (or before it starts).
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        if self.p.trigger == "timer":
            self.create_timer(self.period, self.tick, clock=steady)
        self.create_timer(self.p.diagnostics_period_s, self.publish_diagnostics, clock=steady)
        self.get_logger().info(f"planning with {self.planner.path} ({c.describe()}); {self.ladder_report}")

    # -- start-up -------------------------------------------------------------------------------
    def _load_model(self):
        """Load the rungs largest first (refusing any whose spec differs from the configured
        sources), measure each after warm-up, keep the first (largest) that fits the period."""
        path = self.p.model_path or str(default_model())
        obs_dim = self.assembler.fixed_width()
        limit = self.p.deadline_fraction * self.period
        measured, chosen = [], None
        for rung in read_ladder(path):
            planner = OnnxPlanner(rung.path, obs_dim=obs_dim, threads=self.p.threads, seed=self.p.seed,
                                  expected_sha256=rung.sha256 or None)
            obs = np.zeros(planner.obs_dim, np.float32)
            lat = measure_latency(lambda: planner.plan(obs), self.p.ladder_warmup, self.p.ladder_runs, limit)
            p99 = float(np.percentile(lat, 99))
            measured.append((planner.contract.budget.label(), p99, float(np.median(lat)), len(lat)))
            if chosen is None or p99 < chosen[1]:
                chosen = (planner, p99)
            if p99 <= limit:
                break
        fits = chosen[1] <= limit
        table = ", ".join(f"{label}: p50 {p50 * 1e3:.1f} ms p99 {p99 * 1e3:.1f} ms ({n} runs)" for label, p99, p50, n in measured)
        planner = chosen[0]
        planner.reset()
        report = (f"budget ladder at {self.p.control_rate_hz:g} Hz (limit {limit * 1e3:.1f} ms): [{table}] -> chose "
                  f"{planner.contract.budget.label()}" + ("" if fits else " (NO rung fits; expect misses)"))
        if not fits:
            self.get_logger().warning(report)
        return planner, report

    # -- inputs ---------------------------------------------------------------------------------
    def _make_callback(self, topic: str):
        first_topic = self.assembler.sources[0].topic

        def callback(msg):
            self.assembler.update(topic, msg, time.monotonic())
            if self.p.trigger == "observation" and topic == first_topic:
                self.tick()

        return callback

    def _on_episode(self, msg: Int64):
        self.reset_requested = True  # new episode: plan from a zero warm start (the reference's t0)

    # -- the control tick -------------------------------------------------------------------------
    def _observation(self, now: float):
        """The model input, or None with the reason recorded (never a guessed vector)."""
        age = self.assembler.oldest_age(now)
        self.last_obs_age = age
        if age > self.p.max_observation_age_s:
            return None, f"observation is stale ({age * 1e3:.0f} ms old > {self.p.max_observation_age_s * 1e3:.0f} ms)"
        try:
            return self.planner.contract.validate_obs(self.assembler.assemble()), ""
        except (AdapterError, ValueError) as e:
            return None, str(e)

    def tick(self):
        start = time.monotonic()
        self.ticks += 1
        obs, problem = self._observation(start)
        if obs is None:
            self._publish(self.shaper.safe(self.p.safe_action), start, safe=True)
            self._flag(ERROR, problem)
            return
        if self.pending is not None and not self.pending.done():
            self._fallback(start, "previous plan still running")
            return
        if self.reset_requested:
            self.planner.reset()
            self.reset_requested = False
        self.pending = self.worker.submit(self._plan, obs)
        try:
            action = self.pending.result(timeout=max(self.period * 0.9 - (time.monotonic() - start), 0.0))
        except futures.TimeoutError:
            self._fallback(start, "plan missed its deadline")
            return
        self.consecutive_misses = 0
        self._publish(self.shaper.shape(self.shaper.physical(action)), start)

    def _plan(self, obs):
        t = time.perf_counter()
        result = self.planner.plan(obs, explore=self.p.explore)
        self.plan_latency.add(time.perf_counter() - t)
        with self.lock:
            self.last_mean = result.mean
        return result.action

    def _fallback(self, start: float, why: str):
        """The previous plan's next action (the warm-start mean one step on, then two, ...)."""
        self.missed_deadlines += 1
        self.consecutive_misses += 1
        with self.lock:
            mean = self.last_mean
        step = min(self.consecutive_misses, mean.shape[0] - 1)
        self._publish(self.shaper.shape(self.shaper.physical(mean[step])), start)
        self._flag(WARN, why)

    def _publish(self, command: np.ndarray, start: float, safe: bool = False):
        msg = Float64MultiArray()
        msg.layout.dim = [MultiArrayDimension(label="action", size=command.shape[0], stride=command.shape[0])]
        msg.data = [float(x) for x in command]
        self.cmd_pub.publish(msg)
        now = time.monotonic()
        self.published += 1
        self.safe_actions += int(safe)
        self.tick_latency.add(now - start)
        if not safe and self.assembler.latest:
            newest = max(t for _, t in self.assembler.latest.values())
            self.obs_to_action.add(now - newest)

    def _flag(self, level, problem: str):
        self.level, self.last_problem = max(self.level, level), problem
        # rclpy keys throttling by call site, so each severity needs its own line.
        if level == ERROR:
            self.get_logger().error(f"{problem}; published the safe action", throttle_duration_sec=1.0)
        else:
            self.get_logger().warning(f"{problem}; published the fallback action", throttle_duration_sec=1.0)

    # -- diagnostics -------------------------------------------------------------------------------
    def publish_diagnostics(self):
        c = self.planner.contract
        values = {
            "tick_latency_p50_ms": round(self.tick_latency.percentile(50) * 1e3, 3),
            "tick_latency_p99_ms": round(self.tick_latency.percentile(99) * 1e3, 3),
            "plan_latency_p99_ms": round(self.plan_latency.percentile(99) * 1e3, 3),
            "obs_to_action_p99_ms": round(self.obs_to_action.percentile(99) * 1e3, 3),
            "observation_age_ms": round(self.last_obs_age * 1e3, 3),
            "ticks": self.ticks, "missed_deadlines": self.missed_deadlines, "safe_actions": self.safe_actions,
            "model_sha256": self.planner.sha256[:16], "model_train_step": c.train_step, "model_task": c.task,
            "budget": c.budget.label(), "control_rate_hz": self.p.control_rate_hz,
        }
        message = self.last_problem if self.level != OK else "planning"
        self.diag_pub.publish(status_array(self.get_clock().now().to_msg(), "tdmpc2_ros: planner", "planner_node",
                                           self.level, message, values))
        # Each report carries the worst level since the previous one; a problem that persists is
        # flagged again by the next tick, one that has cleared no longer shows.
        self.level, self.last_problem = OK, ""

    def destroy_node(self):
        worker = getattr(self, "worker", None)  # absent when start-up was refused
        if worker is not None:
            worker.shutdown(wait=True)
        return super().destroy_node()


def main(args=None) -> int:
    rclpy.init(args=args)
    try:
        node = PlannerNode()
    except KeyboardInterrupt:  # stopped while measuring the ladder
        rclpy.try_shutdown()
        return 0
    except Exception as e:  # refuse to start, saying why (missing model, spec mismatch, bad parameter)
        print(f"planner_node: refusing to start: {e}", file=sys.stderr)
        rclpy.try_shutdown()
        return 1
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
