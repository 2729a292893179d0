"""Hot swap on a running planner_node (a separate process, real DDS): a new version announced by the
model store is swapped in between two ticks with no tick skipped; corrupt announcements are rejected
while the old model keeps acting; ~/rollback returns to the previous version; a model_path change
swaps the same way; an inline (bytes-carrying) announcement works for a robot without the disk.

The test drives the planner like a lockstep sim: it publishes a step message (runtime/transition.py)
and waits for the command before the next, so every observation must be answered exactly once and
the transition records must cover every step, each tagged with the model version that acted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.parameter import Parameter
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger

from core_helpers import make_model
from ros_harness import REPO, Ros, node_env
from tdmpc2_ros.core.export import export_ladder
from tdmpc2_ros.ros import qos, topics
from tdmpc2_ros.ros.messages import segmented_array
from tdmpc2_ros.runtime import PlanBudget
from tdmpc2_ros.runtime.hot_swap import HotSwapper
from tdmpc2_ros.runtime.swap_request import Request
from tdmpc2_ros.runtime.swap_cost import BACKGROUND_PLANS, FREE, LOADING, SHADOW_PLAN
from tdmpc2_ros.runtime.ladder import LADDER_FILE
from tdmpc2_ros.runtime.digest import file_sha256
from tdmpc2_ros.runtime.model_store import ModelStore
from tdmpc2_ros.runtime.transition import Transition, pack

BUDGET = PlanBudget(iterations=2, num_samples=64, num_elites=8, num_pi_trajs=8)
OBS_DIM = 5


def _export(folder, obs_dim=OBS_DIM, seed=3, nan=False):
    model = make_model("1M", obs_dim, 1, seed=seed)
    if nan:
        with torch.no_grad():
            next(model._encoder.parameters())[0, 0] = float("nan")
    export_ladder(model, [BUDGET], 0.99, folder, task="cartpole-swingup", action_low=(-1.0,), action_high=(1.0,))
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("swap")
    store = ModelStore(root / "store")
    v1 = store.add(_export(root / "e1", seed=3), env_steps=1000).version
    v2 = store.add(_export(root / "e2", seed=4), parent=v1, env_steps=2000).version
    wrong_spec = store.add(_export(root / "e3", obs_dim=4, seed=5)).version
    nan = store.add(_export(root / "e4", seed=6, nan=True)).version
    # Truncated: a copy of v2 whose graph lost its second half; every hash is updated to match, so
    # the file itself (not a checksum) is what must be refused.
    trunc = root / "trunc"
    shutil.copytree(store.path(v2), trunc)
    onnx_file = next(trunc.glob("*.onnx"))
    onnx_file.write_bytes(onnx_file.read_bytes()[: onnx_file.stat().st_size // 2])
    index = json.loads((trunc / LADDER_FILE).read_text())
    index["rungs"][0]["sha256"] = file_sha256(onnx_file)
    (trunc / LADDER_FILE).write_text(json.dumps(index))
    truncated = {"version": "v9999-truncated", "path": str(trunc),
                 "files": {LADDER_FILE: file_sha256(trunc / LADDER_FILE), onnx_file.name: file_sha256(onnx_file)}}
    bad_hash = dict(store.announcement(v2), version="v9998-badhash")
    bad_hash["files"] = {k: "0" * 64 for k in bad_hash["files"]}
    return {"store": store, "v1": v1, "v2": v2, "wrong_spec": store.announcement(wrong_spec),
            "nan": store.announcement(nan), "truncated": truncated, "bad_hash": bad_hash, "root": root}


class Robot:
    """The test's side: a lockstep 'sim' that answers nothing but records everything."""

    def __init__(self, ros: Ros):
        self.ros = ros
        n = self.node = ros.node("swap_peer")
        self.commands, self.records, self.diag = [], [], {}
        n.create_subscription(Float64MultiArray, topics.COMMAND, lambda m: self.commands.append(list(m.data)), qos.COMMAND)
        n.create_subscription(Float64MultiArray, topics.TRANSITION, self._on_record, qos.EVENTS)
        n.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self._on_diag, 10)
        self.obs_pub = n.create_publisher(Float64MultiArray, topics.OBSERVATION, qos.SENSOR)
        self.update_pub = n.create_publisher(String, topics.MODEL_UPDATE, qos.LATCHED)
        self.rollback = n.create_client(Trigger, "/planner_node/rollback")
        self.rng = np.random.default_rng(0)
        self.k = 0
        self.applied = [0.0]

    def _on_record(self, m):
        self.records.append(Transition.unpack([(d.label, d.size) for d in m.layout.dim], m.data))

    def _on_diag(self, m):
        for s in m.status:
            if s.name.startswith("tdmpc2_ros: planner"):
                self.diag = {kv.key: kv.value for kv in s.values}

    def step(self):
        """One lockstep step: publish o_k (with r_k-1, a_k-1), wait for the command."""
        obs = self.rng.uniform(-1, 1, OBS_DIM)
        dims, data = pack([("obs", obs), ("reward", [0.01 * self.k if self.k else float("nan")]),
                           ("applied_action", self.applied), ("episode", [0]), ("step", [self.k]), ("last", [0.0])])
        msg = segmented_array(dims, data)
        before = len(self.commands)
        # Best effort may drop a sample (e.g. while a multi-megabyte inline announcement floods the
        # link): republish it every 1.5 s, as the lockstep sim does. The planner answers a step once.
        for _ in range(7):
            self.obs_pub.publish(msg)
            if self.ros.spin_until(lambda: len(self.commands) > before, 1.5):
                break
        assert len(self.commands) > before, f"no command for step {self.k}"
        self.ros.spin_for(0.02)  # a second answer, if there were one, would arrive now
        assert len(self.commands) == before + 1, "one observation, one command"
        self.applied = self.commands[-1]
        self.k += 1

    def run_until(self, predicate, max_steps=400):
        for _ in range(max_steps):
            self.step()
            if predicate():
                return True
        return False

    def announce(self, announcement: dict):
        self.update_pub.publish(String(data=json.dumps(announcement)))

    def version(self):
        return self.diag.get("model_version")


@pytest.fixture(scope="module")
def planner(models, tmp_path_factory):
    ros = Ros()
    cache = tmp_path_factory.mktemp("cache")
    cmd = [sys.executable, "-m", "tdmpc2_ros.ros.planner_node", "--ros-args",
           "-p", f"model_path:={models['store'].path(models['v1'])}", "-p", "trigger:=observation",
           "-p", "ladder_warmup:=2", "-p", "ladder_runs:=5", "-p", "diagnostics_period_s:=0.1",
           # 10 Hz: this test is about the hand-over, not speed; it must hold on a loaded CI machine.
           "-p", "control_rate_hz:=10.0",
           "-p", f"model_cache_dir:={cache}", "-p", "max_observation_age_s:=5.0"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=node_env(ros.domain), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    robot = Robot(ros)
    try:
        started = lambda: robot.obs_pub.get_subscription_count() > 0 and robot.node.count_publishers(topics.TRANSITION) > 0  # noqa: E731
        assert ros.spin_until(lambda: started() or proc.poll() is not None, 120), "planner did not start"
        ros.spin_for(0.5)  # let the reliable transition stream finish matching before the first step
        assert proc.poll() is None, proc.stdout.read()
        yield robot, proc
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        print(out[-4000:])
        ros.close()


def _steps_are_contiguous(records):
    steps = [r.step for r in records]
    return steps == list(range(steps[0], steps[0] + len(steps)))


def test_swap_reject_rollback_param_and_inline(planner, models):
    robot, proc = planner
    v1, v2 = models["v1"], models["v2"]
    assert robot.run_until(lambda: robot.version() == v1, 200), f"diagnostics never named {v1}: {robot.diag}"

    # 1. A new version is swapped in while acting: no step goes unanswered, no tick misses.
    robot.announce(models["store"].announcement(v2))
    assert robot.run_until(lambda: robot.version() == v2), robot.diag
    robot.run_until(lambda: False, 10)
    assert robot.ros.spin_until(lambda: len(robot.records) >= robot.k - 1, 5)
    records = robot.records
    assert _steps_are_contiguous(records), [r.step for r in records]
    tags = [r.model_version for r in records]
    switch = tags.index(v2)
    assert set(tags[:switch]) == {v1} and set(tags[switch:]) == {v2}  # exactly one hand-over
    robot.ros.spin_until(lambda: robot.diag.get("ticks") == str(robot.k), 3)  # the next report
    assert robot.diag["swaps"] == "1" and robot.diag["missed_deadlines"] == "0", robot.diag
    assert float(robot.diag["last_swap_thread_cpu_ms"]) > 0, robot.diag  # v2 was loaded and hashed there
    # The versions this planner runs or may roll back to, for the trainer's prune (newest first).
    assert robot.diag["model_versions_in_use"] == f"{v2},{v1}", robot.diag
    assert robot.diag["ticks"] == str(robot.k) and len(robot.commands) == robot.k, (robot.diag, robot.k, len(robot.commands))
    # The swap tick is reported against the median tick of its moment (what bench-loop's bar reads).
    took, excess = float(robot.diag["swap_tick_latency_last_ms"]), float(robot.diag["swap_tick_excess_last_ms"])
    assert took > 0 and np.isfinite(excess) and took - excess > 0, robot.diag
    # ... and split: the part in the new session's ONNX call is smaller than the whole swap tick.
    plan_excess = float(robot.diag["swap_plan_excess_last_ms"])
    assert np.isfinite(plan_excess) and plan_excess < took, robot.diag

    # 2. Every corrupt announcement is rejected, and v2 keeps acting throughout.
    for i, key in enumerate(["bad_hash", "wrong_spec", "nan", "truncated"], start=1):
        robot.announce(models[key])
        assert robot.run_until(lambda: robot.diag.get("swaps_rejected") == str(i)), (key, robot.diag)
        assert robot.version() == v2, key
    reasons = robot.diag["last_swap_result"]
    assert "v9999-truncated" in reasons, reasons
    assert robot.diag["swaps"] == "1" and robot.diag["missed_deadlines"] == "0"

    # 3. Rollback returns to v1 at the next tick.
    assert robot.rollback.wait_for_service(timeout_sec=10)
    future = robot.rollback.call_async(Trigger.Request())
    assert robot.ros.spin_until(future.done, 10)
    assert future.result().success and v1 in future.result().message
    assert robot.run_until(lambda: robot.version() == v1, 20)
    future = robot.rollback.call_async(Trigger.Request())
    assert robot.ros.spin_until(future.done, 10)
    assert not future.result().success  # nothing older than v1
    robot.ros.spin_until(lambda: robot.diag.get("ticks") == str(robot.k), 3)
    assert robot.diag["model_versions_in_use"] == v1, robot.diag  # v2 is no longer one to return to

    # 4. A model_path parameter change swaps the same way (to v2's folder).
    from rclpy.parameter_client import AsyncParameterClient

    client = AsyncParameterClient(robot.node, "planner_node")
    assert client.wait_for_services(timeout_sec=10)
    future = client.set_parameters([Parameter("model_path", value=str(models["store"].path(v2)))])
    assert robot.ros.spin_until(future.done, 10)
    assert robot.run_until(lambda: robot.version() == v2), robot.diag

    # 5. Inline: the announcement carries the bytes (a robot that does not share the trainer's disk).
    robot.announce(models["store"].announcement(v1, inline=True))
    assert robot.run_until(lambda: robot.version() == v1), robot.diag
    assert robot.diag["missed_deadlines"] == "0" and robot.diag["safe_actions"] == "0", robot.diag
    assert proc.poll() is None
    robot.ros.spin_until(lambda: len(robot.records) >= robot.k - 1, 5)
    assert _steps_are_contiguous(robot.records)


def test_a_model_store_stands_for_its_newest_version(models, tmp_path):
    import logging
    import threading

    from tdmpc2_ros.ros.paths import resolve_model_path

    store, log = models["store"], logging.getLogger("test")
    newest = store.versions()[-1]
    assert resolve_model_path(str(store.root), 0.0, log) == str(store.path(newest))
    assert resolve_model_path(str(store.path(models["v1"])), 0.0, log) == str(store.path(models["v1"]))  # a version itself
    # An empty store is waited on: the first version that appears is taken.
    empty = ModelStore(tmp_path / "empty")
    (empty.root / ".v0001-0123456789ab.tmp").mkdir()  # a version being written is not a version yet
    threading.Timer(0.7, lambda: empty.add(store.path(models["v2"]))).start()
    got = resolve_model_path(str(empty.root), 30.0, log)
    assert got == str(empty.path(empty.versions()[0]))
    # Nothing appears: after the wait the path is returned unchanged, and the loader names it.
    assert resolve_model_path(str(tmp_path / "never"), 0.2, log) == str(tmp_path / "never")


# -- the checks' scheduling, without ROS (runtime/hot_swap.py) ------------------------------------
def _swapper(models, tmp_path, **kw):
    from tdmpc2_ros.runtime.onnx_planner import OnnxPlanner

    running = OnnxPlanner(next(models["store"].path(models["v1"]).glob(models.get("rung", "*.onnx"))), threads=1)
    obs = np.full(OBS_DIM, 0.1, np.float32)
    logs: list[tuple[str, str]] = []
    swapper = HotSwapper(lambda: (running, obs), limit_s=10.0, warmup=2, runs=5, threads=1, seed=0,
                         cache_dir=tmp_path / "cache", log=lambda level, text: logs.append((level, text)),
                         live_p50=lambda: 0.004, **kw)
    return swapper, obs, logs


def _wait(pred, limit=30.0):
    import time

    end = time.monotonic() + limit
    while time.monotonic() < end and not pred():
        time.sleep(0.01)
    return pred()


def test_shadow_checks_run_only_in_the_slack_a_tick_offers(models, tmp_path):
    swapper, obs, _ = _swapper(models, tmp_path)
    swapper.IDLE_S = 1e9  # a ticking loop: the background thread must never probe by itself
    offered_when_logged = []  # the swap tick must not share the GIL with the swapper's own logging
    swapper.log = lambda level, text: offered_when_logged.append(swapper._ready is not None)
    try:
        swapper.request(Request.update(models["store"].announcement(models["v2"])))
        assert _wait(lambda: swapper._probe is not None)
        submitted = []
        for _ in range(20):  # slack shorter than a plan: nothing may be submitted
            swapper.offer_slack(obs, 0.0, lambda fn, *a: submitted.append(fn))
        assert submitted == [] and swapper.take_ready() is None
        # With room, each offer runs one shadow plan: 2 warm-up + 5 timed, then the candidate is ready.
        offers = 0
        while swapper._probe is not None and not swapper._probe.done.is_set() and offers < 50:
            swapper.offer_slack(obs, 1.0, lambda fn, *a: fn(*a))
            offers += 1
        assert offers == 7
        assert _wait(lambda: swapper._ready is not None)
        cand = swapper.take_ready()
        assert cand.version == models["v2"] and cand.shadow_plans == 7 and cand.stopped == 0
        assert np.isfinite(cand.p50_s) and cand.p50_s > 0
        assert offered_when_logged == [False]  # logged first, offered after
    finally:
        swapper.stop()


SLOW_RUNG = "planner_mppi-i6-s512-e64-p24-h3.onnx"  # the shipped model's default budget


@pytest.fixture(scope="module")
def slow_models(tmp_path_factory):
    """Two versions of the shipped model, whose default-budget rung plans for tens of ms or more:
    long enough to be stopped in the middle."""
    from tdmpc2_ros.ros.paths import default_model

    store = ModelStore(tmp_path_factory.mktemp("slow") / "store")
    v1, v2 = (store.add(default_model()).version for _ in range(2))
    return {"store": store, "v1": v1, "v2": v2, "rung": SLOW_RUNG}


def test_a_shadow_plan_past_its_slack_is_stopped_before_the_next_live_plan(slow_models, tmp_path):
    """The next tick reclaims the worker: a shadow plan still running when its slack ends is stopped
    (it would otherwise delay the live plan queued behind it), and it counts as a timed plan over
    the slack, not as a sample that never happened."""
    from concurrent.futures import ThreadPoolExecutor

    swapper, obs, _ = _swapper(slow_models, tmp_path)
    swapper.IDLE_S = 1e9  # a ticking loop: shadow plans only in the slack it offers
    worker = ThreadPoolExecutor(1, thread_name_prefix="plan")
    try:
        requested = time.monotonic()
        swapper.request(Request.update(slow_models["store"].announcement(slow_models["v2"])))
        assert _wait(lambda: swapper._probe is not None)
        assert swapper.worked_since(requested) == [LOADING]  # it loaded and hashed the candidate on its own thread
        probe, checks_began = swapper._probe, time.monotonic()
        for _ in range(2):  # the warm-up plans, given all the room they need
            assert swapper.offer_slack(obs, 60.0, worker.submit) == SHADOW_PLAN
            swapper._in_slack[0].result()
        assert probe.plans == 2 and probe.stopped == 0
        # A timed plan offered 5 ms (the running model's 4 ms, with room): the next tick comes and stops it,
        # and knows its plan queued behind a shadow plan.
        swapper.offer_slack(obs, 0.005, worker.submit)
        job = swapper._in_slack[0]
        assert swapper.reclaim_worker() == SHADOW_PLAN
        job.result()
        assert probe.plans == 2 and probe.stopped == 1 and probe.latencies == []
        assert probe.estimate(0.004) == float("inf")  # half or more stopped: no more slack offered to it
        offered = []
        assert swapper.offer_slack(obs, 0.005, lambda fn, *a: offered.append(fn)) == ""
        assert offered == [] and swapper._in_slack is None  # nothing new was handed to the worker
        # A plan that ends within its slack is not stopped: the next tick's reclaim finds it done.
        assert swapper.reclaim_worker() == ""
        probe.latencies.extend([0.001] * 3)  # as if three quick plans had been timed
        assert swapper.offer_slack(obs, 60.0, worker.submit) == ""  # the stop doubled the gap: one tick passes
        assert swapper.offer_slack(obs, 60.0, worker.submit) == SHADOW_PLAN
        job = swapper._in_slack[0]
        job.result()
        assert swapper.reclaim_worker() == ""
        assert probe.stopped == 1 and len(probe.latencies) == 4
        # Shadow plans are the loop's worker's; the hot-swap thread did no work beside them.
        assert swapper.worked_since(checks_began) == []
    finally:
        swapper.stop()
        worker.shutdown()


def _stopped_plan(swapper, obs, slack_s: float):
    """Offer one shadow plan `slack_s` of slack, then reclaim the worker at once, as the next tick does."""
    swapper.offer_slack(obs, slack_s, swapper._test_worker.submit)
    job = swapper._in_slack[0]
    swapper.reclaim_worker()
    job.result()


def _slow_check(slow_models, tmp_path, back_off: bool = False, **kw):
    """A swapper checking v2 of the slow models, whose loop offers slack only when the test does (and,
    unless `back_off`, does not space its shadow plans out after one is stopped)."""
    from concurrent.futures import ThreadPoolExecutor

    swapper, obs, logs = _swapper(slow_models, tmp_path, **kw)
    if not back_off:
        swapper.MAX_GAP = 1
    swapper.IDLE_S = 1e9
    swapper._test_worker = ThreadPoolExecutor(1, thread_name_prefix="plan")
    swapper.request(Request.update(slow_models["store"].announcement(slow_models["v2"])))
    assert _wait(lambda: swapper._probe is not None)
    return swapper, obs, logs, swapper._probe


def test_a_candidate_whose_shadow_plans_are_all_stopped_is_refused(slow_models, tmp_path):
    """Stopped plans are judged as longer than any limit: a check whose plans never end within the
    slack is refused, naming how many were stopped, and the running model keeps acting."""
    swapper, obs, logs, probe = _slow_check(slow_models, tmp_path)
    worker = swapper._test_worker
    try:
        for _ in range(2):
            swapper.offer_slack(obs, 60.0, worker.submit)
            swapper._in_slack[0].result()
        for _ in range(5):  # runs=5 timed plans, each stopped at the end of a too-short slack
            probe.estimate = lambda live: 0.0  # keep offering it slack, as a probe still hopeful would be
            _stopped_plan(swapper, obs, 0.001)
        assert _wait(lambda: swapper.rejected == 1)
        assert probe.stopped == 5 and swapper.take_ready() is None
        assert "5 of 5 shadow plans stopped at the end of their slack" in swapper.last_result, swapper.last_result
        assert logs[-1][0] == "error" and "keeps acting" in logs[-1][1]
    finally:
        swapper.stop()
        worker.shutdown()


def test_shadow_plans_are_spaced_and_spaced_further_while_they_overrun(slow_models, tmp_path):
    """swap_check_spacing: at most one shadow plan every `spacing` ticks; one stopped at the end of its
    slack (a busy CPU) doubles the gap, one that ends within it brings the gap back."""
    swapper, obs, _, probe = _slow_check(slow_models, tmp_path, back_off=True, spacing=2)
    worker = swapper._test_worker
    probe.estimate = lambda live: 0.0  # every slack fits: only the spacing decides

    def tick(slack_s: float, finish: bool) -> str:
        """One tick: reclaim what the last one left (stopping it), then offer the slack."""
        swapper.reclaim_worker()
        kind = swapper.offer_slack(obs, slack_s, worker.submit)
        if kind and finish:
            swapper._in_slack[0].result()
        return kind

    try:
        assert [tick(60.0, finish=True) for _ in range(4)] == [SHADOW_PLAN, "", SHADOW_PLAN, ""]  # one every 2 ticks
        assert tick(0.001, finish=False) == SHADOW_PLAN  # the next tick comes while it still runs: stopped
        assert [tick(60.0, finish=True) for _ in range(5)] == ["", "", "", SHADOW_PLAN, ""]  # then one every 4
        assert tick(60.0, finish=True) == SHADOW_PLAN  # ended within its slack: every 2 again
        assert probe.plans + probe.warmup_stopped + probe.stopped == 5
    finally:
        swapper.stop()
        worker.shutdown()


def test_warm_up_plans_stopped_again_and_again_leave_the_check_to_the_background(slow_models, tmp_path):
    """Slack too short even for a warm-up plan: after three stopped in a row the loop offers it no
    more, and the background thread checks the candidate instead (in CPU time)."""
    swapper, obs, _, probe = _slow_check(slow_models, tmp_path)
    worker = swapper._test_worker
    try:
        for _ in range(3):
            _stopped_plan(swapper, obs, 0.005)
        assert probe.plans == 0 and probe.warmup_stopped == 3 and probe.stopped == 0
        assert probe.estimate(0.004) == float("inf")
        swapper.IDLE_S = 0.0  # the loop has given no room since: the background takes the check up
        assert _wait(lambda: swapper._ready is not None, 120)
        cand = swapper.take_ready()
        assert cand.version == slow_models["v2"] and cand.shadow_plans == 7 and cand.stopped == 0
    finally:
        swapper.stop()
        worker.shutdown()


def test_a_loop_whose_slack_never_holds_a_plan_gets_the_checks_from_the_background(models, tmp_path):
    """A rung that takes most of the period leaves less slack after a tick than a plan takes: the
    candidate is then checked beside the loop (low priority, timed in CPU time), not never; the loop
    is told that work went on beside it."""
    import time

    swapper, obs, _ = _swapper(models, tmp_path)
    swapper.IDLE_S = 0.2
    submitted = []
    try:
        swapper.request(Request.update(models["store"].announcement(models["v2"])))
        assert _wait(lambda: swapper._probe is not None)
        checks_began = time.monotonic()
        end = time.monotonic() + 30
        while swapper._ready is None and time.monotonic() < end:
            swapper.offer_slack(obs, 1e-6, lambda fn, *a: submitted.append(fn))  # ticking, but no room
            time.sleep(0.02)
        cand = swapper.take_ready()
        assert submitted == [] and cand.version == models["v2"] and cand.shadow_plans == 7
        assert swapper.worked_since(checks_began) == [BACKGROUND_PLANS]
    finally:
        swapper.stop()


def test_background_plans_beside_a_ticking_loop_start_after_a_tick_has_published(models, tmp_path, monkeypatch):
    """The slack never holds a plan, but the loop ticks: each plan the background thread runs waits
    for a tick to publish (offer_slack), instead of starting at any moment beside the next live plan.
    Ticks come every 150 ms here, much slower than the plans: started on its own clock, the check
    would run several plans between two ticks."""
    import threading

    from tdmpc2_ros.runtime.candidate import ShadowProbe

    events, lock, real_step = [], threading.Lock(), ShadowProbe.step

    def step(self, obs, cpu_time=False, stop=None):
        with lock:
            events.append("plan")
        return real_step(self, obs, cpu_time, stop)

    monkeypatch.setattr(ShadowProbe, "step", step)
    swapper, obs, _ = _swapper(models, tmp_path)
    swapper.IDLE_S = 0.3  # longer than the gap between ticks: the loop counts as ticking
    try:
        swapper.request(Request.update(models["store"].announcement(models["v2"])))
        assert _wait(lambda: swapper._probe is not None)
        end = time.monotonic() + 60
        while swapper._ready is None and time.monotonic() < end:
            with lock:
                events.append("tick")
            assert swapper.offer_slack(obs, 1e-6, lambda fn, *a: pytest.fail("no slack job fits 1 us")) == ""
            time.sleep(0.15)
        cand = swapper.take_ready()
        assert cand is not None and cand.version == models["v2"] and cand.shadow_plans == 7
        plans = [i for i, e in enumerate(events) if e == "plan"]
        assert len(plans) == 7 and events[0] == "tick"
        # Every plan came after a tick that no other plan had answered.
        assert all("tick" in events[a + 1:b] for a, b in zip([-1] + plans, plans)), events
    finally:
        swapper.stop()


def test_an_idle_loop_lets_the_background_check_and_nan_weights_are_refused(models, tmp_path):
    swapper, _, logs = _swapper(models, tmp_path)
    try:
        swapper.request(Request.update(models["store"].announcement(models["v2"])))  # nobody offers slack
        assert _wait(lambda: swapper._ready is not None)
        assert swapper.take_ready().shadow_plans == 7
        swapper.request(Request.update(models["nan"]))
        assert _wait(lambda: swapper.rejected == 1)
        assert swapper.take_ready() is None
        assert "non-finite output" in swapper.last_result
        assert logs[-1][0] == "error" and "keeps acting" in logs[-1][1]
    finally:
        swapper.stop()


def test_inline_versions_are_pruned_from_the_cache_but_never_one_in_use(models, tmp_path):
    """Each inline announcement lands a whole ladder in the cache; the swapper keeps the cache_keep
    newest and whatever the loop says is in use (running, or kept for rollback)."""
    in_use = set()
    swapper, _, logs = _swapper(models, tmp_path, cache_keep=1, in_use=lambda: in_use)
    store, cache = models["store"], tmp_path / "cache"
    try:
        swapper.request(Request.update(store.announcement(models["v1"], inline=True)))
        assert _wait(lambda: swapper._ready is not None)
        in_use.add(swapper.take_ready().source)  # installed: the loop runs it
        assert sorted(p.name for p in cache.iterdir()) == [models["v1"]]
        swapper.request(Request.update(store.announcement(models["v2"], inline=True)))
        assert _wait(lambda: swapper._ready is not None)
        assert sorted(p.name for p in cache.iterdir()) == sorted([models["v1"], models["v2"]])  # v1 in use
        in_use.clear()  # v1 neither runs nor is kept for rollback any more
        nan_version = models["nan"]["version"]
        swapper.request(Request.update(store.announcement(nan_version, inline=True)))
        assert _wait(lambda: swapper.rejected == 1)
        # The newest is kept (even one refused later), and v2, checked and waiting for the loop to take it.
        assert sorted(p.name for p in cache.iterdir()) == sorted([models["v2"], nan_version])
        assert any("removed" in text and models["v1"] in text for _, text in logs)
        assert swapper.take_ready().version == models["v2"]
    finally:
        swapper.stop()


def test_prune_cache_keeps_the_newest_and_those_in_use(tmp_path):
    import os
    import time

    from tdmpc2_ros.runtime.model_store import prune_cache

    cache = tmp_path / "cache"
    now = time.time()
    for i, name in enumerate(["v0001-a", "v0002-b", "v0003-c", "v0004-d"]):
        (cache / name).mkdir(parents=True)
        (cache / name / "ladder.json").write_text("{}")
        os.utime(cache / name, (now - 100 + i, now - 100 + i))
    (cache / ".v0005-e.1234.tmp").mkdir()
    os.utime(cache / ".v0005-e.1234.tmp", (now - 7200, now - 7200))  # left by a crash two hours ago
    (cache / ".v0006-f.1234.tmp").mkdir()  # being written now
    assert prune_cache(cache, 0, []) == [] and len(list(cache.iterdir())) == 6  # 0: keep everything
    removed = prune_cache(cache, 2, [str(cache / "v0001-a"), ""])
    assert sorted(p.name for p in removed) == [".v0005-e.1234.tmp", "v0002-b"]
    assert sorted(p.name for p in cache.iterdir()) == [".v0006-f.1234.tmp", "v0001-a", "v0003-c", "v0004-d"]
    assert prune_cache(tmp_path / "absent", 2) == []


def test_a_rung_request_names_a_budget_the_folder_lacks_and_is_refused(models, tmp_path):
    swapper, _, logs = _swapper(models, tmp_path)
    try:
        folder = str(models["store"].path(models["v1"]))
        swapper.request(Request.budget("mppi-i1-s8-e2-p2-h3", folder, models["v1"]))
        assert _wait(lambda: swapper.rung_failures == 1)
        assert swapper.take_ready() is None and swapper.rejected == 0  # no model update was refused
        assert "no rung with the requested budget mppi-i1-s8-e2-p2-h3" in swapper.last_result
        assert logs[-1][0] == "error" and "keeps acting" in logs[-1][1]
        # Its own budget is a valid rung request: warmed up on the swapper's thread, offered as a rung change.
        swapper.request(Request.budget(BUDGET.label(), folder, models["v1"]))
        assert _wait(lambda: swapper._ready is not None)
        cand = swapper.take_ready()
        assert cand.rung_change and cand.version == models["v1"] and cand.planner.contract.budget == BUDGET
        # Warmed with as few plans as a fresh session needs: a step down is asked for by a late loop.
        assert cand.shadow_plans == HotSwapper.RUNG_WARM_PLANS == 2 and "over 2 warm-up plans" in swapper.last_result
        # Its cost beside the loop, all on the hot-swap thread here: loading plus those plans.
        assert swapper.last_cpu_s > 0 and f"{swapper.last_cpu_s * 1e3:.2f} ms of the hot-swap thread's CPU" in swapper.last_result
    finally:
        swapper.stop()


def test_a_budget_change_of_a_version_about_to_be_replaced_is_dropped(models, tmp_path):
    """A step down asked for the running v1 while a checked v2 waits for the next tick: v2 must not be
    superseded by it (the update would be lost), and no warm-up plans should take CPU for it."""
    swapper, _, logs = _swapper(models, tmp_path)
    try:
        swapper.request(Request.update(models["store"].announcement(models["v2"])))  # checked from the background
        assert _wait(lambda: swapper._ready is not None)
        folder = str(models["store"].path(models["v1"]))
        swapper.request(Request.budget(BUDGET.label(), folder, models["v1"]))
        assert _wait(lambda: swapper.rung_failures == 1)
        assert "dropped" in swapper.last_result and models["v2"] in swapper.last_result, swapper.last_result
        assert logs[-1][0] == "info"
        cand = swapper.take_ready()
        assert cand.version == models["v2"] and not cand.rung_change
        # With nothing waiting, the same request is a budget change again.
        swapper.request(Request.budget(BUDGET.label(), folder, models["v1"]))
        assert _wait(lambda: swapper._ready is not None)
        assert swapper.take_ready().rung_change
    finally:
        swapper.stop()


def test_a_budget_change_of_a_version_no_longer_running_is_dropped_before_warm_up(models, tmp_path, monkeypatch):
    """A step down asked for v1 after the loop installed v2 (the request was queued behind v2's
    check): it is dropped without loading or warming up v1's rung, and says why."""
    from tdmpc2_ros.runtime import hot_swap

    running = {"version": models["v1"]}
    swapper, _, logs = _swapper(models, tmp_path, running_version=lambda: running["version"])
    loads = []
    real_load = hot_swap.load_matching
    monkeypatch.setattr(hot_swap, "load_matching", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    folder = str(models["store"].path(models["v1"]))
    try:
        running["version"] = models["v2"]
        swapper.request(Request.budget(BUDGET.label(), folder, models["v1"]))
        assert _wait(lambda: swapper.rung_failures == 1)
        assert f"{models['v2']} has replaced {models['v1']}" in swapper.last_result, swapper.last_result
        assert swapper.take_ready() is None and not loads and logs[-1][0] == "info"
        # The same request while v1 runs is a budget change.
        running["version"] = models["v1"]
        swapper.request(Request.budget(BUDGET.label(), folder, models["v1"]))
        assert _wait(lambda: swapper._ready is not None)
        assert swapper.take_ready().rung_change and loads
    finally:
        swapper.stop()


def test_a_step_up_is_shadow_checked_against_the_limit_itself(models, tmp_path):
    swapper, _, logs = _swapper(models, tmp_path)
    folder = str(models["store"].path(models["v1"]))
    up = Request.budget(BUDGET.label(), folder, models["v1"], up=True, expected_s=0.004)
    try:
        swapper.request(up)  # nobody offers slack: the background runs the shadow plans
        assert _wait(lambda: swapper._ready is not None)
        cand = swapper.take_ready()
        assert cand.rung_change and cand.step_up and cand.shadow_plans == 7 and "shadow plans" in swapper.last_result
        # Over the limit (the running, smaller rung is no yardstick): refused as information, not an error.
        swapper.limit_s = 1e-9
        swapper.request(up)
        assert _wait(lambda: swapper.rung_failures == 1)
        assert swapper.take_ready() is None and swapper.rejected == 0
        assert "exceeds the 0.00 ms limit" in swapper.last_result
        assert logs[-1][0] == "info" and "staying at the running budget" in logs[-1][1]
    finally:
        swapper.stop()


@pytest.fixture(scope="module")
def two_rungs(tmp_path_factory):
    from ros_harness import small_ladder

    return small_ladder(tmp_path_factory)


def _standby_swapper(folder, tmp_path, monkeypatch, **kw):
    """A swapper running the larger rung of a two-rung ladder (`loop["planner"]`, which a test may
    change as the loop would); `loads` lists every rung it loads."""
    from tdmpc2_ros.runtime import hot_swap
    from tdmpc2_ros.runtime.ladder import read_ladder
    from tdmpc2_ros.runtime.onnx_planner import OnnxPlanner

    rungs = read_ladder(folder)
    loop = {"planner": OnnxPlanner(rungs[0].path, threads=1)}
    obs = np.full(loop["planner"].obs_dim, 0.1, np.float32)
    logs: list[tuple[str, str]] = []
    loads = []
    real_load = hot_swap.load_matching
    monkeypatch.setattr(hot_swap, "load_matching", lambda *a, **k: loads.append(k.get("budget_label")) or real_load(*a, **k))
    swapper = HotSwapper(lambda: (loop["planner"], obs), limit_s=10.0, warmup=2, runs=5, threads=1, seed=0,
                         cache_dir=tmp_path / "cache", log=lambda level, text: logs.append((level, text)),
                         live_p50=lambda: 0.004, **kw)
    swapper.loop = loop
    swapper.STANDBY_IDLE_S = 0.2  # nobody offers slack here: its warm-up plans run in the background soon
    return swapper, rungs, loads, logs


def test_the_standby_is_the_next_smaller_rung_loaded_before_a_step_down(two_rungs, tmp_path, monkeypatch):
    """keep_standby brings up the next smaller rung (loaded, 2 warm-up plans); a step down then takes
    it with nothing loaded, from the loop (standby.take) or through a rung request. A step down is
    no longer where a rung is loaded."""
    folder = str(two_rungs)
    swapper, rungs, loads, logs = _standby_swapper(folder, tmp_path, monkeypatch)
    big, small = rungs[0].budget.label(), rungs[1].budget.label()
    want = Request.standby(big, folder, "v1")
    try:
        swapper.keep_standby(want)
        assert _wait(lambda: swapper.standby.label() == small), swapper.standby.result
        assert loads == [small] and swapper.standby.cpu_s > 0
        assert f"standby {small} of v1 ready (2 warm-up plans" in swapper.standby.result and logs[-1][0] == "info"
        # Held for the loop only: not offered as a swap, and not a rung request's failure.
        assert swapper.take_ready() is None and swapper.rung_failures == 0 and swapper.standby.failures == 0
        # Only for the running version, source and budget it stands below.
        assert swapper.standby.take("v2", folder, below=big) is None
        assert swapper.standby.take("v1", folder, below=small) is None
        held = swapper.standby.take("v1", folder, below=big)
        assert held.planner.contract.budget == rungs[1].budget and held.rung_change and not held.step_up
        assert held.below == big and held.shadow_plans == HotSwapper.RUNG_WARM_PLANS and swapper.standby.label() == ""
        assert np.isfinite(held.planner.plan(np.zeros(held.planner.obs_dim, np.float32)).action).all()
        # Asked for again, with a loop that ticks: its warm-up plans wait for the slack after a tick ...
        swapper.STANDBY_IDLE_S = 1e9
        swapper.keep_standby(want)
        assert _wait(lambda: swapper._probe is not None and len(loads) == 2)  # loaded
        obs = np.full(held.planner.obs_dim, 0.1, np.float32)
        assert swapper.offer_slack(obs, 1.0, lambda fn, *a: fn(*a)) == SHADOW_PLAN  # the first, in the slack
        time.sleep(0.3)
        assert swapper.standby.label() == "" and swapper._probe.plans == 1  # none beside the loop meanwhile
        # ... until a step down's own request waits (the loop found it not ready): the last plan runs on
        # this thread at once, and the request takes the standby, with no load of its own.
        swapper.request(Request.budget(small, folder, "v1"))
        assert _wait(lambda: swapper._ready is not None)
        cand = swapper.take_ready()
        assert cand.below == big and loads == [small, small], loads  # the standby's load, not the step down's
        assert cand.shadow_plans == 2 and swapper.standby.label() == ""
        assert "from the standby (loaded and warmed earlier over 2 plans" in swapper.last_result, swapper.last_result
    finally:
        swapper.stop()


def test_a_standby_that_no_longer_fits_is_retired_and_a_step_up_leaves_one_warm(two_rungs, tmp_path, monkeypatch):
    folder = str(two_rungs)
    swapper, rungs, loads, _ = _standby_swapper(folder, tmp_path, monkeypatch)
    big, small = rungs[0].budget.label(), rungs[1].budget.label()
    try:
        swapper.keep_standby(Request.standby(big, folder, "v1"))
        assert _wait(lambda: swapper.standby.label() == small)
        held = swapper.standby.held().planner
        # A new version runs: the old version's standby is retired (freed in a later slack) at once,
        # and the new version's is brought up.
        swapper.keep_standby(Request.standby(big, folder, "v2"))
        assert len(swapper.retired) == 1 and swapper.retired._held[0] is held
        assert _wait(lambda: swapper.standby.label() == small and swapper.standby.held().version == "v2")
        assert len(loads) == 2
        # The same wish again is no new load.
        swapper.keep_standby(Request.standby(big, folder, "v2"))
        time.sleep(0.3)
        assert len(loads) == 2 and swapper.standby.held().version == "v2"
        # A step up to the larger rung leaves the smaller one running before, warm: the standby as it is.
        warm = held
        swapper.keep_standby(Request.standby(big, folder, "v3"), warm=warm)
        assert swapper.standby.held().planner is warm and swapper.standby.held().version == "v3" and len(loads) == 2
        assert len(swapper.retired) == 2  # v2's standby
        # The smallest rung has none below it: nothing is loaded, and the held one is retired.
        swapper.keep_standby(Request.standby(small, folder, "v3"))
        assert _wait(lambda: "has no rung smaller than" in swapper.standby.result), swapper.standby.result
        assert swapper.standby.label() == "" and len(loads) == 2 and len(swapper.retired) == 3
        swapper.keep_standby(None)  # standby off: nothing held, nothing asked for
        assert swapper.standby.label() == "" and swapper.requests.empty()
    finally:
        swapper.stop()


def test_an_update_checked_at_a_budget_the_loop_left_meanwhile_is_checked_again(two_rungs, tmp_path, monkeypatch):
    """The loop steps down while a new version's shadow plans run: installed as checked, the version
    would bring back the budget that just overran. It is checked again at the loop's new budget."""
    from tdmpc2_ros.runtime.onnx_planner import OnnxPlanner

    folder = str(two_rungs)
    swapper, rungs, loads, logs = _standby_swapper(folder, tmp_path, monkeypatch)
    swapper.IDLE_S = 1e9  # a ticking loop: shadow plans only in the slack it offers
    obs = np.full(OBS_DIM, 0.1, np.float32)
    try:
        swapper.request(Request.model_path(folder, "v2"))
        assert _wait(lambda: swapper._probe is not None) and loads == [None]  # at the running budget
        swapper.offer_slack(obs, 1.0, lambda fn, *a: fn(*a))
        swapper.loop["planner"] = OnnxPlanner(rungs[1].path, threads=1)  # the loop stepped down meanwhile
        while swapper._ready is None:  # the loop's slack after each tick, until the check is done
            swapper.offer_slack(obs, 1.0, lambda fn, *a: fn(*a))
            time.sleep(0.01)
        cand = swapper.take_ready()
        assert cand.version == "v2" and not cand.rung_change and cand.planner.contract.budget == rungs[1].budget
        assert loads == [None, None] and swapper.retired.freed + len(swapper.retired) == 1  # the first, retired (and freed in a slack)
        assert any(f"was checked at {rungs[0].budget.label()}; the loop stepped to {rungs[1].budget.label()}" in text
                   for _, text in logs)
    finally:
        swapper.stop()


def test_a_load_waits_for_the_loop_to_show_room_and_a_step_down_goes_first(two_rungs, tmp_path, monkeypatch):
    """The room gate: a new version and a standby are loaded only once the loop has room (room());
    meanwhile a step down (the loop waits for it) is handled at once, and a newer version replaces
    the waiting one. Each waited load is counted, and the standby waits too."""
    folder = str(two_rungs)
    room = {"now": False}
    swapper, rungs, loads, logs = _standby_swapper(folder, tmp_path, monkeypatch, room=lambda: room["now"],
                                                   room_wait_s=60.0)
    big, small = rungs[0].budget.label(), rungs[1].budget.label()
    try:
        swapper.request(Request.model_path(folder, "v2"))
        time.sleep(0.3)
        assert loads == [] and swapper._ready is None and swapper.gate.loads_waited == 1  # no room: nothing loaded
        # A step down does not wait: it is loaded and offered while the update still waits.
        swapper.request(Request.budget(small, folder, "v1"))
        assert _wait(lambda: swapper._ready is not None)
        assert swapper.take_ready().planner.contract.budget == rungs[1].budget and loads == [small]
        # A newer version replaces the waiting one (the newest of a burst wins), on the same clock.
        swapper.request(Request.model_path(folder, "v3"))
        time.sleep(0.3)
        assert loads == [small] and swapper.gate.loads_waited == 1
        room["now"] = True
        assert _wait(lambda: swapper._ready is not None)
        cand = swapper.take_ready()
        assert cand.version == "v3" and loads == [small, None] and swapper.gate.loads_without_room == 0
        assert swapper.gate.last_wait_s >= 0.6 and swapper.requests.empty()
        # The standby waits for room as well, and is brought up once the loop shows it.
        room["now"] = False
        swapper.keep_standby(Request.standby(big, folder, "v3"))
        time.sleep(0.3)
        assert swapper.standby.label() == "" and len(loads) == 2 and swapper.gate.loads_waited == 2
        room["now"] = True
        assert _wait(lambda: swapper.standby.label() == small), swapper.standby.result
        assert loads == [small, None, small]
    finally:
        swapper.stop()


def test_a_load_waits_for_room_at_most_room_wait_s_and_a_stale_standby_is_never_loaded(two_rungs, tmp_path, monkeypatch):
    folder = str(two_rungs)
    swapper, rungs, loads, logs = _standby_swapper(folder, tmp_path, monkeypatch, room=lambda: False,
                                                   room_wait_s=0.5)
    big = rungs[0].budget.label()
    try:
        # A standby the loop stops wanting while it waits for room is not loaded.
        swapper.gate.wait_s = 60.0
        swapper.keep_standby(Request.standby(big, folder, "v1"))
        time.sleep(0.2)
        swapper.keep_standby(None)
        time.sleep(0.3)
        assert loads == [] and swapper.standby.label() == ""
        # A loop that never shows room gets the load after room_wait_s, counted and logged.
        swapper.gate.wait_s = 0.5
        t0 = time.monotonic()
        swapper.request(Request.model_path(folder, "v2"))
        assert _wait(lambda: swapper._ready is not None)
        assert time.monotonic() - t0 >= 0.5 and swapper.take_ready().version == "v2"
        assert swapper.gate.loads_without_room == 1 and loads == [None] and 0.5 <= swapper.gate.last_wait_s < 5
        assert any("no room for a load for 0.5 s" in text and "loading beside it anyway" in text for _, text in logs)
    finally:
        swapper.stop()


def test_a_standby_that_cannot_be_brought_up_is_no_fault(two_rungs, tmp_path, monkeypatch):
    """A broken smaller rung: no standby, said so, and counted apart from the loop's rung requests
    (a step down then loads the rung as before, and is refused there if it is broken)."""
    folder = tmp_path / "broken"
    shutil.copytree(two_rungs, folder)
    from tdmpc2_ros.runtime.ladder import read_ladder

    small = read_ladder(folder)[1]
    Path(small.path).write_bytes(b"not an onnx graph")
    swapper, rungs, loads, logs = _standby_swapper(str(folder), tmp_path, monkeypatch)
    try:
        swapper.keep_standby(Request.standby(rungs[0].budget.label(), str(folder), "v1"))
        assert _wait(lambda: swapper.standby.failures == 1), swapper.standby.result
        assert f"no standby {small.budget.label()} of v1" in swapper.standby.result
        assert "a step down will load it then" in swapper.standby.result and logs[-1][0] == "info"
        assert swapper.standby.label() == "" and swapper.rung_failures == 0 and swapper.rejected == 0
    finally:
        swapper.stop()


def test_an_overrun_ends_a_step_up_check_at_once(models, tmp_path):
    swapper, obs, _ = _swapper(models, tmp_path)
    swapper.IDLE_S = 1e9  # a ticking loop: shadow plans only when it offers slack
    folder = str(models["store"].path(models["v1"]))
    try:
        swapper.request(Request.budget(BUDGET.label(), folder, models["v1"], up=True, expected_s=0.004))
        assert _wait(lambda: swapper._probe is not None)
        swapper.offer_slack(obs, 1.0, lambda fn, *a: fn(*a))  # one shadow plan, then the loop overruns
        swapper.abandon_step_up("overran meanwhile")
        assert _wait(lambda: swapper.rung_failures == 1)
        assert "overran meanwhile" in swapper.last_result and swapper.take_ready() is None
    finally:
        swapper.stop()


def test_a_retired_model_is_freed_in_the_slack_after_a_tick(models, tmp_path):
    import threading
    import weakref
    from concurrent.futures import ThreadPoolExecutor

    from tdmpc2_ros.runtime.onnx_planner import OnnxPlanner

    swapper, obs, _ = _swapper(models, tmp_path)
    worker = ThreadPoolExecutor(1, thread_name_prefix="plan")
    freed_on = []
    try:
        old = OnnxPlanner(next(models["store"].path(models["v2"]).glob("*.onnx")), threads=1)
        weakref.finalize(old, lambda: freed_on.append(threading.current_thread().name))
        swapper.retire(old)
        del old
        assert swapper.wants_slack()
        assert swapper.offer_slack(obs, 0.001, worker.submit) == ""  # too little room: it waits
        worker.submit(lambda: None).result()
        assert freed_on == []
        gate = threading.Event()
        worker.submit(gate.wait)  # the worker busy past the free's start: the next tick finds it running
        assert swapper.offer_slack(obs, 0.05, worker.submit) == FREE
        assert swapper.reclaim_worker() == FREE and swapper._in_slack is None
        gate.set()
        worker.submit(lambda: None).result()
        assert len(freed_on) == 1 and freed_on[0].startswith("plan")  # on the control loop's worker
        assert not swapper.wants_slack() and swapper.retired.freed == 1 and len(swapper.retired) == 0
        # Frees are timed, and the next one needs room for what they take on this machine.
        assert len(swapper.retired._times) == 1 and swapper.retired._times[0] > 0
        swapper.retired._times.clear()
        swapper.retired._times.append(0.04)  # as if a free had taken 40 ms here
        assert swapper.retired.estimate() == pytest.approx(0.048)
        swapper.retire(OnnxPlanner(next(models["store"].path(models["v2"]).glob("*.onnx")), threads=1))
        swapper.offer_slack(obs, 0.045, worker.submit)  # room for the 5 ms default, not for 48 ms
        worker.submit(lambda: None).result()
        assert swapper.wants_slack() and len(swapper.retired) == 1 and swapper.retired.freed == 1
        swapper.offer_slack(obs, 0.05, worker.submit)
        worker.submit(lambda: None).result()
        assert not swapper.wants_slack() and len(swapper.retired._times) == 2
    finally:
        swapper.stop()
        worker.shutdown()


def test_one_shared_thread_pool_however_many_sessions(models):
    """A swap candidate beside the running model must not bring its own spinning threads."""
    script = f"""
import os, numpy as np
from tdmpc2_ros.runtime.onnx_planner import OnnxPlanner, share_thread_pool, session_options
assert share_thread_pool(2)
assert session_options(2).use_per_session_threads is False
path = {str(next(models["store"].path(models["v1"]).glob("*.onnx")))!r}
obs = np.zeros({OBS_DIM}, np.float32)
first = OnnxPlanner(path)
first.plan(obs)
threads = len(os.listdir("/proc/self/task"))
more = [OnnxPlanner(path) for _ in range(3)]
for p in more:
    p.plan(obs)
print(threads, len(os.listdir("/proc/self/task")))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    before, after = map(int, out.stdout.split()[-2:])
    assert after == before


def test_background_work_lowers_every_thread_of_its_process():
    """The trainer's niceness must reach the threads torch, ONNX Runtime and DDS already started."""
    script = (
        "import os, threading, time\n"
        "from tdmpc2_ros.runtime.priority import lower_process_priority, lower_thread_priority\n"
        "stop = threading.Event()\n"
        "worker = threading.Thread(target=stop.wait); worker.start()\n"
        "time.sleep(0.1)\n"
        "nice = lambda tid: os.getpriority(os.PRIO_PROCESS, tid)\n"
        "tids = [int(t) for t in os.listdir('/proc/self/task')]\n"
        "before = {t: nice(t) for t in tids}\n"
        "assert lower_process_priority(5)\n"
        "assert all(nice(t) == min(19, before[t] + 5) for t in tids), 'every thread'\n"
        "late = threading.Thread(target=lambda: print('late', nice(threading.get_native_id())))\n"
        "late.start(); late.join()\n"
        "assert not lower_process_priority(0) and not lower_thread_priority(0)\n"
        "stop.set(); worker.join()\n"
        "print('main', nice(threading.get_native_id()))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert f"late {min(19, base + 5)}" in out.stdout and f"main {min(19, base + 5)}" in out.stdout
