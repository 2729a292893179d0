"""The single description of what each bringup starts: nodes, parameter files, launch arguments
and remappings. Two readers, one source:

- launch/*.launch.py turn it into launch_ros Node actions (`ros2 launch tdmpc2_ros planner.launch.py`);
- `tdmpc2-ros bringup planner` starts the same processes on a machine without the `ros2` command.

A launch argument is written `name:=value` in both.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from tdmpc2_ros.ros.paths import share_dir


@dataclass(frozen=True)
class Argument:
    name: str
    default: str
    description: str


@dataclass(frozen=True)
class NodeSpec:
    executable: str  # console script (ros2 run; ros/entry.py) == module tdmpc2_ros.ros.<executable>
    name: str
    params_file: str  # under config/
    arg_params: dict = field(default_factory=dict)  # parameter -> launch argument that sets it
    remappings: tuple = ()
    condition: str = ""  # launch argument that must be true for the node to start
    extra_params: tuple = ()  # parameter files read after params_file, each overriding what came before


ARGUMENTS = {
    a.name: a
    for a in [
        Argument("use_sim", "true", "start the MuJoCo sim node (false for Gazebo or a real robot)"),
        Argument("use_reward", "false", "start reward_node: a robot's reward from its own topics (config/reward.yaml); "
                                        "a sim publishes its own"),
        Argument("mode", "realtime", "sim mode: realtime (wall-clock paced) or lockstep (steps on each command)"),
        Argument("task", "cartpole-swingup", "dm_control domain-task the sim runs"),
        Argument("model_path", "", "planner .onnx file or model folder; empty = the shipped cartpole model"),
        Argument("control_rate_hz", "50.0", "planner control rate (the trainer checks exported latency against it)"),
        Argument("trigger", "observation", "planner tick source: observation (event-driven) or timer"),
        Argument("max_episodes", "0", "sim stops after this many episodes (0 = run until stopped)"),
        Argument("use_sim_time", "true", "take time from /clock"),
        Argument("explore", "false", "planner adds std[0] exploration noise (true while learning)"),
        Argument("max_observation_age_s", "", "planner: an older observation gets the safe action ('' = planner.yaml's; "
                                              "a timer-driven lockstep loop needs more than one period)"),
        Argument("plan_thread_priority", "", "planner: SCHED_FIFO priority 1-99 of the planning thread (needs "
                                             "CAP_SYS_NICE; '' = planner.yaml's, a normal thread)"),
        Argument("plan_cpu_affinity", "", "planner: cores for the planning thread, e.g. [1] ('' = planner.yaml's, any core)"),
        Argument("execution_provider", "", "planner: auto, cpu, openvino (pip install onnxruntime-ep-openvino) or cuda "
                                           "('' = planner.yaml's, auto)"),
        Argument("model_wait_s", "0.0", "model_path is an empty model store: wait this long for a first version"),
        Argument("bag_dir", "tdmpc2_bags", "where the recorder writes bags and the trainer reads them"),
        Argument("store_dir", "tdmpc2_models", "the trainer's versioned model store"),
        Argument("run_dir", "runs/learn", "the trainer's run folder (checkpoint, ledger, learning curve)"),
        Argument("obs_dim", "5", "trainer: observation size of the task (5 for cartpole; 0 = from the first bag)"),
        Argument("action_dim", "1", "trainer: action size of the task (1 for cartpole)"),
        Argument("ladder", "", "trainer: budgets to export, e.g. ['4:256:32:12','2:64:8:4'] (iterations:samples:"
                               "elites:policy trajectories); empty = the default ladder"),
        Argument("init_weights", "", "trainer: weights.pt or checkpoint.pt to start from, e.g. the shipped model's "
                                     "weights.pt for fine-tuning on a robot ('' = trainer.yaml's: fresh weights)"),
        Argument("compile", "false", "trainer: torch.compile the update (a minute once, then ~30% faster; long runs)"),
        Argument("device", "cpu", "trainer: where the world model trains: cpu, cuda, cuda:N or auto (a GPU where torch sees one)"),
        Argument("bag_split_s", "60.0", "recorder: close a bag (making it available to the trainer) every this many seconds"),
        Argument("params_file", "", "a parameters file read after each node's own YAML, overriding it, with keys "
                                    "by node name (e.g. planner_gazebo.yaml for Gazebo or a robot); a bare name is "
                                    "looked up in the package's config/ ('' = none)"),
        Argument("seed", "", "one seed for the sim (initial states), the planner (sampling) and the trainer (weights, "
                             "replay) ('' = each node's YAML: sim 0, planner 0, trainer 1)"),
    ]
}

# The sim is the clock's source: it never takes use_sim_time itself.
SIM = NodeSpec("sim_node", "sim_node", "sim.yaml",
               {"mode": "mode", "task": "task", "max_episodes": "max_episodes", "seed": "seed"}, condition="use_sim")
PLANNER = NodeSpec("planner_node", "planner_node", "planner.yaml",
                   {"model_path": "model_path", "control_rate_hz": "control_rate_hz", "trigger": "trigger",
                    "use_sim_time": "use_sim_time", "explore": "explore", "model_wait_s": "model_wait_s",
                    "max_observation_age_s": "max_observation_age_s", "plan_thread_priority": "plan_thread_priority",
                    "plan_cpu_affinity": "plan_cpu_affinity", "execution_provider": "execution_provider",
                    "seed": "seed"})
REWARD = NodeSpec("reward_node", "reward_node", "reward.yaml", {"use_sim_time": "use_sim_time"}, condition="use_reward")
RECORDER = NodeSpec("recorder_node", "recorder_node", "recorder.yaml", {"bag_dir": "bag_dir", "split_duration_s": "bag_split_s"})
TRAINER = NodeSpec("trainer_node", "trainer_node", "trainer.yaml",
                   {"bag_dir": "bag_dir", "store_dir": "store_dir", "run_dir": "run_dir", "obs_dim": "obs_dim",
                    "action_dim": "action_dim", "control_rate_hz": "control_rate_hz",
                    "ladder": "ladder", "compile": "compile", "device": "device", "seed": "seed",
                    "init_weights": "init_weights"})

NODE_SETS = {
    "planner": [SIM, PLANNER, REWARD],
    "sim": [SIM],
    "trainer": [TRAINER],
    # The whole loop: act (exploring), record, learn, hot-swap. Point model_path at store_dir.
    "learn": [SIM, PLANNER, REWARD, RECORDER, TRAINER],
}


def params_path(spec: NodeSpec) -> str:
    return str(share_dir() / "config" / spec.params_file)


def param_files(spec: NodeSpec) -> list[str]:
    """The node's YAML, then the files given with params_file: in this order, as ROS reads them."""
    return [params_path(spec), *spec.extra_params]


def find_params_file(name: str) -> str:
    """params_file's value as a path: an existing file, else a bare name in the package's config/."""
    given_path, shipped = Path(name).expanduser(), share_dir() / "config" / name
    for path in (given_path, shipped):
        if path.is_file():
            return str(path.resolve())
    raise ValueError(f"params_file {name!r}: no such file (looked for {given_path.resolve()} and {shipped})")


def resolve(set_name: str, overrides: dict[str, str]) -> list[tuple[NodeSpec, dict[str, str]]]:
    """The nodes a bringup starts, each with its launch-argument parameter values."""
    if set_name not in NODE_SETS:
        raise ValueError(f"unknown bringup {set_name!r}; choose from {sorted(NODE_SETS)}")
    unknown = set(overrides) - set(ARGUMENTS)
    if unknown:
        raise ValueError(f"unknown launch arguments {sorted(unknown)}; known: {sorted(ARGUMENTS)}")
    args = {k: overrides.get(k, a.default) for k, a in ARGUMENTS.items()}
    extra = (find_params_file(args["params_file"]),) if args["params_file"] else ()
    out = []
    for spec in NODE_SETS[set_name]:
        if spec.condition and args[spec.condition].lower() not in ("true", "1", "yes"):
            continue
        params = {param: args[arg] for param, arg in spec.arg_params.items()}
        if extra:
            # A launch argument left at its default is no choice of the user's: what the params file sets
            # for this node stands (planner_gazebo.yaml's timer trigger against the argument's observation).
            in_file = parameters_in_file(extra[0], spec.name)
            params = {param: "" if param in in_file and args[arg] == ARGUMENTS[arg].default else value
                      for (param, value), arg in zip(params.items(), spec.arg_params.values())}
        out.append((replace(spec, extra_params=extra), params))
    return out


def parameters_in_file(path: str, node_name: str) -> set[str]:
    """The parameters a ROS parameters file sets for a node: under its name or a `/**` wildcard."""
    try:
        content = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"params_file {path}: unreadable: {e}") from None
    if not isinstance(content, dict):
        raise ValueError(f"params_file {path}: not a ROS parameters file (node name: ros__parameters: ...)")
    names = set()
    for key, entry in content.items():
        if str(key).lstrip("/") in (node_name, "**", f"**/{node_name}") and isinstance(entry, dict):
            names |= set((entry.get("ros__parameters") or {}).keys())
    return names


def given(params: dict[str, str]) -> dict[str, str]:
    """The parameters a node is started with: an empty launch argument is left out, so the node's
    YAML file (or its default) applies. The launch files and the bringup both follow this."""
    return {key: value for key, value in params.items() if value != ""}


def typed(params: dict[str, str]) -> dict:
    """given(params) as launch_ros takes them: typed as `-p name:=value` types them (YAML)."""
    return {key: yaml.safe_load(value) for key, value in given(params).items()}


def command(spec: NodeSpec, params: dict[str, str]) -> list[str]:
    """The process a node runs in: the same --ros-args that `ros2 launch` would pass."""
    cmd = [sys.executable, "-m", f"tdmpc2_ros.ros.{spec.executable}", "--ros-args", "-r", f"__node:={spec.name}"]
    for path in param_files(spec):
        cmd += ["--params-file", path]
    for key, value in given(params).items():
        cmd += ["-p", f"{key}:={value}"]
    for src, dst in spec.remappings:
        cmd += ["-r", f"{src}:={dst}"]
    return cmd


def run(set_name: str, overrides: dict[str, str], env: dict | None = None) -> int:
    """Start the node set, stream its output, stop everything when one node exits or on Ctrl-C.
    Returns the first non-zero exit code of a node, else 0."""
    procs = []
    for spec, params in resolve(set_name, overrides):
        cmd = command(spec, params)
        print("[bringup] " + " ".join(cmd), flush=True)
        # Each node in its own session: a Ctrl-C (or `timeout`) signals the whole foreground process
        # group, and the node would get a second SIGINT from us in the middle of its clean shutdown.
        procs.append((spec.name, subprocess.Popen(cmd, env={**os.environ, **(env or {})}, start_new_session=True)))
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    code = 0
    try:
        while not stopping and all(p.poll() is None for _, p in procs):
            time.sleep(0.1)
        for name, p in procs:
            if p.poll() is not None and p.returncode != 0:
                print(f"[bringup] {name} exited with code {p.returncode}", flush=True)
                code = code or p.returncode
    finally:
        for _, p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 10
        for _, p in procs:
            try:
                p.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                p.kill()
    return code


def parse_overrides(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition(":=")
        if not sep:
            raise ValueError(f"launch argument {item!r} is not name:=value")
        out[key] = value
    return out
