"""The planner node's parameters: declared in one place, read into one typed object.
Defaults here equal config/planner.yaml; the YAML is what users edit."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, fields

from tdmpc2_ros.ros import topics
from tdmpc2_ros.runtime.command_fields import check_command_parameters
from tdmpc2_ros.runtime.onnx_planner import EXECUTION_PROVIDERS


@dataclass
class PlannerParams:
    """Each field is a ROS parameter of planner_node; DESCRIPTIONS below says what it means."""

    model_path: str = ""
    control_rate_hz: float = 50.0
    trigger: str = "timer"
    deadline_fraction: float = 0.7
    budget_step_up_after_s: float = 60.0
    budget_standby: bool = True
    ladder_warmup: int = 10
    ladder_runs: int = 40
    swap_load_wait_s: float = 10.0
    swap_check_spacing: int = 2
    threads: int = 1
    execution_provider: str = "auto"
    plan_thread_priority: int = 0
    plan_cpu_affinity: tuple[int, ...] = ()
    gc_freeze: bool = True
    seed: int = 0
    observation_sources: tuple[str, ...] = ("array:" + topics.OBSERVATION + ":obs",)
    action_topic: str = topics.COMMAND
    command_type: str = "array"
    command_joints: tuple[str, ...] = ()
    command_interface: str = "effort"
    episode_topic: str = topics.EPISODE
    command_scale: tuple[float, ...] = ()
    action_low: tuple[float, ...] = ()
    action_high: tuple[float, ...] = ()
    max_action_rate: float = 0.0
    safe_action: str = "zero"
    stop_action: str = "safe_action"
    start_enabled: bool = True
    max_observation_age_s: float = 0.1
    duplicate_window_s: float = 1.0
    explore: bool = False
    diagnostics_period_s: float = 1.0
    transition_topic: str = topics.TRANSITION
    model_update_topic: str = topics.MODEL_UPDATE
    model_wait_s: float = 0.0
    model_cache_dir: str = ""
    model_cache_keep: int = 5

    def validate(self):
        problems = []
        if self.control_rate_hz <= 0:
            problems.append(f"control_rate_hz must be > 0 (got {self.control_rate_hz})")
        if self.trigger not in ("timer", "observation"):
            problems.append(f"trigger must be 'timer' or 'observation' (got {self.trigger!r})")
        if self.safe_action not in ("zero", "hold"):
            problems.append(f"safe_action must be 'zero' or 'hold' (got {self.safe_action!r})")
        if self.stop_action not in ("safe_action", "zero", "hold", "none"):
            problems.append(f"stop_action must be 'safe_action', 'zero', 'hold' or 'none' (got {self.stop_action!r})")
        if not 0 < self.deadline_fraction <= 1:
            problems.append(f"deadline_fraction must be in (0, 1] (got {self.deadline_fraction})")
        if self.budget_step_up_after_s < 0:
            problems.append(f"budget_step_up_after_s must be >= 0 (0 = never step up; got {self.budget_step_up_after_s})")
        if self.swap_load_wait_s < 0:
            problems.append(f"swap_load_wait_s must be >= 0 (0 = load at once; got {self.swap_load_wait_s})")
        if self.swap_check_spacing < 1:
            problems.append(f"swap_check_spacing must be >= 1 (ticks per shadow plan; got {self.swap_check_spacing})")
        if self.model_cache_keep < 0:
            problems.append(f"model_cache_keep must be >= 0 (0 = keep every version; got {self.model_cache_keep})")
        if not 0 <= self.plan_thread_priority <= 99:
            problems.append(f"plan_thread_priority must be 0 (normal) or a SCHED_FIFO priority 1-99 (got {self.plan_thread_priority})")
        if any(not isinstance(c, int) or isinstance(c, bool) or c < 0 for c in self.plan_cpu_affinity):
            problems.append(f"plan_cpu_affinity must list core numbers >= 0 (got {list(self.plan_cpu_affinity)})")
        if self.execution_provider not in EXECUTION_PROVIDERS:
            problems.append(f"execution_provider must be one of {', '.join(EXECUTION_PROVIDERS)} (got {self.execution_provider!r})")
        problems += check_command_parameters(self.command_type, self.command_joints, self.command_interface)
        if len(self.action_low) != len(self.action_high):
            problems.append("action_low and action_high must have the same length")
        if problems:
            raise ValueError("invalid planner parameters: " + "; ".join(problems))
        return self


# The planner parameters a running node takes from `ros2 param set` (PlannerNode._on_set_parameters).
# Every other parameter of every node is read once at start and declared read-only, so that ROS
# refuses a change, with the reason, rather than accepting a value the node would never read.
RUNTIME = ("model_path", "deadline_fraction")

# What `ros2 param describe /planner_node <name>` says of each parameter (config/planner.yaml has more).
DESCRIPTIONS = {
    "model_path": ".onnx file, model folder (ladder.json) or model store; '' = the shipped cartpole model; "
                  "a change while running is a hot swap",
    "control_rate_hz": "control rate (Hz): one plan and one command per period",
    "trigger": "timer: plan on a fixed-rate timer; observation: plan as soon as an observation arrives",
    "deadline_fraction": "a rung fits if its p99 plan latency is within this fraction of the period (0-1]; "
                         "a change while running applies at once",
    "budget_step_up_after_s": "after this long with every plan within the limit, try the next larger rung (0 = never)",
    "budget_standby": "keep the next smaller rung loaded and warm, so that a step down loads nothing (one more session)",
    "ladder_warmup": "warm-up plans per rung before it is timed at start-up",
    "ladder_runs": "timed plans per rung at start-up",
    "swap_load_wait_s": "a new version or standby loads once the loop shows room, or after this long (0 = at once)",
    "swap_check_spacing": "a swap candidate's shadow plans: at most one every this many ticks (more while busy)",
    "threads": "ONNX Runtime threads for the plan (1 where the CPU is shared; config/planner.yaml says why)",
    "execution_provider": "auto (CUDA where installed, else CPU), cpu, openvino (Intel CPUs) or cuda; runtime/onnx_planner.py",
    "plan_thread_priority": "SCHED_FIFO priority 1-99 of the planning thread; 0 = a normal thread",
    "plan_cpu_affinity": "cores the planning thread may run on; [] = any",
    "gc_freeze": "after start-up, keep its objects out of Python's garbage collections (runtime/gc_pauses.py)",
    "seed": "seed of the planner's sampling noise",
    "observation_sources": "<type>:<topic>:<field>[:<joint>] entries assembled into the observation (runtime/observations.py)",
    "action_topic": "where commands go (command_type's message, physical units)",
    "command_type": "array (std_msgs/Float64MultiArray, forward command controllers), joint_trajectory "
                    "(one point one period ahead, joint_trajectory_controller) or joint_state (ros/commands.py)",
    "command_joints": "joint_trajectory and joint_state: the joint of each action element, in order",
    "command_interface": "joint_trajectory and joint_state: the field the command goes in: position, velocity or effort",
    "episode_topic": "episode starts (std_msgs/Int64): the warm start is reset",
    "command_scale": "per-action factor from the model's units to the command topic's (e.g. a motor gear); [] = 1",
    "action_low": "command limits, low (after scaling); [] = the model's action spec",
    "action_high": "command limits, high (after scaling); [] = the model's action spec",
    "max_action_rate": "command rate limit in physical units per second; 0 = none",
    "safe_action": "on bad or stale input: zero, or hold the last command",
    "stop_action": "the command published once when the node stops: safe_action's, zero, hold, or none",
    "start_enabled": "plan from the start; false: wait for ~/enable (std_srvs/SetBool) before sending any command",
    "max_observation_age_s": "an observation older than this is stale: the safe action is published",
    "duplicate_window_s": "the same step message again within this time is a republish: not answered",
    "explore": "add the planner's exploration noise (collecting data to learn from)",
    "diagnostics_period_s": "period of the /diagnostics status",
    "transition_topic": "one record per executed step, for the recorder; '' = off",
    "model_update_topic": "announcements of new model versions (hot swap; transient local)",
    "model_wait_s": "model_path is an empty model store: wait this long for a first version",
    "model_cache_dir": "where models announced inline are written; '' = ~/.cache/tdmpc2_ros/models",
    "model_cache_keep": "versions kept in model_cache_dir: the newest this many, and those running or kept "
                        "for rollback; 0 = keep all",
}


def declare_and_read(node) -> PlannerParams:
    """Declare every field as a ROS parameter (default from the dataclass) and read them back."""
    defaults = PlannerParams()
    table = {f.name: (getattr(defaults, f.name), DESCRIPTIONS[f.name]) for f in fields(PlannerParams)}
    values = declare_table(node, table, runtime=RUNTIME)
    return PlannerParams(**{k: tuple(v) if isinstance(table[k][0], tuple) else v for k, v in values.items()}).validate()


def descriptor(description: str, read_only: bool, dynamic_typing: bool = False):
    """A parameter's descriptor: what `ros2 param describe` shows, and whether `ros2 param set` may change it."""
    from rcl_interfaces.msg import ParameterDescriptor

    return ParameterDescriptor(description=description, read_only=read_only, dynamic_typing=dynamic_typing)


def _declare_float(node, name: str, default: float, description: str, read_only: bool = True) -> float:
    """A float parameter that also takes an integer (`rate:=10` from a launch argument is an int to
    ROS), rather than refusing to start."""
    value = node.declare_parameter(name, default, descriptor(description, read_only, dynamic_typing=True)).value
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ParameterError(name, value, "must be a number") from None


class ParameterError(ValueError):
    """A parameter value a node cannot start with; the message names the parameter."""

    def __init__(self, name: str, value, why: str):
        super().__init__(f"invalid parameter '{name}' = {value!r}: {why}")
        self.parameter = name


def declare_table(node, table: dict, runtime: tuple[str, ...] = ()) -> dict:
    """Declare {name: (default, description)} on the node and return {name: value}. A parameter not
    in `runtime` is read-only: set at start (a params file, `-p`, a launch argument), refused by
    `ros2 param set` afterwards. A list or tuple default gives a list (an empty one is declared untyped,
so that any array, or one string, can be given)."""
    out = {}
    for name, (default, description) in table.items():
        read_only = name not in runtime
        if isinstance(default, (list, tuple)):
            # An empty array has no type to infer: declare it untyped (Humble, Jazzy and Kilted agree).
            untyped = descriptor(description, read_only, dynamic_typing=not default)
            value = node.declare_parameter(name, list(default) if default else None, untyped).value
            if isinstance(value, str):  # `-p name:=x` or a launch argument: one entry ("" = none), not characters
                value = [value] if value.strip() else []
            out[name] = list(value) if value is not None else []
        elif isinstance(default, float):
            out[name] = _declare_float(node, name, default, description, read_only)
        else:
            out[name] = node.declare_parameter(name, default, descriptor(description, read_only)).value
    return out


def warn_unknown_parameters(node) -> list[str]:
    """Warn of each parameter set for this node (a params file, `-p`, a launch argument) that the
    node does not declare: ROS ignores it without a word, so a misspelt `control_rate` in a YAML
    would leave the node at its default rate. run_node (ros/run.py) calls it once the node is built,
    every parameter declared. Returns the names, sorted."""
    # rclpy keeps the overrides it was given in this attribute (Humble to Kilted); no public accessor.
    overrides = getattr(node, "_parameter_overrides", None) or {}
    declared = list(node.list_parameters([], 0).names)
    unknown = sorted(n for n in overrides if not node.has_parameter(n) and not n.startswith("qos_overrides."))
    for name in unknown:
        close = difflib.get_close_matches(name, declared, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        node.get_logger().warning(f"parameter '{name}' is set for {node.get_name()}, which has no such parameter: "
                                  f"it is ignored{hint}")
    return unknown
