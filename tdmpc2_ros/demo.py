"""`tdmpc2-ros demo`: the MuJoCo sim and the planner with the shipped model, in real time, as
separate processes started from the shared bringup description. A third process (this one) watches
the topics like any client would and reports:

- each episode's return (from /tdmpc2/episode_return);
- observation-to-command latency measured across processes: arrival of a command here minus arrival
  of the observation it answers, plus the planner's own tick and ONNX-call latencies from /diagnostics;
- missed deadlines;
and leaves in the run folder: rollout.mp4 (the first episode, rendered afterwards from the recorded
joint states so rendering never competes with the control loop), latency_histogram.png, summary.json.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np


class FirstEpisodeFrames:
    """The video's frames: the joint state of each step of episode 0, as a watcher hears them.

    The step message names its episode and step, so a watcher that joined after the episode's
    announcement (an Int64 on EVENTS QoS, not latched) still knows where it is. The sim publishes a
    step's joint state just before its step message, but a watcher's two subscriptions are not
    ordered: a step heard first waits for a joint state newer (by its stamp, the sim time) than the
    last frame's. A held start republishes step 0 with the same stamp, so frames are taken once per
    step."""

    def __init__(self):
        self.states: list[tuple[list, list, list]] = []  # (names, positions, velocities) per step
        self._joint_state = None  # (stamp in ns, state): the newest heard
        self._used = -1  # the stamp of the newest joint state taken as a frame
        self._step = None
        self._waiting = False  # a step of episode 0 heard before its joint state

    def on_joint_state(self, msg) -> None:
        from rclpy.time import Time

        stamp = Time.from_msg(msg.header.stamp).nanoseconds
        self._joint_state = (stamp, (list(msg.name), list(msg.position), list(msg.velocity)))
        if self._waiting:
            self._take()

    def on_step(self, msg) -> None:
        from tdmpc2_ros.runtime.transition import unpack

        seg, _ = unpack([(d.label, d.size) for d in msg.layout.dim], msg.data)
        episode, step = int(seg["episode"][0]), int(seg["step"][0])
        if episode == 0 and step != self._step:
            self._step, self._waiting = step, True
            self._take()

    def _take(self) -> None:
        if self._joint_state is not None and self._joint_state[0] > self._used:
            self._used, state = self._joint_state
            self.states.append(state)
            self._waiting = False


def _watch(domain_env: dict, episodes: int, timeout_s: float, log):
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64, Float64MultiArray

    from tdmpc2_ros.ros import qos, topics
    from tdmpc2_ros.ros.diagnostics import PLANNER_STATUS
    from tdmpc2_ros.ros.observer import Observer

    frames = FirstEpisodeFrames()
    rec = {"returns": [], "latency": [], "states": frames.states, "obs_t": None}

    def on_obs(msg):
        rec["obs_t"] = time.monotonic()
        frames.on_step(msg)

    def on_cmd(_msg):
        if rec["obs_t"] is not None:
            rec["latency"].append(time.monotonic() - rec["obs_t"])
            rec["obs_t"] = None  # one answer per observation

    def on_return(msg):
        rec["returns"].append(msg.data)
        log(f"episode {len(rec['returns']) - 1}: return {msg.data:.1f}")

    with Observer(int(domain_env["ROS_DOMAIN_ID"]), "demo_observer") as obs:
        obs.subscribe(Float64MultiArray, topics.OBSERVATION, on_obs, qos.SENSOR)
        obs.subscribe(Float64MultiArray, topics.COMMAND, on_cmd, qos.COMMAND)
        obs.subscribe(JointState, topics.JOINT_STATES, frames.on_joint_state, qos.SENSOR)
        obs.subscribe(Float64, topics.EPISODE_RETURN, on_return, qos.EVENTS)
        reports = []  # one entry per report of the planner's
        rec["diag"] = obs.status_table(PLANNER_STATUS, on_update=lambda _table: reports.append(1))
        if obs.spin_until(lambda: len(rec["returns"]) >= episodes, timeout_s):
            # The planner reports every diagnostics_period_s: the table of the moment can be up to a
            # period old and miss the last episode's final ticks. One report more covers them.
            seen = len(reports)
            obs.spin_until(lambda: len(reports) > seen, 5.0)
    return rec


def _wait_for_planner(env: dict, timeout_s: float) -> bool:
    from tdmpc2_ros.ros.diagnostics import PLANNER_STATUS
    from tdmpc2_ros.ros.observer import Observer

    with Observer(int(env["ROS_DOMAIN_ID"]), "demo_wait") as obs:
        diag = obs.status_table(PLANNER_STATUS)
        return obs.spin_until(lambda: bool(diag), timeout_s, step_s=0.1)


def _render(task: str, states, path: Path, fps: int):
    import imageio.v2 as imageio

    from tdmpc2_ros.envs import DMControlEnv

    env = DMControlEnv(task)
    physics = env.physics
    frames = []
    for names, pos, vel in states:
        for name, q, v in zip(names, pos, vel):
            physics.named.data.qpos[name] = q
            physics.named.data.qvel[name] = v
        physics.forward()
        frames.append(physics.render(height=240, width=320, camera_id=0))
    if frames:
        imageio.mimsave(str(path), frames, fps=fps)
    return len(frames)


def _histogram(latency_ms: np.ndarray, path: Path, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.8), dpi=120)
    ax.hist(latency_ms, bins=60, color="C0")
    for q, style in ((50, "--"), (99, ":")):
        v = np.percentile(latency_ms, q)
        ax.axvline(v, color="k", ls=style, lw=1, label=f"p{q} = {v:.1f} ms")
    ax.set_xlabel("observation -> command latency across processes (ms)")
    ax.set_ylabel("ticks")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run_demo(episodes: int = 5, model_path: str = "", run_dir: str | None = None, task: str = "cartpole-swingup",
             control_rate_hz: float = 50.0, domain: int | None = None, overrides: dict | None = None) -> dict:
    from tdmpc2_ros.ros import bringup
    from tdmpc2_ros.ros.paths import default_model

    run = Path(run_dir or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}")
    run.mkdir(parents=True, exist_ok=True)
    log_file = open(run / "demo.log", "w")

    def log(line: str):
        print(line, flush=True)
        log_file.write(line + "\n")

    model = model_path or str(default_model())
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain if domain is not None else 50 + os.getpid() % 100),
           "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "PYTHONUNBUFFERED": "1"}
    args = {"mode": "realtime", "task": task, "model_path": model, "control_rate_hz": str(control_rate_hz),
            "max_episodes": str(episodes + 1), **(overrides or {})}
    procs = []
    log(f"demo: {task} in real time at {control_rate_hz:g} Hz with {model}; run folder {run}")
    # The planner first: it measures its budget ladder before it can act. The sim starts once the
    # planner reports on /diagnostics, so no episode is played without it.
    nodes = sorted(bringup.resolve("planner", args), key=lambda sp: sp[0].name != "planner_node")
    for spec, params in nodes:
        procs.append(subprocess.Popen(bringup.command(spec, params), env=env, stdout=log_file, stderr=subprocess.STDOUT))
        if spec.name == "planner_node" and not _wait_for_planner(env, timeout_s=180):
            log("the planner did not come up within 180 s; see demo.log")
            break
    try:
        rec = _watch(env, episodes, timeout_s=120 + episodes * 30, log=log)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
    latency_ms = np.asarray(rec["latency"]) * 1e3
    d = rec["diag"]
    summary = {
        "task": task, "model": model, "episodes": len(rec["returns"]), "returns": [round(r, 2) for r in rec["returns"]],
        "mean_return": round(float(np.mean(rec["returns"])), 2) if rec["returns"] else None,
        "obs_to_command_ms": {f"p{q}": round(float(np.percentile(latency_ms, q)), 2) for q in (50, 90, 99)} if len(latency_ms) else {},
        "planner_diagnostics": d,
        "video_frames": len(rec["states"]),  # rollout.mp4: one frame per step of the first episode
    }
    log(f"returns: {summary['returns']} (mean {summary['mean_return']})")
    if len(latency_ms):
        log(f"observation -> command across processes: p50 {summary['obs_to_command_ms']['p50']} ms, "
            f"p99 {summary['obs_to_command_ms']['p99']} ms over {len(latency_ms)} ticks")
        _histogram(latency_ms, run / "latency_histogram.png", f"{task}, {control_rate_hz:g} Hz, budget {d.get('budget', '?')}")
    if d:
        log(f"planner: budget {d.get('budget')} (steps while running: {d.get('budget_steps_down', 0)} down, {d.get('budget_steps_up', 0)} up), ONNX call p99 {d.get('plan_latency_p99_ms')} ms "
            f"(not running, waiting for a core or the GIL: p99 {d.get('plan_waited_p99_ms')} ms, max {d.get('plan_waited_max_ms')} ms), tick p99 "
            f"{d.get('tick_latency_p99_ms')} ms, ROS overhead p99 {d.get('ros_overhead_p99_ms')} ms (each tick minus its "
            f"ONNX call), missed deadlines {d.get('missed_deadlines')} of {d.get('ticks')} ticks, the host's steal at most "
            f"{d.get('host_steal_max_pct')}% of CPU time in a report window (a VM's cores held back by the hypervisor)")
    (run / "summary.json").write_text(json.dumps(summary, indent=2))
    written = [run / "summary.json"] + [run / "latency_histogram.png"] * bool(len(latency_ms))
    if _render(task, rec["states"], run / "rollout.mp4", fps=int(round(control_rate_hz))):
        written.insert(0, f"{run / 'rollout.mp4'} ({len(rec['states'])} frames)")
    else:
        log("no joint states of episode 0 were seen: no video (is joint_states_topic published?)")
    log("wrote " + ", ".join(map(str, written)))
    log_file.close()
    return summary
