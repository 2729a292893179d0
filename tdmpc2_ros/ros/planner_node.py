"""planner_node: observations in, one ONNX Runtime call per control tick, commands out.

A thin adapter around tdmpc2_ros.runtime (numpy + onnxruntime; no torch):
- observation sources (runtime/observations.py) turn the subscribed messages into the model's vector;
- at start-up the budget ladder is measured and the largest rung that fits the period is chosen
  (runtime/ladder.py: fit_ladder); while running, a rung whose plans keep overrunning that limit steps
  down to the next smaller one, and back up once plans fit again (runtime/budget_steps.py), because
  start-up may have seen a quieter CPU;
- each tick plans in a worker thread with a deadline. A late plan is replaced by the previous
  plan's next action (from its warm-start mean) and counted as a miss; bad or stale input yields
  the configured safe action. Nothing malformed or out of limits is ever published: every command
  is scaled, clamped and rate-limited by runtime/action_shaper.py;
- each executed step is published as a transition record (runtime/transition.py) for the recorder;
- a model-update announcement (or a model_path change) is checked beside the running model and
  swapped in between two ticks (runtime/hot_swap.py); ~/rollback returns to the previous version;
  what swaps cost the loop goes to /diagnostics (runtime/swap_cost.py);
- ~/enable (std_srvs/SetBool) false sends the stop command and then nothing until it says true (the
  node, its models and its ladder stay up); start_enabled false starts that way;
- every diagnostics_period_s, /diagnostics reports the loop's health (ros/planner_diagnostics.py).
"""

from __future__ import annotations

if __name__ == "__main__":  # a node process: a stop during the imports below is a clean stop too
    from tdmpc2_ros.ros import stop

    stop.take_signals()

import concurrent.futures as futures
import json
import math
import os
import sys
import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.time import Time
from std_msgs.msg import Float64MultiArray, Int64, String
from std_srvs.srv import SetBool, Trigger

from tdmpc2_ros.ros import qos, stop, topics
from tdmpc2_ros.ros.messages import SOURCE_MESSAGES, segmented_array
from tdmpc2_ros.ros.commands import CommandWriter
from tdmpc2_ros.ros.graph import UnmatchedPublishers, mismatch_hint, type_name
from tdmpc2_ros.ros.diagnostics import ERROR, OK, PLANNER_STATUS, WARN, status_array
from tdmpc2_ros.ros.params import PlannerParams, declare_and_read
from tdmpc2_ros.ros.paths import default_model, resolve_model_path, version_of
from tdmpc2_ros.ros.planner_diagnostics import planner_values, steal_words
from tdmpc2_ros.ros.run import run_node
from tdmpc2_ros.runtime import OnnxPlanner
from tdmpc2_ros.runtime import gc_pauses
from tdmpc2_ros.runtime.action_shaper import ActionShaper
from tdmpc2_ros.runtime.observations import AdapterError, ObservationAssembler, segments_of
from tdmpc2_ros.runtime.host_steal import StealMeter
from tdmpc2_ros.runtime.thread_usage import ThreadUsage
from tdmpc2_ros.runtime.onnx_planner import set_execution_provider, share_thread_pool
from tdmpc2_ros.runtime.candidate import SwapRejected, load_matching, warm_up
from tdmpc2_ros.runtime.hot_swap import HotSwapper
from tdmpc2_ros.runtime.swap_request import Request
from tdmpc2_ros.runtime.budget_steps import BudgetSteps
from tdmpc2_ros.runtime.ladder import describe_fit, fit_ladder, measure_latency, next_smaller_rung, read_ladder
from tdmpc2_ros.runtime.priority import make_thread_realtime
from tdmpc2_ros.runtime.rolling import RollingStats
from tdmpc2_ros.runtime.swap_cost import SwapCost, swap_work
from tdmpc2_ros.runtime.tick_slack import TickSlack
from tdmpc2_ros.runtime.transition import SegmentError, TransitionPairer

FAST_SOURCE = 1.5  # trigger observation: a first source stamped this many times per period is too fast to plan on


class PlannerNode(Node):
    ROOM_S = 1.0  # the room gate: this long of plans well within the limit before a load beside the loop
    ROOM_IDLE_S = 0.5  # (or no plan for this long, and at least 3 periods: a loop that does not plan)

    def __init__(self, **kwargs):
        super().__init__("planner_node", **kwargs)
        self.p: PlannerParams = declare_and_read(self)
        self.period = 1.0 / self.p.control_rate_hz
        self.deadline = 0.9 * self.period  # a plan not back by then is a miss (the fallback acts)
        self.assembler = ObservationAssembler(list(self.p.observation_sources))
        # Python's garbage collections, timed from the end of start-up: a late plan says how much of it
        # they took (runtime/gc_pauses.py).
        self.gc = gc_pauses.GcPauses()
        self.gc_in_plans_max_s = 0.0  # the most of one plan spent in collections (any thread's)
        self.steal = StealMeter()  # the host's steal per /diagnostics report (runtime/host_steal.py)
        share_thread_pool(self.p.threads)  # the running model and a swap candidate must not both spin threads
        set_execution_provider(self.p.execution_provider)  # every session of this node, swap candidates included
        self.planner, self.ladder_report, first_standby, rung_p50 = self._load_model()
        self.model_version = version_of(self.p.model_path, self.planner)
        self.model_source = self.p.model_path  # the folder (or file) the running planner came from
        self.previous: list[tuple[object, str, str]] = []  # (planner, version, source) for ~/rollback, newest last
        self.swaps = 0
        self._inflight_step, self._inflight_time = None, 0.0  # the step message last answered, and when
        self.duplicate_observations = 0
        self._swap_note = ""  # set by _install: the tick being planned is a swap (or budget step) tick
        self._swap_timed = False  # that tick is timed as a swap tick: a model version changed hands
        # Ticks and misses by the swap work next to them, and the swap ticks' latency (/diagnostics).
        self.swap_cost = SwapCost()
        self._pending_rollback = None
        self.last_obs = None  # the newest model input, for probing a swap candidate
        c = self.planner.contract
        self.shaper = ActionShaper(c.action.low or [-1.0] * c.action.dim, c.action.high or [1.0] * c.action.dim,
                                   self.p.action_low, self.p.action_high, self.p.max_action_rate, self.period,
                                   self.p.command_scale)
        self.commands = CommandWriter(self.p.command_type, self.p.command_joints, self.p.command_interface, self.period,
                                      c.action.dim, self.get_clock())
        self.worker = futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="plan")
        # A swap's work in the slack after a tick (a candidate's shadow plans, freeing retired models)
        # runs on a thread of its own: a tick that comes while some is still running stops it and
        # starts its plan at once on the idle plan thread, instead of queueing behind it there (on a
        # busy 2-core machine, that queue is where the misses next to shadow plans came from).
        self.slack_worker = futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="slack")
        self.plan_thread, self.plan_cpus = self._set_up_plan_thread()
        self.pending: futures.Future | None = None
        self.lock = threading.Lock()
        self.last_mean = np.zeros((c.budget.horizon, c.action.dim), np.float32)
        self.consecutive_misses = 0
        self.reset_requested = True
        self.enabled = self.p.start_enabled  # ~/enable: false sends the stop command, then nothing
        self._init_statistics()
        self.pairer = TransitionPairer(self.shaper.normalised)
        self.transition_pub = (self.create_publisher(Float64MultiArray, self.p.transition_topic, qos.EVENTS)
                               if self.p.transition_topic else None)
        self._start_swapper(first_standby, rung_p50)
        self._create_interfaces()
        self._start_loop()
        standby = self.swapper.standby.result or ("the standby is being brought up" if self.p.budget_standby
                                                  else "no standby (budget_standby is off)")
        self.get_logger().info(f"planning with {self.planner.path} ({c.describe()}); {self.ladder_report}; {standby}; "
                               f"commands on {self.p.action_topic} as {self.commands.describe()}")

    # -- start-up -------------------------------------------------------------------------------
    def _init_statistics(self):
        """Counters and statistics for /diagnostics (and tests)."""
        self.ticks = self.missed_deadlines = self.safe_actions = self.published = 0
        self.plan_errors = 0  # plans that raised (the safe action was sent instead)
        self.disabled_ticks = 0  # ticks skipped while ~/enable said false
        self._hints, self._hints_at = "", -math.inf  # _type_hints: the last answer, and when
        self._command_type_warned = False  # a subscriber of action_topic of another type was named
        self.ticks_over_limit = 0  # ticks whose plan ran over the rung's limit (deadline_fraction), misses included
        self.tick_latency, self.plan_latency, self.obs_to_action = RollingStats(), RollingStats(), RollingStats()
        self.plan_waited = RollingStats()  # per plan: wall time not spent running (a core or the GIL)
        self.plan_queued = RollingStats()  # per plan: from its hand-off to the worker until it started
        self.plan_queued_since_report = 0.0  # the longest of those since the last /diagnostics report
        self._slack_job = ""  # what the swapper put on the slack thread after the last tick (offer_slack)
        self.slack = TickSlack(self.period, self.deadline, timer=self.p.trigger == "timer")  # after each tick
        self.ros_overhead, self.last_plan_s = RollingStats(), 0.0  # tick latency minus its ONNX call, per tick
        self.tick_interval, self.last_tick_start = RollingStats(200), 0.0
        # Stamp intervals of the first source's messages (its own clock: a lockstep sim's stays 1/rate).
        self.source_interval, self._last_source_stamp = RollingStats(200), 0
        self.last_obs_age = math.nan
        self.last_problem = ""
        self.level = OK

    def _start_swapper(self, first_standby, rung_p50: dict):
        """The hot-swap thread, with the room gate's question, and the budget steps that judge the rung
        chosen at start-up; then the first standby, warmed at start-up."""
        limit = self.p.deadline_fraction * self.period
        self._room_plans = max(1, round(self.ROOM_S * self.p.control_rate_hz))  # the room gate's run of plans
        self._planned_at = -math.inf  # monotonic time of the last plan's end
        # (warm planner or None, how it was warmed): a standby to ask for once the tick has published.
        self._standby_due = None
        cache = self.p.model_cache_dir or os.path.expanduser("~/.cache/tdmpc2_ros/models")
        self.swapper = HotSwapper(lambda: (self.planner, self.last_obs), limit, self.p.ladder_warmup, self.p.ladder_runs,
                                  self.p.threads, self.p.seed, cache, self._log,
                                  live_p50=lambda: self.plan_latency.recent_median(50),
                                  cpus=self.plan_cpus, running_version=lambda: self.model_version,
                                  spacing=self.p.swap_check_spacing, room=self._room_to_load,
                                  room_wait_s=self.p.swap_load_wait_s, cache_keep=self.p.model_cache_keep,
                                  in_use=self._sources_in_use)
        # The rung chosen at start-up is watched while running: one that overruns steps down, and one
        # that fits for budget_step_up_after_s tries the next larger rung (runtime/budget_steps.py).
        self.steps = BudgetSteps(limit, round(self.p.budget_step_up_after_s * self.p.control_rate_hz), self.swapper,
                                 rung_p50)
        self._keep_standby(first_standby, "warmed at start-up")

    def _create_interfaces(self):
        """Topics, the rollback service and the parameter callback: after everything they call exists."""
        # Transient local, so a planner that starts late still hears the newest version; an announcer
        # publishing volatile (`ros2 topic pub` by hand, say) cannot serve it, and is named.
        self.unmatched_announcers = UnmatchedPublishers(
            self, self.p.model_update_topic, qos.LATCHED, "the announcer: publish model updates reliable and "
            "transient local, as trainer_node does", self._on_unmatched_update)
        self.create_subscription(String, self.p.model_update_topic, self._on_model_update, qos.LATCHED,
                                 event_callbacks=self.unmatched_announcers.events)
        self.create_service(Trigger, "~/rollback", self._on_rollback)
        self.create_service(SetBool, "~/enable", self._on_enable)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.cmd_pub = self.create_publisher(self.commands.msg_type, self.p.action_topic, qos.COMMAND)
        self.diag_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, 10)
        for topic, kind in self.assembler.topics.items():
            self.create_subscription(SOURCE_MESSAGES[kind], topic, self._make_callback(topic), qos.SENSOR)
        self.create_subscription(Int64, self.p.episode_topic, self._on_episode, qos.EVENTS)

    def _start_loop(self):
        """The end of start-up: the garbage collector's freeze and monitor, then the loop's timers."""
        if self.p.gc_freeze:  # before the loop's timer: start-up ends here
            # Start-up's objects live as long as the node: out of every later collection's scan.
            frozen, before, after = gc_pauses.freeze()
            self.get_logger().info(f"froze {frozen} start-up objects out of Python's garbage collections: a full "
                                   f"collection took {before * 1e3:.2f} ms before, {after * 1e3:.3f} ms after")
        self.gc.install()  # after the freeze, whose own collections are start-up's, not the loop's
        # The control loop and its health report run on the steady clock: with use_sim_time a
        # /clock-driven timer would stall whenever the sim does (or before it starts).
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        if self.p.trigger == "timer":
            self.create_timer(self.period, self.tick, clock=steady)
        self.create_timer(self.p.diagnostics_period_s, self.publish_diagnostics, clock=steady)

    def _set_up_plan_thread(self) -> tuple[str, tuple[int, ...]]:
        """The optional real-time policy and core for the thread that runs every live plan. What the
        system refuses is a warning: the node plans anyway. The slack thread (a swap candidate's
        shadow plans) shares its cores one priority below: its plans are timed in the same conditions
        as live ones, and a live plan preempts it. Returns what took effect for the plan thread, and
        the cores it is pinned to (() = any)."""
        prio, cpus = self.p.plan_thread_priority, tuple(self.p.plan_cpu_affinity)
        if not prio and not cpus:
            return "normal", ()
        done, problems = self.worker.submit(make_thread_realtime, prio, cpus).result()
        for problem in problems:
            self.get_logger().warning(f"{problem}; planning without it")
        self.slack_worker.submit(make_thread_realtime, max(prio - 1, 0), cpus).result()  # refused as the above
        # The cores it runs on now, as the system has them (all of them where pinning was refused).
        pinned = tuple(sorted(self.worker.submit(os.sched_getaffinity, 0).result())) if cpus else ()
        return ", ".join(done) or "normal", pinned

    def _load_model(self):
        """Load the rungs largest first (refusing any whose spec differs from the configured
        sources), measure each after warm-up, keep the first (largest) that fits the period. Returns
        it, the ladder report, the first standby (the next smaller rung, warm; None for none), and
        each measured rung's p50."""
        path = resolve_model_path(self.p.model_path or str(default_model()), self.p.model_wait_s, self.get_logger())
        self.p.model_path = path
        obs_dim = self.assembler.fixed_width()
        limit = self.p.deadline_fraction * self.period

        def open_rung(rung):  # refuses a rung whose spec differs from the configured sources
            return OnnxPlanner(rung.path, obs_dim=obs_dim, threads=self.p.threads, seed=self.p.seed,
                               expected_sha256=rung.sha256 or None)

        def time_plans(planner):
            obs = np.zeros(planner.obs_dim, np.float32)
            return measure_latency(lambda: planner.plan(obs), self.p.ladder_warmup, self.p.ladder_runs, limit)

        planner, tried, fits = fit_ladder(read_ladder(path), open_rung, time_plans, limit)
        planner.reset()
        report = describe_fit(tried, planner.contract.budget.label(), self.p.control_rate_hz, limit, fits)
        if not fits:
            self.get_logger().warning(report)
        first_standby = self._warm_standby_now(path, planner) if self.p.budget_standby else None
        return planner, report, first_standby, {t.label: t.p50_s for t in tried}  # p50s: a first estimate for a step up

    def _warm_standby_now(self, path: str, running):
        """The next smaller rung, loaded and warmed (2 plans, finite outputs) before the loop starts: the
        first standby, so that no load runs beside a loop that finds start-up chose too large a rung.
        None where there is none; one that fails is logged and left to the swapper to try again."""
        smaller = next_smaller_rung(path, running.contract.budget)
        if smaller is None:
            return None
        try:
            planner = load_matching(path, running, self.p.threads, self.p.seed, budget_label=smaller.budget.label())
            warm_up(planner, None, HotSwapper.RUNG_WARM_PLANS)  # on zeros: no observation has come yet
        except SwapRejected as e:
            self.get_logger().warning(f"no standby {smaller.budget.label()} at start-up: {e}")
            return None
        planner.reset()
        return planner

    # -- inputs ---------------------------------------------------------------------------------
    def _make_callback(self, topic: str):
        first_topic = self.assembler.sources[0].topic

        def callback(msg):
            step = self._step_segments(topic, msg)
            last = step is not None and step["last"][0] >= 0.5
            if not last:  # an episode's final observation is logged, never planned on
                self.assembler.update(topic, msg, time.monotonic())
            if step is not None and self.transition_pub is not None:
                self._log_step(topic, msg, step)
            if self.p.trigger == "observation" and topic == first_topic and not last:
                self._note_source_stamp(msg)
                key = None if step is None else (int(step["episode"][0]), int(step["step"][0]))
                now = time.monotonic()
                if key is not None and key == self._inflight_step and (
                        (self.pending is not None and not self.pending.done())
                        or now - self._inflight_time < self.p.duplicate_window_s):
                    # A lockstep sim republished a step we are planning or have just answered: a
                    # second answer would make it step twice. (If our answer was lost, a later
                    # republish, after the window, is answered.)
                    self.duplicate_observations += 1
                    return
                self._inflight_step, self._inflight_time = key, now
                self.tick()

        return callback

    def _note_source_stamp(self, msg):
        header = getattr(msg, "header", None)  # arrays have none: nothing to tell their rate by
        ns = 0 if header is None else Time.from_msg(header.stamp).nanoseconds
        if ns and self._last_source_stamp and ns > self._last_source_stamp:
            self.source_interval.add((ns - self._last_source_stamp) * 1e-9)
        self._last_source_stamp = ns or self._last_source_stamp

    def _check_source_rate(self):
        """trigger: observation plans at each message of the first source. One stamped faster than the
        control rate (a joint_state_broadcaster at 500 Hz) would send commands at its own pace, each from
        a model of 1/control_rate_hz steps: named on /diagnostics (WARN) and in the log."""
        if len(self.source_interval) < 20:
            return
        dt = self.source_interval.recent_median(50)
        if dt * FAST_SOURCE < self.period:
            problem = (f"{self.assembler.sources[0].topic} is stamped every {dt * 1e3:.1f} ms, faster than "
                       f"control_rate_hz ({self.period * 1e3:.0f} ms), and trigger 'observation' plans at each "
                       f"message: use trigger 'timer'")
            self._report(WARN, problem)
            self.get_logger().warning(problem, throttle_duration_sec=10.0)

    def _step_segments(self, topic: str, msg):
        """The segments of a step message (sim_node's observation), or None for a plain array."""
        if topic != self.assembler.sources[0].topic or not hasattr(msg, "layout"):
            return None
        try:
            segs = segments_of(msg)
        except SegmentError:
            return None  # malformed: the observation path reports it
        return segs if "last" in segs and "step" in segs else None

    def _log_step(self, topic: str, msg, step: dict):
        """Publish the transition that this step message completes (exact pairing: the message
        carries o_t+1 with r_t and a_t). Not while disabled: the robot's actions then are not the
        planner's (a person moving it, say), and the chain starts again after ~/enable."""
        if not self.enabled:
            self.pairer.prev = None
            return
        try:
            model_input = self.planner.contract.validate_obs(self.assembler.assemble({topic: msg}))
        except (AdapterError, ValueError):
            self.pairer.prev = None  # an unusable observation breaks the chain
            return
        mixed = self.pairer.mixed
        record = self.pairer.observe(step, model_input, self.model_version)
        if record is not None:
            self.transition_pub.publish(segmented_array(*record.pack()))
        elif mixed == 0 and self.pairer.mixed == 1:  # the first step under two commands: said once
            self.get_logger().warning(
                f"step {int(step['step'][0])} of episode {int(step['episode'][0])} applied {int(step['commands'][0])} "
                "different commands (the sim takes each command at the next physics step: joint_states_rate "
                "physics), so no one action produced it: no transition record is published for such steps "
                "(transitions_mixed on /diagnostics). To learn in this mode, record the robot's own topics "
                "(config/learn_robot.yaml)")

    def _on_episode(self, msg: Int64):
        self.reset_requested = True  # new episode: plan from a zero warm start (the reference's t0)

    # -- the control tick -------------------------------------------------------------------------
    def _observation(self, now: float):
        """The model input, or None with the reason recorded (never a guessed vector)."""
        age = self.assembler.oldest_age(now)
        self.last_obs_age = age
        if math.isinf(age):  # start-up, or a sensor that never spoke: the safe action holds meanwhile
            silent = [t for t in self.assembler.topics if t not in self.assembler.latest]
            return None, f"no observation yet on {silent}{self._type_hints(silent, now)}"
        if age > self.p.max_observation_age_s:
            return None, f"observation is stale ({age * 1e3:.0f} ms old > {self.p.max_observation_age_s * 1e3:.0f} ms)"
        try:
            return self.planner.contract.validate_obs(self.assembler.assemble()), ""
        except (AdapterError, ValueError) as e:
            return None, str(e)

    def _type_hints(self, silent: list[str], now: float) -> str:
        """Why a topic may stay silent: its publishers use another message type (asked of the ROS
        graph at most once a second, not every tick)."""
        if now - self._hints_at >= 1.0:
            kinds = self.assembler.topics
            hints = [mismatch_hint(self, t, type_name(SOURCE_MESSAGES[kinds[t]]), "observation_sources") for t in silent]
            self._hints, self._hints_at = "".join(f"; {h}" for h in hints if h), now
        return self._hints

    def tick(self):
        if not self.enabled:  # ~/enable false: no plan, no command (the stop command went out then)
            self.disabled_ticks += 1
            return
        start = time.monotonic()
        if self.ticks:
            self.tick_interval.add(start - self.last_tick_start)
        self.ticks += 1
        self.last_tick_start = start
        after, self._slack_job = self._slack_job, ""
        if self.pending is None or self.pending.done():  # the worker is idle: a model may change hands
            rollback, self._pending_rollback = self._pending_rollback, None
            if rollback is not None:
                self._install(rollback, rollback=True)
            else:
                self._install(self.swapper.take_ready())
            if self.steps.down_due:
                self._budget_step(self.steps.step_down)
            elif self.steps.up_due:
                self._budget_step(self.steps.step_up)
        obs, problem = self._observation(start)
        if obs is None:
            self._publish(self.shaper.safe(self.p.safe_action), start, safe=True)
            self._flag(ERROR, problem)
            return
        if self.pending is not None and not self.pending.done():
            self._fallback(start, "previous plan still running", after)
            return
        if self.reset_requested:
            self.planner.reset()
            self.reset_requested = False
        # A swap candidate's shadow plan still running ends now, or, triggered by observations,
        # once its slack is over if this tick's own plan still fits its deadline after it.
        self.swapper.reclaim_worker(lambda: self._shadow_until(start))
        self.pending = self.worker.submit(self._plan, obs, time.perf_counter())
        try:
            action = self.pending.result(timeout=max(self.deadline - (time.monotonic() - start), 0.0))
        except futures.TimeoutError:
            self._fallback(start, "plan missed its deadline", after)
            self.steps.missed()  # steps down at the next tick
            return
        except Exception as e:  # noqa: BLE001 — an ONNX Runtime failure must not end the control loop
            self.plan_errors += 1
            self._publish(self.shaper.safe(self.p.safe_action), start, safe=True)
            self._flag(ERROR, f"the plan failed ({type(e).__name__}: {e}); ~/rollback returns to the previous model")
            return
        self.consecutive_misses = 0
        over = self.last_plan_s > self.swapper.limit_s
        self.ticks_over_limit += over
        self._note_swap_work(start, after, missed=False, over=over)
        self._publish(self.shaper.shape(self.shaper.physical(action)), start)
        # This tick's own cost outside the ONNX call: observation assembly, hand-off, shaping, publish.
        self.ros_overhead.add(self.tick_latency.last() - self.last_plan_s)
        if self._standby_due is not None:
            due, self._standby_due = self._standby_due, None
            self._keep_standby(*due)
        if self.swapper.wants_slack():  # shadow plans of a swap candidate, or freeing an old model
            self._slack_job = self.swapper.offer_slack(obs, self._slack(start), self.slack_worker.submit)

    def _slack(self, start: float) -> float:
        """How long a swap candidate's shadow plan may take on the slack thread after this tick."""
        return self.slack.after_tick(start, time.monotonic(), self.plan_latency.recent_median(50),
                                     self.tick_interval.recent_median(50))

    def _shadow_until(self, start: float) -> float:
        """When a shadow plan still running at this tick's start must stop (runtime/tick_slack.py)."""
        return self.slack.stop_at(start, self.plan_latency.recent_median(50))

    def _plan(self, obs, submitted: float):
        t, cpu, gc_here, gc_all = time.perf_counter(), time.thread_time(), self.gc.in_thread(), self.gc.total_s
        usage = ThreadUsage.now()  # what the kernel saw of this thread: a late plan's warning splits it
        # How long the plan waited for the worker: for the thread to wake (a swap's work in the slack
        # runs on a thread of its own, so nothing of it queues here).
        self.plan_queued.add(t - submitted)
        self.plan_queued_since_report = max(self.plan_queued_since_report, t - submitted)
        result = self.planner.plan(obs, explore=self.p.explore)
        self.last_plan_s = time.perf_counter() - t
        self.plan_latency.add(self.last_plan_s)
        # Wall time minus this thread's CPU time: how long the plan was not running (with threads 1 the
        # whole plan runs on this thread), waiting for a core or for Python's GIL. A late plan that
        # mostly waited points at contention (priority, isolation), not at a budget too large for the CPU.
        waited = max(self.last_plan_s - (time.thread_time() - cpu), 0.0)
        self.plan_waited.add(waited)
        # Garbage collections during the plan: in this thread (counted in its CPU time), or in another
        # that held the GIL (counted in `waited`, where the plan needed the GIL back).
        in_gc, in_gc_here = self.gc.total_s - gc_all, self.gc.in_thread() - gc_here
        self.gc_in_plans_max_s = max(self.gc_in_plans_max_s, in_gc)
        if self.last_plan_s > self.deadline:
            self.get_logger().warning(f"a plan took {self.last_plan_s * 1e3:.1f} ms, {waited * 1e3:.1f} ms of it not running "
                                      f"(waiting for a core or the GIL), {in_gc * 1e3:.1f} ms in Python's garbage "
                                      f"collector ({in_gc_here * 1e3:.1f} ms in the plan's own thread); its thread: "
                                      f"{ThreadUsage.now().since(usage).describe()}; {steal_words(self.steal.peek(), self.steal.window_s())}",
                                      throttle_duration_sec=1.0)
        self._planned_at = time.monotonic()
        self.steps.observe(self.last_plan_s)
        with self.lock:
            self.last_mean = result.mean
        self.last_obs = obs
        return result.action

    def _room_to_load(self) -> bool:
        """The hot-swap thread's room gate (HotSwapper): a new version or a standby is loaded beside
        the loop only after ROOM_S of plans each within RungGovernor.ROOM of the limit, or while the
        loop does not plan (no plan for a few periods: nothing to delay). Read from that thread."""
        idle = time.monotonic() - self._planned_at > max(self.ROOM_IDLE_S, 3 * self.period)
        return idle or self.steps.governor.roomy >= self._room_plans

    # -- budget while running --------------------------------------------------------------------
    def _budget_step(self, step):
        """Between two ticks: a step down or up of the running rung (runtime/budget_steps.py), and
        what it decided: a standby to install now, a line for the log, or a problem to report."""
        decided = step(self.planner.contract.budget, self.model_version, self.model_source)
        if decided.message:
            self._log("info", decided.message)
        if decided.standby is not None:
            self._install(decided.standby)
        if decided.problem:
            self._report(WARN, decided.problem)  # on /diagnostics while it lasts
            if decided.log_problem:
                self.get_logger().error(decided.problem)

    # -- hot swap ------------------------------------------------------------------------------
    def _install(self, candidate, rollback: bool = False):
        """Between two ticks (the worker is idle): a pointer swap that keeps the warm start."""
        if candidate is None:
            return
        planner, version, source = candidate if rollback else (candidate.planner, candidate.version, candidate.source)
        planner.prev_mean = self.planner.prev_mean.copy()  # every rung plans over the same horizon
        self.steps.installed()
        if rollback:
            self.swapper.retire(self.planner)  # freed in a later tick's slack
        elif candidate.rung_change:  # the same version at a smaller budget: nothing to roll back to
            if (version, source) != (self.model_version, self.model_source):
                self.swapper.retire(planner)  # another version came in meanwhile; the governor judges it anew
                return
            left = self.planner
            self.steps.stepped(candidate)
            self._swap_note = (f"stepped budget {'up' if candidate.step_up else 'down'} {self.planner.contract.budget.label()} "
                               f"-> {planner.contract.budget.label()} at tick {self.ticks}")
            # Ticks of the old rung describe another budget: a median mixing both would be neither's,
            # and the next swap tick is judged against the median of the rung it runs on.
            self.tick_latency = RollingStats()
            self.planner = planner
            # A step up left the next smaller rung, warm: the standby as it is. A step down left a larger one.
            if candidate.step_up:
                self._standby_after_tick(warm=left, warmed="the rung the step up left")
            else:
                self.swapper.retire(left)  # freed in a later tick's slack
                self._standby_after_tick()
            return
        else:
            self.previous.append((self.planner, self.model_version, self.model_source))
            while len(self.previous) > 3:
                self.swapper.retire(self.previous.pop(0)[0])
        old, self.planner, self.model_version, self.model_source = self.model_version, planner, version, source
        self.swaps += 1
        # _publish times this tick as a swap tick's and logs the swap then, outside the timed part.
        self._swap_timed = True
        self._swap_note = f"{'rolled back' if rollback else 'swapped'} model {old} -> {version} at tick {self.ticks}"
        self._standby_after_tick()

    def _standby_after_tick(self, warm=None, warmed: str = ""):
        """Ask for the standby once this tick has published: the hot-swap thread wakes for it, and its
        Python work (reading the ladder, starting a load) must not hold the GIL while this tick's
        plan needs it."""
        if self._standby_due is not None and self._standby_due[0] is not None:
            self.swapper.retire(self._standby_due[0])  # a warm rung superseded before it was handed over
        self._standby_due = (warm, warmed)

    def _keep_standby(self, warm=None, warmed: str = ""):
        """Tell the swapper which standby to hold for the model and budget now running (it retires
        one that no longer fits and brings up the new one in the background): a queue put, cheap
        between two ticks. `warm`: the next smaller rung, already warm (the standby as it is)."""
        if not self.p.budget_standby:
            if warm is not None:
                self.swapper.retire(warm)
            return
        self.swapper.keep_standby(Request.standby(self.planner.contract.budget.label(), self.model_source,
                                                  self.model_version), warm, warmed)

    def _on_model_update(self, msg: String):
        try:
            announcement = json.loads(msg.data)
            version = str(announcement["version"])
        except (ValueError, KeyError, TypeError) as e:
            self._log("error", f"ignoring a malformed model announcement on {self.p.model_update_topic}: {e}")
            return
        if version == self.model_version:
            return  # transient-local redelivery of what is already running
        self._log("info", f"model update {version} announced; checking it beside the running {self.model_version}")
        self.swapper.request(Request.update(announcement))

    def _on_set_parameters(self, params):
        for prm in params:
            if prm.name == "deadline_fraction" and not 0 < float(prm.value) <= 1:
                return SetParametersResult(successful=False, reason=f"deadline_fraction must be in (0, 1] (got {prm.value})")
        for prm in params:
            if prm.name == "model_path" and prm.value and prm.value != self.p.model_path:
                self.p.model_path = prm.value
                self.swapper.request(Request.model_path(prm.value, version_of(prm.value, None)))
            elif prm.name == "deadline_fraction":
                # A tighter share of the period (the robot's computer took on other work) applies to
                # the running rung at once: the governor steps it down if it no longer fits.
                self.p.deadline_fraction = float(prm.value)
                self.swapper.limit_s = self.p.deadline_fraction * self.period
                self.steps.set_limit(self.swapper.limit_s)
        return SetParametersResult(successful=True)

    def _on_rollback(self, request, response):
        if not self.previous:
            response.success, response.message = False, f"no previous model to roll back to (running {self.model_version})"
            return response
        planner, version, source = self.previous.pop()
        self._pending_rollback = (planner, version, source)
        response.success, response.message = True, f"rolling back {self.model_version} -> {version} at the next tick"
        return response

    def _on_enable(self, request, response):
        """~/enable (std_srvs/SetBool), for an operator who needs the robot still without stopping
        the node (its loaded models, ladder and standby stay). false: the stop command (stop_action)
        goes out at once, then no command at all and no transition is logged. true: planning starts
        again at the next tick, from a fresh warm start. Callbacks run one at a time (a single-threaded
        executor), so the stop command comes after the last planned one."""
        want = bool(request.data)
        if want == self.enabled:
            response.success, response.message = True, f"already {'enabled' if want else 'disabled'}"
            return response
        self.enabled = want
        if want:
            self.reset_requested = True
            self._inflight_step = None  # a lockstep sim's republish of the step it waits on is answered at once
            response.message = "enabled: planning from the next tick"
        else:
            stop = self._publish_stop("disabled")
            response.message = f"disabled: {stop}; no command until ~/enable true"
        self.get_logger().info(f"~/enable: {response.message}")
        response.success = True
        return response

    def _sources_in_use(self) -> set[str]:
        """The model folders the loop runs or may roll back to (for the swapper's cache pruning)."""
        return {self.model_source, *(source for _, _, source in list(self.previous))}

    def _log(self, level: str, text: str):
        """For the swapper thread too: a rejected update is a warning on /diagnostics, not an error
        (the running model is fine)."""
        if level == "error":
            self._report(WARN, text)
            self.get_logger().error(text)
        else:
            self.get_logger().info(text)

    def _fallback(self, start: float, why: str, after: str = ""):
        """The previous plan's next action (the warm-start mean one step on, then two, ...).
        `after`: the swap job the slack thread ran after the previous tick, if any."""
        self.missed_deadlines += 1
        self.ticks_over_limit += 1
        work = self._note_swap_work(start, after, missed=True, over=True)
        if work:  # named, so that a miss next to a swap is told from the machine's own
            why = f"{why} (swap work next to it: {', '.join(work)})"
        self.consecutive_misses += 1
        with self.lock:
            mean = self.last_mean
        step = min(self.consecutive_misses, mean.shape[0] - 1)
        self._publish(self.shaper.shape(self.shaper.physical(mean[step])), start)
        self._flag(WARN, why)

    def _note_swap_work(self, start: float, after: str, missed: bool, over: bool) -> list[str]:
        """Counts a tick with the swap work next to it (runtime/swap_cost.py), and returns that work.
        `after`: the slack thread's job after the previous tick, if any; `over`: its plan overran the limit."""
        work = swap_work(self._swap_timed, after, self.swapper.worked_since(start))
        self.swap_cost.count(work, missed, over)
        return work

    def _publish(self, command: np.ndarray, start: float, safe: bool = False):
        self.cmd_pub.publish(self.commands.message(command))
        now = time.monotonic()
        self.published += 1
        self.safe_actions += int(safe)
        self.tick_latency.add(now - start)
        if self._swap_note:
            median = self.tick_latency.percentile(50)
            if self._swap_timed:  # a budget step is not a swap (it is counted in budget_steps_down)
                # Against the median of the moment (a budget step soon after starts the window again),
                # and its plan (the new session) against the plans just before it.
                self.swap_cost.time_swap_tick(now - start, median, self.last_plan_s,
                                              self.plan_latency.recent_median(50), self.plan_waited.last())
                self._swap_timed = False
            self._log("info", f"{self._swap_note}; that tick took {(now - start) * 1e3:.2f} ms "
                              f"(median tick {median * 1e3:.2f} ms)")
            self._swap_note = ""
        if not safe and self.assembler.latest:
            newest = max(t for _, t in self.assembler.latest.values())
            self.obs_to_action.add(now - newest)

    def _report(self, level, problem: str):
        """The next /diagnostics report carries the worst level since the last one, with the message of
        a problem of that level (the newest): a warning never hides an error's message."""
        if level >= self.level:
            self.last_problem = problem
        self.level = max(self.level, level)

    def _flag(self, level, problem: str):
        self._report(level, problem)
        # rclpy keys throttling by call site, so each severity needs its own line.
        if level == ERROR:
            self.get_logger().error(f"{problem}; published the safe action", throttle_duration_sec=1.0)
        else:
            self.get_logger().warning(f"{problem}; published the fallback action", throttle_duration_sec=1.0)

    # -- diagnostics -------------------------------------------------------------------------------
    def _check_command_subscribers(self):
        """A controller subscribed to action_topic with another type hears nothing: named once."""
        if self._command_type_warned:
            return
        hint = mismatch_hint(self, self.p.action_topic, type_name(self.commands.msg_type), "command_type", "subscribed")
        if hint:
            self._command_type_warned = True
            self.get_logger().warning(f"commands reach no one there: {hint}")

    def _on_unmatched_update(self, why: str):
        self.get_logger().warning(f"no model update can arrive from them: {why}")

    def publish_diagnostics(self):
        self._check_command_subscribers()
        self._check_source_rate()
        unmatched = self.unmatched_announcers.check()  # until such an announcer leaves the graph
        if unmatched:
            self._report(WARN, unmatched)
        message = self.last_problem if self.level != OK else (
            "planning" if self.enabled else "disabled by ~/enable: sending no commands")
        self.diag_pub.publish(status_array(self.get_clock().now().to_msg(), PLANNER_STATUS, "planner_node",
                                           self.level, message, planner_values(self)))
        # Each report carries the worst level since the previous one; a problem that persists is
        # flagged again by the next tick, one that has cleared no longer shows.
        self.level, self.last_problem = OK, ""
        self.plan_queued_since_report = 0.0

    def _publish_stop(self, why: str = "stopping") -> str:
        """A stopping (or disabled) planner's last command (stop_action): without it a ros2_control
        forward command controller, or the sim, keeps applying the last command it got, an effort say,
        for ever. Returns what it did, in words."""
        mode = self.p.safe_action if self.p.stop_action == "safe_action" else self.p.stop_action
        if mode == "none":
            return "no stop command (stop_action none)"
        if getattr(self, "cmd_pub", None) is None or getattr(self, "shaper", None) is None or not self.context.ok():
            return "no stop command (the node is not up)"
        try:
            command = self.shaper.stop(mode)
            self.cmd_pub.publish(self.commands.message(command))
            self.cmd_pub.wait_for_all_acked(Duration(seconds=0.5))
            done = f"published the stop command ({mode}: {command.tolist()})"
            if why == "stopping":
                self.get_logger().info(f"stopping: {done}")
            return done
        except Exception as e:  # noqa: BLE001 — the node is going away either way
            self.get_logger().error(f"{why}: could not publish the stop command: {e}")
            return f"could not publish the stop command ({e})"

    def destroy_node(self):
        self._publish_stop()
        if getattr(self, "gc", None) is not None:
            self.gc.close()
        swapper = getattr(self, "swapper", None)
        if swapper is not None:
            swapper.stop()
        for name in ("slack_worker", "worker"):
            worker = getattr(self, name, None)  # absent when start-up was refused
            if worker is not None:
                worker.shutdown(wait=True)
        return super().destroy_node()


def main(args=None) -> int:
    return run_node("planner_node", PlannerNode, args)


if __name__ == "__main__":
    sys.exit(main())
