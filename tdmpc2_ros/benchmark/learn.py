"""`tdmpc2-ros bench-learn`: the closed learning loop from random weights, run as a robot runs it.

Sim (lockstep), planner, recorder and trainer are started as four processes through the package's
own bringup (`learn` node set, the same description as launch/learn.launch.py). The trainer starts
from fresh weights and publishes them as the first version of an empty model store; the planner
waits for it, acts with exploration noise, and hot-swaps every version the trainer validates.

Pacing. In lockstep the sim steps once per command, so the planner's timer (`trigger:=timer` at
`--rate-hz`) sets how many transitions per second the loop makes. TD-MPC2 makes one gradient update
per agent step; the trainer is capped at that (max_updates_per_transition 1) and catches up after an
export, so the rate must stay below the trainer's update throughput on this machine, or fewer updates
than transitions are made. The report gives the achieved ratio.

This process watches the loop like any other client and records:
- each finished episode's return (/tdmpc2/episode_return) with the model version that acted and
  the environment steps so far (the sim's episodes are fixed-length: 1000 steps for dm_control);
- each hot swap (the planner's /diagnostics: model_version changes) and the deadlines missed from
  the version's announcement (/tdmpc2/model_update) to `--settle-s` after the swap, beside the misses
  over the whole run;
- the trainer's updates and transitions.

It stops after `--env-steps` environment steps (the sim's max_episodes), lets the trainer checkpoint,
evaluates the newest validated version over `--eval-episodes` episodes without exploration, and writes
episodes.csv, swaps.csv, learn.json, learn.md and learning_curve.png (beside the paper's curve) in
the run folder. Interrupted, the same command with --resume continues: the trainer resumes from its
checkpoint and ledger, the planner from the store's newest version, and the sim plays the episodes
still missing.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tdmpc2_ros.benchmark.loop import split_by_swap_work
from tdmpc2_ros.benchmark.machine import describe as describe_machine, machine
from tdmpc2_ros.runtime.swap_cost import SWAP_WORK
from tdmpc2_ros.training.curves import CsvLog, plot_learning_curve

EPISODE_FIELDS = ["episode", "step", "episode_reward", "model_version", "wall_s"]
SWAP_FIELDS = ["version", "wall_s", "ticks", "missed_before", "missed_after", "swap_tick_ms", "tick_p50_ms"]


def first_reaching(rows: list[dict], bar: float) -> int | None:
    """Environment steps of the first episode whose return is >= bar (None if none)."""
    for r in rows:
        if float(r["episode_reward"]) >= bar:
            return int(r["step"])
    return None


def summarize(episodes: list[dict], swaps: list[dict], final: dict, target_env_steps: int, bar: float,
              eval_returns: list[float]) -> dict:
    """The benchmark's figures from what the watcher recorded (pure; tested)."""
    returns = [float(r["episode_reward"]) for r in episodes]
    in_budget = [r for r in episodes if int(r["step"]) <= target_env_steps]
    last10 = returns[-10:]
    swap_misses = [int(s["missed_after"]) - int(s["missed_before"]) for s in swaps if s["missed_after"] != ""]
    transitions = int(final.get("trainer_transitions", 0) or 0)
    updates = int(final.get("trainer_updates", 0) or 0)
    return {
        "env_steps": max([int(r["step"]) for r in episodes] or [0]), "target_env_steps": target_env_steps,
        "episodes": len(episodes), "bar": bar,
        "first_env_step_at_bar": first_reaching(in_budget, bar),
        "best_return": round(max(returns), 2) if returns else None,
        "last10_mean_return": round(float(np.mean(last10)), 2) if last10 else None,
        "eval_episodes": len(eval_returns),
        "eval_mean_return": round(float(np.mean(eval_returns)), 2) if eval_returns else None,
        "eval_std_return": round(float(np.std(eval_returns)), 2) if eval_returns else None,
        "swaps": len(swaps), "swap_versions": [s["version"] for s in swaps],
        "missed_deadlines_around_swaps": sum(swap_misses),
        "missed_deadlines_total": int(final.get("planner_missed_deadlines", 0) or 0),
        "ticks": int(final.get("planner_ticks", 0) or 0),
        # The ticks with swap work next to them (planner_node._swap_work) and their misses, against the rest.
        **swap_work_split(final),
        "trainer_updates": updates, "trainer_transitions": transitions,
        "updates_per_transition": round(updates / transitions, 3) if transitions else None,
    }


def format_table(s: dict, cfg: dict) -> str:
    reached = s["first_env_step_at_bar"]
    return "\n".join([
        f"Closed loop, {cfg['task']}, from random weights: lockstep sim, planner ({cfg['rate_hz']:g} Hz timer, "
        f"ladder {cfg['ladder']}), recorder, trainer (preset {cfg['preset']}{', compiled' if cfg['compile'] else ''}); "
        f"{_seeds(cfg)}.", "",
        "| env steps | episodes | first return >= bar (env step) | best return | mean of last 10 | "
        "eval of the last version | updates / transition |", "|---|---|---|---|---|---|---|",
        f"| {s['env_steps']} | {s['episodes']} | {reached if reached is not None else 'not reached'} (bar {s['bar']:g}) | "
        f"{s['best_return']} | {s['last10_mean_return']} | {s['eval_mean_return']} ± {s['eval_std_return']} "
        f"({s['eval_episodes']} episodes) | {s['updates_per_transition']} |", "",
        "| swaps | missed deadlines around swaps | missed deadlines in all | ticks | missed of the ticks with swap work "
        "next to them (bar 0) | missed of the other ticks | p (the swap side misses more by chance) |",
        "|---|---|---|---|---|---|---|",
        f"| {s['swaps']} | {s['missed_deadlines_around_swaps']} | {s['missed_deadlines_total']} | {s['ticks']} | "
        f"{s.get('missed_with_swap_work', '-')} of {s.get('ticks_with_swap_work', '-')} | "
        f"{s.get('missed_without_swap_work', '-')} of {s.get('ticks_without_swap_work', '-')} | "
        f"{s.get('swap_work_excess_p', '-')} |", "", *_by_kind_lines(s),
        *([f"Machine: {describe_machine(s['machine'])}."] if "machine" in s else [])])


def _seeds(cfg: dict) -> str:
    seed = cfg.get("seed")  # absent from runs before session 21: those ran the YAML's seeds
    return "seeds of the nodes' YAML (sim 0, planner 0, trainer 1)" if seed is None else f"seed {seed} for every node"


def _by_kind_lines(s: dict) -> list[str]:
    """Misses by the kind of swap work next to them (a tick may have several), and the retired
    models freed; absent from runs before the planner counted them."""
    lines = []
    if "swap_work_by_kind" in s:
        lines.append("Missed, by the swap work next to the tick: " + ", ".join(
            f"{w} {c['missed']} of {c['ticks']}" for w, c in s["swap_work_by_kind"].items()) + ".")
    if "models_freed" in s:
        lines.append(f"Retired models freed in the slack: {s['models_freed']}; still held at the end: "
                     f"{s.get('models_waiting_to_free', '-')}.")
    return [*lines, ""] if lines else []


def swap_work_split(final: dict) -> dict:
    """Ticks and misses with swap work next to them and without, with the p-value of the swap side
    missing more often by chance (empty for a run from before the planner counted them)."""
    if "planner_ticks_with_swap_work" not in final:
        return {}
    split = split_by_swap_work(*(int(final[k]) for k in ("planner_ticks", "planner_missed_deadlines",
                                                         "planner_ticks_with_swap_work", "planner_missed_with_swap_work")))
    by_kind = {w: {"ticks": int(final[f"planner_ticks_with_swap_work_{w}"]),
                   "missed": int(final[f"planner_missed_with_swap_work_{w}"])}
               for w in SWAP_WORK if f"planner_ticks_with_swap_work_{w}" in final}
    frees = {k: int(final[f"planner_{k}"]) for k in ("models_freed", "models_waiting_to_free") if f"planner_{k}" in final}
    return {"ticks_with_swap_work": split["with"]["ticks"], "missed_with_swap_work": split["with"]["missed"],
            "ticks_without_swap_work": split["without"]["ticks"], "missed_without_swap_work": split["without"]["missed"],
            "swap_work_excess_p": split["excess_p"], **({"swap_work_by_kind": by_kind} if by_kind else {}), **frees}


class _Watch:
    """What the loop reports, written to CSV as it arrives so an interrupted run keeps it."""

    def __init__(self, run: Path, episode_env_steps: int, settle_s: float, log):
        self.episodes = CsvLog(run / "episodes.csv", EPISODE_FIELDS)
        self.swaps = CsvLog(run / "swaps.csv", SWAP_FIELDS)
        recorded = self.episodes.read()
        self.done = len(recorded)
        self.new_episodes = 0
        self.episode_env_steps, self.settle_s, self.log = episode_env_steps, settle_s, log
        self.t0 = time.monotonic()
        self.wall_offset = float(recorded[-1]["wall_s"]) if recorded else 0.0
        self.planner: dict = {}
        self.trainer: dict = {}
        self.version = ""
        self.missed_at_last_report = 0
        self.open_swaps: list[tuple[float, dict]] = []
        self.trainer_failure = ""
        self.missed_at_announcement: dict[str, int] = {}

    def wall_s(self) -> float:
        return round(self.wall_offset + time.monotonic() - self.t0, 1)

    def on_return(self, msg):
        self.done += 1
        self.new_episodes += 1
        step = self.done * self.episode_env_steps
        self.episodes.append(episode=self.done - 1, step=step, episode_reward=round(msg.data, 3),
                             model_version=self.version, wall_s=self.wall_s())
        self.log(f"episode {self.done - 1}: return {msg.data:.1f} at {step} env steps, model {self.version or '-'}, "
                 f"trainer {self.trainer.get('updates', '?')} updates / {self.trainer.get('transitions', '?')} transitions")

    def on_planner(self, table: dict):
        missed = int(table.get("missed_deadlines", 0))
        version = table.get("model_version", "")
        if self.version and version and version != self.version:
            # Counted from the version's announcement: the candidate's checks run beside the live plans.
            before = self.missed_at_announcement.pop(version, self.missed_at_last_report)
            row = {"version": version, "wall_s": self.wall_s(), "ticks": table.get("ticks", ""),
                   "missed_before": before, "swap_tick_ms": table.get("swap_tick_latency_last_ms", ""),
                   "tick_p50_ms": table.get("tick_latency_p50_ms", "")}
            self.open_swaps.append((time.monotonic(), row))
            self.log(f"swapped to {version} ({table.get('last_swap_result', '')})")
        if version:
            self.version = version
        self.missed_at_last_report = missed
        now = time.monotonic()
        while self.open_swaps and now - self.open_swaps[0][0] >= self.settle_s:
            _, row = self.open_swaps.pop(0)
            self.swaps.append(**row, missed_after=missed)

    def on_announcement(self, msg):
        try:
            version = json.loads(msg.data)["version"]
        except (ValueError, KeyError, TypeError):
            return
        self.missed_at_announcement.setdefault(version, self.missed_at_last_report)

    def on_trainer(self, table: dict):
        """A failed export is never announced; with no first version the planner keeps waiting. Say why."""
        failure = table.get("last_failure", "")
        if failure and failure != self.trainer_failure:
            self.log(f"trainer: export failed ({failure})")
        self.trainer_failure = failure

    def flush(self):
        for _, row in self.open_swaps:
            self.swaps.append(**row, missed_after=self.missed_at_last_report)
        self.open_swaps = []


# The planner's /diagnostics counters a run adds up over its parts: run key -> diagnostics key.
PLANNER_COUNTS = {"planner_missed_deadlines": "missed_deadlines", "planner_ticks": "ticks",
                  "planner_ticks_with_swap_work": "ticks_with_swap_work",
                  "planner_missed_with_swap_work": "missed_with_swap_work",
                  **{f"planner_{side}_with_swap_work_{w}": f"{side}_with_swap_work_{w}"
                     for w in SWAP_WORK for side in ("ticks", "missed")},
                  "planner_models_freed": "models_freed"}


def merge_final(prior: dict, planner: dict, trainer: dict) -> dict:
    """The run's closing counters. A resumed run's planner is a new process that counts from zero, so
    its ticks and misses add to the earlier parts'; the trainer resumes its own counts."""
    counts = {key: int(prior.get(key, 0)) + int(planner.get(name, 0)) for key, name in PLANNER_COUNTS.items()
              if key in prior or name in planner}  # a counter no part reported (an older planner) stays absent
    # Retired models the last planner still held at the end (their sessions' memory).
    waiting = planner.get("models_waiting_to_free", prior.get("planner_models_waiting_to_free"))
    if waiting is not None:
        counts["planner_models_waiting_to_free"] = int(waiting)
    return {**counts,
            "trainer_updates": int(trainer.get("updates", prior.get("trainer_updates", 0))),
            "trainer_transitions": int(trainer.get("transitions", prior.get("trainer_transitions", 0))),
            "parts": int(prior.get("parts", 0)) + 1}


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _stop(proc: subprocess.Popen, timeout_s: float = 120.0):
    """SIGINT the bringup (it stops its nodes; the trainer checkpoints) and wait for it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()


def run_learn_benchmark(args) -> int:
    from std_msgs.msg import Float64, String

    from tdmpc2_ros.envs import DMControlEnv
    from tdmpc2_ros.ros import qos, topics
    from tdmpc2_ros.ros.diagnostics import PLANNER_STATUS
    from tdmpc2_ros.ros.observer import Observer
    from tdmpc2_ros.runtime.ladder import read_ladder
    from tdmpc2_ros.runtime.model_store import ModelStore
    from tdmpc2_ros.training.evaluate import evaluate_onnx

    run = Path(args.run_dir)
    if run.exists() and any(run.iterdir()) and not args.resume:
        raise SystemExit(f"{run} is not empty: pass --resume to continue that run, or another --run-dir")
    run.mkdir(parents=True, exist_ok=True)
    log_file = open(run / "bench-learn.log", "a")

    def log(line: str):
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    env = DMControlEnv(args.task)
    episode_env_steps = env.episode_length * env.action_repeat  # the sim's fixed-length episodes
    target_episodes = math.ceil(args.env_steps / episode_env_steps)
    watch = _Watch(run, episode_env_steps, args.settle_s, log)
    remaining = target_episodes - watch.done
    cfg = {"task": args.task, "env_steps": args.env_steps, "rate_hz": args.rate_hz, "ladder": args.ladder,
           "preset": "1M", "compile": args.compile, "bag_split_s": args.bag_split_s, "seed": args.seed}
    (run / "config.json").write_text(json.dumps(cfg, indent=2))
    domain = args.domain if args.domain is not None else 180 + os.getpid() % 40
    if remaining > 0:
        overrides = {
            "mode": "lockstep", "task": args.task, "trigger": "timer", "control_rate_hz": str(args.rate_hz),
            "explore": "true", "max_episodes": str(remaining),
            # The timer answers an observation up to one period after it arrived: that is not stale.
            "max_observation_age_s": str(round(2.0 / args.rate_hz, 3)), "model_path": str(run / "store"), "model_wait_s": "1800",
            "bag_dir": str(run / "bags"), "store_dir": str(run / "store"), "run_dir": str(run / "trainer"),
            "obs_dim": str(env.obs_dim), "action_dim": str(env.action_dim), "ladder": args.ladder,
            "bag_split_s": str(args.bag_split_s), "compile": "true" if args.compile else "false",
            "seed": "" if args.seed is None else str(args.seed),  # '' = each node's YAML
        }
        cmd = [sys.executable, "-m", "tdmpc2_ros.cli", "bringup", "learn", *[f"{k}:={v}" for k, v in overrides.items()]]
        log(f"bench-learn: {remaining} of {target_episodes} episodes to play; domain {domain}; {' '.join(cmd)}")
        node_env = {**os.environ, "ROS_DOMAIN_ID": str(domain), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
                    "PYTHONUNBUFFERED": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
        proc = subprocess.Popen(cmd, env=node_env, stdout=open(run / "bringup.log", "a"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        obs = Observer(domain, "bench_learn")
        interrupted = False
        try:
            watch.planner = obs.status_table(PLANNER_STATUS, watch.on_planner)
            watch.trainer = obs.status_table("tdmpc2_ros: trainer", watch.on_trainer)
            obs.subscribe(Float64, topics.EPISODE_RETURN, watch.on_return, qos.EVENTS)
            obs.subscribe(String, topics.MODEL_UPDATE, watch.on_announcement, qos.LATCHED)
            deadline = args.timeout_h * 3600
            try:
                finished = obs.spin_until(lambda: watch.new_episodes >= remaining or proc.poll() is not None, deadline, 0.2)
                # The sim leaves after its last episode; give the recorder and trainer a moment to take the last bag.
                obs.spin_until(lambda: False, 2.0 if finished else 0.0)
            except KeyboardInterrupt:
                interrupted = True  # what was watched so far is still written below
            final = merge_final(_read_json(run / "final_diagnostics.json"), watch.planner, watch.trainer)
            watch.flush()
        finally:
            _stop(proc)
            obs.close()
        (run / "final_diagnostics.json").write_text(json.dumps(final, indent=2))
        if interrupted:
            log(f"interrupted after {watch.done} episodes: `tdmpc2-ros bench-learn --resume` plays the rest, "
                f"`--resume --env-steps N` reports on the first N environment steps")
            raise KeyboardInterrupt("bench-learn")
    final = _read_json(run / "final_diagnostics.json")

    eval_returns: list[float] = []
    store = ModelStore(run / "store")
    latest = store.latest()
    if latest is not None and args.eval_episodes > 0:
        rung = read_ladder(store.path(latest.version))[0]
        log(f"evaluating {latest.version} ({rung.budget.label()}) over {args.eval_episodes} episodes, no exploration")
        eval_returns = evaluate_onnx(rung.path, args.task, args.eval_episodes, seed=args.eval_seed)
    episodes = watch.episodes.read()
    summary = summarize(episodes, watch.swaps.read(), final, args.env_steps, args.bar, eval_returns)
    summary.update({"config": cfg, "last_version": latest.version if latest else None, "eval_returns": eval_returns,
                    "machine": machine()})
    (run / "learn.json").write_text(json.dumps(summary, indent=2))
    table = format_table(summary, cfg)
    (run / "learn.md").write_text(table)
    missing = plot_learning_curve([], episodes, args.task, run / "learning_curve.png",
                                  title_extra=f"(closed loop over ROS 2, {args.rate_hz:g} Hz lockstep)")
    if missing:
        log(f"the learning-curve plot lacks the paper's curve: {missing}")
    log(table)
    log(f"wrote {run / 'learn.json'}, {run / 'learn.md'}, {run / 'learning_curve.png'}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(summary, indent=2))
        Path(args.out).with_suffix(".md").write_text(table)
    log_file.close()
    return 0
