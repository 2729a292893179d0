"""`tdmpc2-ros bench-loop`: the learning loop's speed bars, as JSON and a readable table.

- Ingest: transition records written to an MCAP bag by the recorder's writer, read back into the
  replay buffer (bag -> episodes -> ReplayBuffer.add_episode), and a robot's own topics (JointState,
  Imu, JointTrajectory commands, reward, episode) read through the planner's observation sources
  and aligned by timestamp (``bench_ingest_raw``). Transitions per second.
- Swap cost: sim (real time, 50 Hz) and planner started through the bringup, then a sequence of
  model versions announced on /tdmpc2/model_update. From the planner's /diagnostics: the latency of
  each tick in which a swap happened against the median tick of that moment, and the deadlines missed while
  swapping (window_s from the announcement, or to settle_s after the swap where that is later;
  until session 14 always the latter) beside those missed in a quiet window of the same length
  after each swap window, which is what this machine misses anyway in the same minutes. The
  versions hold the same ladder (only the mechanism is measured; a version is a version to the
  planner whatever its weights).
- Misses next to swap work: the planner names the swap work next to each miss (the swap tick, a
  shadow plan or free on the slack thread just before, the hot-swap thread's own work since the tick
  began) and counts the ticks that had any. Their miss rate against that of the ticks with none is the
  direct cost of a swap; the swap windows against the quiet ones add any indirect cost. Each comes
  with the one-sided p-value of a binomial test (`excess_p`): how likely so many of the misses fall
  on the swap side by chance if it missed no more often than the other. The test takes misses as
  independent; a host's stalls come in bursts, and one that lands in swap windows reads as a small p.
- Queueing: the longest a live plan waited for the plan thread to start it, per /diagnostics report,
  while swapping and with no swap. Until session 13 a swap's work in the slack (shadow plans, frees)
  ran on the plan thread, and a live plan could queue behind what was left of it; it now has a
  thread of its own, and what is left is waking the plan thread (on the busy 2-core AMD machine,
  2-14 ms with no swap as well).
- The control for the swap ticks: over the no-swap phase, the newest tick's latency is read from
  each /diagnostics report (about one ordinary tick a second), against the median tick at the time.
  If ordinary ticks land more than 1 ms over the median as often as swap ticks do, the spread is
  the machine's, not the swap's.
- `planner_args` (e.g. plan_thread_priority:=50 plan_cpu_affinity:=[1]) go to the planner's bringup.
- `busy` (0-1): that share of one core kept busy by another process meanwhile (BUSY_LOOP), a stand-in
  for the other software on a robot's computer; the swap's cost shows more clearly on a busy machine.
- Host steal: on a virtual machine, the share of CPU time its cores were ready to run but the
  hypervisor ran something else (/proc/stat), in the swap windows and the quiet ones, so that a run
  in an hour when the host was busy says so itself.
- Step-down cost (`stepdown`, no ROS): the CPU seconds the hot-swap thread spends bringing up the
  next smaller rung of the running version (loading its graph and its warm-up plans), step by step
  down the ladder, with the warm-up plans the planner runs now (HotSwapper.RUNG_WARM_PLANS) against
  the 20 it ran until session 16. A step down is asked for by a loop that already overruns, so this
  CPU is taken from a late loop. Since session 18 the planner holds the next smaller rung as a
  standby (HotSwapper.keep_standby), brought up while all is well: the `standby` arm measures that
  CPU (on the hot-swap thread, before the step down) and what the step down itself then costs (the
  loop thread's CPU to take the standby; nothing runs on the hot-swap thread for it).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tdmpc2_ros.benchmark.core import write_results
from tdmpc2_ros.benchmark.machine import describe as describe_machine, machine
from tdmpc2_ros.runtime.host_steal import host_cpu_jiffies, steal_pct
from tdmpc2_ros.runtime.swap_cost import SWAP_WORK


def bench_ingest(transitions: int = 50_000, episode_length: int = 500, obs_dim: int = 5, storage: str = "mcap",
                 compression: str = "auto") -> dict:
    from tdmpc2_ros.bags import BagWriter, episodes_from_bag
    from tdmpc2_ros.core.buffer import ReplayBuffer
    from tdmpc2_ros.runtime.transition import Transition

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        with BagWriter(tmp, storage=storage, compression=compression) as writer:
            obs = rng.standard_normal(obs_dim).astype(np.float32)
            for i in range(transitions):
                ep, k = divmod(i, episode_length)
                if k == 0:
                    obs = rng.standard_normal(obs_dim).astype(np.float32)
                next_obs = rng.standard_normal(obs_dim).astype(np.float32)  # each record's obs is the last one's next_obs
                writer.write_transition(Transition(ep, k, obs, rng.uniform(-1, 1, 1).astype(np.float32), float(rng.random()),
                                                   next_obs, False, k == episode_length - 1, "bench"), timestamp_ns=i * 20_000_000)
                obs = next_obs
        buffer = ReplayBuffer(transitions + transitions // episode_length + 10, obs_dim, 1, 3)
        return {"storage": storage, "compression": writer.compression,
                **_timed_ingest(tmp, episodes_from_bag, buffer, transitions)}


def _timed_ingest(directory, episodes_of, buffer, expected: int) -> dict:
    """Every closed bag under `directory` -> episodes_of(bag) -> buffer, timed (the reading and the
    buffer's writes; not the bags' writing). Raises if a transition did not reach the buffer."""
    from tdmpc2_ros.bags import closed_bags

    bags = closed_bags(directory)
    size = sum(f.stat().st_size for b in bags for f in Path(b).iterdir())
    start = time.perf_counter()
    for bag in bags:
        for episode in episodes_of(bag):
            buffer.add_episode(*episode)
    seconds = time.perf_counter() - start
    if len(buffer) != expected:
        raise RuntimeError(f"ingest lost transitions: {len(buffer)} of {expected} reached the buffer")
    return {"transitions": len(buffer), "bag_mb": round(size / 1e6, 2), "seconds": round(seconds, 3),
            "transitions_per_s": round(len(buffer) / seconds)}


RAW_SOURCES = ("joint_state:/joint_states:position:slider", "joint_state:/joint_states:cos(position):hinge",
               "joint_state:/joint_states:sin(position):hinge", "joint_state:/joint_states:velocity:slider",
               "joint_state:/joint_states:velocity:hinge", "imu:/imu:angular_velocity.z", "array:/contacts:force")
RAW_CONTACTS = 2  # values of the 'force' segment of each /contacts message: the last source reads them all
RAW_OBS_DIM = len(RAW_SOURCES) - 1 + RAW_CONTACTS


def bench_ingest_raw(transitions: int = 50_000, episode_length: int = 500, compression: str = "auto") -> dict:
    """A robot's own topics as `ros2 bag record` keeps them beside another controller, at 50 Hz:
    /joint_states (two joints), /imu, a Float64MultiArray of two contact forces (layout 'force'), a
    joint_trajectory_controller's JointTrajectory commands, the reward and the episode, read through
    the planner's observation sources and command format (bag -> aligned episodes ->
    ReplayBuffer.add_episode). Transitions per second."""
    from tdmpc2_ros.bags import BagWriter, encode_float64, encode_float64_multiarray, encode_int64
    from tdmpc2_ros.bags.reader import CommandFormat
    from tdmpc2_ros.bags.writer import typestore
    from tdmpc2_ros.core.buffer import ReplayBuffer
    from tdmpc2_ros.training.offline import RawTopics

    store, rng = typestore(), np.random.default_rng(0)
    T = store.types
    joint_state, imu, trajectory = "sensor_msgs/msg/JointState", "sensor_msgs/msg/Imu", "trajectory_msgs/msg/JointTrajectory"

    def header(t: int):
        return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=t // 10**9, nanosec=t % 10**9),
                                        frame_id="base_link")

    def vector(z: float):
        return T["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=z)

    episodes, dt, t = max(1, transitions // episode_length), 20_000_000, 10**18
    with tempfile.TemporaryDirectory() as tmp:
        with BagWriter(tmp, compression=compression) as writer:
            for episode in range(episodes):
                writer.write("/episode", "std_msgs/msg/Int64", encode_int64(episode), t - 100_000)
                for k in range(episode_length + 1):
                    writer.write("/imu", imu, store.serialize_cdr(T[imu](
                        header=header(t - 10**6), orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0),
                        orientation_covariance=np.zeros(9), angular_velocity=vector(float(rng.normal())),
                        angular_velocity_covariance=np.zeros(9), linear_acceleration=vector(9.81),
                        linear_acceleration_covariance=np.zeros(9)), imu), t - 10**6)
                    writer.write("/joint_states", joint_state, store.serialize_cdr(T[joint_state](
                        header=header(t), name=["slider", "hinge"], position=rng.normal(size=2), velocity=rng.normal(size=2),
                        effort=np.zeros(0)), joint_state), t)
                    writer.write("/contacts", "std_msgs/msg/Float64MultiArray",
                                 encode_float64_multiarray([("force", RAW_CONTACTS)], rng.random(RAW_CONTACTS)),
                                 t - 2 * 10**6)
                    if k < episode_length:
                        point = T["trajectory_msgs/msg/JointTrajectoryPoint"](
                            positions=rng.uniform(-1, 1, 1), velocities=np.zeros(0), accelerations=np.zeros(0),
                            effort=np.zeros(0), time_from_start=T["builtin_interfaces/msg/Duration"](sec=0, nanosec=dt))
                        writer.write("/trajectory", trajectory, store.serialize_cdr(T[trajectory](
                            header=header(t + 3 * 10**6), joint_names=["slider"], points=[point]), trajectory), t + 3 * 10**6)
                        writer.write("/reward", "std_msgs/msg/Float64", encode_float64(float(rng.random())), t + dt - 200_000)
                    t += dt
                t += dt  # the reset
        raw = RawTopics("", "/trajectory", "/reward", "/episode", observation_sources=RAW_SOURCES,
                        command=CommandFormat("joint_trajectory", ("slider",), "position"))
        buffer = ReplayBuffer(episodes * (episode_length + 1) + 10, RAW_OBS_DIM, 1, 3)
        return {"storage": "mcap", "compression": writer.compression,
                "topics": "JointState + Imu + Float64MultiArray + JointTrajectory + reward + episode",
                **_timed_ingest(tmp, lambda bag: raw.read(bag, [-1.0], [1.0]).episodes, buffer, episodes * episode_length)}


def excess_p(missed_a: int, ticks_a: int, missed_b: int, ticks_b: int) -> float | None:
    """P(side a gets >= missed_a of all the misses) if each miss fell on a tick drawn at random from
    both sides (the exact test of equal rates, conditioned on the total); None with no ticks."""
    n, k = missed_a + missed_b, missed_a
    if ticks_a <= 0 or ticks_b <= 0:
        return None
    q = ticks_a / (ticks_a + ticks_b)

    def log_pmf(i: int) -> float:  # in logs: the binomial coefficients of a few thousand misses overflow a float
        return math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(q) + (n - i) * math.log1p(-q)

    return round(min(1.0, sum(math.exp(log_pmf(i)) for i in range(k, n + 1))), 4)


# Work for `busy` x 20 ms of every 20 ms, in its own process (bench_swap's busy).
BUSY_LOOP = """
import sys, time
busy = 0.02 * float(sys.argv[1])
while True:
    t = time.perf_counter()
    while time.perf_counter() - t < busy:
        pass
    time.sleep(0.02 - busy)
"""


def _busy_process(busy: float):
    """A process keeping `busy` of one core busy (None for 0), stopped with the planner."""
    return subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(busy)]) if busy > 0 else None


def bench_swap(model: str, swaps: int = 5, settle_s: float = 4.0, window_s: float = 10.0, quiet_max_s: float = 30.0,
               timeout_s: float = 300.0,
               planner_args: tuple[str, ...] = (), log_path: str | os.PathLike | None = None, busy: float = 0.0) -> dict:
    from std_msgs.msg import String

    from tdmpc2_ros.ros import bringup, qos, topics
    from tdmpc2_ros.ros.diagnostics import PLANNER_STATUS
    from tdmpc2_ros.ros.observer import Observer
    from tdmpc2_ros.runtime.model_store import ModelStore

    bringup.resolve("planner", bringup.parse_overrides(list(planner_args)))  # a typo fails now, not after the timeout
    if not 0.0 <= busy <= 1.0:
        raise ValueError(f"busy must be within 0 and 1 (a share of one core), not {busy}")
    domain = 150 + os.getpid() % 50
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "MUJOCO_GL": "egl"}
    node_log = open(log_path, "w") if log_path else contextlib.nullcontext(subprocess.DEVNULL)  # for a run that fails
    with tempfile.TemporaryDirectory() as tmp, node_log as log:
        store = ModelStore(Path(tmp) / "store")
        versions = [store.add(model).version for _ in range(swaps + 1)]
        cmd = [sys.executable, "-m", "tdmpc2_ros.cli", "bringup", "planner", "mode:=realtime",
               f"model_path:={store.path(versions[0])}", *planner_args]
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        load = _busy_process(busy)
        obs = Observer(domain, "bench_swap")
        control: list[tuple[float, float]] = []  # (tick excess, plan excess) per report, no swap going on
        queued: dict[str, list[float]] = {"baseline": [], "swapping": []}  # longest wait for the worker per report
        sampling = {"phase": ""}  # "baseline" (a quiet window), "swapping", or "" (not sampling)
        counts = {"baseline": [0, 0], "swapping": [0, 0]}  # [ticks, missed] per phase
        steal = {"baseline": [0, 0], "swapping": [0, 0]}  # [steal, all] jiffies per phase

        def counted(phase: str, wait):
            """Runs wait() as `phase`, adding the ticks, misses and host steal of that time to its counts."""
            ticks, missed, cpu = int(diag["ticks"]), int(diag["missed_deadlines"]), host_cpu_jiffies()
            sampling["phase"] = phase
            result = wait()
            counts[phase][0] += int(diag["ticks"]) - ticks
            counts[phase][1] += int(diag["missed_deadlines"]) - missed
            after = host_cpu_jiffies()
            if cpu is not None and after is not None:
                steal[phase] = [total + b - a for total, a, b in zip(steal[phase], cpu, after)]
            return result

        def sample(table):
            if sampling["phase"] == "baseline":
                control.append((float(table["tick_latency_last_ms"]) - float(table["tick_latency_p50_ms"]),
                                float(table["plan_latency_last_ms"]) - float(table["plan_latency_recent_p50_ms"])))
            if sampling["phase"] and "plan_queued_since_report_max_ms" in table:
                queued[sampling["phase"]].append(float(table["plan_queued_since_report_max_ms"]))

        diag = obs.status_table(PLANNER_STATUS, on_update=sample)
        pub = obs.publisher(String, topics.MODEL_UPDATE, qos.LATCHED)
        spin_until = obs.spin_until

        rows, stretched = [], 0  # stretched: swap windows longer than window_s (a swap that came late)
        try:
            if not spin_until(lambda: int(diag.get("ticks", 0)) > 250, timeout_s):
                raise RuntimeError("the planner did not start ticking")
            start = dict(diag)
            for v in versions[1:]:
                before, t0 = int(diag["missed_deadlines"]), time.monotonic()
                pub.publish(String(data=json.dumps(store.announcement(v))))
                if not counted("swapping", lambda: spin_until(lambda: diag.get("model_version") == v, 60)):
                    raise RuntimeError(f"version {v} was not swapped in: {diag.get('last_swap_result')}")
                checked_s, check = time.monotonic() - t0, diag.get("last_swap_result", "")
                # The swap tick against the median tick of that moment, as the planner measured it (a
                # budget step during the settle time starts the planner's tick window again).
                took, excess = float(diag["swap_tick_latency_last_ms"]), float(diag["swap_tick_excess_last_ms"])
                plan_excess, waited = float(diag["swap_plan_excess_last_ms"]), float(diag["swap_plan_waited_last_ms"])
                # The swap window lasts window_s from the announcement, longer only where the swap
                # came later than window_s - settle_s. Were it always swap + settle_s, a burst of the
                # host that stretched the check would stretch its window too, over more of the burst.
                counted("swapping", lambda: spin_until(lambda: False, max(settle_s, t0 + window_s - time.monotonic())))
                stretched += time.monotonic() - t0 > window_s + 0.5
                # Then as long again with no swap: this machine's own misses, in the same minutes.
                missed = int(diag["missed_deadlines"]) - before
                counted("baseline", lambda: spin_until(lambda: False, min(time.monotonic() - t0, quiet_max_s)))
                rows.append({"version": v, "announce_to_swap_s": round(checked_s, 2), "check": check,
                             "missed_during_swap": missed,
                             "tick_p50_ms": round(took - excess, 3), "tick_p99_ms": float(diag["tick_latency_p99_ms"]),
                             "swap_tick_ms": took, "excess_ms": excess, "plan_excess_ms": plan_excess,
                             "around_plan_excess_ms": round(excess - plan_excess, 3), "plan_waited_ms": waited})
            final = dict(diag)
            sampling["phase"] = ""
        finally:
            if load is not None:
                load.kill()
                load.wait()
            proc.send_signal(2)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
            obs.close()
    excess = [r["excess_ms"] for r in rows]
    ordinary = [tick for tick, _ in control]
    split = {  # medians of where the excess lies: in the ONNX call, or around it
        "swap_plan_excess_median_ms": round(float(np.median([r["plan_excess_ms"] for r in rows])), 3),
        "swap_around_plan_excess_median_ms": round(float(np.median([r["around_plan_excess_ms"] for r in rows])), 3),
        "ordinary_plan_excess_median_ms": round(float(np.median([p for _, p in control])), 3) if control else None,
        "ordinary_around_plan_excess_median_ms": round(float(np.median([t - p for t, p in control])), 3) if control else None,
    }
    return {"plan_thread": final.get("plan_thread", "normal"), "busy_cores": busy, "model": str(model), "swaps": int(final["swaps"]), "budget": final["budget"],
            "tick_p50_ms": float(final["tick_latency_p50_ms"]), "tick_p99_ms": float(final["tick_latency_p99_ms"]),
            "swap_tick_excess_median_ms": round(float(np.median(excess)), 3), "swap_tick_excess_max_ms": max(excess),
            "swaps_within_1ms": sum(e <= 1.0 for e in excess),
            "ordinary_ticks_sampled": len(ordinary), "ordinary_ticks_within_1ms": sum(e <= 1.0 for e in ordinary),
            "ordinary_tick_excess_max_ms": round(max(ordinary), 3) if ordinary else None,
            "missed_deadlines_during_swaps": counts["swapping"][1], "swap_phase_ticks": counts["swapping"][0],
            "baseline": {"ticks": counts["baseline"][0], "missed": counts["baseline"][1], "interleaved": True},
            "window_s": window_s, "windows_stretched": stretched,
            # Retired models (older than the 3 kept for rollback) freed in a tick's slack, and those still waiting.
            "models_freed": _int_or_none(final.get("models_freed")),
            "models_waiting_to_free": _int_or_none(final.get("models_waiting_to_free")),
            # Budget step downs (a loop that overran), and those that took the standby (nothing loaded then).
            "budget_steps_down": _int_or_none(final.get("budget_steps_down")),
            "budget_steps_from_standby": _int_or_none(final.get("budget_steps_from_standby")),
            # Loads (new versions, standbys) that waited for the loop to show room, and those that went without it.
            "loads_waited_for_room": _int_or_none(final.get("loads_waited_for_room")),
            "loads_without_room": _int_or_none(final.get("loads_without_room")),
            # Python's garbage collector in the planner: full collections, the longest pause, the most of one plan.
            "gc_full_collections": _int_or_none(final.get("gc_full_collections")),
            "gc_pause_max_ms": _float_or_none(final.get("gc_pause_max_ms")),
            "gc_in_plan_max_ms": _float_or_none(final.get("gc_in_plan_max_ms")),
            "windows_excess_p": excess_p(counts["swapping"][1], counts["swapping"][0], counts["baseline"][1],
                                         counts["baseline"][0]),
            "swap_work": swap_work_counts(start, final),
            "host_steal_pct": {phase: steal_pct(j) for phase, j in steal.items()},
            "missed_deadlines_total": int(final["missed_deadlines"]), "ticks": int(final["ticks"]), **split,
            "plan_queued_max_ms": {phase: round(max(v), 3) if v else None for phase, v in queued.items()},
            "per_swap": rows}


STEPDOWN_WARM_PLANS_BEFORE = 20  # ladder_warmup (10) x 2: a step down's warm-up plans until session 16


def bench_stepdown(model: str, reps: int = 5, warm_plans: tuple[int, ...] = (), threads: int = 1) -> dict:
    """Each adjacent pair of the ladder (larger running, smaller asked for), `reps` times per number
    of warm-up plans, the arms alternated so that a busy minute falls on both: the hot-swap thread's
    CPU for the request (HotSwapper.last_cpu_s) and its wall time."""
    from tdmpc2_ros.runtime.hot_swap import HotSwapper
    from tdmpc2_ros.runtime.swap_request import Request
    from tdmpc2_ros.runtime.ladder import read_ladder
    from tdmpc2_ros.runtime.onnx_planner import OnnxPlanner

    warm_plans = warm_plans or (HotSwapper.RUNG_WARM_PLANS, STEPDOWN_WARM_PLANS_BEFORE)
    rungs = read_ladder(model)
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for big, small in zip(rungs, rungs[1:]):
            running = OnnxPlanner(big.path, threads=threads)
            obs = np.full(running.obs_dim, 0.1, np.float32)
            swapper = HotSwapper(lambda: (running, obs), limit_s=10.0, warmup=10, runs=40, threads=threads, seed=0,
                                 cache_dir=cache, log=lambda level, text: None)
            cpu = {n: [] for n in warm_plans}
            wall = {n: [] for n in warm_plans}
            standby = {"before_cpu_s": [], "at_cpu_s": [], "at_wall_s": []}
            try:
                for _ in range(reps):
                    for n in warm_plans:
                        swapper.RUNG_WARM_PLANS = n  # this instance only
                        t0 = time.perf_counter()
                        swapper.request(Request.budget(small.budget.label(), model, "bench"))
                        while (cand := swapper.take_ready()) is None:
                            if swapper.rung_failures:
                                raise RuntimeError(swapper.last_result)
                            time.sleep(0.002)
                        wall[n].append(time.perf_counter() - t0)
                        cpu[n].append(swapper.last_cpu_s)
                        if cand.shadow_plans != n:  # the arms would not be what the table says
                            raise RuntimeError(f"a step down ran {cand.shadow_plans} warm-up plans, not {n}")
                        del cand  # freed here, not inside the next request's measurement
                    _measure_standby(swapper, model, big.budget.label(), standby)
            finally:
                swapper.stop()
            rows.append({"from": big.budget.label(), "to": small.budget.label(),
                         "by_warm_plans": {str(n): _stepdown_stats(cpu[n], wall[n]) for n in warm_plans},
                         "standby": {"before": _stepdown_stats(standby["before_cpu_s"], []),
                                     "at_step_down": _stepdown_stats(standby["at_cpu_s"], standby["at_wall_s"], digits=3)}})
            print(f"step down {rows[-1]['from']} -> {rows[-1]['to']}: " + ", ".join(
                f"{n} warm-up plans {v['cpu_ms_median']} ms CPU" for n, v in rows[-1]["by_warm_plans"].items())
                + f"; from the standby {rows[-1]['standby']['at_step_down']['cpu_ms_median']} ms CPU (bringing it up "
                  f"before: {rows[-1]['standby']['before']['cpu_ms_median']} ms)", flush=True)
    return {"reps": reps, "threads": threads, "warm_plans": list(warm_plans), "pairs": rows}


def _measure_standby(swapper, model: str, running: str, into: dict):
    """One standby as the planner keeps it: brought up below `running` (no loop offers slack here, so
    its warm-up plans run on the hot-swap thread), then taken as a step down would take it."""
    from tdmpc2_ros.runtime.hot_swap import HotSwapper
    from tdmpc2_ros.runtime.swap_request import Request

    swapper.RUNG_WARM_PLANS = HotSwapper.RUNG_WARM_PLANS
    swapper.STANDBY_IDLE_S = swapper.IDLE_S  # this instance only: no loop will offer slack, so do not wait for one
    swapper.keep_standby(Request.standby(running, model, "bench"))
    while not swapper.standby.label():
        if swapper.standby.failures:
            raise RuntimeError(swapper.standby.result)
        time.sleep(0.002)
    into["before_cpu_s"].append(swapper.standby.cpu_s)
    t0, cpu0 = time.perf_counter(), time.thread_time()
    cand = swapper.standby.take("bench", model, below=running)
    into["at_cpu_s"].append(time.thread_time() - cpu0)
    into["at_wall_s"].append(time.perf_counter() - t0)
    if cand is None or cand.shadow_plans != HotSwapper.RUNG_WARM_PLANS:
        raise RuntimeError(f"the standby below {running} was not taken as brought up: {swapper.standby.result}")
    swapper.keep_standby(None)
    del cand


def _stepdown_stats(cpu_s: list[float], wall_s: list[float], digits: int = 1) -> dict:
    cpu_ms = 1e3 * np.asarray(cpu_s)
    stats = {"cpu_ms_median": round(float(np.median(cpu_ms)), digits), "cpu_ms_min": round(float(cpu_ms.min()), digits),
             "cpu_ms_max": round(float(cpu_ms.max()), digits)}
    if wall_s:
        stats["wall_ms_median"] = round(1e3 * float(np.median(wall_s)), digits)
    return stats


def _stepdown_table(d: dict) -> list[str]:
    arms = d["warm_plans"]
    head = " | ".join(f"{n} warm-up plans: CPU ms median (min-max) / wall ms" for n in arms)
    lines = [f"| step down (hot-swap thread, {d['threads']} ORT thread, {d['reps']} each) | {head} |",
             "|---|" + "---|" * len(arms)]
    for r in d["pairs"]:
        cells = [f"{v['cpu_ms_median']} ({v['cpu_ms_min']}-{v['cpu_ms_max']}) / {v['wall_ms_median']}"
                 for v in (r["by_warm_plans"][str(n)] for n in arms)]
        lines.append(f"| {r['from']} -> {r['to']} | " + " | ".join(cells) + " |")
    if all("standby" in r for r in d["pairs"]):  # since session 18
        lines += ["", "| step down from the standby | at the step down: loop thread CPU ms median (min-max) / wall ms | "
                      "before it, bringing the standby up: hot-swap thread CPU ms median (min-max) |", "|---|---|---|"]
        for r in d["pairs"]:
            at, before = r["standby"]["at_step_down"], r["standby"]["before"]
            lines.append(f"| {r['from']} -> {r['to']} | {at['cpu_ms_median']} ({at['cpu_ms_min']}-{at['cpu_ms_max']}) / "
                         f"{at['wall_ms_median']} | {before['cpu_ms_median']} ({before['cpu_ms_min']}-{before['cpu_ms_max']}) |")
    return lines + [""]


def _int_or_none(value) -> int | None:
    return None if value is None else int(value)


def _float_or_none(value) -> float | None:
    return None if value is None else float(value)


def swap_work_counts(start: dict, final: dict) -> dict:
    """From two /diagnostics reports of the planner: the ticks (and misses) with swap work next to
    them, those with none, and the misses and ticks by kind of work, between the two (a planner from
    before session 14 reports no ticks by kind)."""
    def delta(key: str) -> int:
        return int(final[key]) - int(start[key])

    counts = {**split_by_swap_work(delta("ticks"), delta("missed_deadlines"), delta("ticks_with_swap_work"),
                                   delta("missed_with_swap_work")),
              "by_kind": {w: delta(f"missed_with_swap_work_{w}") for w in SWAP_WORK}}
    if all(f"ticks_with_swap_work_{w}" in final for w in SWAP_WORK):
        counts["ticks_by_kind"] = {w: delta(f"ticks_with_swap_work_{w}") for w in SWAP_WORK}
    if "ticks_over_limit" in final:  # a planner from before session 23 does not count them
        counts["over_limit"] = {**split_by_swap_work(delta("ticks"), delta("ticks_over_limit"), delta("ticks_with_swap_work"),
                                                     delta("over_limit_with_swap_work"), event="over"),
                                "by_kind": {w: delta(f"over_limit_with_swap_work_{w}") for w in SWAP_WORK}}
    return counts


def split_by_swap_work(ticks: int, events: int, ticks_with: int, events_with: int, event: str = "missed") -> dict:
    """A run's ticks and events (misses, or plans over the limit) split into those with swap work
    next to them and the rest, with the p of the first having more by chance (bench-loop and bench-learn)."""
    without = {"ticks": ticks - ticks_with, event: events - events_with}
    return {"with": {"ticks": ticks_with, event: events_with}, "without": without,
            "excess_p": excess_p(events_with, ticks_with, without[event], without["ticks"])}


def format_table(r: dict) -> str:
    lines = [f"Machine: {describe_machine(r['machine'])}", ""] if "machine" in r else []
    if "ingest" in r or "ingest_raw" in r:
        lines += _ingest_table(r.get("ingest"), r.get("ingest_raw"))
    if "swap" in r:
        lines += _swap_table(r["swap"])
    if "stepdown" in r:
        lines += _stepdown_table(r["stepdown"])
    return "\n".join(lines)


def _ingest_table(records: dict | None, raw: dict | None = None) -> list[str]:
    def how(i: dict) -> str:  # results written before compression existed were uncompressed
        return f"({i['storage']}, {i.get('compression', 'none')} compression)"

    rows = [(f"the planner's transition records {how(i)}", i) for i in (records,) if i]
    rows += [(f"a robot's own topics: {i['topics']} {how(i)}", i) for i in (raw,) if i]
    return ["| ingest (bag -> buffer) | transitions | bag MB | seconds | transitions/s (bar >= 20,000) |", "|---|---|---|---|---|",
            *[f"| {what} | {i['transitions']} | {i['bag_mb']} | {i['seconds']} | {i['transitions_per_s']} |" for what, i in rows], ""]


def _swap_table(s: dict) -> list[str]:
    return [
        "| swap cost | plan thread | swaps | budget | median tick ms | p99 tick ms | swap tick excess ms: median / worst "
        "(bar <= 1) | swaps within 1 ms | ordinary ticks within 1 ms (sampled, no swap) | misses while swapping | "
        f"misses with no swap ({'quiet windows between the swaps' if s['baseline'].get('interleaved') else 'same machine'}) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| 50 Hz real time{_busy_label(s.get('busy_cores', 0.0))} | {s.get('plan_thread', 'normal')} | {s['swaps']} | {s['budget']} | {s['tick_p50_ms']} | "
        f"{s['tick_p99_ms']} | {s['swap_tick_excess_median_ms']} / {s['swap_tick_excess_max_ms']} | "
        f"{s['swaps_within_1ms']} of {s['swaps']} | {s.get('ordinary_ticks_within_1ms', '-')} of "
        f"{s.get('ordinary_ticks_sampled', '-')} | {s['missed_deadlines_during_swaps']} of {s['swap_phase_ticks']} ticks | "
        f"{s['baseline']['missed']} of {s['baseline']['ticks']} ticks |", "",
        *_steps_line(s),
        "| excess over the median, median of | in the ONNX call ms | around it ms (hand-off, install, publish) |",
        "|---|---|---|",
        f"| swap ticks | {s.get('swap_plan_excess_median_ms', '-')} | {s.get('swap_around_plan_excess_median_ms', '-')} |",
        f"| ordinary ticks (sampled, no swap) | {s.get('ordinary_plan_excess_median_ms', '-')} | "
        f"{s.get('ordinary_around_plan_excess_median_ms', '-')} |", "",
        "| longest wait of a live plan for the plan thread | while swapping ms | with no swap ms |", "|---|---|---|",
        f"| from its hand-off until the plan thread started it | "
        f"{s.get('plan_queued_max_ms', {}).get('swapping', '-')} | {s.get('plan_queued_max_ms', {}).get('baseline', '-')} |",
        "", *_swap_work_table(s), ""]


def _steps_line(s: dict) -> list[str]:
    if s.get("budget_steps_down") is None:  # results from before session 18
        return []
    room = ("" if s.get("loads_waited_for_room") is None else  # results from before session 19
            f" Loads that waited for the loop to show room: {s['loads_waited_for_room']}, "
            f"{s['loads_without_room']} of them loaded without it after swap_load_wait_s.")
    gc = ("" if s.get("gc_full_collections") is None else  # results from before session 20
          f" Python's garbage collector in the planner once start-up was over: {s['gc_full_collections']} full "
          f"collections, the longest pause {s['gc_pause_max_ms']} ms, at most {s['gc_in_plan_max_ms']} ms of one plan.")
    return [f"Budget steps down: {s['budget_steps_down']}, {s['budget_steps_from_standby']} of them from the standby "
            f"(the next smaller rung, loaded and warmed before the step).{room}{gc}", ""]


def _busy_label(busy: float) -> str:
    return f", {busy:g} core busy elsewhere" if busy else ""


def _rate_row(name: str, ticks: int, events: int, p: float | None) -> str:
    rate = f"{100 * events / ticks:.3f}%" if ticks else "-"
    return f"| {name} | {ticks} | {events} | {rate} | {'-' if p is None else p} |"


def _swap_work_table(s: dict) -> list[str]:
    """Swap ticks over the 1 ms line against ordinary ones; misses beside swap work against the
    others, and swap windows against quiet ones (results written before the planner named the work
    have none of these)."""
    work = s.get("swap_work")
    if work is None:
        return []
    ticks = work.get("ticks_by_kind", {})
    b, kinds = s["baseline"], ", ".join(f"{k} {n}" + (f" of {ticks[k]} ticks" if k in ticks else "")
                                        for k, n in work["by_kind"].items())
    swaps_over, swaps = s["swaps"] - s["swaps_within_1ms"], s["swaps"]
    ordinary_over, sampled = s["ordinary_ticks_sampled"] - s["ordinary_ticks_within_1ms"], s["ordinary_ticks_sampled"]
    return ["| ticks more than 1 ms over the median tick | ticks | over | rate | p (so many over on this side by chance) |",
            "|---|---|---|---|---|",
            _rate_row("swap ticks", swaps, swaps_over, excess_p(swaps_over, swaps, ordinary_over, sampled)),
            _rate_row("ordinary ticks (sampled in the quiet windows)", sampled, ordinary_over, None),
            "", "| deadlines missed | ticks | missed | rate | p (so many misses on this side by chance) |", "|---|---|---|---|---|",
            _rate_row("ticks with swap work next to them (bar: none missed)", work["with"]["ticks"], work["with"]["missed"],
                      work["excess_p"]),
            _rate_row("ticks with none, same run", work["without"]["ticks"], work["without"]["missed"], None),
            _rate_row(_window_label(s), s["swap_phase_ticks"],
                      s["missed_deadlines_during_swaps"], s.get("windows_excess_p")),
            _rate_row("quiet windows between them", b["ticks"], b["missed"], None), "", *_over_limit_table(work, ticks),
            *_steal_line(s),
            f"Misses next to swap work, by kind (one miss may have several): {kinds}. Each p is the one-sided binomial "
            "test of equal rates on the two sides; a small p says the swap side is over the line (or misses) more often."]


def _over_limit_table(work: dict, ticks_by_kind: dict) -> list[str]:
    """Plans over the rung's limit (misses included), with swap work next to them and without: many
    more events than misses, so a kind of work that slows the loop shows in fewer ticks."""
    over = work.get("over_limit")
    if over is None:
        return []
    return ["| plans over the rung's limit (misses included) | ticks | over | rate | p (so many over on this side by chance) |",
            "|---|---|---|---|---|",
            _rate_row("ticks with swap work next to them", over["with"]["ticks"], over["with"]["over"], over["excess_p"]),
            _rate_row("ticks with none, same run", over["without"]["ticks"], over["without"]["over"], None),
            *[_rate_row(f"... {kind}", ticks_by_kind[kind], n, excess_p(n, ticks_by_kind[kind], over["without"]["over"],
                                                                        over["without"]["ticks"]))
              for kind, n in over["by_kind"].items() if kind in ticks_by_kind], ""]


def _window_label(s: dict) -> str:
    if "window_s" not in s:  # written before session 14
        return "swap windows (announcement to 4 s after the swap)"
    return (f"swap windows ({s['window_s']:g} s from the announcement; {s['windows_stretched']} of {s['swaps']} longer, "
            "to 4 s after a swap that came late)")


def _steal_line(s: dict) -> list[str]:
    steal = s.get("host_steal_pct")
    if not steal or steal.get("swapping") is None:
        return []
    return [f"Host steal (a virtual machine's cores ready to run while the hypervisor ran something else): "
            f"{steal['swapping']}% of CPU time in the swap windows, {steal['baseline']}% in the quiet ones. "
            "A busy host slows swap work too, which then lies next to more of the ticks it slows.", ""]


PARTS = {"ingest", "swap", "stepdown"}


def run_loop_benchmark(args) -> int:
    from tdmpc2_ros.ros.paths import default_model

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model, parts = args.model or str(default_model()), set(args.parts.split(","))
    if parts - PARTS:
        raise SystemExit(f"bench-loop: unknown --parts {sorted(parts - PARTS)} (choose from {sorted(PARTS)})")
    result = {"machine": machine()}
    if "ingest" in parts:
        result["ingest"] = bench_ingest(args.transitions, compression=args.compression)
        result["ingest_raw"] = bench_ingest_raw(args.transitions, compression=args.compression)
    if "swap" in parts:
        result["swap"] = bench_swap(model, args.swaps, planner_args=tuple(args.planner_args),
                                    log_path=out.with_suffix(".log"), busy=args.busy)
    if "stepdown" in parts:
        result["stepdown"] = bench_stepdown(model, args.stepdown_reps)
    write_results(out, result, format_table(result))
    if "swap" in parts:
        print(f"the nodes' log: {out.with_suffix('.log')}")
    return 0
