"""``trainer_node``: learns from the bags a recorder closes, and publishes each validated model version.

The learning half of the loop planner -> recorder -> trainer -> planner. All learning is
``tdmpc2_ros.training.offline.OfflineTrainer`` (no ROS); this node schedules it:

- a timer (``scan_period_s``) lists the closed bags under ``bag_dir`` that the ingest ledger
  (``<run_dir>/ingest_ledger.jsonl``) has not seen and ingests them; a bad bag is logged in one line
  (file and reason), marked ``skipped`` and never retried; nothing already in the buffer is lost;
- a background thread trains continuously once the buffer holds ``min_transitions`` transitions
  (TD-MPC2's seed steps; no update before), ``updates_per_cycle`` updates per cycle with one log line
  per cycle (updates/s, buffer size, last losses) and a tqdm bar when stderr is a terminal;
- every ``export_every_updates`` updates, or on request (``~/export``, std_srvs/Trigger, answered
  when done), it exports the budget ladder, validates it (ONNX-torch parity, finite outputs, spec,
  latency: at least one rung's p99 within ``deadline_fraction / control_rate_hz``) and only then adds
  it to the model store (``store_dir``) and announces it on ``model_update_topic`` (std_msgs/String,
  JSON of ``ModelStore.announcement``; transient local, so a planner that starts later still gets
  the newest version). A model that fails validation is never announced;
- it checkpoints (``<run_dir>/checkpoint.pt``) on each export and on SIGINT/SIGTERM, resumes from it at
  start, and refreshes ``<run_dir>/learning_curve.png`` on each export;
- after each export it prunes the store to the ``store_keep`` newest versions and, of the older ones,
  one per ``store_keep_every_s`` (a robot that learns for days would otherwise fill its disk), and
  keeps those planners report on ``/diagnostics`` as running or as a rollback's
  (``store_keep_in_use_s``);
- ``/diagnostics`` (``tdmpc2_ros: trainer``) every ``diagnostics_period_s``: state, transitions, bags
  ingested/skipped, updates, updates/s, last version, last export result, last losses, the store's
  size (``store_mb``), the free space on its disk (``disk_free_mb``) and the versions planners use
  (``versions_in_use``).

Parameters (``config/trainer.yaml``)
-------------------------------------
==========================  ==================  =============================================================
name                        default             meaning
==========================  ==================  =============================================================
bag_dir                     tdmpc2_bags         where the recorder closes bags
run_dir                     runs/trainer        checkpoint, ledger, CSV logs, learning curve
store_dir                   tdmpc2_models       the versioned model store (planner: model_path)
store_keep                  20                  keep the newest N versions after each export (0 = all;
                                                a planner reading the store by path must find the
                                                version it runs and those it may roll back to)
store_keep_every_s          3600.0              and of the older ones, one per this many seconds (0 =
                                                none): history at a bounded rate, as TensorFlow's
                                                keep_checkpoint_every_n_hours
store_keep_in_use_s         600.0               and never one a planner reported on /diagnostics, within
                                                this many seconds, as running or as its rollback (0 =
                                                ignore planners): its other rungs load from there
min_free_mb                 1000.0              /diagnostics warns below this much free disk under
                                                store_dir, MB (0 = never): before an export fails
preset / seed               1M / 1              model size (1M, 5M, 19M, 48M, 317M) and seed
episodic                    false               a termination head (episodes that end by termination: a
                                                robot that falls); init_weights may lack it
init_weights                ""                  weights.pt or checkpoint.pt to start from ("" = fresh)
task                        cartpole-swingup    task name in the model contract (and the paper curve)
obs_dim / action_dim        0 / 0               0 = from the checkpoint, init_weights or the first bag
action_low / action_high    [] / []             model action bounds ([] = -1 / 1); raw mode: command units
obs_names / action_names    [] / []             names carried in the model contract (optional)
action_repeat               2                   env steps per transition (sim_node's action_repeat;
                                                1 on a robot); manifest env_steps = transitions x this
discount                    0.0                 0 = heuristic from episode_length, else 0.99 (or
                                                init_weights')
episode_length              0                   agent steps per episode, for the discount heuristic
batch_size / buffer_size    256 / 1000000       update batch; replay capacity in transitions
threads                     2                   torch and ONNX Runtime threads (1 on a loaded machine)
nice                        10                  lower the trainer's CPU priority by this much (0 = no
                                                change): the control loop on the same computer first
compile                     false               torch.compile the update (a minute once, ~30% faster)
device                      cpu                 where the world model trains: cpu, cuda, cuda:N or auto
                                                (a GPU where torch sees one); exports run on the CPU
planner / ladder            mppi / []           exported rungs 'iterations:samples:elites:pi_trajs'
                                                ([] = the default ladder, largest first)
updates_per_cycle           100                 updates between two progress lines
export_every_updates        2000                export + validate + announce every N updates (0 = only
                                                on ~/export)
min_transitions             1000                no update before the buffer holds this many (seed steps)
max_updates_per_transition  1.0                 cap on updates per ingested transition (TD-MPC2's one
                                                update per agent step); 0 = train continuously
scan_period_s               5.0                 how often bag_dir is listed
export_on_start             true                if the store holds no version yet, export the current
                                                model (init_weights or fresh) at start so a planner
                                                waiting on the empty store can act
announce_inline             false               carry the files' bytes in the announcement (a robot that
                                                does not share this disk)
model_update_topic          /tdmpc2/model_update
control_rate_hz             50.0                the robot's control rate, for the latency check
deadline_fraction           0.7                 a rung fits if p99 <= fraction / control_rate_hz
latency_warmup/latency_runs 5 / 30              latency measurement per rung
parity_observations         3                   observations compared ONNX vs torch per rung
parity_tolerance            0.001               on next_mean (abs) and plan value (rel. beyond 1)
diagnostics_period_s        1.0
record_topics               []                  transition-record topics ([] = any record topic)
raw_obs_topic ...           ""                  raw mode (all of obs/command/reward set): align
raw_command_topic                               observations, commands and rewards by timestamp
raw_reward_topic                                (episodes_from_raw); "" = record mode
raw_episode_topic                               optional Int64 episode announcements
raw_observation_sources     []                  raw mode: the planner's observation_sources (e.g. from
                                                /joint_states) instead of raw_obs_topic
raw_command_type ...        array / [] / effort raw mode: the command topic's command_type, command_joints,
raw_command_joints                              command_interface, as the planner has them (e.g. a
raw_command_interface                           joint_trajectory_controller's JointTrajectory)
tolerance_s                 0.005               raw-mode timestamp tolerance
raw_reward_tolerance_s      0.0                 of rewards (0 = tolerance_s): reward_node publishes after
                                                the observation it scores, by its latency
raw_command_scale           []                  raw mode: the planner's command_scale (action_low/high are
                                                then the model's bounds, e.g. -1 / 1, as a sim-trained model's)
raw_episode_return_topic    ""                  raw mode: episode returns (reward_node's) for train.csv and
                                                the learning curve ("" = a row per run of transitions)
raw_pace                    observation         raw mode: a transition per pair of observations, or per
                                                pair of commands ("command": observations faster than the
                                                control rate, e.g. a 500 Hz joint_state_broadcaster)
raw_reward_at               observation         raw_pace command: match a reward to its observation's time,
                                                or to the command that ends the step ("command": reward_node
                                                with pace command publishes there)
raw_termination_expression  ""                  raw mode: numpy expression of obs (after the step), true
                                                where a step ended by termination (needs episodic)
==========================  ==================  =============================================================

Run: ``python -m tdmpc2_ros.ros.trainer_node --ros-args --params-file config/trainer.yaml``.
"""

from __future__ import annotations

if __name__ == "__main__":  # a node process: a stop during the imports below is a clean stop too
    from tdmpc2_ros.ros import stop

    stop.take_signals()

import concurrent.futures as futures
import json
import math
import os
import queue
import shutil
import sys
import threading
import time
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from std_msgs.msg import String
from std_srvs.srv import Trigger

from tdmpc2_ros.bags.ledger import IngestLedger
from tdmpc2_ros.core.device import resolve_device
from tdmpc2_ros.ros import qos, topics
from tdmpc2_ros.ros.diagnostics import OK, PLANNER_STATUS, WARN, status_array
from tdmpc2_ros.ros.params import ParameterError, declare_table
from tdmpc2_ros.ros.run import run_node
from tdmpc2_ros.runtime.model_store import ModelStore, VersionsInUse
from tdmpc2_ros.runtime.priority import lower_process_priority
from tdmpc2_ros.training.offline import LEDGER, OfflineTrainer, RawSettingError, RawTopics, parse_rung, resolve_dims

EXPORT_TIMEOUT_S = 1800.0  # how long ~/export waits for the export it asked for
SHUTDOWN_JOIN_S = 2.0  # at shutdown: how long to wait for the training thread (one update, not an export)

PARAMETERS = {  # name: (default, description); [] = an untyped list (its type comes from the YAML)
    "bag_dir": ("tdmpc2_bags", "folder where the recorder closes bags"),
    "run_dir": ("runs/trainer", "run folder: checkpoint, ingest ledger, CSV logs, learning curve"),
    "store_dir": ("tdmpc2_models", "the versioned model store new versions are added to"),
    "store_keep": (20, "after each export, keep only this many newest versions in store_dir (and the "
                       "one just announced and its parent); 0 = keep all"),
    "store_keep_every_s": (3600.0, "of the versions older than the store_keep newest, keep one per this many "
                                   "seconds (0 = none)"),
    "store_keep_in_use_s": (600.0, "never prune a version a planner reported (model_versions_in_use on /diagnostics) "
                                   "within this many seconds as running or able to roll back to (0 = ignore planners)"),
    "min_free_mb": (1000.0, "/diagnostics warns below this much free space on store_dir's disk, MB (0 = never)"),
    "preset": ("1M", "model size preset: 1M, 5M, 19M, 48M or 317M"),
    "seed": (1, "seed of the agent, the buffer sampling and validation"),
    "episodic": (False, "a termination head, for episodes that end by termination (a robot that falls); init_weights "
                        "without one start it from its initialisation"),
    "init_weights": ("", "weights.pt or checkpoint.pt to start from ('' = fresh weights)"),
    "task": ("cartpole-swingup", "task name carried in the model contract (and the paper curve)"),
    "obs_dim": (0, "observation dim (0 = from the checkpoint, init_weights or the first bag)"),
    "action_dim": (0, "action dim (0 = from the checkpoint, init_weights or the first bag)"),
    "action_low": ([], "model action bounds, low ([] = -1 each); raw mode: bounds of the command topic, or of the model with raw_command_scale"),
    "action_high": ([], "model action bounds, high ([] = 1 each)"),
    "obs_names": ([], "observation names for the model contract (optional)"),
    "action_names": ([], "action names for the model contract (optional)"),
    "action_repeat": (2, "env steps per transition (the sim's action_repeat; 1 on a robot)"),
    "discount": (0.0, "discount (0 = heuristic from episode_length, else init_weights' or 0.99)"),
    "episode_length": (0, "agent steps per episode, for the discount heuristic (0 = unknown)"),
    "batch_size": (256, "update batch size"),
    "buffer_size": (1_000_000, "replay buffer capacity (rows: transitions + one per episode)"),
    "threads": (2, "torch and ONNX Runtime threads"),
    "nice": (10, "lower the trainer's CPU priority by this much, so the control loop on the same computer comes first (0 = no change)"),
    "compile": (False, "torch.compile the update: about a minute once, then about 30% faster updates"),
    "device": ("cpu", "where the world model trains: cpu, cuda, cuda:N or auto (a GPU where torch sees one)"),
    "planner": ("mppi", "planner of the exported ladder: mppi, cem or gradient"),
    "ladder": ([], "exported rungs 'iterations:samples:elites:pi_trajs', largest first ([] = default ladder)"),
    "updates_per_cycle": (100, "updates between two progress log lines"),
    "export_every_updates": (2000, "export, validate and announce every N updates (0 = only on ~/export)"),
    "min_transitions": (1000, "no update until the buffer holds this many transitions (TD-MPC2 seed steps)"),
    "max_updates_per_transition": (1.0, "at most this many updates per ingested transition (1 = TD-MPC2's one update "
                                        "per agent step; 0 = no cap)"),
    "scan_period_s": (5.0, "how often bag_dir is scanned for closed bags"),
    "export_on_start": (True, "export the current model at start if the store holds no version yet"),
    "announce_inline": (False, "carry the model files' bytes in the announcement"),
    "model_update_topic": (topics.MODEL_UPDATE, "where new versions are announced (std_msgs/String JSON)"),
    "control_rate_hz": (50.0, "the robot's control rate, for the latency check"),
    "deadline_fraction": (0.7, "a rung fits if its p99 latency <= deadline_fraction / control_rate_hz"),
    "latency_warmup": (5, "warm-up plans before measuring a rung"),
    "latency_runs": (30, "measured plans per rung"),
    "parity_observations": (3, "observations compared ONNX vs torch per rung"),
    "parity_tolerance": (1e-3, "ONNX-torch tolerance on next_mean (absolute) and value (relative beyond 1)"),
    "diagnostics_period_s": (1.0, "period of the /diagnostics status"),
    "record_topics": ([], "transition-record topics to read ([] = any record topic in the bag)"),
    "raw_obs_topic": ("", "raw mode: observation topic (Float64MultiArray); '' = record mode"),
    "raw_command_topic": ("", "raw mode: command topic (Float64MultiArray, physical units)"),
    "raw_reward_topic": ("", "raw mode: reward topic (Float64, or reward_node's stamped Float64MultiArray)"),
    "raw_episode_topic": ("", "raw mode: episode topic (Int64), optional"),
    "raw_observation_sources": ([], "raw mode: the planner's observation_sources (<type>:<topic>:<field>[:<joint>]), "
                                    "instead of raw_obs_topic"),
    "raw_command_type": ("array", "raw mode: the command topic's type: array, joint_trajectory or joint_state"),
    "raw_command_joints": ([], "raw mode, joint_trajectory / joint_state commands: the joint of each action element"),
    "raw_command_interface": ("effort", "raw mode, joint_trajectory / joint_state commands: position, velocity or effort"),
    "tolerance_s": (0.005, "raw mode: timestamp tolerance in seconds"),
    "raw_episode_return_topic": ("", "raw mode: the robot's episode returns (std_msgs/Float64, reward_node's), for "
                                     "train.csv and the learning curve ('' = each run of consecutive transitions)"),
    "raw_command_scale": ([], "raw mode: command units per model action unit, per element (the planner's command_scale); "
                              "action_low/high are then the model's bounds ([] = commands in model units)"),
    "raw_reward_tolerance_s": (0.0, "raw mode: timestamp tolerance of rewards (0 = tolerance_s); a reward computed from "
                                    "the observation (reward_node) comes a few ms after it"),
    "raw_termination_expression": ("", "raw mode: a numpy expression of obs (the observation after a step), true where "
                                       "the step ended the episode by termination ('' = never); needs episodic"),
    "raw_pace": ("observation", "raw mode: 'observation' (a transition per pair of observations) or 'command' (per pair "
                                "of commands, from the newest observation at each: observations faster than the "
                                "control rate)"),
    "raw_reward_at": ("observation", "raw_pace command: 'observation' (a reward published with each observation, matched "
                                     "to its time) or 'command' (matched to the command that ends the step, where "
                                     "reward_node with pace 'command' publishes it)"),
}


class TrainerNode(Node):
    """Counters for tests and tools: ``trainer`` (None until the dims are known), ``state``."""

    def __init__(self, **kwargs):
        super().__init__("trainer_node", **kwargs)
        self.trainer: OfflineTrainer | None = None
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.requests: queue.Queue = queue.Queue()
        self.scan_lock = threading.Lock()
        self.state = "starting"
        self.rate = math.nan
        self.checkpoint_problem = ""  # why the last checkpoint could not be written ("" when it was)
        self._disk_low_said = False  # the low-disk warning is logged once per low spell
        self.thread = None
        self._read_parameters()
        log = self.get_logger()
        # Training is background work: beside a running planner it takes only the CPU the control
        # loop leaves. In the learning loop on 2 cores, the trainer's spinning torch threads at equal
        # priority delayed plans several-fold around exports (docs/benchmarks.md).
        if lower_process_priority(int(self.p["nice"])):  # 0 (or less) leaves it alone
            log.info(f"running at niceness {os.getpriority(os.PRIO_PROCESS, 0)} (nice parameter)")
        self.store = ModelStore(self.p["store_dir"])
        self.store_mb = self.store.size_bytes() / 1e6  # refreshed after each export's prune
        self.in_use = VersionsInUse(float(self.p["store_keep_in_use_s"]))
        self.ledger_path = Path(self.p["run_dir"]) / LEDGER
        dims = self._known_dims()
        if dims is not None:
            self._make_trainer(dims)
        else:
            log.info(f"observation/action dims unknown: waiting for the first bag in {self.p['bag_dir']}")
        self.update_pub = self.create_publisher(String, self.p["model_update_topic"], qos.LATCHED)
        self.diag_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, 10)
        if self.in_use.hold_s > 0:
            self.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self._on_diagnostics, 10,
                                     callback_group=MutuallyExclusiveCallbackGroup())
        self.create_service(Trigger, "~/export", self._on_export, callback_group=ReentrantCallbackGroup())
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(float(self.p["scan_period_s"]), self._scan, clock=steady,
                          callback_group=MutuallyExclusiveCallbackGroup())
        self.create_timer(float(self.p["diagnostics_period_s"]), self._publish_diagnostics, clock=steady,
                          callback_group=MutuallyExclusiveCallbackGroup())
        self._announce_latest()
        self.thread = threading.Thread(target=self._train_loop, name="trainer", daemon=True)
        self.thread.start()

    # -- set-up --------------------------------------------------------------------------------
    def _read_parameters(self):
        p = declare_table(self, PARAMETERS)
        for name in ("bag_dir", "run_dir", "store_dir"):
            if not str(p[name]).strip():
                raise ParameterError(name, p[name], "must be a folder path")
        for name in ("batch_size", "buffer_size", "threads", "updates_per_cycle", "action_repeat", "latency_runs",
                     "parity_observations"):
            if int(p[name]) < 1:
                raise ParameterError(name, p[name], "must be >= 1")
        for name in ("obs_dim", "action_dim", "export_every_updates", "store_keep", "min_transitions", "episode_length",
                     "latency_warmup"):
            if int(p[name]) < 0:
                raise ParameterError(name, p[name], "must be >= 0")
        for name in ("scan_period_s", "control_rate_hz", "diagnostics_period_s", "tolerance_s", "parity_tolerance"):
            if not float(p[name]) > 0:
                raise ParameterError(name, p[name], "must be > 0")
        if not 0 < float(p["deadline_fraction"]) <= 1:
            raise ParameterError("deadline_fraction", p["deadline_fraction"], "must be in (0, 1]")
        for name in ("store_keep_every_s", "store_keep_in_use_s", "min_free_mb", "raw_reward_tolerance_s"):
            if float(p[name]) < 0:
                raise ParameterError(name, p[name], "must be >= 0")
        if float(p["max_updates_per_transition"]) < 0 or float(p["discount"]) < 0 or float(p["discount"]) >= 1:
            which = "discount" if not 0 <= float(p["discount"]) < 1 else "max_updates_per_transition"
            raise ParameterError(which, p[which], "must be >= 0 (discount < 1)")
        try:
            resolve_device(p["device"])
        except ValueError as e:
            raise ParameterError("device", p["device"], str(e)) from e
        if p["planner"] not in ("mppi", "cem", "gradient"):
            raise ParameterError("planner", p["planner"], "expected mppi, cem or gradient")
        try:
            self.budgets = [parse_rung(r, p["planner"]) for r in p["ladder"]]
        except ValueError as e:
            raise ParameterError("ladder", p["ladder"], str(e)) from e
        if len(p["action_low"]) != len(p["action_high"]):
            raise ParameterError("action_low", p["action_low"], "action_low and action_high need the same length")
        try:
            self.raw = RawTopics.from_settings(p, p["action_low"], p["action_high"])
        except RawSettingError as e:
            raise ParameterError(e.name, e.value, str(e)) from None
        self.p = p

    def _known_dims(self):
        p = self.p
        if int(p["obs_dim"]) and int(p["action_dim"]):
            return int(p["obs_dim"]), int(p["action_dim"])
        return resolve_dims(p["run_dir"], p["init_weights"])

    def _dims_from_bags(self):
        """The first closed, not yet refused bag that yields data tells the dims; bags that yield
        none are marked skipped here, as the trainer would."""
        ledger = IngestLedger(self.ledger_path)
        log = self.get_logger()

        def skipped(err):
            log.warning(f"skipped bag {err.path}: {err.reason}")
            ledger.mark(err.path, status="skipped", reason=err.reason)

        return resolve_dims(self.p["run_dir"], "", ledger.pending(self.p["bag_dir"]), self.raw, self.p["action_low"],
                            self.p["action_high"], self.p["record_topics"], on_skipped=skipped)

    def _make_trainer(self, dims):
        p = self.p
        obs_dim, action_dim = dims
        if int(p["obs_dim"]) and int(p["obs_dim"]) != obs_dim or int(p["action_dim"]) and int(p["action_dim"]) != action_dim:
            raise ParameterError("obs_dim", (p["obs_dim"], p["action_dim"]),
                                 f"the run's checkpoint/weights/bags hold obs dim {obs_dim}, action dim {action_dim}")
        self.trainer = OfflineTrainer(
            p["run_dir"], obs_dim, action_dim, preset=p["preset"], seed=int(p["seed"]), batch_size=int(p["batch_size"]),
            threads=int(p["threads"]), init_weights=p["init_weights"] or None, action_low=p["action_low"] or None,
            action_high=p["action_high"] or None, task=p["task"], budgets=self.budgets or None, planner=p["planner"],
            discount=float(p["discount"]) or None, episode_length=int(p["episode_length"]),
            min_transitions=int(p["min_transitions"]), buffer_size=int(p["buffer_size"]),
            action_repeat=int(p["action_repeat"]), raw=self.raw, record_topics=p["record_topics"],
            control_rate_hz=float(p["control_rate_hz"]), deadline_fraction=float(p["deadline_fraction"]),
            latency_warmup=int(p["latency_warmup"]), latency_runs=int(p["latency_runs"]),
            parity_observations=int(p["parity_observations"]), parity_tolerance=float(p["parity_tolerance"]),
            obs_names=p["obs_names"], action_names=p["action_names"], compile=bool(p["compile"]), log=self.get_logger(),
            device=p["device"], episodic=bool(p["episodic"]))
        t = self.trainer
        self.get_logger().info(
            f"trainer: preset {t.model_cfg.preset}{' (episodic)' if t.model_cfg.episodic else ''} on {t.agent.device}, obs dim {obs_dim}, action dim {action_dim}, discount {t.discount:g}, "
            f"ladder {[b.label() for b in t.budgets]}, min_transitions {t.min_transitions}, batch {t.batch_size}; "
            f"{t.transitions} transitions from {len(t.bags)} bags, {t.updates} updates so far; store {self.store.root}")

    # -- ingest (timer) ------------------------------------------------------------------------
    def _scan(self):
        if self.stop.is_set() or not self.scan_lock.acquire(blocking=False):
            return
        try:
            if self.trainer is None:
                dims = self._dims_from_bags()
                if dims is None:
                    return
                self._make_trainer(dims)
            results = self.trainer.ingest_pending(self.p["bag_dir"])
            if any(r["status"] == "ingested" for r in results):
                self.wake.set()
        except Exception as e:  # noqa: BLE001 — a scan that fails is retried at the next period
            self.get_logger().error(f"scanning {self.p['bag_dir']} failed: {type(e).__name__}: {e}")
        finally:
            self.scan_lock.release()

    # -- training (background thread) ----------------------------------------------------------
    def _allowed_updates(self, t: OfflineTrainer) -> int:
        if not t.can_train():
            return 0
        cap = float(self.p["max_updates_per_transition"])
        n = int(self.p["updates_per_cycle"])
        if cap > 0:
            n = min(n, int(cap * t.transitions) - t.updates)
        return max(n, 0)

    def _train_loop(self):
        bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(unit="update", desc="training", dynamic_ncols=True)
        started = False
        log = self.get_logger()
        try:
            self._scan()  # at once, not one scan period after start
            while not self.stop.is_set():
                t = self.trainer
                if t is not None and not started:
                    started = True
                    if bar is not None:
                        bar.n = t.updates
                    if self.p["export_on_start"] and not self.store.versions():
                        self._export(t, "the store holds no version yet")
                self._serve_requests(t)
                if t is None:
                    self.state = "waiting for the first bag"
                    self._idle()
                    continue
                n = self._allowed_updates(t)
                if n <= 0:
                    self.state = ("collecting: buffer below min_transitions" if not t.can_train()
                                  else "waiting for data (max_updates_per_transition reached)")
                    self._idle()
                    continue
                self.state = "training"
                t0 = time.monotonic()
                info = t.train(n, progress=bar.update if bar is not None else None,
                               should_stop=lambda: self.stop.is_set() or not self.requests.empty())
                done, dt = info["updates"], time.monotonic() - t0
                if done:
                    self.rate = done / max(dt, 1e-9)
                    losses = ", ".join(f"{k.replace('_loss', '')} {info[k]:.4g}"
                                       for k in ("consistency_loss", "reward_loss", "value_loss", "pi_loss"))
                    log.info(f"{done} updates in {dt:.1f} s ({self.rate:.2f} updates/s); {t.updates} updates, buffer "
                             f"{len(t.buffer)} transitions ({t.episodes} episodes, {len(t.bags)} bags); losses: {losses}")
                every = int(self.p["export_every_updates"])
                if every and t.updates - t.last_export_updates >= every:
                    self._export(t, f"{every} updates since the last export")
        except Exception as e:  # noqa: BLE001 — say why training stopped; the node keeps serving
            self.state = f"stopped: {type(e).__name__}: {e}"
            log.error(f"training stopped: {type(e).__name__}: {e}")
        finally:
            if bar is not None:
                bar.close()

    def _idle(self):
        self.wake.wait(0.5)
        self.wake.clear()

    def _serve_requests(self, t):
        while True:
            try:
                fut = self.requests.get_nowait()
            except queue.Empty:
                return
            if t is None:
                fut.set_result((False, "no data yet: the observation/action dims are unknown until the first bag"))
                continue
            m = self._export(t, "requested on ~/export")
            if m is not None:
                fut.set_result((True, f"exported and announced {m.version} (parent {m.parent or '-'}, {m.updates} "
                                      f"updates, {m.env_steps} env steps, {len(m.bags)} bags)"))
            else:
                fut.set_result((False, "shutting down" if self.stop.is_set() else t.last_failure))

    def _export(self, t: OfflineTrainer, why: str):
        self.state = "exporting"
        self.get_logger().info(f"exporting at {t.updates} updates ({why})")
        m = t.export_and_validate(self.store, should_stop=self.stop.is_set)
        if m is not None and not self.stop.is_set():  # else announced again at the next start
            self._announce(m.version)
            self._prune_store(m)
        if not self.stop.is_set():  # shutting down: shutdown() writes the checkpoint
            t.plot()
            self._save(t)
        return m

    def _prune_store(self, m) -> None:
        """store_keep, store_keep_every_s: each export adds a whole ladder (about 33 MB for the shipped
        model). At the default export_every_updates on a 25 Hz robot that is one every 80 s, up to 36 GB
        a day: kept whole, the store would fill the disk within days and stall the recorder."""
        try:
            removed = self.store.prune(int(self.p["store_keep"]), protect={m.version, m.parent, *self.in_use.current()},
                                       every_s=float(self.p["store_keep_every_s"]))
            self.store_mb = self.store.size_bytes() / 1e6
        except OSError as e:
            self.get_logger().error(f"could not prune the model store {self.store.root}: {e}")
            return
        if removed:
            self.get_logger().info(f"model store: removed {', '.join(removed)} (store_keep {self.p['store_keep']}, "
                                   f"store_keep_every_s {self.p['store_keep_every_s']:g})")

    def _save(self, t: OfflineTrainer) -> bool:
        """Checkpoint; a full disk is logged, not fatal: training goes on in memory, the checkpoint is
        tried again at the next export, and a restart before then ingests the newer bags again (the
        ledger and the checkpoint are reconciled at start)."""
        try:
            t.save()
        except OSError as e:
            self.checkpoint_problem = f"could not write the checkpoint in {t.run_dir} ({type(e).__name__}: {e})"
            self.get_logger().error(f"{self.checkpoint_problem}; training goes on, the bags since the last "
                                    f"checkpoint would be ingested again")
            return False
        self.checkpoint_problem = ""
        return True

    def _announce(self, version: str):
        inline = bool(self.p["announce_inline"])
        msg = String(data=json.dumps(self.store.announcement(version, inline=inline)))
        self.update_pub.publish(msg)
        self.get_logger().info(f"announced {version} on {self.p['model_update_topic']} "
                               f"({'files inline' if inline else 'store path'})")

    def _announce_latest(self):
        """After a restart: the newest version again, for planners that join later (transient local)."""
        versions = self.store.versions()
        if not versions:
            return
        mine = self.trainer.last_version if self.trainer is not None else ""
        self._announce(mine if mine in versions else versions[-1])

    # -- service, diagnostics, shutdown --------------------------------------------------------
    def _on_export(self, request, response):
        if self.stop.is_set():
            response.success, response.message = False, "shutting down"
            return response
        fut = futures.Future()
        self.requests.put(fut)
        self.wake.set()
        try:
            response.success, response.message = fut.result(timeout=EXPORT_TIMEOUT_S)
        except futures.TimeoutError:
            response.success, response.message = False, f"the export did not finish within {EXPORT_TIMEOUT_S:g} s"
        return response

    def _on_diagnostics(self, msg: DiagnosticArray):
        """Planners' reports (planner_diagnostics: model_versions_in_use) -> versions the prune keeps."""
        self.in_use.saw(planner_versions_in_use(msg))

    def _publish_diagnostics(self):
        t = self.trainer
        free = _free_mb(self.store.root)
        values = {"state": self.state, "updates_per_s": round(self.rate, 3) if math.isfinite(self.rate) else "nan",
                  "store_mb": round(self.store_mb, 1), "disk_free_mb": free,
                  "versions_in_use": ",".join(sorted(self.in_use.current()))}
        level, message = OK, self.state
        low = self._low_disk(free)
        if low:
            level, message = WARN, low
        if t is not None:
            values.update(t.summary())
            values["device"] = str(t.agent.device)
            values.update({k: round(float(v), 6) for k, v in t.last_metrics.items() if k.endswith("_loss")})
            if t.last_failure:
                level, message = WARN, f"last export failed: {t.last_failure}"
        if self.checkpoint_problem:
            values["checkpoint_problem"] = self.checkpoint_problem
            level, message = WARN, self.checkpoint_problem
        self.diag_pub.publish(status_array(self.get_clock().now().to_msg(), "tdmpc2_ros: trainer", "trainer_node",
                                           level, message, values))

    def _low_disk(self, free_mb: float) -> str:
        """Why the store's disk is too full (min_free_mb), or "": said before an export or checkpoint
        fails for want of room (each is ~33 MB of ladder and the checkpoint with its buffer), not after.
        Logged once per low spell; training goes on either way."""
        limit = float(self.p["min_free_mb"])
        if not limit or not 0 <= free_mb < limit:
            self._disk_low_said = False
            return ""
        why = (f"{free_mb:.0f} MB free on {self.store.root}'s disk, below min_free_mb {limit:g}: the next export "
               f"or checkpoint may fail (lower store_keep, or free space)")
        if not self._disk_low_said:
            self._disk_low_said = True
            self.get_logger().warning(why)
        return why

    def shutdown(self, why: str = "shutdown"):
        """Stop training after the current update, answer waiting export requests, checkpoint. An
        export under way is not waited for (it can take minutes; a launch system kills after
        seconds): it is abandoned before it would add its version (see export_and_validate)."""
        self.stop.set()
        self.wake.set()
        if self.thread is not None:
            self.thread.join(timeout=SHUTDOWN_JOIN_S)
            if self.thread.is_alive():
                self.get_logger().info("abandoning the export under way")
        while not self.requests.empty():
            self.requests.get_nowait().set_result((False, "shutting down"))
        with self.scan_lock:  # let an ingest under way finish: its bag is then in the checkpoint
            t = self.trainer
            if t is None:
                self.get_logger().info(f"stopped ({why}): no data was ingested")
                return
            saved = self._save(t)
            t.plot()
        s = t.summary()
        where = f"checkpoint {t.run_dir / 'checkpoint.pt'}" if saved else "NO new checkpoint (above)"
        self.get_logger().info(f"stopped ({why}): {where} at {s['updates']} updates, "
                               f"{s['transitions']} transitions from {s['bags_ingested']} bags, last version "
                               f"{s['last_version'] or '-'}")


def planner_versions_in_use(msg: DiagnosticArray) -> list[str]:
    """The versions planner_node statuses name as running or as a rollback's (any planner: several
    robots, or namespaces, may share one trainer)."""
    versions = []
    for status in msg.status:
        if status.name.startswith(PLANNER_STATUS):
            for kv in status.values:
                if kv.key == "model_versions_in_use":
                    versions += [v.strip() for v in kv.value.split(",") if v.strip()]
    return versions


def _free_mb(directory) -> float:
    """Free MB on the disk of `directory` (-1 if it cannot be read): the store, checkpoints and bags
    share it on most robots."""
    try:
        return round(shutil.disk_usage(directory).free / 1e6, 1)
    except OSError:
        return -1.0


def main(args=None) -> int:
    # finish runs on SIGINT/SIGTERM with the context still up: the node checkpoints before exiting.
    return run_node("trainer_node", TrainerNode, args,
                    make_executor=lambda: MultiThreadedExecutor(num_threads=3),
                    finish=lambda node, _executor, why: node.shutdown(why), on_exit=_leave_if_export_abandoned)


def _leave_if_export_abandoned(node):
    if node.thread is not None and node.thread.is_alive():
        # An abandoned export is still in native code (torch, ONNX Runtime); finalising the
        # interpreter under it aborts the process. The checkpoint is written: leave now.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
