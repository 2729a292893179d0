"""The bag-fed TD-MPC2 learner: closed bags -> replay buffer -> updates -> an exported, validated
budget ladder in the versioned model store. No ROS: ``trainer_node`` and ``tdmpc2-ros train --bags``
drive the same ``OfflineTrainer``.

Run folder (``run_dir``), the online trainer's conventions:
- ``checkpoint.pt``: agent (weights, optimisers, scale), buffer, counters, the bags in the buffer
  (training/checkpoint.py: atomic, checksummed); a trainer started on the same folder resumes it;
- ``ingest_ledger.jsonl``: every bag taken (``ingested``) or refused (``skipped``, with the reason);
- ``train.csv`` (one row per complete episode ingested: return = sum of its rewards, env steps so far;
  from raw topics, one per message of the robot's episode-return topic, or else per fragment),
  ``metrics.csv`` (losses per ``train`` call) and ``learning_curve.png`` beside the paper's curve;
- ``weights.pt`` of the last exported version (``tdmpc2-ros export/ship`` read it), ``config.json``.

Schedule on a robot. TD-MPC2 collects ``seed_steps`` = max(1000, 5 episodes) agent steps before its
first update, then makes one update per agent step. Here the data comes from bags whenever the robot
records them, so the trainer makes **no update until the buffer holds ``min_transitions``
transitions** (default 1000, the paper's seed steps for short episodes) and then updates as fast as
the CPU allows (``trainer_node`` can cap updates per ingested transition). Discount: the parameter;
else ``heuristic_discount(episode_length)`` (clip((L/5 - 1)/(L/5), 0.95, 0.995)); else that of
``init_weights``; else 0.99 (the heuristic's value for dm_control's 500-step episodes).

Counting. A transition is one control step of the robot (one record, or one aligned raw pair).
``env_steps = transitions ingested x action_repeat``, the paper's x axis (dm_control repeats each
action twice; a robot that does not repeat actions uses 1). ``updates`` is the agent's gradient-step
count (Adam's counter, kept in the checkpoint; 0 when starting from ``init_weights``). The store
numbers versions itself (v0001, v0002, ...: one per export that passed validation); a manifest's
``parent`` is the version this trainer exported before (kept across restarts), ``bags`` every bag the
model has seen, and its notes the validation results.

Exactly-once ingest. A bag is read and checked completely before the first of its episodes enters
the buffer, so a bad bag (``BagSkipped``) changes nothing; the ledger then records it, and the log
gets one line naming the file and the reason. The checkpoint lists the bags its buffer holds. After a
crash, ledger and checkpoint are reconciled: a bag the ledger marked after the last checkpoint (so its
data died with the process) is ingested again, a bag in the checkpoint that the ledger lacks is
marked, never re-read. No bag is ever in the buffer twice, and none is lost.

Validation before a version is published (``export_and_validate``, checks in training/validation.py):
parity of every rung's ONNX graph with the torch planner on observations drawn from the buffer (up to
3 x ``parity_observations``, spares for near-ties), finite outputs, the configured spec, and a rung
whose p99 plan time on this machine fits ``deadline_fraction / control_rate_hz``. A failure adds
nothing to the store.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from tdmpc2_ros.bags.ledger import IngestLedger, bag_identity, closed_bags
from tdmpc2_ros.bags.reader import (BagSkipped, CommandFormat, Episode, RawEpisodes, episodes_from_arrays, episodes_from_raw,
                                    read_record_arrays)
from tdmpc2_ros.runtime.command_fields import check_command_parameters
from tdmpc2_ros.core.agent import TDMPC2
from tdmpc2_ros.core.buffer import ReplayBuffer
from tdmpc2_ros.core.config import ModelConfig, TrainConfig, heuristic_discount
from tdmpc2_ros.core.export import export_ladder, write_atomically
from tdmpc2_ros.runtime.budget import PlanBudget
from tdmpc2_ros.runtime.ladder import default_budgets
from tdmpc2_ros.runtime.expressions import Expression
from tdmpc2_ros.runtime.model_store import Manifest, ModelStore
from tdmpc2_ros.runtime.observations import PACES, REWARD_TIMES
from tdmpc2_ros.training.checkpoint import MAGIC, load_checkpoint, save_checkpoint
from tdmpc2_ros.training.curves import CsvLog, plot_learning_curve
from tdmpc2_ros.training.validation import LadderValidator, ValidationReport

CHECKPOINT = "checkpoint.pt"
LEDGER = "ingest_ledger.jsonl"
CURVE = "train.csv"
# Raw mode, paced by observations: observations per command from which the bag's pairs are too short. At
# 2 per command, every other pair lacks a command, so no two kept transitions are consecutive.
FAST_OBSERVATIONS = 1.5
METRICS = "metrics.csv"
WEIGHTS = "weights.pt"
PLOT = "learning_curve.png"
TERMINATION_NEEDS_EPISODIC = ("raw_termination_expression needs episodic: true (a termination head to learn it, and "
                              "planners that end a plan's value at a predicted termination)")
MAX_OPEN_EPISODES = 64  # episodes whose first part was in an earlier bag, waiting for their end
LOSS_KEYS = ("consistency_loss", "reward_loss", "value_loss", "pi_loss", "total_loss", "grad_norm")


class RawSettingError(ValueError):
    """A raw-mode setting at fault: `name` (trainer_node's parameter, the CLI option of the same name)."""

    def __init__(self, name: str, value, why: str):
        super().__init__(why)
        self.name, self.value = name, value


@dataclass(frozen=True)
class RawTopics:
    """Raw-topic mode (``episodes_from_raw``): bags of observations, commands and rewards recorded
    around any controller, aligned by timestamp. Commands are in physical units (action_low/high)."""

    obs_topic: str  # a Float64MultiArray observation topic; "" with observation_sources
    command_topic: str
    reward_topic: str
    episode_topic: str = ""
    tolerance_s: float = 0.005
    observation_sources: tuple = ()  # the planner's sources (runtime/observations.py), e.g. from /joint_states
    command: CommandFormat = CommandFormat()  # the planner's command_type / joints / interface
    reward_tolerance_s: float = 0.0  # 0 = tolerance_s; more for a reward computed after the observation (reward_node)
    episode_return_topic: str = ""  # the robot's episode returns (reward_node's): train.csv's rows, else fragments
    # Per action element, command units per model unit (the planner's command_scale, e.g. a motor gear):
    # action_low/high are then the model's bounds, and a command is read as command / scale. () = 1.
    command_scale: tuple = ()
    pace: str = "observation"  # or "command": a transition per command, for observations faster than the commands
    # Paced by commands: a reward matched to its observation's time, or to the command that ends the step
    # (reward_node's pace "command" publishes there).
    reward_at: str = "observation"
    # A numpy expression of obs (the observation after a step), true where the step ended the episode by
    # termination (a robot that fell): terminated transitions, for an episodic model. "" = never.
    termination_expression: str = ""

    @classmethod
    def from_settings(cls, s, action_low, action_high) -> "RawTopics | None":
        """trainer_node's raw-mode parameters, or `tdmpc2-ros train --bags`' options of the same names
        (None or empty = unset) -> RawTopics, or None for record mode (none of the topics set). One set
        of checks for both; RawSettingError names the setting at fault."""
        topics = [s["raw_obs_topic"] or s["raw_observation_sources"], s["raw_command_topic"], s["raw_reward_topic"]]
        if not any(topics):
            return None
        if not all(topics):
            raise RawSettingError("raw_obs_topic", topics, "raw mode needs raw_obs_topic (or raw_observation_sources), "
                                                           "raw_command_topic and raw_reward_topic (or none of them "
                                                           "for record mode)")
        if s["raw_termination_expression"] and not s["episodic"]:
            raise RawSettingError("episodic", s["episodic"], f"raw mode: {TERMINATION_NEEDS_EPISODIC}")
        try:
            raw = cls(s["raw_obs_topic"] or "", s["raw_command_topic"], s["raw_reward_topic"], s["raw_episode_topic"] or "",
                      float(s["tolerance_s"]), tuple(s["raw_observation_sources"] or ()),
                      CommandFormat(s["raw_command_type"], tuple(s["raw_command_joints"] or ()), s["raw_command_interface"]),
                      float(s["raw_reward_tolerance_s"]), s["raw_episode_return_topic"] or "",
                      tuple(float(x) for x in s["raw_command_scale"] or ()), s["raw_pace"] or "observation",
                      s["raw_reward_at"] or "observation", s["raw_termination_expression"] or "")
        except RawSettingError as e:  # a field's own check (__post_init__), already named
            raise RawSettingError(e.name, e.value, f"raw mode: {e}") from None
        except ValueError as e:
            raise RawSettingError("raw_command_type", s["raw_command_type"], f"raw mode: {e}") from None
        if not action_low:
            raise RawSettingError("action_low", action_low, "raw mode maps commands to [-1, 1] with action_low/"
                                                            "action_high: set both")
        try:
            raw.command_bounds(action_low, action_high)
        except ValueError as e:
            raise RawSettingError("raw_command_scale", s["raw_command_scale"], f"raw mode: {e}") from None
        return raw

    def command_bounds(self, action_low, action_high) -> tuple[np.ndarray, np.ndarray]:
        """The model's action bounds in the command topic's units: times command_scale, as the planner
        sends them (runtime/action_shaper.py)."""
        low, high = np.asarray(action_low, np.float64), np.asarray(action_high, np.float64)
        if not self.command_scale:
            return low, high
        scale = np.asarray(self.command_scale, np.float64)
        if scale.shape != low.shape or not np.all(scale > 0):
            raise ValueError(f"command_scale {list(self.command_scale)} must hold one positive factor per action "
                             f"element ({low.size})")
        return low * scale, high * scale

    def __post_init__(self):
        # The fields of a parameter of their own raise RawSettingError naming it (from_settings passes it on).
        if self.pace not in PACES:
            raise RawSettingError("raw_pace", self.pace, f"pace {self.pace!r} is not one of {', '.join(PACES)}")
        if self.reward_at not in REWARD_TIMES or (self.reward_at == "command" and self.pace != "command"):
            raise RawSettingError("raw_reward_at", self.reward_at, f"expected one of {', '.join(REWARD_TIMES)}; "
                                  f"'command' (rewards at the commands that end the steps) needs raw_pace 'command'")
        try:  # compiled once, here: a syntax error fails at start, not at the first bag
            termination = (Expression(self.termination_expression, "termination_expression")
                           if self.termination_expression else None)
        except ValueError as e:
            raise RawSettingError("raw_termination_expression", self.termination_expression, str(e)) from None
        object.__setattr__(self, "_termination", termination)
        problems = check_command_parameters(self.command.kind, self.command.joints, self.command.interface)
        if not (self.obs_topic or self.observation_sources) or not self.command_topic or not self.reward_topic:
            problems.append("raw mode needs an observation topic (or observation sources), a command topic and a "
                            "reward topic")
        if problems:
            raise ValueError("; ".join(problems))

    def read(self, bag, action_low, action_high) -> RawEpisodes:
        low, high = self.command_bounds(action_low, action_high)
        return episodes_from_raw(bag, self.obs_topic, self.command_topic, self.reward_topic, self.episode_topic or None,
                                 action_low=low, action_high=high, tolerance_s=self.tolerance_s,
                                 observation_sources=self.observation_sources, command=self.command,
                                 reward_tolerance_s=self.reward_tolerance_s or None,
                                 return_topic=self.episode_return_topic or None, pace=self.pace,
                                 termination=self._termination, reward_at=self.reward_at)


@dataclass
class _Snapshot:
    model: torch.nn.Module
    updates: int
    transitions: int
    env_steps: int
    bags: list
    observations: np.ndarray
    observations_from: str


def parse_rung(text: str, planner: str = "mppi") -> PlanBudget:
    """'iterations:samples:elites:pi_trajs' (e.g. '6:512:64:24') -> PlanBudget (horizon 3)."""
    try:
        it, s, e, p = (int(x) for x in str(text).split(":"))
    except ValueError as err:
        raise ValueError(f"ladder rung {text!r} is not 'iterations:samples:elites:pi_trajs' (e.g. 6:512:64:24)") from err
    return PlanBudget(planner=planner, iterations=it, num_samples=s, num_elites=e, num_pi_trajs=p)


def read_weights(path) -> tuple[dict, dict, float]:
    """(model state_dict, model_config dict, discount) from a weights.pt, an online trainer's
    checkpoint.pt or an offline trainer's checkpoint.pt. Raises ValueError naming the file."""
    try:
        with open(path, "rb") as f:
            is_checkpoint = f.read(len(MAGIC)) == MAGIC
        if is_checkpoint:
            state = load_checkpoint(path)
            meta = state.get("offline") or state.get("trainer")
            return state["agent"]["model"], dict(meta["model_config"]), float(meta["discount"])
        w = torch.load(path, map_location="cpu", weights_only=False)
        return w["model"], dict(w["model_config"]), float(w["discount"])
    except Exception as e:  # noqa: BLE001 — OSError, CheckpointError, pickle errors, missing keys
        raise ValueError(f"cannot read initial weights from {path}: {type(e).__name__}: {e}") from e


def dims_of_bag(bag, raw: RawTopics | None = None, action_low=(), action_high=(), record_topics=()) -> tuple[int, int]:
    """(obs_dim, action_dim) of the data in a bag. Raises BagSkipped if the bag yields none."""
    if raw is not None:
        r = raw.read(bag, action_low, action_high)
        return int(r.episodes[0].obs.shape[1]), int(r.episodes[0].action.shape[1])
    rec = read_record_arrays(bag, list(record_topics) or None)
    return rec.obs_dim, rec.action_dim


def checkpoint_dims(run_dir) -> tuple[int, int] | None:
    """(obs_dim, action_dim) of the trainer checkpoint in run_dir, or None if there is none."""
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        return None
    mc = load_checkpoint(path, required=("offline",))["offline"]["model_config"]
    return int(mc["obs_dim"]), int(mc["action_dim"])


def resolve_dims(run_dir, init_weights: str = "", bags=(), raw: RawTopics | None = None, action_low=(), action_high=(),
                 record_topics=(), on_skipped=None) -> tuple[int, int] | None:
    """Observation/action dims from, in order: the run's checkpoint, init_weights, the first bag that
    yields data (``on_skipped(BagSkipped)`` hears about the others). None if nothing tells."""
    dims = checkpoint_dims(run_dir)
    if dims is not None:
        return dims
    if init_weights:
        mc = read_weights(init_weights)[1]
        return int(mc["obs_dim"]), int(mc["action_dim"])
    for bag in bags:
        try:
            return dims_of_bag(bag, raw, action_low, action_high, record_topics)
        except BagSkipped as e:
            if on_skipped is not None:
                on_skipped(e)
    return None


class OfflineTrainer:
    """A TD-MPC2 agent and its replay buffer, fed from bags. Thread-safe: ``ingest``, ``train``,
    ``save`` and the snapshot taken by ``export_and_validate`` hold ``self.lock``, one update at a
    time, so a node may ingest in one thread while another trains and exports."""

    def __init__(self, run_dir, obs_dim: int, action_dim: int, preset: str = "1M", seed: int = 1, batch_size: int = 256,
                 threads: int = 2, init_weights: str | None = None, action_low=None, action_high=None, task: str = "",
                 budgets: list[PlanBudget] | None = None, planner: str = "mppi", discount: float | None = None,
                 episode_length: int = 0, min_transitions: int = 1000, buffer_size: int = 1_000_000,
                 action_repeat: int = 1, raw: RawTopics | None = None, record_topics=(), control_rate_hz: float = 50.0,
                 deadline_fraction: float = 0.7, latency_warmup: int = 5, latency_runs: int = 30,
                 parity_observations: int = 3, parity_tolerance: float = 1e-3, obs_names=(), action_names=(),
                 compile: bool = False, log=None, resume: bool = True, device: str = "cpu", episodic: bool = False):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log = log if log is not None else logging.getLogger("tdmpc2_ros.trainer")
        self.obs_dim, self.action_dim = int(obs_dim), int(action_dim)
        self.task, self.seed, self.threads = str(task), int(seed), int(threads)
        self.batch_size, self.min_transitions, self.action_repeat = int(batch_size), int(min_transitions), int(action_repeat)
        self.raw, self.record_topics = raw, tuple(record_topics or ())
        self.control_rate_hz, self.deadline_fraction = float(control_rate_hz), float(deadline_fraction)
        self.latency_warmup, self.latency_runs = int(latency_warmup), int(latency_runs)
        self.parity_observations, self.parity_tolerance = int(parity_observations), float(parity_tolerance)
        self.obs_names, self.action_names = tuple(obs_names or ()), tuple(action_names or ())
        low = [-1.0] * self.action_dim if action_low is None or len(action_low) == 0 else [float(x) for x in action_low]
        high = [1.0] * self.action_dim if action_high is None or len(action_high) == 0 else [float(x) for x in action_high]
        self._check_settings(low, high, bool(episodic))
        self.action_low, self.action_high = tuple(low), tuple(high)
        torch.set_num_threads(self.threads)

        ckpt = self.run_dir / CHECKPOINT
        state = load_checkpoint(ckpt, required=("agent", "buffer", "offline")) if resume and ckpt.is_file() else None
        self.model_cfg = ModelConfig.from_preset(preset, self.obs_dim, self.action_dim, episodic=bool(episodic))
        self.train_cfg = TrainConfig(batch_size=self.batch_size, buffer_size=int(buffer_size))
        init = None
        if state is None and init_weights:
            init = read_weights(init_weights)
            # A model without a termination head may start an episodic one: the head starts from its initialisation.
            if {**init[1], "episodic": self.model_cfg.episodic} != self.model_cfg.to_dict() or init[1]["episodic"] > episodic:
                raise ValueError(f"init_weights {init_weights} hold a model {init[1]}, this trainer builds "
                                 f"{self.model_cfg.to_dict()} (preset {preset}, obs {obs_dim}, action {action_dim})")
        self.discount = self._choose_discount(state, discount, episode_length, init)
        self.budgets = list(budgets) if budgets else default_budgets(self.action_dim, planner)
        if any(b.horizon != self.train_cfg.horizon for b in self.budgets):
            raise ValueError(f"every rung must plan over the training horizon {self.train_cfg.horizon}")
        self.agent = TDMPC2(self.model_cfg, self.train_cfg, self.budgets[0], self.discount, seed=self.seed,
                            threads=self.threads, device=device)
        if compile:
            self.agent.compile()  # traced at the first update, not here
        self.buffer = ReplayBuffer(self.train_cfg.buffer_size, self.obs_dim, self.action_dim, self.train_cfg.horizon,
                                   seed=self.seed)
        self.lock = threading.RLock()
        for stale in self.run_dir.glob(".export-*"):  # an export killed half-way
            shutil.rmtree(stale, ignore_errors=True)
        self.ledger = IngestLedger(self.run_dir / LEDGER)
        self.curve_log = CsvLog(self.run_dir / CURVE, ["step", "episode", "episode_reward", "length", "bag", "wall_s"])
        self.metrics_log = CsvLog(self.run_dir / METRICS, ["updates", "step", *LOSS_KEYS])
        self.parity_rng = np.random.default_rng(self.seed + 7)
        # counters (all in the checkpoint)
        self.transitions = self.episodes = self.curve_episodes = self.longest_episode = 0
        self.bags: list[dict] = []  # {"bag", "identity", "transitions", "episodes"} of what the buffer holds
        self.last_version = ""
        self.last_export_updates = 0  # updates at the last export attempt (passed or not)
        self.exports = self.failed_exports = 0
        self.last_failure = ""
        self.last_metrics: dict = {}
        self._open: dict[int, dict] = {}  # episode id -> partial return, for episodes spanning bags
        self._last_return_at = 0  # transitions ingested when the last raw-topic episode return came (train.csv length)
        self._exported_bags: list[str] = []  # bags of the last exported version
        self._updates = 0
        self._wall_offset, self._t0 = 0.0, time.monotonic()
        if state is not None:
            self._restore(state)
        elif init is not None:
            # The configs match but for episodic (checked above): only the termination head can be missing.
            missing, _ = self.agent.model.load_state_dict(init[0], strict=not self.model_cfg.episodic)
            self.log.info(f"starting from the weights in {init_weights}" +
                          (" (the termination head from its initialisation)" if missing else ""))
        (self.run_dir / "config.json").write_text(json.dumps(self.config(), indent=2))

    def _check_settings(self, low: list[float], high: list[float], episodic: bool):
        """Every setting a run would fail on later, refused now, all at once."""
        problems = []
        if self.raw is not None and self.raw.termination_expression and not episodic:
            problems.append(TERMINATION_NEEDS_EPISODIC)
        if len(low) != self.action_dim or len(high) != self.action_dim:
            problems.append(f"action_low/high have {len(low)}/{len(high)} entries for action_dim {self.action_dim}")
        elif not all(h > lo for lo, h in zip(low, high)):
            problems.append(f"action_high {high} must exceed action_low {low} element-wise")
        if self.batch_size < 1 or self.action_repeat < 1 or self.min_transitions < 0:
            problems.append("batch_size and action_repeat must be >= 1, min_transitions >= 0")
        if self.control_rate_hz <= 0 or not 0 < self.deadline_fraction <= 1:
            problems.append(f"control_rate_hz must be > 0 and deadline_fraction in (0, 1] "
                            f"(got {self.control_rate_hz}, {self.deadline_fraction})")
        if self.parity_observations < 1 or self.latency_runs < 1:
            problems.append("parity_observations and latency_runs must be >= 1")
        if problems:
            raise ValueError("invalid trainer settings: " + "; ".join(problems))

    @staticmethod
    def _choose_discount(state, discount: float | None, episode_length: int, init) -> float:
        """A resumed run keeps its discount; else the one given, else the reference's heuristic from
        the episode length, else the init weights' own, else 0.99."""
        if state is not None:
            return float(state["offline"]["discount"])
        if discount is not None and discount > 0:
            return float(discount)
        if episode_length > 0:
            return heuristic_discount(int(episode_length))
        if init is not None:
            return init[2]
        return 0.99

    # -- counters ------------------------------------------------------------------------------
    @property
    def env_steps(self) -> int:
        return self.transitions * self.action_repeat

    @property
    def updates(self) -> int:
        """Gradient updates so far (equals agent.updates; cached so other threads can read it freely)."""
        return self._updates

    @property
    def limit_s(self) -> float:
        return self.deadline_fraction / self.control_rate_hz

    def config(self) -> dict:
        return {"model": self.model_cfg.to_dict(), "train": self.train_cfg.to_dict(), "discount": self.discount,
                "budgets": [b.to_dict() for b in self.budgets], "task": self.task, "seed": self.seed,
                "min_transitions": self.min_transitions, "action_repeat": self.action_repeat,
                "action_low": list(self.action_low), "action_high": list(self.action_high),
                "raw": asdict(self.raw) if self.raw else None, "record_topics": list(self.record_topics),
                "control_rate_hz": self.control_rate_hz, "deadline_fraction": self.deadline_fraction,
                "parity_tolerance": self.parity_tolerance, "device": str(self.agent.device)}

    def wall_s(self) -> float:
        return self._wall_offset + time.monotonic() - self._t0

    def can_train(self) -> bool:
        """The buffer holds min_transitions and at least one episode longer than the horizon."""
        return len(self.buffer) >= max(self.min_transitions, 1) and self.longest_episode >= self.train_cfg.horizon

    def summary(self) -> dict:
        skipped = sum(1 for e in list(self.ledger.entries.values()) if e.get("status") == "skipped")
        return {"transitions": self.transitions, "env_steps": self.env_steps, "episodes": self.episodes,
                "buffer_transitions": len(self.buffer), "bags_ingested": len(self.bags), "bags_skipped": skipped,
                "updates": self.updates, "last_version": self.last_version, "exports": self.exports,
                "failed_exports": self.failed_exports, "last_failure": self.last_failure}

    # -- ingest --------------------------------------------------------------------------------
    def pending(self, bag_dir) -> list[Path]:
        """Closed bags under bag_dir whose data is not in the buffer and that were not refused,
        oldest first (reconciling ledger and checkpoint; see the module docstring)."""
        out = []
        with self.lock:
            held = {(b["bag"], b["identity"]) for b in self.bags}
            by_name = {b["bag"]: b for b in self.bags}
        for bag in closed_bags(bag_dir):
            entry = self.ledger.entry(bag)
            try:
                identity = bag_identity(bag)
            except OSError:
                continue  # vanished while listing
            if (bag.name, identity) in held:
                if entry is None or entry.get("identity") != identity:  # checkpointed, then a crash before the mark
                    b = by_name[bag.name]
                    self.ledger.mark(bag, transitions=b["transitions"], episodes=b["episodes"])
                continue
            if not self.ledger.is_ingested(bag):
                out.append(bag)
            elif entry.get("status") == "ingested":  # marked after the last checkpoint: its data was lost
                self.log.warning(f"bag {bag} was ingested after the last checkpoint; ingesting it again")
                out.append(bag)
        return out

    def ingest_pending(self, bag_dir) -> list[dict]:
        """Ingest every pending bag; mark each in the ledger (skipped ones with their reason)."""
        results = []
        for bag in self.pending(bag_dir):
            try:
                n, e = self.ingest(bag)
            except BagSkipped as err:
                self.log.warning(f"skipped bag {err.path}: {err.reason}")
                self.ledger.mark(bag, status="skipped", reason=err.reason)
                results.append({"bag": bag.name, "status": "skipped", "reason": err.reason})
                continue
            self.ledger.mark(bag, transitions=n, episodes=e)
            self.log.info(f"ingested bag {bag}: {n} transitions in {e} episode(s); buffer {len(self.buffer)} "
                          f"transitions, {self.env_steps} env steps")
            results.append({"bag": bag.name, "status": "ingested", "transitions": n, "episodes": e})
        return results

    def ingest(self, bag_path) -> tuple[int, int]:
        """Add a bag's episodes to the buffer; -> (transitions, episodes). Raises BagSkipped (and
        changes nothing) if the bag holds no usable data for this trainer."""
        bag = Path(bag_path)
        episodes, records = self._read(bag)
        try:
            identity = bag_identity(bag)
        except OSError as e:
            raise BagSkipped(bag, f"unreadable ({type(e).__name__}: {e})") from e
        with self.lock:
            before = self.transitions
            for ep in episodes:
                self.buffer.add_episode(ep.obs, ep.action, ep.reward, ep.terminated)
            lengths = [int(ep.action.shape[0]) for ep in episodes]
            n = int(sum(lengths))
            self.transitions += n
            self.episodes += len(episodes)
            self.longest_episode = max([self.longest_episode, *lengths])
            self.bags.append({"bag": bag.name, "identity": identity, "transitions": n, "episodes": len(episodes)})
            if isinstance(records, RawEpisodes):
                complete = self._raw_curve(records, episodes, lengths, before)
            else:
                complete = self._complete_episodes(records)
            for ret, length, position in complete:
                self.curve_episodes += 1
                self.curve_log.append(step=(before + min(position, n)) * self.action_repeat, episode=self.curve_episodes,
                                      episode_reward=round(ret, 4), length=length, bag=bag.name,
                                      wall_s=round(self.wall_s(), 1))
        return n, len(episodes)

    def _check_reward_times(self, bag: Path, counts: dict) -> None:
        """Paced by commands, rewards matched to their observations' times, but a reward at each command
        (reward_node's pace "command"): where that costs steps, say what to set."""
        lost = sum(counts.get(f"skipped_{why}", 0) for why in ("no_reward", "ambiguous_reward",
                                                              "reward_of_another_observation"))
        if (self.raw.pace == "command" and self.raw.reward_at == "observation" and lost > 0.05 * counts.get("pairs", 0)
                and abs(counts.get("rewards_per_command", 0.0) - 1.0) <= 0.2):
            self.log.warning(f"bag {bag}: a reward per command (reward_node's pace 'command'?), but {lost} of "
                             f"{counts['pairs']} steps found none near their observation's time, one claimed twice or "
                             f"(stamped) one of another state: "
                             f"set raw_reward_at to 'command' to match each reward to the command that ends its step")

    def _read(self, bag: Path) -> tuple[list[Episode], object]:
        """Read and check a whole bag before anything is written (raises BagSkipped). -> (episodes,
        what they came from: the transition records, or the raw topics' RawEpisodes)."""
        if self.raw is not None:
            records = self.raw.read(bag, self.action_low, self.action_high)
            episodes = records.episodes
            ratio = records.counts.get("observations_per_command", 1.0)
            if ratio >= FAST_OBSERVATIONS and self.raw.pace == "observation":
                self.log.warning(f"bag {bag}: the first observation source publishes {ratio:g} times per command; raw "
                                 f"mode makes a transition of each pair of its messages, so most have no command "
                                 f"and are skipped: set raw_pace to 'command' (a transition per command), or give "
                                 f"observation sources whose first topic comes at the control rate")
            self._check_reward_times(bag, records.counts)
        else:
            records = read_record_arrays(bag, list(self.record_topics) or None)
            if (records.obs_dim, records.action_dim) != (self.obs_dim, self.action_dim):
                raise BagSkipped(bag, f"transition records of obs dim {records.obs_dim} and action dim "
                                      f"{records.action_dim}; this trainer learns obs dim {self.obs_dim}, action dim "
                                      f"{self.action_dim}")
            episodes = episodes_from_arrays(records)
        for i, ep in enumerate(episodes):
            T = ep.action.shape[0]
            if (ep.obs.shape != (T + 1, self.obs_dim) or ep.action.shape != (T, self.action_dim)
                    or ep.reward.shape != (T,) or ep.terminated.shape != (T,)):
                raise BagSkipped(bag, f"episode {i} has observations {ep.obs.shape} and actions {ep.action.shape}; this "
                                      f"trainer learns obs dim {self.obs_dim}, action dim {self.action_dim}")
            if T + 1 > self.buffer.capacity:
                raise BagSkipped(bag, f"episode {i} of {T} transitions exceeds the buffer capacity {self.buffer.capacity}")
        finite = [bool(np.isfinite(ep.obs).all() and np.isfinite(ep.action).all() and np.isfinite(ep.reward).all())
                  for ep in episodes]
        if not all(finite):
            self.log.warning(f"bag {bag}: dropped {finite.count(False)} of {len(episodes)} episode(s) holding NaN or Inf")
        episodes = [ep for ep, ok in zip(episodes, finite) if ok]
        if not episodes:
            raise BagSkipped(bag, "no episode with finite observations, actions and rewards")
        return episodes, records

    def _raw_curve(self, raw: RawEpisodes, episodes, lengths, before: int) -> list[tuple[float, int, int]]:
        """(return, length, position in the bag) of train.csv's rows from raw topics: the robot's own
        episode returns (RawTopics.episode_return_topic; length = transitions since the previous one;
        a bag in which no episode ended adds none), else each fragment (a run of consecutive
        transitions) as an episode."""
        if not self.raw.episode_return_topic:
            ends = np.cumsum(lengths)
            return [(float(ep.reward.sum()), t, int(end)) for ep, t, end in zip(episodes, lengths, ends)]
        out = []
        for position, value in raw.returns:
            out.append((float(value), before + position - self._last_return_at, position))
            self._last_return_at = before + position
        return out

    def _complete_episodes(self, rec) -> list[tuple[float, int, int]]:
        """(return, length, position in the bag) of each episode that ends in this bag and whose every
        step was seen, from step 0 (possibly in an earlier bag) to its terminated/truncated record."""
        out = []
        ends = rec.terminated | rec.truncated
        ids, first = np.unique(rec.episode, return_index=True)
        for eid in ids[np.argsort(first)].tolist():
            idx = np.flatnonzero(rec.episode == eid)
            order = np.argsort(rec.step[idx], kind="stable")
            idx = idx[order]
            steps = rec.step[idx]
            keep = np.concatenate([[True], np.diff(steps) != 0])  # a record seen twice counts once
            idx, steps = idx[keep], steps[keep]
            cur = {"next": 0, "return": 0.0, "length": 0} if steps[0] == 0 else self._open.get(eid)
            if cur is None or steps[0] != cur["next"] or np.any(np.diff(steps) != 1):
                self._open.pop(eid, None)  # its start, or a step in between, was never seen
                continue
            cur = {"next": int(steps[-1]) + 1, "return": cur["return"] + float(rec.reward[idx].sum()),
                   "length": cur["length"] + len(idx)}
            self._open.pop(eid, None)
            if ends[idx[-1]]:
                out.append((cur["return"], cur["length"], int(idx.max()) + 1))
            else:
                self._open[eid] = cur
        while len(self._open) > MAX_OPEN_EPISODES:
            self._open.pop(next(iter(self._open)))
        return out

    # -- training ------------------------------------------------------------------------------
    def train(self, updates: int, progress=None, should_stop=None) -> dict:
        """Up to `updates` gradient updates on batches from the buffer (none before can_train()).
        -> {"updates": done, **last losses}; progress(n) after each, should_stop() checked before each."""
        if not self.can_train():
            why = (f"the buffer holds {len(self.buffer)} transitions, fewer than min_transitions={self.min_transitions}"
                   if len(self.buffer) < max(self.min_transitions, 1) else
                   f"no episode is longer than the horizon ({self.train_cfg.horizon})")
            return {"updates": 0, "reason": why}
        done, metrics = 0, {}
        for _ in range(int(updates)):
            if should_stop is not None and should_stop():
                break
            with self.lock:
                metrics = self.agent.update(*self.buffer.sample(self.batch_size))
                self._updates += 1
            done += 1
            if progress is not None:
                progress(1)
        if metrics:
            self.last_metrics = metrics
            self.metrics_log.append(updates=self.updates, step=self.env_steps,
                                    **{k: round(float(metrics[k]), 6) for k in LOSS_KEYS})
        return {"updates": done, **metrics}

    # -- export and validation -----------------------------------------------------------------
    def _snapshot(self) -> _Snapshot:
        with self.lock:
            model = copy.deepcopy(self.agent.model).cpu().eval()  # exported and validated on the CPU
            k = 3 * self.parity_observations  # spares for observations whose plan is a tie
            if self.buffer.size:
                rows = self.parity_rng.choice(self.buffer.size, size=k, replace=self.buffer.size < k)
                obs, source = self.buffer.obs[rows].copy(), "buffer"
            else:  # nothing ingested yet (an initial model): standard-normal observations
                obs, source = self.parity_rng.standard_normal((k, self.obs_dim)).astype(np.float32), "random"
            return _Snapshot(model, self.updates, self.transitions, self.env_steps, [b["bag"] for b in self.bags],
                             obs.astype(np.float32), source)

    def _weights_bytes(self, snap: _Snapshot) -> bytes:
        buf = io.BytesIO()
        torch.save({"model": snap.model.state_dict(), "model_config": self.model_cfg.to_dict(), "discount": self.discount,
                    "budget": self.budgets[0].to_dict(), "task": self.task, "env_step": snap.env_steps,
                    "updates": snap.updates}, buf)
        return buf.getvalue()

    def export_and_validate(self, store: ModelStore, parent: str | None = None, should_stop=None) -> Manifest | None:
        """Export the current weights as a ladder, validate it, and add it to the store. Returns the
        new version's manifest, or None (reason logged and kept in last_failure; nothing added).
        parent: None = the version this trainer exported last. should_stop() is asked once more,
        under the lock, just before the version is added: a trainer shutting down checkpoints under
        that lock, so a version is either in its checkpoint or never added."""
        t0 = time.monotonic()
        snap = self._snapshot()
        with self.lock:
            self.last_export_updates = snap.updates
        weights = self._weights_bytes(snap)
        sha = hashlib.sha256(weights).hexdigest()
        try:
            tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=self.run_dir))
        except OSError as e:  # a full disk: a failed version; training goes on
            return self._failed(f"no room to export in {self.run_dir} ({type(e).__name__}: {e})")
        try:
            try:
                export_ladder(snap.model, self.budgets, self.discount, tmp, task=self.task, train_step=snap.env_steps,
                              checkpoint_sha256=sha, obs_names=self.obs_names, action_low=self.action_low,
                              action_high=self.action_high, action_names=self.action_names)
            except Exception as e:  # noqa: BLE001 — an export that fails is a failed version, not a crash
                return self._failed(f"export failed ({type(e).__name__}: {e})")
            report = self.validate(tmp, snap.model, snap.observations)
            if not report.ok:
                return self._failed(f"validation failed: {report.reason}")
            report.notes["parity_observations_from"] = snap.observations_from
            with self.lock:
                if should_stop is not None and should_stop():
                    self.log.info("export abandoned: shutting down")
                    return None
                seen = set(self._exported_bags)
                notes = {"validation": report.notes, "new_bags": [b for b in snap.bags if b not in seen],
                         "transitions": snap.transitions, "action_repeat": self.action_repeat, "discount": self.discount,
                         "task": self.task, "preset": self.model_cfg.preset, "weights_sha256": sha,
                         "export_s": round(time.monotonic() - t0, 1)}
                try:  # the version appears in the store by one rename, after every file: all or nothing
                    manifest = store.add(tmp, parent=self.last_version if parent is None else parent,
                                         env_steps=snap.env_steps, updates=snap.updates, bags=snap.bags, notes=notes)
                except OSError as e:
                    return self._failed(f"adding the version to the store failed ({type(e).__name__}: {e}); "
                                        f"nothing was added")
                self.last_version, self.last_failure = manifest.version, ""
                self.exports += 1
                self._exported_bags = list(snap.bags)
                try:
                    write_atomically(self.run_dir / WEIGHTS, weights)
                except OSError as e:  # the version is stored and validated: it stands
                    self.log.error(f"{WEIGHTS} in {self.run_dir} not updated to {manifest.version}: {e}")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        chosen = report.notes.get("chosen_rung", "")
        self.log.info(f"exported {manifest.version} (parent {manifest.parent or '-'}): {snap.updates} updates, "
                      f"{snap.env_steps} env steps, {len(snap.bags)} bags; validated, first fitting rung {chosen} "
                      f"in {time.monotonic() - t0:.1f} s")
        return manifest

    def _failed(self, reason: str) -> None:
        with self.lock:
            self.last_failure = reason
            self.failed_exports += 1
        self.log.error(f"not publishing a new model: {reason}")
        return None

    def validate(self, folder, model: torch.nn.Module, observations) -> ValidationReport:
        """The checks of training/validation.py on an exported ladder folder, with this trainer's
        spec, budgets and latency limit. Never raises for a bad model: the report says what failed."""
        check = LadderValidator(self.obs_dim, self.action_dim, self.action_low, self.action_high, self.discount,
                                tuple(self.budgets), self.limit_s,
                                f"deadline_fraction {self.deadline_fraction:g} / {self.control_rate_hz:g} Hz",
                                self.threads, self.seed, self.parity_observations, self.parity_tolerance,
                                self.latency_warmup, self.latency_runs)
        return check.validate(folder, model, observations, self.parity_rng)

    # -- persistence ---------------------------------------------------------------------------
    def state(self) -> dict:
        with self.lock:
            return {
                "agent": self.agent.state_dict(),
                "buffer": self.buffer.state_dict(),
                "offline": {
                    "model_config": self.model_cfg.to_dict(), "train_config": self.train_cfg.to_dict(),
                    "discount": self.discount, "budgets": [b.to_dict() for b in self.budgets], "task": self.task,
                    "action_low": list(self.action_low), "action_high": list(self.action_high),
                    "action_repeat": self.action_repeat, "transitions": self.transitions, "episodes": self.episodes,
                    "curve_episodes": self.curve_episodes, "longest_episode": self.longest_episode,
                    "bags": copy.deepcopy(self.bags), "last_version": self.last_version,
                    "last_export_updates": self.last_export_updates, "exports": self.exports,
                    "failed_exports": self.failed_exports, "exported_bags": list(self._exported_bags),
                    "open_episodes": copy.deepcopy(self._open), "wall_s": self.wall_s(),
                    "last_return_at": self._last_return_at,
                    "parity_rng": self.parity_rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                },
            }

    def save(self) -> str:
        """Checkpoint to run_dir/checkpoint.pt (atomic); returns its sha256."""
        with self.lock:  # the state holds live tensors: write it before the next update changes them
            return save_checkpoint(self.state(), self.run_dir / CHECKPOINT)

    def _restore(self, state: dict):
        o = state["offline"]
        if o["model_config"] != self.model_cfg.to_dict():
            raise ValueError(f"the checkpoint in {self.run_dir} holds a model {o['model_config']}, this trainer builds "
                             f"{self.model_cfg.to_dict()}; use another run_dir or the checkpoint's preset and dims")
        self.agent.load_state_dict(state["agent"])
        self.buffer.load_state_dict(state["buffer"])
        self._updates = self.agent.updates
        self.transitions, self.episodes = int(o["transitions"]), int(o["episodes"])
        self.curve_episodes, self.longest_episode = int(o["curve_episodes"]), int(o["longest_episode"])
        self.bags = list(o["bags"])
        self.last_version, self.last_export_updates = str(o["last_version"]), int(o["last_export_updates"])
        self.exports, self.failed_exports = int(o["exports"]), int(o["failed_exports"])
        self._exported_bags = list(o["exported_bags"])
        self._open = {int(k): dict(v) for k, v in o["open_episodes"].items()}
        self._last_return_at = int(o.get("last_return_at", self.transitions))  # absent before session 30
        self._wall_offset = float(o["wall_s"])
        self.parity_rng.bit_generator.state = o["parity_rng"]
        torch.set_rng_state(o["torch_rng"])
        # rows logged after this checkpoint belong to data that is ingested again
        self.curve_log.truncate_after(self.env_steps)
        self.metrics_log.truncate_after(self.updates, key="updates")
        self.log.info(f"resumed from {self.run_dir / CHECKPOINT}: {self.transitions} transitions from {len(self.bags)} "
                      f"bags, {self.updates} updates, last version {self.last_version or '-'}")

    def plot(self):
        """learning_curve.png from train.csv, beside the paper's curve for the task (if known)."""
        try:
            plot_learning_curve([], self.curve_log.read(), self.task, self.run_dir / PLOT,
                                title_extra=f"({self.model_cfg.preset}, from bags, {self.updates} updates)")
        except Exception as e:  # noqa: BLE001 — a missing plotting backend must not stop training
            self.log.warning(f"could not plot the learning curve: {type(e).__name__}: {e}")
