"""planner_node against real rclpy: start-up refusals, commands within limits, safe action on bad
or stale input, fallback on overrun, diagnostics; and the adapters and ladder choice it relies on."""

from __future__ import annotations

import gc
import math
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import Quaternion, Vector3
from nav_msgs.msg import Odometry
from rclpy.parameter import Parameter
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import Float64MultiArray

from core_helpers import SMALL_OBS_DIM
from ros_harness import (LineReader, Ros, cleaned_up, next_domain, node_env, record_warnings,
                         start_node_process)
from tdmpc2_ros.ros import qos, topics
from tdmpc2_ros.runtime.observations import AdapterError, ObservationAssembler, extract, parse_source
from tdmpc2_ros.runtime import ModelLoadError, SpecMismatch
from tdmpc2_ros.runtime.budget import PlanBudget
from tdmpc2_ros.runtime.ladder import RungGovernor, Rung, describe_fit, fit_ladder, next_smaller_rung, read_ladder

OBS_TOPIC, CMD_TOPIC = "/tdmpc2/observation", "/tdmpc2_controller/commands"


def start_planner(ros: Ros, model_path, **params):
    from tdmpc2_ros.ros.planner_node import PlannerNode

    overrides = {"model_path": str(model_path), "ladder_warmup": 2, "ladder_runs": 5, "trigger": "timer", **params}
    return ros.add(PlannerNode(context=ros.context, parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()]))


def peer(ros: Ros):
    """A test-side node that publishes observations and records commands and diagnostics."""
    n = ros.node("peer")
    out = {"commands": [], "diagnostics": []}
    n.create_subscription(Float64MultiArray, CMD_TOPIC, lambda m: out["commands"].append(np.array(m.data)), qos.COMMAND)
    n.create_subscription(DiagnosticArray, "/diagnostics", lambda m: out["diagnostics"].append(m.status[0]), 10)
    pub = n.create_publisher(Float64MultiArray, OBS_TOPIC, qos.SENSOR)
    return n, pub, out


def test_a_parameter_the_node_does_not_declare_is_named_in_a_warning_with_the_closest_name(ros):
    """ROS ignores an override no one declares without a word: a misspelt key in a params file would
    leave the node at its default. The nodes warn once their parameters are declared."""
    from rclpy.node import Node

    from tdmpc2_ros.ros.params import warn_unknown_parameters

    node = ros.add(Node("typo_node", context=ros.context, parameter_overrides=[
        Parameter("control_rate", value=10.0), Parameter("deadline_fraction", value=0.5),
        Parameter("qos_overrides./obs.subscription.depth", value=5), Parameter("zzz", value=1)]))
    node.declare_parameter("control_rate_hz", 50.0)
    node.declare_parameter("deadline_fraction", 0.7)
    warnings = record_warnings(node)
    # Declared ones and QoS overrides (rclpy's own scheme) are not warned of.
    assert warn_unknown_parameters(node) == ["control_rate", "zzz"]
    assert warnings == ["parameter 'control_rate' is set for typo_node, which has no such parameter: it is ignored; "
                        "did you mean 'control_rate_hz'?",
                        "parameter 'zzz' is set for typo_node, which has no such parameter: it is ignored"]
    assert node.get_parameter("control_rate_hz").value == 50.0  # the default stands: hence the warning


def test_planner_yaml_states_the_defaults_the_node_declares():
    """config/planner.yaml is what users edit and read: it must not drift from params.py."""
    import dataclasses

    import yaml

    from ros_harness import REPO
    from tdmpc2_ros.ros.params import PlannerParams

    shipped = yaml.safe_load((REPO / "config" / "planner.yaml").read_text())["planner_node"]["ros__parameters"]
    defaults = {f.name: getattr(PlannerParams(), f.name) for f in dataclasses.fields(PlannerParams)}
    for name, value in shipped.items():
        assert name in defaults, f"planner.yaml sets {name}, which the node does not declare"
        default = list(defaults[name]) if isinstance(defaults[name], tuple) else defaults[name]
        assert value == default, (name, value, default)
    # Left out of the YAML only where the default is "the model's own" (empty).
    assert {n for n in defaults if n not in shipped} == {"command_scale", "action_low", "action_high"}
    # Each has a line for `ros2 param describe`.
    from tdmpc2_ros.ros.params import DESCRIPTIONS
    assert set(DESCRIPTIONS) == set(defaults) and all(DESCRIPTIONS.values())


def test_refuses_a_missing_model(ros, tmp_path):
    with pytest.raises(ModelLoadError, match="nowhere"):
        start_planner(ros, tmp_path / "nowhere")


def test_refuses_a_model_whose_spec_differs_from_the_sources(ros, ladder):
    # Sources give 3 elements; the model eats 5. Both numbers must appear in the refusal.
    with pytest.raises(SpecMismatch) as err:
        start_planner(ros, ladder, observation_sources=[f"array:{OBS_TOPIC}:0-2"])
    assert "3" in str(err.value) and "5" in str(err.value)


def test_main_exits_nonzero_with_the_reason(tmp_path):
    env = node_env(219)
    out = subprocess.run([sys.executable, "-m", "tdmpc2_ros.ros.planner_node", "--ros-args", "-p",
                          f"model_path:={tmp_path / 'missing.onnx'}"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "refusing to start" in out.stderr and "missing.onnx" in out.stderr


def test_a_context_shut_down_between_start_up_and_spinning_is_a_clean_stop(ladder):
    """Something other than a signal (a launch system, the node's own code) can shut the context down
    after the node is built but before it spins; the executor can then no longer be made. That is a
    stop, not a crash (exit 0)."""
    script = (
        "import sys, rclpy\n"
        "from tdmpc2_ros.ros import planner_node\n"
        "class Interrupted(planner_node.PlannerNode):\n"
        "    def __init__(self, **kw):\n"
        "        super().__init__(**kw)\n"
        "        rclpy.shutdown()  # what the SIGINT handler does\n"
        "planner_node.PlannerNode = Interrupted\n"
        f"sys.exit(planner_node.main(['--ros-args', '-p', 'model_path:={ladder}', '-p', 'ladder_runs:=3', "
        "'-p', 'ladder_warmup:=1']))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], env=node_env(221), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "planning with" in out.stdout + out.stderr


def test_repeated_sigints_while_spinning_are_one_clean_stop(ladder, tmp_path):
    """A Ctrl-C pressed twice, or a launch system's SIGINT on top of a terminal's: the node stops
    between two callbacks, exit 0, and no second signal turns the stop into a traceback (rclpy's own
    handler raised KeyboardInterrupt wherever Python was, once inside the stop itself)."""
    import time

    # control_rate: a misspelt key, which ROS ignores; the node process (ros/run.py) warns of it.
    proc = start_node_process("planner_node", next_domain(), tmp_path, model_path=str(ladder), ladder_runs=3, ladder_warmup=1,
                              control_rate=10.0)
    with cleaned_up(proc):
        output = LineReader(proc)
        assert output.wait_for("planning with"), output.text()[-4000:]
        assert output.wait_for("parameter 'control_rate' is set for planner_node, which has no such parameter: it is "
                               "ignored; did you mean 'control_rate_hz'?", 30), output.text()[-4000:]
        for _ in range(6):
            proc.send_signal(signal.SIGINT)
            time.sleep(0.03)
        code, out = output.finish(timeout=30)
    assert code == 0, out[-4000:]
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out[-4000:]


def test_a_sigint_while_waiting_for_a_model_is_a_clean_stop(tmp_path):
    """A planner of a learning loop waits (model_wait_s) for the trainer's first version; a stop during
    that wait ends it at once with exit 0, not after the wait, and not as a missing model."""
    store = tmp_path / "store"
    store.mkdir()
    proc = start_node_process("planner_node", next_domain(), tmp_path, model_path=str(store), model_wait_s=600.0)
    with cleaned_up(proc):
        output = LineReader(proc)
        assert output.wait_for("waiting up to"), output.text()[-4000:]
        proc.send_signal(signal.SIGINT)
        code, out = output.finish(timeout=30)
    assert code == 0, out[-4000:]
    assert "Traceback" not in out and "refusing to start" not in out, out[-4000:]


def test_chooses_the_largest_rung_that_fits(ros, ladder):
    rungs = read_ladder(ladder)
    # At 1 Hz with the whole period allowed, the largest rung always fits.
    node = start_planner(ros, ladder, control_rate_hz=1.0, deadline_fraction=1.0)
    assert node.planner.contract.budget == rungs[0].budget
    assert "chose " + rungs[0].budget.label() in node.ladder_report


def _fake_ladder(latencies_ms: list[list[float]]):
    """Rungs whose plans take the given latencies, and a record of which were opened."""
    budgets = [PlanBudget(iterations=6 - i, num_samples=512 >> i, num_elites=64 >> i, num_pi_trajs=24 >> i)
               for i in range(len(latencies_ms))]
    rungs = [Rung(Path(f"rung{i}.onnx"), b) for i, b in enumerate(budgets)]
    opened = []

    def open_rung(rung):
        opened.append(rung.path.name)
        return SimpleNamespace(contract=SimpleNamespace(budget=rung.budget), lat=[x / 1e3 for x in latencies_ms[len(opened) - 1]])

    return rungs, open_rung, (lambda planner: planner.lat), opened


def test_ladder_fit_takes_the_largest_rung_that_fits_and_loads_none_below_it():
    rungs, open_rung, time_plans, opened = _fake_ladder([[50] * 20, [10] * 19 + [12], [4] * 20])
    planner, tried, fits = fit_ladder(rungs, open_rung, time_plans, limit_s=0.014)
    assert fits and planner.contract.budget == rungs[1].budget
    assert opened == ["rung0.onnx", "rung1.onnx"]  # the third rung was never loaded
    assert [t.label for t in tried] == [r.budget.label() for r in rungs[:2]]
    assert tried[0].p50_s == pytest.approx(0.050) and tried[1].runs == 20
    assert tried[1].p99_s > 0.010  # the slow tail counts: the choice is by p99, not the median
    report = describe_fit(tried, planner.contract.budget.label(), 50.0, 0.014, fits)
    assert report.endswith("-> chose " + rungs[1].budget.label()) and "limit 14.0 ms" in report


def test_ladder_fit_with_no_rung_that_fits_takes_the_fastest_and_says_so():
    # The p99, not the order, picks the fallback: here the middle rung has the smallest tail.
    rungs, open_rung, time_plans, opened = _fake_ladder([[50] * 20, [20] * 20, [15] * 19 + [40]])
    planner, tried, fits = fit_ladder(rungs, open_rung, time_plans, limit_s=0.010)
    assert not fits and planner.contract.budget == rungs[1].budget and len(opened) == 3
    assert "NO rung fits" in describe_fit(tried, planner.contract.budget.label(), 50.0, 0.010, fits)


def test_rung_governor_steps_down_on_a_lasting_overrun_not_a_burst():
    g = RungGovernor(limit_s=0.010, window=200)  # more than 1% of 200: the 3rd overrun in the window
    assert not any(g.observe(0.005) for _ in range(500))
    assert not g.observe(0.030) and not g.observe(0.030)  # a burst of two
    assert not any(g.observe(0.005) for _ in range(198))  # ... slides out of the window
    assert not g.observe(0.030) and not g.observe(0.030)
    assert g.observe(0.030)  # three within 200 plans: the p99 no longer fits
    assert "3 of the last 200 plans over the 10.0 ms limit" in g.describe()
    g.restart()
    assert not g.observe(0.030) and len(g.recent) == 1


def test_rung_governor_counts_the_plans_in_a_row_with_room_for_a_load():
    g = RungGovernor(limit_s=0.010)
    for _ in range(5):
        g.observe(0.0075)  # within 75% of the limit
    assert g.roomy == 5 and g.quiet == 5
    g.observe(0.009)  # within the limit, but not well within it
    assert g.roomy == 0 and g.quiet == 6
    g.observe(0.001)
    assert g.roomy == 1
    g.restart()  # a new rung or model is judged on its own plans
    assert g.roomy == 0 and g.quiet == 0


def test_next_smaller_rung(ladder):
    rungs = read_ladder(ladder)
    assert next_smaller_rung(ladder, rungs[0].budget).budget == rungs[1].budget
    assert next_smaller_rung(ladder, rungs[-1].budget) is None  # already the smallest
    assert next_smaller_rung(rungs[0].path, rungs[0].budget) is None  # a bare .onnx has no ladder
    assert next_smaller_rung(ladder / "missing", rungs[0].budget) is None


def test_an_overrunning_rung_steps_down_while_the_loop_keeps_acting(ros, ladder):
    rungs = read_ladder(ladder)
    node = start_planner(ros, ladder, control_rate_hz=10.0, deadline_fraction=1.0, max_observation_age_s=1.0,
                         diagnostics_period_s=0.2)
    assert node.planner.contract.budget == rungs[0].budget
    version = node.model_version
    n, pub, out = peer(ros)
    n.create_timer(0.02, lambda: pub.publish(Float64MultiArray(data=[0.0, 1.0, 0.0, 0.0, 0.0])))
    assert ros.spin_until(lambda: len(out["commands"]) >= 5, 60)
    # A tick before the peer's first observation arrived holds the safe action (discovery takes its time).
    safe_at_start = node.safe_actions
    # The CPU gets busier, here as a tighter share of the period set on the running node: every plan
    # of the chosen rung now overruns the limit, and the next smaller rung takes over.
    assert node.set_parameters([Parameter("deadline_fraction", value=1e-6)])[0].successful
    assert ros.spin_until(lambda: node.planner.contract.budget == rungs[1].budget, 60), node.last_problem
    assert node.steps.steps_down == 1 and node.swaps == 0 and node.model_version == version
    assert len(node.swap_cost.swap_tick_latency) == 0  # a budget step is not timed as a model swap
    assert 0 < len(node.tick_latency) < node.published  # the tick statistics start again at the new rung
    # The smallest rung overruns too: it keeps acting and says so on /diagnostics.
    assert ros.spin_until(lambda: any("no smaller rung" in d.message for d in out["diagnostics"]), 30)
    assert node.planner.contract.budget == rungs[-1].budget and node.steps.steps_down == 1
    assert node.published == node.ticks and node.missed_deadlines == 0
    # Each rung stepped down after its 3rd plan over the limit (RungGovernor), and none of them missed.
    # Those beside swap work (a standby loading after a step down) count there too.
    assert node.ticks_over_limit >= 3 and node.swap_cost.over <= min(node.ticks_over_limit, node.swap_cost.ticks_with_work)
    assert node.safe_actions == safe_at_start  # the step downs themselves never fell back to the safe action
    last = {kv.key: kv.value for kv in out["diagnostics"][-1].values}
    assert last["budget"] == rungs[-1].budget.label()
    assert 3 <= int(last["ticks_over_limit"]) <= node.ticks_over_limit
    # Nothing is smaller than the smallest rung: no standby, and /diagnostics says why.
    assert last["standby"] == "" and "has no rung smaller than" in last["standby_result"]
    assert last["budget_steps_from_standby"] == str(node.steps.steps_from_standby)
    assert {"loads_waited_for_room", "loads_without_room", "last_room_wait_s"} <= set(last)
    # Python's garbage collector: timed on /diagnostics, and start-up's objects frozen out of its scans.
    assert {"gc_full_collections", "gc_pause_max_ms", "gc_in_plan_max_ms"} <= set(last)
    assert int(last["gc_full_collections"]) == node.gc.collections[2] and gc.get_freeze_count() > 0
    # The host's steal per report: read from /proc/stat on this Linux machine, a percentage.
    assert 0.0 <= float(last["host_steal_pct"]) <= 100.0
    assert float(last["host_steal_pct"]) <= float(last["host_steal_max_pct"]) <= 100.0
    assert not node.set_parameters([Parameter("deadline_fraction", value=2.0)])[0].successful


def test_the_room_gate_opens_after_a_run_of_roomy_plans_or_while_the_loop_does_not_plan(ros, ladder):
    """What the hot-swap thread asks before it loads a new version or a standby beside the loop."""
    node = start_planner(ros, ladder, control_rate_hz=10.0, deadline_fraction=1.0, max_observation_age_s=1.0,
                         budget_standby=False)
    assert node.swapper.gate.room == node._room_to_load and node.swapper.gate.wait_s == 10.0  # config/planner.yaml
    n, pub, out = peer(ros)
    feeding = {"on": True}
    n.create_timer(0.02, lambda: feeding["on"] and pub.publish(Float64MultiArray(data=[0.0, 1.0, 0.0, 0.0, 0.0])))
    # 1 s of plans at 10 Hz, each far within the 100 ms limit: room.
    assert ros.spin_until(lambda: node.steps.governor.roomy >= node._room_plans, 30)
    assert node._room_plans == 10 and node._room_to_load()
    # The limit shrinks under the plans: none has room any more (the loop steps down meanwhile).
    assert node.set_parameters([Parameter("deadline_fraction", value=1e-6)])[0].successful
    assert ros.spin_until(lambda: node.steps.governor.recent and node.steps.governor.roomy == 0, 30)
    ros.spin_for(0.3)
    assert not node._room_to_load()
    # Observations stop: the loop does not plan, so a load delays nothing.
    feeding["on"] = False
    assert ros.spin_until(lambda: node._room_to_load(), 10)
    assert time.monotonic() - node._planned_at >= node.ROOM_IDLE_S and node.steps.governor.roomy == 0


def test_a_missed_deadline_steps_down_at_once(ros, ladder):
    """One miss is enough (the governor's 1% of 200 plans over the limit is the early warning)."""
    import time

    rungs = read_ladder(ladder)
    node = start_planner(ros, ladder, control_rate_hz=10.0, deadline_fraction=1.0, max_observation_age_s=1.0)
    assert node.planner.contract.budget == rungs[0].budget
    n, pub, out = peer(ros)
    n.create_timer(0.02, lambda: pub.publish(Float64MultiArray(data=[0.0, 1.0, 0.0, 0.0, 0.0])))
    assert ros.spin_until(lambda: len(out["commands"]) >= 3, 60)
    # The next smaller rung was loaded and warmed at start-up, before the loop: the first standby. The
    # hot-swap thread has loaded and planned nothing since.
    assert node.swapper.standby.label() == rungs[1].budget.label(), node.swapper.standby.result
    assert "ready (warm: warmed at start-up; nothing loaded)" in node.swapper.standby.result
    assert node.swapper.worked_since(0.0) == [] and node.swapper.requests.empty()
    standby = node.swapper.standby.held().planner
    real, late = node.planner.plan, []

    def late_once(*args, **kwargs):  # one plan past the 90 ms deadline, as a burst of other work would make it
        if not late:
            late.append(True)
            time.sleep(0.12)
        return real(*args, **kwargs)

    node.planner.plan = late_once
    assert ros.spin_until(lambda: node.planner.contract.budget == rungs[1].budget, 60), node.last_problem
    # The late plan misses its tick and is still running at the next one: 2 fallbacks at most, from one
    # plan over the limit, which alone the governor would have let pass.
    assert 1 <= node.missed_deadlines <= 2 and node.steps.steps_down == 1 and node.published == node.ticks
    assert node.swap_cost.missed == 0  # no swap was going on: the misses are not a swap's
    # The step down installed the standby itself, between two ticks: nothing was loaded for it.
    assert node.planner is standby and node.steps.steps_from_standby == 1 and not node.steps.requested
    # The smallest rung has no smaller one: no standby is held, and nothing is loaded for one.
    assert ros.spin_until(lambda: "has no rung smaller than" in node.swapper.standby.result, 10), node.swapper.standby.result
    assert node.swapper.standby.label() == ""


def test_swap_work_left_running_in_the_slack_does_not_hold_up_a_live_plan(ros, ladder):
    """A swap's work runs on the slack thread: a job there that overruns its slack and cannot be
    stopped (a free) runs on beside the next ticks, whose plans start at once on the plan thread."""
    import time

    node = start_planner(ros, ladder, control_rate_hz=10.0, deadline_fraction=1.0, max_observation_age_s=1.0)
    n, pub, out = peer(ros)
    n.create_timer(0.02, lambda: pub.publish(Float64MultiArray(data=[0.0, 1.0, 0.0, 0.0, 0.0])))
    assert ros.spin_until(lambda: len(out["commands"]) >= 3, 60)
    missed, ticks = node.missed_deadlines, node.ticks
    job = node.slack_worker.submit(time.sleep, 1.0)  # ten ticks' worth
    assert ros.spin_until(lambda: node.ticks >= ticks + 5, 30) and not job.done()
    assert node.missed_deadlines == missed and node.published == node.ticks


def test_a_missed_deadline_names_the_swap_work_next_to_it(ros, ladder):
    """A miss beside a swap's work is counted under that work on /diagnostics and in the log line, so
    that misses a swap causes are told from the machine's own."""
    import time

    from tdmpc2_ros.runtime.swap_cost import BESIDE_LOADING, LOADING

    node = start_planner(ros, ladder, control_rate_hz=10.0, deadline_fraction=1.0, max_observation_age_s=1.0,
                         diagnostics_period_s=0.2)
    n, pub, out = peer(ros)
    n.create_timer(0.02, lambda: pub.publish(Float64MultiArray(data=[0.0, 1.0, 0.0, 0.0, 0.0])))
    assert ros.spin_until(lambda: len(out["commands"]) >= 3, 60)
    assert node.swapper.worked_since(time.monotonic()) == [] and not node._swap_timed  # no swap is going on
    assert node.swap_cost.ticks_with_work == 0
    # The hot-swap thread reports work (as while it loads and hashes a candidate) during a late plan.
    node.swapper.worked_since = lambda t: [LOADING]
    real, late = node.planner.plan, []

    def late_once(*args, **kwargs):
        if not late:
            late.append(True)
            time.sleep(0.12)
        return real(*args, **kwargs)

    node.planner.plan = late_once
    assert ros.spin_until(lambda: node.missed_deadlines >= 1, 60)
    assert node.swap_cost.missed == node.missed_deadlines
    assert node.swap_cost.missed_by_kind[BESIDE_LOADING] == node.missed_deadlines
    assert node.swap_cost.over_by_kind[BESIDE_LOADING] >= node.missed_deadlines  # a miss ran over the limit too
    # Ticks that planned in time beside that work count too: the yardstick for the misses.
    assert ros.spin_until(lambda: node.swap_cost.ticks_with_work > node.missed_deadlines, 10)

    def reported(d):
        values = {kv.key: kv.value for kv in d.values}
        return (int(values.get("missed_with_swap_work_beside_loading", 0)) >= 1
                and int(values["missed_with_swap_work"]) >= 1
                and int(values["ticks_with_swap_work_beside_loading"]) > int(values["missed_with_swap_work_beside_loading"]))

    assert ros.spin_until(lambda: any(reported(d) for d in out["diagnostics"]), 10)
    assert any("(swap work next to it: beside_loading)" in d.message for d in out["diagnostics"])
    # (The other kinds, and how they are named, are test_swap_cost.py's.)


def test_a_stepped_down_budget_steps_back_up_once_plans_fit_again(ros, ladder):
    rungs = read_ladder(ladder)
    node = start_planner(ros, ladder, control_rate_hz=10.0, deadline_fraction=1.0, max_observation_age_s=1.0,
                         budget_step_up_after_s=0.5, diagnostics_period_s=0.2)
    version = node.model_version
    n, pub, out = peer(ros)
    n.create_timer(0.02, lambda: pub.publish(Float64MultiArray(data=[0.0, 1.0, 0.0, 0.0, 0.0])))
    # A burst: the running rung overruns and steps down ...
    assert node.set_parameters([Parameter("deadline_fraction", value=1e-6)])[0].successful
    assert ros.spin_until(lambda: node.planner.contract.budget == rungs[1].budget, 60), node.last_problem
    small = node.planner
    # ... and passes. After 0.5 s (5 plans) within the limit the larger rung is checked in the slack
    # and, fitting, installed.
    assert node.set_parameters([Parameter("deadline_fraction", value=1.0)])[0].successful
    assert ros.spin_until(lambda: node.planner.contract.budget == rungs[0].budget, 60), node.swapper.last_result
    # The rung it stepped up from is the next smaller one, warm: held as the standby, with no load.
    assert node.swapper.standby.held().planner is small and node.swapper.standby.label() == rungs[1].budget.label()
    assert "budget up to" in node.swapper.last_result and "shadow plans" in node.swapper.last_result
    assert node.steps.steps_down == 1 and node.steps.steps_up == 1 and node.swaps == 0 and node.model_version == version
    assert len(node.swap_cost.swap_tick_latency) == 0 and node.missed_deadlines == 0 and node.published == node.ticks
    assert ros.spin_until(lambda: any({kv.key: kv.value for kv in d.values}.get("budget_steps_up") == "1"
                                      for d in out["diagnostics"]), 10)
    # At the top rung there is nothing larger: a quiet run asks for nothing.
    ros.spin_until(lambda: False, 1.5)
    assert node.steps.steps_up == 1 and not node.steps.requested


def test_a_failed_step_up_waits_twice_as_long_before_the_next(ros, ladder):
    node = start_planner(ros, ladder, control_rate_hz=1.0, deadline_fraction=1.0, budget_step_up_after_s=30.0)
    assert node.steps.up_after == 30
    # A budget the folder lacks: refused by the swapper.
    node.steps.ask("mppi-i9-s9-e9-p9-h3", True, node.model_version, node.model_source)
    assert ros.spin_until(lambda: not node.steps.pending(), 30)
    assert node.steps.up_after == 60 and node.swapper.rung_failures == 1 and node.swapper.rejected == 0
    assert "staying at the running budget" not in node.last_problem  # a failed step up is no warning
    for _ in range(6):
        node.steps.back_off()
    assert node.steps.up_after == 16 * 30  # capped


def test_a_smaller_rung_of_a_version_no_longer_running_is_not_installed(ros, ladder):
    from tdmpc2_ros.runtime.candidate import Candidate
    from tdmpc2_ros.runtime.onnx_planner import OnnxPlanner

    rungs = read_ladder(ladder)
    node = start_planner(ros, ladder, control_rate_hz=1.0, deadline_fraction=1.0)
    running = node.planner
    small = OnnxPlanner(rungs[1].path, threads=1)
    # Asked for while the old version ran; a new version was swapped in before it was ready.
    node._install(Candidate(small, "v0001-old", "/elsewhere", 0.01, 0.01, rung_change=True))
    assert node.planner is running and node.steps.steps_down == 0
    node._install(Candidate(small, node.model_version, node.model_source, 0.01, 0.01, rung_change=True))
    assert node.planner is small and node.steps.steps_down == 1 and node.swaps == 0 and node.previous == []


def test_plan_thread_pinned_and_real_time_where_allowed(ros, ladder):
    """The thread that runs every plan takes the configured core and SCHED_FIFO priority; what the
    system refuses (no CAP_SYS_NICE) is a warning, and the node plans either way."""
    import os

    node = start_planner(ros, ladder, control_rate_hz=20.0, plan_cpu_affinity=[0], plan_thread_priority=10)
    policy, cores = node.worker.submit(lambda: (os.sched_getscheduler(0), os.sched_getaffinity(0))).result()
    assert cores == {0} and "cores [0]" in node.plan_thread
    assert (policy == os.SCHED_FIFO) == ("SCHED_FIFO 10" in node.plan_thread)
    # The slack thread (a swap candidate's shadow plans) shares the core, one priority below: a live plan
    # preempts it, and its plans are timed as live ones run.
    slack = node.slack_worker.submit(lambda: (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority,
                                              os.sched_getaffinity(0))).result()
    assert slack == ((os.SCHED_FIFO, 9, {0}) if policy == os.SCHED_FIFO else (policy, 0, {0}))
    # The hot-swap thread follows it: candidates it checks warm the plan core's caches, not another's.
    swapper_tid = node.swapper._thread.native_id
    assert ros.spin_until(lambda: os.sched_getaffinity(swapper_tid) == {0}, 10)
    if os.cpu_count() > 1:
        assert os.sched_getaffinity(0) != {0}  # only those two are pinned
    n, pub, out = peer(ros)
    n.create_timer(0.02, lambda: pub.publish(Float64MultiArray(data=[0.0] * SMALL_OBS_DIM)))
    assert ros.spin_until(lambda: len(out["commands"]) >= 5 and out["diagnostics"], 60)
    assert {kv.key: kv.value for kv in out["diagnostics"][-1].values}["plan_thread"] == node.plan_thread


def test_the_execution_provider_parameter_runs_every_plan_and_says_so(ros, ladder):
    """execution_provider: openvino (installed by requirements.txt on x86-64 Linux) plans every tick
    on OpenVINO, and /diagnostics names the provider actually running. The plugin serves Intel CPUs
    only: on another CPU the node refuses it at start, naming the CPU, and `cpu` is the one checked."""
    from tdmpc2_ros.runtime.onnx_planner import INTEL_VENDOR_ID, cpu_vendor, set_execution_provider

    provider, running = "openvino", "OpenVINOExecutionProvider"
    vendor, vendor_id = cpu_vendor()
    if vendor_id != INTEL_VENDOR_ID:
        with pytest.raises(ValueError, match=rf"offers no device for this CPU \(vendor {vendor};"):
            start_planner(ros, ladder, execution_provider="openvino")
        provider, running = "cpu", "CPUExecutionProvider"
    try:
        node = start_planner(ros, ladder, control_rate_hz=20.0, execution_provider=provider)
        assert node.planner.session.get_providers()[0] == running
        n, pub, out = peer(ros)
        n.create_timer(0.02, lambda: pub.publish(Float64MultiArray(data=[0.0] * SMALL_OBS_DIM)))
        assert ros.spin_until(lambda: len(out["commands"]) >= 5 and out["diagnostics"], 60)
        assert {kv.key: kv.value for kv in out["diagnostics"][-1].values}["execution_provider"] == running
        assert all(np.isfinite(c).all() for c in out["commands"])
    finally:
        set_execution_provider("auto")  # a process-wide choice: later tests in this process expect the default


def test_an_unknown_execution_provider_is_refused(ros, ladder):
    with pytest.raises(ValueError, match="execution_provider must be one of"):
        start_planner(ros, ladder, execution_provider="tpu")


@pytest.mark.parametrize("bad, why", [({"plan_thread_priority": 120}, "plan_thread_priority"),
                                      ({"plan_cpu_affinity": [-1]}, "plan_cpu_affinity")])
def test_bad_plan_thread_parameters_are_refused(ros, ladder, bad, why):
    with pytest.raises(ValueError, match=why):
        start_planner(ros, ladder, **bad)


def test_make_thread_realtime_reports_what_it_could_not_do():
    import os
    import threading

    from tdmpc2_ros.runtime.priority import make_thread_realtime

    seen = {}

    def run():
        seen["result"] = make_thread_realtime(5, (0,))
        seen["policy"], seen["cores"] = os.sched_getscheduler(0), os.sched_getaffinity(0)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    done, problems = seen["result"]
    assert seen["cores"] == {0} and "cores [0]" in done
    if seen["policy"] == os.SCHED_FIFO:
        assert "SCHED_FIFO 5" in done and not problems
    else:  # no CAP_SYS_NICE here: said so, with what to do
        assert len(problems) == 1 and "SCHED_FIFO" in problems[0] and "rtprio" in problems[0]
    assert make_thread_realtime(0, ()) == ([], [])
    _, refused = make_thread_realtime(100)
    assert refused and "SCHED_FIFO priority 100" in refused[0]


def test_commands_stay_within_the_configured_limits(ros, ladder):
    node = start_planner(ros, ladder, action_low=[-0.2], action_high=[0.3], max_observation_age_s=1.0)
    from tdmpc2_ros.ros.params import DESCRIPTIONS  # what `ros2 param describe` shows
    for name in ("control_rate_hz", "action_low", "threads"):
        assert node.describe_parameter(name).description == DESCRIPTIONS[name]
    n, pub, out = peer(ros)
    rng = np.random.default_rng(0)
    n.create_timer(0.02, lambda: pub.publish(Float64MultiArray(data=list(rng.normal(0, 3, SMALL_OBS_DIM)))))
    assert ros.spin_until(lambda: len(out["commands"]) >= 30, 60)
    cmds = np.concatenate(out["commands"])
    assert np.all(cmds >= -0.2 - 1e-12) and np.all(cmds <= 0.3 + 1e-12)
    assert np.all(np.isfinite(cmds))


@pytest.mark.parametrize("bad", ["short", "nan", "inf"])
def test_bad_observation_gives_the_safe_action_and_an_error_diagnostic(ros, ladder, bad):
    node = start_planner(ros, ladder, safe_action="zero", diagnostics_period_s=0.2, max_observation_age_s=1.0)
    n, pub, out = peer(ros)
    data = {"short": [0.1, 0.2], "nan": [0.0, math.nan, 0.0, 0.0, 0.0], "inf": [0.0, 0.0, math.inf, 0.0, 0.0]}[bad]
    n.create_timer(0.02, lambda: pub.publish(Float64MultiArray(data=data)))
    assert ros.spin_until(lambda: node.safe_actions >= 5 and any(d.level == DiagnosticStatus.ERROR for d in out["diagnostics"]), 30)
    assert np.allclose(np.concatenate(out["commands"]), 0.0)  # zero is the safe command, nothing else left
    error = next(d for d in out["diagnostics"] if d.level == DiagnosticStatus.ERROR)
    assert "5" in error.message or "NaN" in error.message  # names the expected spec or the bad values


def test_stale_observation_gives_the_safe_action(ros, ladder):
    node = start_planner(ros, ladder, max_observation_age_s=0.25, safe_action="hold")
    # Before any sensor has spoken the safe action holds, and the reason names the silent topic.
    assert ros.spin_until(lambda: node.safe_actions >= 2, 30)
    assert node.last_problem == "no observation yet on ['/tdmpc2/observation']" and node.published == node.ticks
    n, pub, out = peer(ros)
    pub_timer = n.create_timer(0.02, lambda: pub.publish(Float64MultiArray(data=[0.0, 1.0, 0.0, 0.0, 0.0])))
    assert ros.spin_until(lambda: len(out["commands"]) >= 10, 60)  # before the first observation: safe actions
    baseline = node.safe_actions
    pub_timer.cancel()  # the sensor goes silent
    assert ros.spin_until(lambda: node.safe_actions >= baseline + 5, 30)
    ros.spin_for(0.1)  # let the last commands arrive
    held = out["commands"][-4:]
    # 'hold' repeats the last planned command (the random model's commands are never exactly equal).
    assert all(np.array_equal(c, held[0]) for c in held)
    planned = [c for c in out["commands"] if not np.array_equal(c, held[0])]
    assert planned, "the node planned before the sensor went silent"


def test_overrun_publishes_the_fallback_and_counts_the_miss(ros, ladder):
    # 1 kHz with a 1% deadline: no plan fits, every tick must still publish something.
    node = start_planner(ros, ladder, control_rate_hz=1000.0, deadline_fraction=0.01, max_observation_age_s=1.0)
    warnings = record_warnings(node)
    n, pub, out = peer(ros)
    n.create_timer(0.005, lambda: pub.publish(Float64MultiArray(data=[0.0, 1.0, 0.0, 0.0, 0.0])))
    assert ros.spin_until(lambda: node.missed_deadlines >= 20, 60)
    assert node.published == node.ticks  # no tick went without a command
    # A late plan's warning splits its time, and names the host's steal (this machine is Linux).
    late = [w for w in warnings if w.startswith("a plan took")]
    assert late and all(" s since the last /diagnostics report" in w and "the host stole" in w for w in late), warnings[-3:]
    assert all(np.all(np.isfinite(c)) and np.all(np.abs(c) <= 1.0) for c in out["commands"])


def test_a_plan_that_raises_sends_the_safe_action_and_the_loop_goes_on(ros, ladder):
    """An ONNX Runtime failure inside a plan (a broken graph, an allocation that fails) must not end
    the node: that tick sends the safe action, /diagnostics names the failure, and the next good plan
    is published as usual."""
    node = start_planner(ros, ladder, safe_action="zero", diagnostics_period_s=0.2, max_observation_age_s=1.0,
                         control_rate_hz=20.0)
    n, pub, out = peer(ros)
    n.create_timer(0.02, lambda: pub.publish(Float64MultiArray(data=[0.0, 1.0, 0.0, 0.0, 0.0])))
    assert ros.spin_until(lambda: len(out["commands"]) >= 3, 60)
    plan = node.planner.plan

    def broken(*args, **kwargs):
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : a failed allocation")

    node.planner.plan = broken
    assert ros.spin_until(lambda: node.plan_errors >= 3, 30)
    failed_at = len(out["commands"])
    node.planner.plan = plan
    assert ros.spin_until(lambda: len(out["commands"]) >= failed_at + 5, 30)
    assert node.published == node.ticks and node.safe_actions >= 3
    errors = [d for d in out["diagnostics"] if d.level == DiagnosticStatus.ERROR]
    assert errors and "the plan failed (RuntimeError" in errors[-1].message and "~/rollback" in errors[-1].message
    assert {kv.key: kv.value for kv in errors[-1].values}["plan_errors"] != "0"
    assert any(not np.allclose(c, 0.0) for c in out["commands"][failed_at:])  # planned again


@pytest.mark.parametrize("stop_action", ["safe_action", "hold", "none"])
def test_a_stopping_planner_publishes_its_stop_command(ros, ladder, stop_action):
    """A ros2_control forward command controller (or the sim) keeps applying the last command it got:
    a planner that stops says zero (safe_action's default), or holds, or, with 'none', nothing."""
    node = start_planner(ros, ladder, max_observation_age_s=1.0, stop_action=stop_action, control_rate_hz=20.0)
    n, pub, out = peer(ros)
    n.create_timer(0.02, lambda: pub.publish(Float64MultiArray(data=[0.0, 1.0, 0.0, 0.0, 0.0])))
    assert ros.spin_until(lambda: len(out["commands"]) >= 5 and node.safe_actions == 0 and
                          not np.allclose(out["commands"][-1], 0.0), 60)
    last = out["commands"][-1].copy()
    ros.executor.remove_node(node)
    ros.nodes.remove(node)
    count = len(out["commands"])
    node.destroy_node()
    ros.spin_for(0.5)
    got = out["commands"][count:]
    if stop_action == "none":
        assert got == []
    else:
        assert len(got) == 1
        assert np.array_equal(got[0], last if stop_action == "hold" else np.zeros_like(last))


def _set_enabled(ros, n, value: bool):
    from std_srvs.srv import SetBool

    client = n.create_client(SetBool, "/planner_node/enable")
    assert client.wait_for_service(timeout_sec=10)
    future = client.call_async(SetBool.Request(data=value))
    assert ros.spin_until(future.done, 10)
    return future.result()


def test_enable_false_sends_the_stop_command_then_nothing_and_true_plans_again(ros, ladder, monkeypatch):
    """~/enable (std_srvs/SetBool): an operator stills the robot without stopping the node. One stop
    command goes out at once, then no command and no transition record while observations keep coming;
    /diagnostics says so (OK: it was asked for); true plans again from a fresh warm start."""
    node = start_planner(ros, ladder, max_observation_age_s=1.0, control_rate_hz=20.0, diagnostics_period_s=0.2)
    n, pub, out = peer(ros)
    n.create_timer(0.02, lambda: pub.publish(Float64MultiArray(data=[0.0, 1.0, 0.0, 0.0, 0.0])))
    assert ros.spin_until(lambda: len(out["commands"]) >= 5 and not np.allclose(out["commands"][-1], 0.0), 60)
    count, ticks = len(out["commands"]), node.ticks
    answer = _set_enabled(ros, n, False)
    assert answer.success and "published the stop command (zero: [0.0])" in answer.message, answer.message
    ros.spin_for(1.0)  # 20 periods of observations
    got = out["commands"][count:]
    assert len(got) == 1 and np.array_equal(got[0], np.zeros_like(got[0])), got
    assert node.ticks == ticks and node.disabled_ticks >= 10
    disabled = [d for d in out["diagnostics"] if {kv.key: kv.value for kv in d.values}.get("enabled") == "False"]
    assert disabled and disabled[-1].level == DiagnosticStatus.OK and "disabled by ~/enable" in disabled[-1].message
    node.pairer.prev = (0, 3, np.zeros(SMALL_OBS_DIM, np.float32), "v")
    node._log_step(OBS_TOPIC, None, {})  # a step message while disabled: the chain breaks, nothing is logged
    assert node.pairer.prev is None and node.pairer.emitted == 0
    assert _set_enabled(ros, n, False).message == "already disabled"
    # The same through `tdmpc2-ros call enable off` (no ros2 command here): its own context, from
    # another thread while this one spins the node.
    import threading
    from tdmpc2_ros.ros.call import call, parse_value

    monkeypatch.setenv("ROS_DOMAIN_ID", str(ros.domain))
    result = {}
    caller = threading.Thread(target=lambda: result.update(answer=call("enable", parse_value("enable", "off"), wait_s=20)))
    caller.start()
    assert ros.spin_until(lambda: not caller.is_alive(), 30) and result["answer"] == (True, "already disabled")
    answer = _set_enabled(ros, n, True)
    assert answer.success and answer.message == "enabled: planning from the next tick"
    assert ros.spin_until(lambda: len(out["commands"]) >= count + 6, 30)
    assert node.ticks >= ticks + 5 and any(not np.allclose(c, 0.0) for c in out["commands"][count + 1:])


def test_start_enabled_false_sends_nothing_until_enabled(ros, ladder):
    node = start_planner(ros, ladder, max_observation_age_s=1.0, control_rate_hz=20.0, start_enabled=False)
    n, pub, out = peer(ros)
    n.create_timer(0.02, lambda: pub.publish(Float64MultiArray(data=[0.0, 1.0, 0.0, 0.0, 0.0])))
    assert ros.spin_until(lambda: node.disabled_ticks >= 10, 30)
    assert out["commands"] == [] and node.ticks == 0
    assert _set_enabled(ros, n, True).success
    assert ros.spin_until(lambda: len(out["commands"]) >= 3, 30)


def test_a_topic_published_with_another_type_is_named_not_just_silent(ros, ladder):
    """A subscription of the wrong type is never matched and ROS says nothing: the planner's 'no
    observation yet' names the type the topic is published as, and the parameter to check."""
    node = start_planner(ros, ladder)
    other = Ros(ros.domain)  # a second participant: one may not hold two types for one topic
    try:
        pub = other.node("joint_state_on_the_observation_topic").create_publisher(JointState, OBS_TOPIC, qos.SENSOR)
        pub.publish(JointState(name=["slider"], position=[0.0]))
        hint = "is published as sensor_msgs/msg/JointState, not std_msgs/msg/Float64MultiArray: check observation_sources"
        assert ros.spin_until(lambda: hint in node.last_problem, 30), node.last_problem
        assert node.last_problem.startswith(f"no observation yet on ['{OBS_TOPIC}']") and node.safe_actions > 0
    finally:
        other.close()


def test_a_controller_subscribed_with_another_command_type_is_named_once(ros, ladder):
    """The other side of the command topic: a joint_trajectory_controller subscribed where the planner
    publishes Float64MultiArray never hears a command; the planner says so, once."""
    from trajectory_msgs.msg import JointTrajectory

    node = start_planner(ros, ladder, diagnostics_period_s=0.2)
    warnings = record_warnings(node)
    other = Ros(ros.domain)
    try:
        other.node("trajectory_controller_stand_in").create_subscription(JointTrajectory, CMD_TOPIC, lambda m: None,
                                                                          qos.COMMAND)
        hint = (f"commands reach no one there: {CMD_TOPIC} is subscribed as trajectory_msgs/msg/JointTrajectory, not "
                f"std_msgs/msg/Float64MultiArray: check command_type")
        assert ros.spin_until(lambda: hint in warnings, 30), warnings[-3:]
        ros.spin_for(1.0)
        assert warnings.count(hint) == 1
    finally:
        other.close()


# -- adapters --------------------------------------------------------------------------------------
def test_joint_state_adapter_by_name_and_transform():
    msg = JointState(name=["slider", "hinge_1"], position=[0.3, math.pi / 3], velocity=[1.5, -2.0])
    asm = ObservationAssembler(["joint_state:/joint_states:position:slider",
                                "joint_state:/joint_states:cos(position):hinge_1",
                                "joint_state:/joint_states:sin(position):hinge_1",
                                "joint_state:/joint_states:velocity:slider",
                                "joint_state:/joint_states:velocity:hinge_1"])
    asm.update("/joint_states", msg, 0.0)
    assert np.allclose(asm.assemble(), [0.3, 0.5, math.sqrt(3) / 2, 1.5, -2.0])
    assert asm.fixed_width() == 5


def test_imu_odometry_and_array_adapters():
    imu = Imu(angular_velocity=Vector3(x=0.1, y=0.2, z=0.3), orientation=Quaternion(w=1.0))
    odom = Odometry()
    odom.twist.twist.linear.x = 2.5
    odom.pose.pose.position.y = -1.0
    arr = Float64MultiArray(data=[1.0, 2.0, 3.0, 4.0])
    assert extract(parse_source("imu:/imu:angular_velocity.z"), imu)[0] == pytest.approx(0.3)
    assert extract(parse_source("imu:/imu:orientation.w"), imu)[0] == 1.0
    assert extract(parse_source("odometry:/odom:twist.linear.x"), odom)[0] == 2.5
    assert extract(parse_source("odometry:/odom:pose.position.y"), odom)[0] == -1.0
    assert list(extract(parse_source("array:/a:1-2"), arr)) == [2.0, 3.0]
    assert list(extract(parse_source("array:/a:all"), arr)) == [1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize("spec", ["", "bogus:/x:1", "joint_state:/js:position", "joint_state:/js:torque:j1",
                                  "array:/a:3-1", "array:/a:1-x", "joint_state:/js:tan(position):j1"])
def test_malformed_sources_are_refused(spec):
    with pytest.raises(AdapterError):
        parse_source(spec)


def test_missing_joint_or_index_is_an_error_not_a_guess():
    with pytest.raises(AdapterError, match="hinge_9"):
        extract(parse_source("joint_state:/js:position:hinge_9"), JointState(name=["hinge_1"], position=[0.0]))
    with pytest.raises(AdapterError, match="4 elements"):
        extract(parse_source("array:/a:6"), Float64MultiArray(data=[0.0] * 4))


def test_error_diagnostic_clears_once_input_recovers(ros, ladder):
    # 10 Hz: on a loaded machine a 50 Hz tick can miss its deadline, which is a WARN of its own.
    node = start_planner(ros, ladder, diagnostics_period_s=0.2, max_observation_age_s=1.0, control_rate_hz=10.0)
    n, pub, out = peer(ros)
    state = {"bad": True}
    n.create_timer(0.02, lambda: pub.publish(Float64MultiArray(data=[0.1, 0.2] if state["bad"] else [0.0, 1.0, 0.0, 0.0, 0.0])))
    assert ros.spin_until(lambda: any(d.level == DiagnosticStatus.ERROR for d in out["diagnostics"]), 30)
    state["bad"] = False
    count = len(out["diagnostics"])
    assert ros.spin_until(lambda: any(d.level == DiagnosticStatus.OK for d in out["diagnostics"][count:]), 30)
    assert node.safe_actions > 0
    # Once planning, each planned tick's cost outside its ONNX call is recorded and reported.
    ok = next(d for d in out["diagnostics"][count:] if d.level == DiagnosticStatus.OK)
    values = {kv.key: float(kv.value) for kv in ok.values if kv.key.endswith("_ms")}
    assert len(node.ros_overhead) > 0
    assert 0.0 <= values["ros_overhead_p99_ms"] <= values["tick_latency_p99_ms"]
    # And how long each plan waited for the plan thread: over the window, and since the last report.
    assert len(node.plan_queued) > 0
    assert 0.0 <= values["plan_queued_since_report_max_ms"] <= values["plan_queued_max_ms"]


def test_planning_at_each_message_of_a_source_stamped_faster_than_the_control_rate_is_warned_of(ros, ladder):
    """trigger: observation on /joint_states from a broadcaster faster than the control rate (500 Hz
    beside a 50 Hz model) would plan at its pace. The stamps tell (a lockstep sim's advance by the
    period, however fast it runs): WARN on /diagnostics, naming the topic and trigger 'timer'."""
    sources = ["joint_state:/js:position:slider", "joint_state:/js:cos(position):hinge_1",
               "joint_state:/js:sin(position):hinge_1", "joint_state:/js:velocity:slider",
               "joint_state:/js:velocity:hinge_1"]
    node = start_planner(ros, ladder, trigger="observation", control_rate_hz=50.0, observation_sources=sources,
                         diagnostics_period_s=0.2)
    n, _, out = peer(ros)
    pub = n.create_publisher(JointState, "/js", qos.SENSOR)
    assert ros.spin_until(lambda: pub.get_subscription_count() > 0, 10)

    def publish(count: int, every_ns: int, start_ns: int):
        for k in range(count):
            t = start_ns + k * every_ns
            msg = JointState(name=["slider", "hinge_1"], position=[0.0, 0.1], velocity=[0.0, 0.0])
            msg.header.stamp.sec, msg.header.stamp.nanosec = t // 10**9, t % 10**9
            pub.publish(msg)
            ros.spin_for(0.02)

    def warned():
        return any("faster than control_rate_hz" in s.message for s in out["diagnostics"])

    publish(30, 20_000_000, 10**9)  # at the control rate, as a lockstep sim stamps them
    ros.spin_for(0.5)
    assert len(node.source_interval) >= 20 and not warned()
    publish(60, 2_000_000, 3 * 10**9)  # a 500 Hz broadcaster
    assert ros.spin_until(warned, 5), [s.message for s in out["diagnostics"]][-3:]
    # The rate is the median of the last 50 intervals: a report made while they still mixed both rates
    # names an interval between the two (11.0 ms was seen). Once they are all the broadcaster's, it is 2.0 ms.
    def named():
        return [s for s in out["diagnostics"] if "/js is stamped every 2.0 ms" in s.message]

    assert ros.spin_until(lambda: named(), 5), [s.message for s in out["diagnostics"]][-3:]
    status = named()[0]
    assert status.level == b"\x01" and "faster than control_rate_hz" in status.message and "trigger 'timer'" in status.message


def test_an_announcer_whose_qos_cannot_reach_the_planner_is_named(ros, ladder):
    """The planner hears model updates transient local (a late starter still gets the newest). A
    volatile announcer (`ros2 topic pub` by hand) is never matched, and DDS says so only in an event:
    /diagnostics names the topic, the policy and what to publish with (unmatched_qos, at least WARN)
    while that announcer is in the graph, even when another one is heard, and no longer once it left."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String

    node = start_planner(ros, ladder, diagnostics_period_s=0.2)
    n, _, out = peer(ros)

    def named(reports):
        return [(s.level, v.value) for s in reports for v in s.values if v.key == "unmatched_qos" and v.value]

    volatile = n.create_publisher(String, topics.MODEL_UPDATE, QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
    assert ros.spin_until(lambda: named(out["diagnostics"]), 10), [s.message for s in out["diagnostics"]][-3:]
    level, why = named(out["diagnostics"])[-1]
    assert level >= b"\x01" and f"on {topics.MODEL_UPDATE}" in why and "(durability)" in why and "transient local" in why
    latched = n.create_publisher(String, topics.MODEL_UPDATE, qos.LATCHED)  # as trainer_node announces
    assert ros.spin_until(lambda: latched.get_subscription_count() > 0, 10)
    latched.publish(String(data="{}"))  # malformed: heard and ignored
    ros.spin_for(1.5)  # past UnmatchedPublishers.GRACE_S: the volatile announcer is still in the graph
    assert node.unmatched_announcers.why and named(out["diagnostics"][-3:])
    n.destroy_publisher(volatile)
    assert ros.spin_until(lambda: not node.unmatched_announcers.why, 10)
    seen = len(out["diagnostics"])
    ros.spin_for(0.6)
    assert len(out["diagnostics"]) > seen and not named(out["diagnostics"][seen:])


def test_a_report_carries_its_worst_problems_message():
    """A warning after an error in one report window (a rejected update while observations are
    missing) raises nothing and must not replace the error's message: /diagnostics would show ERROR
    with a warning's text."""
    from types import SimpleNamespace

    from tdmpc2_ros.ros.diagnostics import ERROR, OK, WARN
    from tdmpc2_ros.ros.planner_node import PlannerNode

    window = SimpleNamespace(level=OK, last_problem="")
    for level, problem in ((WARN, "first warning"), (ERROR, "no observation"), (WARN, "a later warning")):
        PlannerNode._report(window, level, problem)
    assert (window.level, window.last_problem) == (ERROR, "no observation")
    PlannerNode._report(window, ERROR, "a newer error")
    assert (window.level, window.last_problem) == (ERROR, "a newer error")


def test_a_republished_step_is_not_answered_twice(ros, ladder):
    """A lockstep sim republishes an observation nobody answered yet; a planner still planning that
    step must not answer the copy (its fallback command would make the sim step twice)."""
    import time as _time

    from tdmpc2_ros.ros.messages import segmented_array
    from tdmpc2_ros.runtime.transition import pack

    node = start_planner(ros, ladder, trigger="observation", control_rate_hz=1.0)  # deadline 0.9 s: the slow plan fits
    plan = node.planner.plan

    def slow_plan(*a, **k):  # a plan that takes longer than the sim's republish period
        _time.sleep(0.3)
        return plan(*a, **k)

    node.planner.plan = slow_plan
    n, pub, out = peer(ros)
    assert ros.spin_until(lambda: pub.get_subscription_count() > 0, 10)

    def step_msg(k):
        dims, data = pack([("obs", np.full(SMALL_OBS_DIM, 0.1 * k)), ("reward", [0.0]), ("applied_action", [0.0]),
                           ("episode", [0]), ("step", [k]), ("last", [0.0])])
        return segmented_array(dims, data)

    pub.publish(step_msg(0))
    ros.spin_for(0.1)
    pub.publish(step_msg(0))  # the republished copy, while step 0 is still being planned
    assert ros.spin_until(lambda: len(out["commands"]) >= 1, 10)
    ros.spin_for(0.8)
    assert len(out["commands"]) == 1 and node.duplicate_observations == 1 and node.missed_deadlines == 0
    pub.publish(step_msg(1))  # the next step is answered as usual
    assert ros.spin_until(lambda: len(out["commands"]) >= 2, 10)


def test_a_step_under_two_commands_publishes_no_transition_and_is_warned_of_once(ros, ladder):
    """A sim that takes each command at the next physics step says, in a `commands` segment, how
    many different commands a step applied. A step under two was produced by no one action: the
    planner publishes no record of it, counts it on /diagnostics, and says why once."""
    from tdmpc2_ros.ros.messages import segmented_array
    from tdmpc2_ros.runtime.transition import Transition, pack

    node = start_planner(ros, ladder)
    warnings = record_warnings(node)
    n, pub, out = peer(ros)
    records = []
    n.create_subscription(Float64MultiArray, topics.TRANSITION, lambda m: records.append(m), qos.EVENTS)
    assert ros.spin_until(lambda: pub.get_subscription_count() > 0 and len(out["commands"]) >= 1, 10)

    def step_msg(k, commands):
        dims, data = pack([("obs", np.full(SMALL_OBS_DIM, 0.1 * k)), ("reward", [0.5 * k]), ("applied_action", [0.0]),
                           ("episode", [0]), ("step", [k]), ("last", [0.0]), ("commands", [commands])])
        return segmented_array(dims, data)

    for k, commands in enumerate((0, 1, 2, 2, 1)):
        pub.publish(step_msg(k, commands))
        assert ros.spin_until(lambda: node.pairer.emitted + node.pairer.mixed >= k, 5)
    assert ros.spin_until(lambda: len(records) >= 2, 5)
    steps = [Transition.unpack([(d.label, d.size) for d in m.layout.dim], m.data).step for m in records]
    assert steps == [0, 3] and (node.pairer.mixed, node.pairer.gaps) == (2, 0)
    mixed = [w for w in warnings if "different commands" in w]
    assert len(mixed) == 1 and "step 2 of episode 0 applied 2 different commands" in mixed[0], warnings
    assert ros.spin_until(lambda: any(kv.key == "transitions_mixed" and kv.value == "2"
                                      for d in out["diagnostics"] for kv in d.values), 5)
