"""The node sets of tdmpc2_ros.ros.bringup started as separate processes over DDS, exactly as
`tdmpc2-ros bringup` (and, from the same description, `ros2 launch`) starts them."""

from __future__ import annotations

import ast
import csv
import re
import signal
import subprocess
import sys
import time

import pytest
from std_msgs.msg import Float64, Float64MultiArray

from ros_harness import REPO, LineReader, Ros, next_domain, node_env
from tdmpc2_ros.ros import bringup, qos


def bringup_cmd(*arguments):
    return [sys.executable, "-m", "tdmpc2_ros.cli", "bringup", "planner", *arguments]


def test_lockstep_episode_across_processes(ladder):
    # A generous period keeps every plan inside its deadline on a loaded CI machine: in lockstep the
    # sim waits for each command, so the rate only sets the planner's deadline.
    out = subprocess.run(bringup_cmd("mode:=lockstep", "max_episodes:=1", f"model_path:={ladder}", "control_rate_hz:=2.0"),
                         env=node_env(next_domain()), capture_output=True, text=True, timeout=600)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    assert "planning with" in log  # the planner came up with the model
    m = re.search(r"episode 0 return (-?[0-9.]+)", log)
    assert m, log[-3000:]
    assert 0.0 <= float(m.group(1)) <= 1000.0  # cartpole-swingup: at most 2 per agent step over 500 steps



def test_the_shipped_model_swings_up_in_lockstep():
    """Sim and planner as separate processes with the shipped model (no model_path: the default):
    a full lockstep episode returns more than 700 (its card: 870 over 10 evaluation episodes)."""
    out = subprocess.run(bringup_cmd("mode:=lockstep", "max_episodes:=1", "control_rate_hz:=2.0"),
                         env=node_env(next_domain()), capture_output=True, text=True, timeout=900)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    m = re.search(r"episode 0 return (-?[0-9.]+)", log)
    assert m, log[-3000:]
    assert float(m.group(1)) > 700.0, log[-3000:]
    assert "cartpole_swingup" in log  # it was the shipped model that acted

def test_realtime_actions_arrive_at_the_control_rate(ladder):
    ros = Ros()
    try:
        node = ros.node("observer")
        commands, rewards = [], []
        node.create_subscription(Float64MultiArray, "/tdmpc2_controller/commands", lambda m: commands.append(time.monotonic()), qos.COMMAND)
        node.create_subscription(Float64, "/tdmpc2/reward", lambda m: rewards.append(m.data), qos.EVENTS)
        proc = subprocess.Popen(bringup_cmd("mode:=realtime", f"model_path:={ladder}", "control_rate_hz:=50.0"),
                                env=node_env(ros.domain), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            assert ros.spin_until(lambda: len(commands) >= 20, 120), "no commands from the planner"
            start = len(commands)
            t0 = time.monotonic()
            ros.spin_for(4.0)
            rate = (len(commands) - start) / (time.monotonic() - t0)
            # The sim steps at 50 Hz and the planner answers each observation; allow for a loaded machine.
            assert rate >= 25.0, f"commands at {rate:.1f} Hz"
            assert len(rewards) > 100
        finally:
            proc.send_signal(signal.SIGINT)
            output, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, output[-3000:]
    finally:
        ros.close()


def test_use_sim_false_starts_only_the_planner():
    names = [spec.name for spec, _ in bringup.resolve("planner", {"use_sim": "false"})]
    assert names == ["planner_node"]
    assert [spec.name for spec, _ in bringup.resolve("planner", {})] == ["sim_node", "planner_node"]
    with pytest.raises(ValueError, match="unknown launch arguments"):
        bringup.resolve("planner", {"no_such_arg": "1"})


def test_one_seed_argument_reaches_every_node_that_draws_random_numbers():
    seeded = {spec.name: params.get("seed") for spec, params in bringup.resolve("learn", {"seed": "3"})}
    assert seeded == {"sim_node": "3", "planner_node": "3", "recorder_node": None, "trainer_node": "3"}
    # Left empty, each node keeps its YAML's seed: nothing is passed.
    for spec, params in bringup.resolve("learn", {}):
        assert "seed" not in bringup.given(params) and not any("seed" in a for a in bringup.command(spec, params))


def test_params_file_is_read_after_each_nodes_yaml_and_a_bare_name_is_found_in_config(tmp_path):
    """params_file (README "Gazebo"): one more parameters file per node, read after its own YAML. A launch
    argument left at its default leaves what the file sets for that node to the file; one the user
    gave overrides it, as always."""
    shipped = str(REPO / "config" / "planner_gazebo.yaml")
    ((spec, params),) = bringup.resolve("planner", {"use_sim": "false", "params_file": "planner_gazebo.yaml"})
    assert bringup.param_files(spec) == [bringup.params_path(spec), shipped]
    cmd = bringup.command(spec, params)
    files = [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "--params-file"]
    assert files == [bringup.params_path(spec), shipped]
    # The file sets trigger (timer) and control_rate_hz; both launch arguments are at their defaults.
    assert "trigger" not in bringup.given(params) and "control_rate_hz" not in bringup.given(params)
    assert bringup.given(params)["use_sim_time"] == "true"  # the file does not set it: the argument's default stands
    ((_, params),) = bringup.resolve("planner", {"use_sim": "false", "params_file": shipped, "control_rate_hz": "20"})
    assert bringup.given(params)["control_rate_hz"] == "20" and "trigger" not in bringup.given(params)
    # Without params_file the arguments' defaults are passed as before.
    ((spec, params),) = bringup.resolve("planner", {"use_sim": "false"})
    assert bringup.param_files(spec) == [bringup.params_path(spec)] and bringup.given(params)["trigger"] == "observation"
    # A file of the user's, keyed by a wildcard, reaches every node of the set.
    mine = tmp_path / "robot.yaml"
    mine.write_text("/**:\n  ros__parameters:\n    seed: 7\n")
    for spec, _ in bringup.resolve("learn", {"params_file": str(mine)}):
        assert bringup.param_files(spec)[-1] == str(mine.resolve())
    with pytest.raises(ValueError, match="params_file 'nope.yaml': no such file"):
        bringup.resolve("planner", {"params_file": "nope.yaml"})
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="not a ROS parameters file"):
        bringup.resolve("planner", {"params_file": str(tmp_path / "list.yaml")})
    # The CLI says so in one line, before any node starts.
    out = subprocess.run(bringup_cmd("params_file:=nope.yaml"), cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [f"tdmpc2-ros bringup: error: params_file 'nope.yaml': no such file "
                                               f"(looked for {REPO / 'nope.yaml'} and {REPO / 'config' / 'nope.yaml'})"]


def test_the_gazebo_parameters_drive_the_planner_from_joint_states(tmp_path):
    """`bringup planner use_sim:=false params_file:=planner_gazebo.yaml`, as README "Gazebo" runs it
    against gz_ros2_control: the shipped model plans from /joint_states (joints picked by name, listed
    here in another order than the observation's), on a timer, and sends effort commands scaled to
    newtons within the file's limits. A running planner refuses to have its sources changed."""
    import math

    from rcl_interfaces.srv import GetParameters, SetParameters
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import JointState

    ros = Ros()
    try:
        node = ros.node("gazebo_stand_in")
        commands = []
        node.create_subscription(Float64MultiArray, "/tdmpc2_controller/commands", lambda m: commands.append(list(m.data)),
                                 qos.COMMAND)
        states = node.create_publisher(JointState, "/joint_states", qos.SENSOR)
        # The pole hanging down at rest: the model must push the cart to swing it up.
        state = JointState(name=["hinge_1", "slider"], position=[math.pi, 0.0], velocity=[0.0, 0.0], effort=[0.0, 0.0])
        node.create_timer(0.02, lambda: states.publish(state))
        proc = subprocess.Popen(bringup_cmd("use_sim:=false", "params_file:=planner_gazebo.yaml", "use_sim_time:=false"),
                                env=node_env(ros.domain), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            assert ros.spin_until(lambda: len(commands) >= 50, 180), "no commands from the planner"
            get = node.create_client(GetParameters, "/planner_node/get_parameters")
            assert get.wait_for_service(timeout_sec=30)
            future = get.call_async(GetParameters.Request(names=["trigger", "command_scale", "observation_sources"]))
            assert ros.spin_until(future.done, 30)
            trigger, scale, sources = future.result().values
            assert trigger.string_value == "timer" and list(scale.double_array_value) == [10.0]
            assert list(sources.string_array_value)[0] == "joint_state:/joint_states:position:slider"
            setter = node.create_client(SetParameters, "/planner_node/set_parameters")
            assert setter.wait_for_service(timeout_sec=30)
            change = Parameter("observation_sources", value=["array:/tdmpc2/observation:obs"]).to_parameter_msg()
            future = setter.call_async(SetParameters.Request(parameters=[change]))
            assert ros.spin_until(future.done, 30)
            (result,) = future.result().results
            assert not result.successful and "read-only" in result.reason
        finally:
            proc.send_signal(signal.SIGINT)
            output, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, output[-3000:]
        assert "planning with" in output and "cartpole_swingup" in output, output[-3000:]
        pushes = [c[0] for c in commands]
        assert all(len(c) == 1 for c in commands) and all(-10.0 <= u <= 10.0 for u in pushes)
        # In newtons: the model's action (within [-1, 1]) times command_scale 10.
        assert max(abs(u) for u in pushes) > 1.0, pushes[:20]
    finally:
        ros.close()


@pytest.mark.parametrize("command_type", ["array", "joint_trajectory"])
def test_the_gazebo_parameters_swing_up_the_built_in_sim_in_newtons(command_type, tmp_path):
    """`bringup planner params_file:=planner_gazebo.yaml` with the built-in sim: the file's sim_node
    section makes the sim take efforts in newtons, as gz_ros2_control's effort controller does, so the
    whole Gazebo contract (observations from /joint_states by joint name, commands scaled to newtons,
    a timer) runs closed loop in MuJoCo. The shipped model still swings the pole up. Lockstep, at a
    25 Hz timer, keeps the plans inside their deadline on a loaded machine.
    joint_trajectory: the same file with both nodes set to command_type joint_trajectory (the slider's
    effort by joint name), so the planner's typed commands are what drives the sim."""
    import yaml

    from tdmpc2_ros.ros.commands import COMMAND_TYPES
    from tdmpc2_ros.runtime.command_fields import command_vector

    params_file = "planner_gazebo.yaml"
    if command_type != "array":
        params = yaml.safe_load((REPO / "config" / params_file).read_text())
        params["planner_node"]["ros__parameters"].update(command_type=command_type, command_joints=["slider"],
                                                         command_interface="effort")
        params["sim_node"]["ros__parameters"]["command_type"] = command_type
        params_file = tmp_path / "planner_gazebo_typed.yaml"
        params_file.write_text(yaml.safe_dump(params))
    ros = Ros()
    try:
        node = ros.node("effort_observer")
        commands = []
        node.create_subscription(COMMAND_TYPES[command_type], "/tdmpc2_controller/commands",
                                 lambda m: commands.append(command_vector(m, command_type, ["slider"], "effort")),
                                 qos.COMMAND)
        proc = subprocess.Popen(bringup_cmd(f"params_file:={params_file}", "mode:=lockstep", "max_episodes:=1",
                                            "control_rate_hz:=25.0", "max_observation_age_s:=0.2"),
                                env=node_env(ros.domain), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            ros.spin_until(lambda: proc.poll() is not None, 600)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            output, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, output[-3000:]
        assert "commands are efforts (N / N·m) at the actuators' joints: slide [-10, 10]" in output, output[-3000:]
        if command_type != "array":
            assert f"commands are {command_type} messages, read by joint name: slider" in output, output[-3000:]
        assert "malformed" not in output, output[-3000:]
        m = re.search(r"episode 0 return (-?[0-9.]+)", output)
        assert m and float(m.group(1)) > 700.0, output[-3000:]
        pushes = [c[0] for c in commands]
        assert len(pushes) > 100 and all(-10.0 <= u <= 10.0 for u in pushes)
        assert max(abs(u) for u in pushes) > 1.0, pushes[:20]  # newtons, beyond the control range [-1, 1]
    finally:
        ros.close()


def test_launch_files_read_the_same_description():
    """launch/*.launch.py cannot run here (no launch/launch_ros on PyPI); check they delegate to the
    shared description rather than carrying a second copy of nodes and parameters."""
    launch_files = sorted(p.name for p in (REPO / "launch").glob("*.launch.py"))
    assert launch_files == ["learn.launch.py", "planner.launch.py", "sim.launch.py", "trainer.launch.py"]
    for name in launch_files:
        node_set = name.split(".")[0]
        tree = ast.parse((REPO / "launch" / name).read_text())
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "describe"]
        assert [c.args[0].value for c in calls] == [node_set]
        assert node_set in bringup.NODE_SETS


def _stub_launch(monkeypatch):
    """Just enough of launch / launch_ros (not on PyPI) to run launch/_description.py here: each
    class records what it was given, and a LaunchConfiguration reads a plain dict as the context."""
    import types

    class Recorded:
        def __init__(self, *args, **kwargs):
            self.args, self.kwargs = args, kwargs

    class LaunchConfiguration(Recorded):
        def perform(self, context):
            return context[self.args[0]]

    mods = {"launch": {"LaunchDescription": Recorded}, "launch.actions": {"DeclareLaunchArgument": Recorded,
            "OpaqueFunction": Recorded}, "launch.substitutions": {"LaunchConfiguration": LaunchConfiguration},
            "launch_ros": {}, "launch_ros.actions": {"Node": Recorded}}
    for name, attrs in mods.items():
        monkeypatch.setitem(sys.modules, name, types.SimpleNamespace(**attrs))
    monkeypatch.syspath_prepend(str(REPO / "launch"))
    monkeypatch.delitem(sys.modules, "_description", raising=False)
    import _description

    return _description


def test_launch_description_starts_what_the_bringup_starts(monkeypatch):
    """The launch files' nodes, made from the launch arguments, are the bringup's: the same node set,
    condition, parameter files and values, typed as `-p` types them; an empty argument leaves the
    parameter to the YAML file (launch_ros would otherwise hand an empty string to a typed parameter)."""
    describe = _stub_launch(monkeypatch).describe
    desc = describe("learn")
    actions = desc.args[0]
    declared = {a.args[0]: a.kwargs["default_value"] for a in actions[:-1]}
    assert declared == {a.name: a.default for a in bringup.ARGUMENTS.values()}
    make_nodes = actions[-1].kwargs["function"]

    context = {**declared, "use_sim": "false", "control_rate_hz": "8", "ladder": "['3:64:8:4']", "compile": "true",
               "plan_cpu_affinity": "[1]", "device": "cuda"}
    nodes = make_nodes(context)
    assert [n.kwargs["name"] for n in nodes] == ["planner_node", "recorder_node", "trainer_node"]  # no sim
    for node, (spec, params) in zip(nodes, bringup.resolve("learn", context)):
        yaml_file, values = node.kwargs["parameters"]
        assert (node.kwargs["executable"], yaml_file) == (spec.executable, bringup.params_path(spec))
        assert set(values) == {k for k, v in params.items() if v != ""}
    # params_file: read after each node's own YAML, before the launch arguments' values.
    gazebo = make_nodes({**context, "params_file": "planner_gazebo.yaml"})
    assert gazebo[0].kwargs["parameters"][:2] == [bringup.params_path(bringup.PLANNER), str(REPO / "config" / "planner_gazebo.yaml")]
    assert "control_rate_hz" in gazebo[0].kwargs["parameters"][2]  # given (8), so it overrides the file's 50
    planner, trainer = nodes[0].kwargs["parameters"][1], nodes[2].kwargs["parameters"][1]
    assert planner["control_rate_hz"] == 8 and planner["explore"] is False
    assert "model_path" not in planner and "max_observation_age_s" not in planner  # empty: planner.yaml decides
    assert planner["plan_cpu_affinity"] == [1] and "plan_thread_priority" not in planner
    assert trainer["ladder"] == ["3:64:8:4"] and trainer["compile"] is True and trainer["device"] == "cuda"
    # what the bringup passes on the command line for the same node
    cmd = bringup.command(*bringup.resolve("learn", context)[0])
    assert "control_rate_hz:=8" in cmd and not any(arg.startswith("model_path:=") for arg in cmd)


def test_learn_loop_from_a_random_start(tmp_path):
    """`bringup learn`: the trainer publishes its fresh model as version 1 into the empty store, the
    planner (waiting on that store) starts acting with it, the recorder closes bags of its transition
    records, and the trainer ingests them exactly once. Then everything stops cleanly on SIGINT."""
    from tdmpc2_ros.bags import IngestLedger, closed_bags, read_records
    from tdmpc2_ros.runtime.model_store import ModelStore

    store, bags, run = tmp_path / "store", tmp_path / "bags", tmp_path / "run"
    cmd = [sys.executable, "-m", "tdmpc2_ros.cli", "bringup", "learn", "mode:=lockstep", "explore:=true",
           f"model_path:={store}", f"store_dir:={store}", f"bag_dir:={bags}", f"run_dir:={run}", "model_wait_s:=300",
           "control_rate_hz:=2", "ladder:=['2:64:8:4']", "bag_split_s:=5"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=node_env(next_domain()), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        deadline = time.monotonic() + 400
        ledger = run / "ingest_ledger.jsonl"
        while time.monotonic() < deadline and proc.poll() is None:
            if ledger.exists() and any(IngestLedger(ledger).is_ingested(b) for b in closed_bags(bags)):
                break
            time.sleep(1.0)
        assert proc.poll() is None, proc.communicate()[0][-4000:]
        versions = ModelStore(store).versions()
        assert len(versions) >= 1 and versions[0].startswith("v0001-")
        closed = closed_bags(bags)
        assert closed, "the recorder closed no bag"
        records = read_records(closed[0])
        assert records and all(r.model_version == versions[0] for r in records)  # the planner acted with v1
        assert all(IngestLedger(ledger).is_ingested(b) for b in closed[:1])
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert proc.returncode == 0, out[-4000:]
    assert "Traceback" not in out, out[-4000:]
    assert "trainer_node]: stopped" in out and "recorder_node]: stopped" in out


@pytest.mark.parametrize("pace", ["observation", "command"])
def test_learn_loop_on_a_robots_own_topics(pace, tmp_path):
    """`bringup learn use_reward:=true params_file:=learn_robot.yaml init_weights:=<shipped>`: the
    loop with no transition records, as on a robot, fine-tuning the model trained in simulation.
    MuJoCo stands in behind /joint_states and effort commands; reward_node scores each step from the
    joints; the recorder keeps the raw topics; the trainer aligns them (raw mode) into transitions,
    learns, and ships a version the planner swaps in (the shipped model's spec).

    pace "command": the sim publishes /joint_states after every physics step (joint_states_rate:
    physics, 100 Hz beside the 50 Hz controller, as a joint_state_broadcaster faster than the
    controller), and learn_robot.yaml's comment is followed: the planner on its timer, reward_node and
    the trainer paced by the commands, reward_node's rewards stamped with the state they scored."""
    import yaml

    import numpy as np

    from tdmpc2_ros.bags import IngestLedger, closed_bags, episodes_from_raw
    from tdmpc2_ros.bags.reader import _read_topics
    from tdmpc2_ros.runtime.expressions import Expression
    from tdmpc2_ros.runtime.model_store import ModelStore

    store, bags, run = tmp_path / "store", tmp_path / "bags", tmp_path / "run"
    config = yaml.safe_load((REPO / "config" / "learn_robot.yaml").read_text())
    config["trainer_node"]["ros__parameters"].update(  # a short run: learn from the first bag, export soon
        min_transitions=100, export_every_updates=30, max_updates_per_transition=0.2, updates_per_cycle=10,
        batch_size=32, threads=1, latency_warmup=2, latency_runs=10)
    if pace == "command":
        config["sim_node"]["ros__parameters"]["joint_states_rate"] = "physics"
        config["planner_node"]["ros__parameters"]["trigger"] = "timer"
        config["reward_node"] = {"ros__parameters": {"pace": "command", "command_reliability": "reliable",
                                                     "stamped": True}}
        recorded = config["recorder_node"]["ros__parameters"]["topics"]
        recorded[recorded.index("/tdmpc2/reward:Float64")] = "/tdmpc2/reward:Float64MultiArray"
        config["trainer_node"]["ros__parameters"].update(raw_pace="command", raw_reward_at="command")
    params = tmp_path / "learn_robot_test.yaml"
    params.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "tdmpc2_ros.cli", "bringup", "learn", "use_reward:=true", f"params_file:={params}",
           "explore:=true", f"model_path:={store}", f"store_dir:={store}", f"bag_dir:={bags}", f"run_dir:={run}",
           "model_wait_s:=300", "ladder:=['2:64:8:4']", "bag_split_s:=4",
           f"init_weights:={REPO / 'models' / 'cartpole_swingup' / 'weights.pt'}"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=node_env(next_domain()), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    out = LineReader(proc)
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and proc.poll() is None and len(ModelStore(store).versions()) < 2:
            time.sleep(1.0)
        assert proc.poll() is None, out.text()[-6000:]
        versions = ModelStore(store).versions()
        assert len(versions) >= 2, f"no version learnt from the robot's bags: {versions}"
        learnt = ModelStore(store).manifest(versions[1])
        assert learnt.parent == versions[0] and learnt.bags and learnt.updates >= 30
        # A bag closed before the first command (the sim publishes its paused state) is skipped, with
        # its reason; the version learnt from the next ones.
        ledger = IngestLedger(run / "ingest_ledger.jsonl")
        skipped = [ledger.entry(b) for b in closed_bags(bags) if ledger.state(b) == "skipped"]
        assert all("no commands" in e["reason"] for e in skipped), skipped
        counts = []
        for name in learnt.bags:
            entry = ledger.entry(bags / name)
            assert entry["status"] == "ingested", entry
            topics, data = _read_topics(bags / name, lambda t, m: True)
            assert topics["/joint_states"] == "sensor_msgs/msg/JointState" and "/sim/reward" not in topics
            counts.append((len(data["/joint_states"][2]), len(data["/tdmpc2_controller/commands"][2]),
                           len(data["/tdmpc2/reward"][2]), entry["transitions"]))
        observations, commands, rewards, transitions = max(counts, key=lambda c: c[1])
        trainer = config["trainer_node"]["ros__parameters"]
        bag = bags / learnt.bags[counts.index((observations, commands, rewards, transitions))]
        raw = episodes_from_raw(bag, "", trainer["raw_command_topic"], trainer["raw_reward_topic"],
                                trainer["raw_episode_topic"], action_low=[-10.0], action_high=[10.0],
                                tolerance_s=trainer["tolerance_s"], reward_tolerance_s=trainer["raw_reward_tolerance_s"],
                                observation_sources=trainer["raw_observation_sources"], pace=pace,
                                reward_at=pace)
        if pace == "observation":
            # reward_node answered every observation once a command had come (a bag at 50 Hz for 4 s
            # holds 200; the first with commands fewer, and some before the first command), and most
            # steps became transitions: all but a few of those whose plan came in time (a plan more
            # than 18 ms after its observation, on a machine also training, is a step without a command).
            assert observations >= 50 and rewards >= 0.9 * observations, counts
            kept, in_time = raw.counts["transitions"], (raw.counts["pairs"] - raw.counts["skipped_gap"]
                                                        - raw.counts["skipped_episode_boundary"]
                                                        - raw.counts["skipped_no_command"])
            assert transitions <= kept <= raw.counts["pairs"] < observations, (transitions, raw.counts)
            assert in_time >= 0.5 * observations and kept >= 0.85 * in_time, raw.counts
        else:
            # Two joint states per command; a reward and a transition per command, not per joint state.
            assert commands >= 50 and observations >= 1.6 * commands, counts  # 2 per command, if the sim keeps up
            assert 0.9 * commands <= rewards <= commands + 1, counts
            # A step per pair of consecutive commands. One the planner's timer sent late (more than 1.5
            # periods after the one before, as on a loaded machine) acted for longer than a step and is
            # a gap; of the steps on time, nearly all are transitions.
            kept, on_time = raw.counts["transitions"], (raw.counts["pairs"] - raw.counts["skipped_gap"]
                                                         - raw.counts["skipped_episode_boundary"])
            assert transitions <= kept <= raw.counts["pairs"] < commands, (transitions, raw.counts)
            assert on_time >= 0.5 * commands and kept >= 0.85 * on_time, raw.counts
            # Each step's reward is reward_node's score of the transition's own next observation and action
            # (the joint state its stamp names, and the command in force when it came, c_k): all of
            # them, although reward_node and the recorder (two processes) may hear a joint state and a
            # command within a millisecond in opposite orders.
            expression = Expression(yaml.safe_load((REPO / "config" / "reward.yaml").read_text())["reward_node"]
                                    ["ros__parameters"]["reward_expression"], "reward_expression")
            scored = [(float(ep.reward[k]), expression.finite_value(obs=ep.obs[k + 1].astype(np.float64),
                                                                   action=10.0 * ep.action[k].astype(np.float64)))
                      for ep in raw.episodes for k in range(ep.action.shape[0])]
            assert len(scored) == kept and all(abs(r - s) <= 1e-4 for r, s in scored), scored
        # The planner swaps the learnt version in: it has the spec of the shipped model the planner runs.
        assert out.wait_for(f"swapped model {versions[0]} -> {versions[1]}", 120), out.text()[-6000:]
        # reward_node ends each episode the sim announces with its return (the sim's own are elsewhere).
        returns = [len(_read_topics(b, lambda t, m: t == "/tdmpc2/episode_return")[1].get("/tdmpc2/episode_return",
                                                                                          (0, 0, []))[2])
                   for b in closed_bags(bags)]
        print("bags (observations, commands, rewards, transitions):", counts, "episode returns per bag:", returns)
        assert sum(returns) >= 1, returns
        # ... and the trainer's curve has a row per episode (raw_episode_return_topic), not per fragment.
        curve = run / "train.csv"
        while time.monotonic() < deadline and not (curve.exists() and len(curve.read_text().splitlines()) > 1):
            time.sleep(1.0)
        rows = list(csv.DictReader(open(curve)))
        assert rows and all(int(r["length"]) > 100 for r in rows), rows
        # The first episode ran the shipped weights (v1): they swing the pole up through the robot's
        # topics, scored by reward_node's dm_control reward (the sim's demo: about 867).
        assert float(rows[0]["episode_reward"]) >= 600, rows
    finally:
        proc.send_signal(signal.SIGINT)
    code, text = out.finish(timeout=60)
    assert code == 0, text[-4000:]
    assert "Traceback" not in text, text[-4000:]
    assert "reward_node]: publishing" in text


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_command_is_interrupted_by_sigterm_and_by_an_ignored_sigint(sig):
    """The CLI's commands (demo, bench-learn, bringup) stop their node sets on the way out; that
    needs the signal to reach them as an interrupt, also when a background shell handed the command
    SIGINT ignored (POSIX does that to `cmd &` without job control)."""
    script = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "from tdmpc2_ros import cli\n"
        "def slow(args):\n"
        "    try:\n"
        "        print('started', flush=True)\n"
        "        time.sleep(60)\n"
        "    except KeyboardInterrupt:\n"
        "        print('cleaned up', flush=True)\n"
        "        return 3\n"
        "    return 0\n"
        "cli.cmd_demo = slow\n"
        "sys.exit(cli.main(['demo']))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "started"
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 3 and "cleaned up" in out


def test_every_parameter_the_bringup_or_a_yaml_sets_is_one_its_node_declares():
    """ROS ignores a parameter no one declares (the nodes now warn of one, ros/params.py): the shipped
    description and YAML files must set none, or a launch argument would do nothing."""
    import dataclasses

    import yaml

    from tdmpc2_ros.ros import recorder_node, reward_node, sim_node, trainer_node
    from tdmpc2_ros.ros.params import PlannerParams

    declared = {"planner_node": {f.name for f in dataclasses.fields(PlannerParams)},
                "sim_node": set(sim_node.PARAMETERS), "recorder_node": set(recorder_node.PARAMETERS),
                "trainer_node": set(trainer_node.PARAMETERS), "reward_node": set(reward_node.PARAMETERS)}
    specs = {spec.name: spec for node_set in bringup.NODE_SETS.values() for spec in node_set}
    assert set(specs) == set(declared)
    for name, spec in specs.items():
        known = declared[name] | {"use_sim_time"}  # every rclpy node declares use_sim_time
        assert set(spec.arg_params) <= known, (name, set(spec.arg_params) - known)
        shipped = yaml.safe_load((REPO / "config" / spec.params_file).read_text())[name]["ros__parameters"]
        assert set(shipped) <= known, (name, set(shipped) - known)
    # The params_file variants too: Gazebo's (README "Gazebo") and the learning loop on a robot's topics.
    for variant, sections in (("planner_gazebo.yaml", {"planner_node", "sim_node"}),
                              ("learn_robot.yaml", {"planner_node", "sim_node", "recorder_node", "trainer_node"})):
        text = yaml.safe_load((REPO / "config" / variant).read_text())
        assert set(text) == sections, variant
        for name, section in text.items():
            assert set(section["ros__parameters"]) <= declared[name] | {"use_sim_time"}, (variant, name, set(section["ros__parameters"]) - declared[name])


def test_the_shipped_yamls_state_the_defaults_their_nodes_declare():
    """config/*.yaml is what users edit and read; `ros2 run` without it gets the declared defaults.
    They must agree, so that a node behaves the same either way (the planner's: test_planner_node)."""
    import yaml

    from tdmpc2_ros.ros import recorder_node, reward_node, sim_node, trainer_node

    # Deliberate: the shipped recorder also keeps the sim's episode returns (for learning curves);
    # a robot has no such topic, so the node's default records transitions only. A reward is the
    # robot's own: the node has none by default (it refuses to start), the shipped file is an example.
    differ_on_purpose = {("recorder_node", "topics"), ("reward_node", "observation_sources"),
                         ("reward_node", "reward_expression"), ("reward_node", "command_topic")}
    for name, module in (("sim_node", sim_node), ("recorder_node", recorder_node), ("trainer_node", trainer_node),
                         ("reward_node", reward_node)):
        shipped = yaml.safe_load((REPO / "config" / f"{name.removesuffix('_node')}.yaml").read_text())[name]
        for key, value in shipped["ros__parameters"].items():
            if (name, key) not in differ_on_purpose and key != "use_sim_time":
                assert value == module.PARAMETERS[key][0], (name, key, value, module.PARAMETERS[key][0])
