"""The `tdmpc2-ros` command: train, export, evaluate and benchmark without ROS."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path


class _Parser(argparse.ArgumentParser):
    """A subcommand's parser: its --help shows each option's default."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)


def _episode_args(p):
    """What an evaluation needs besides the model: the task, how many episodes, the seed, threads."""
    p.add_argument("--task", default="cartpole-swingup", help="dm_control task, domain-task")
    p.add_argument("--episodes", type=int, default=10, help="evaluation episodes")
    p.add_argument("--seed", type=int, default=0, help="seed of the episodes' initial states and of the planner's noise")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads")


def _budget_args(p: argparse.ArgumentParser):
    g = p.add_argument_group("planning budget (fixed at export)")
    g.add_argument("--planner", choices=["mppi", "cem", "gradient"], default="mppi", help="planner in the graph")
    g.add_argument("--iterations", type=int, help="planner iterations (default: the reference's 6)")
    g.add_argument("--samples", type=int, dest="num_samples", help="sampled action sequences (default: 512)")
    g.add_argument("--elites", type=int, dest="num_elites", help="elites refitted each iteration (default: 64)")
    g.add_argument("--pi-trajs", type=int, dest="num_pi_trajs", help="policy-prior trajectories (default: 24)")


def _device_arg(text: str) -> str:
    """--device, checked as the command line is read: a GPU this machine lacks is a usage error, not a
    traceback. 'auto' is recorded as what it chose (the run's config.json then says where it trained)."""
    from tdmpc2_ros.core.device import resolve_device

    try:
        return str(resolve_device(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _budget_from(args, action_dim: int):
    from tdmpc2_ros.runtime import PlanBudget

    over = {k: getattr(args, k) for k in ("iterations", "num_samples", "num_elites", "num_pi_trajs") if getattr(args, k) is not None}
    return PlanBudget.reference(action_dim, planner=args.planner, **over)


def cmd_train(args) -> int:
    if args.bags:
        return cmd_train_bags(args)
    from tdmpc2_ros.training.online import OnlineTrainer, RunConfig

    cfg = RunConfig(task=args.task, steps=args.steps, preset=args.preset, seed=args.seed, planner=args.planner,
                    eval_freq=args.eval_freq, eval_episodes=args.eval_episodes, checkpoint_freq=args.checkpoint_freq,
                    threads=args.threads, act_backend=args.act_backend, compile=args.compile, device=args.device)
    run_dir = Path(args.run_dir or f"runs/{args.task}-{args.preset}-s{args.seed}")
    summary = OnlineTrainer(cfg, run_dir, resume=args.resume).run()
    print(json.dumps(summary, indent=2))
    return 0


def cmd_train_bags(args) -> int:
    """Offline: ingest every closed bag the run's ledger has not seen, train, export + validate into
    the store, print the new version's manifest (exit 1 if it failed validation)."""
    import logging

    from tqdm import tqdm

    from tdmpc2_ros.bags.ledger import IngestLedger
    from tdmpc2_ros.runtime.model_store import ModelStore
    from tdmpc2_ros.training.offline import LEDGER, OfflineTrainer, RawSettingError, RawTopics, parse_rung, resolve_dims

    run_dir = Path(args.run_dir or "runs/offline")
    try:  # the options carry trainer_node's parameter names: one set of checks (RawTopics.from_settings)
        raw = RawTopics.from_settings(vars(args), args.action_low, args.action_high)
    except RawSettingError as e:
        print(f"{e} (--{e.name.replace('_', '-')})", file=sys.stderr)
        return 2
    # After the argument checks: a refused run leaves no handler behind (cli.main may run in-process).
    log = logging.getLogger("tdmpc2_ros.trainer")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    if args.obs_dim and args.action_dim:
        dims = (args.obs_dim, args.action_dim)
    else:
        ledger = IngestLedger(run_dir / LEDGER)
        dims = resolve_dims(run_dir, args.init_weights or "", ledger.pending(args.bags), raw, args.action_low or (),
                            args.action_high or (), args.record_topics or ())
    if dims is None:
        print(f"no bag under {args.bags} yields transitions (and no checkpoint or --init-weights tells the "
              f"observation/action dims)", file=sys.stderr)
        return 1
    budgets = [parse_rung(r, args.planner) for r in args.ladder.split(",")] if args.ladder else None
    trainer = OfflineTrainer(run_dir, *dims, preset=args.preset, seed=args.seed, batch_size=args.batch_size,
                             threads=args.threads, init_weights=args.init_weights, action_low=args.action_low,
                             action_high=args.action_high, task=args.task, budgets=budgets, planner=args.planner,
                             discount=args.discount, episode_length=args.episode_length,
                             min_transitions=args.min_transitions, action_repeat=args.action_repeat, raw=raw,
                             record_topics=args.record_topics or (), control_rate_hz=args.control_rate_hz,
                             deadline_fraction=args.deadline_fraction, latency_runs=args.latency_runs, log=log,
                             compile=args.compile, device=args.device, episodic=args.episodic)
    trainer.ingest_pending(args.bags)
    bar = tqdm(total=args.updates, unit="update", desc="training", dynamic_ncols=True,
               mininterval=0.5 if sys.stderr.isatty() else 60.0)
    info = trainer.train(args.updates, progress=bar.update)
    bar.close()
    if info["updates"] < args.updates:
        log.info(f"{info['updates']} of {args.updates} updates: {info.get('reason', 'stopped')}")
    store = ModelStore(args.store)
    manifest = trainer.export_and_validate(store)
    trainer.save()
    trainer.plot()
    if manifest is None:
        print(f"no new version: {trainer.last_failure}", file=sys.stderr)
        return 1
    removed = store.prune(args.store_keep, protect={manifest.version, manifest.parent}, every_s=args.store_keep_every_s)
    if removed:
        log.info(f"model store: removed {', '.join(removed)} (--store-keep {args.store_keep}, "
                 f"--store-keep-every-s {args.store_keep_every_s:g})")
    print(manifest.to_json())
    return 0


def load_weights(path, with_updates: bool = False):
    """(model, discount, task, env_step, sha256[, gradient updates]) from a weights.pt or a trainer
    checkpoint.pt."""
    import torch

    from tdmpc2_ros.core.config import ModelConfig
    from tdmpc2_ros.core.world_model import WorldModel
    from tdmpc2_ros.runtime.digest import file_sha256
    from tdmpc2_ros.training.checkpoint import CheckpointError

    from tdmpc2_ros.training.checkpoint import MAGIC, load_checkpoint

    try:
        with open(path, "rb") as f:
            is_checkpoint = f.read(len(MAGIC)) == MAGIC
        w = load_checkpoint(path) if is_checkpoint else torch.load(path, map_location="cpu", weights_only=False)
        if "offline" in w:  # an offline (bag-fed) trainer's checkpoint
            o, optim_state = w["offline"], w["agent"]["optim"]["state"]
            w = {"model": w["agent"]["model"], "model_config": o["model_config"], "discount": o["discount"],
                 "task": o["task"], "env_step": o["transitions"] * o["action_repeat"],
                 "updates": int(next(iter(optim_state.values()))["step"]) if optim_state else 0}
        elif "trainer" in w:  # a checkpoint: the model lives in the agent's state
            t, optim_state = w["trainer"], w["agent"]["optim"]["state"]
            w = {"model": w["agent"]["model"], "model_config": t["model_config"], "discount": t["discount"],
                 "task": t["run_config"]["task"], "env_step": t["agent_step"] * t["run_config"]["action_repeat"],
                 "updates": int(next(iter(optim_state.values()))["step"]) if optim_state else 0}
        model = WorldModel(ModelConfig(**w["model_config"]))
        model.load_state_dict(w["model"])
    except Exception as e:
        raise CheckpointError(f"cannot load weights from {path}: {e}") from e
    out = (model, w["discount"], w.get("task", ""), int(w.get("env_step", 0)), file_sha256(path))
    return (*out, w.get("updates")) if with_updates else out


def cmd_export(args) -> int:
    from tdmpc2_ros.core.export import export_ladder, export_planner
    from tdmpc2_ros.envs.dmc import DMControlEnv
    from tdmpc2_ros.runtime.ladder import default_budgets

    model, discount, task, step, sha = load_weights(args.weights)
    spec = {"task": task, "train_step": step, "checkpoint_sha256": sha}
    if task:  # names and physical bounds travel with the model
        spec.update(DMControlEnv(task).contract_spec())
    if args.ladder:
        rungs = export_ladder(model, default_budgets(model.cfg.action_dim, args.planner), discount, args.out, **spec)
        for r in rungs:
            print(f"wrote {r.path} ({r.budget.label()})")
        return 0
    contract = export_planner(model, _budget_from(args, model.cfg.action_dim), discount, args.out, **spec)
    print(f"wrote {args.out}: {contract.describe()}")
    return 0


def cmd_eval(args) -> int:
    import numpy as np

    from tdmpc2_ros.training.evaluate import evaluate_onnx

    returns = evaluate_onnx(args.model, args.task, args.episodes, seed=args.seed, threads=args.threads, video_path=args.video)
    print(json.dumps({"model": args.model, "task": args.task, "episodes": len(returns), "returns": [round(r, 2) for r in returns],
                      "mean": round(float(np.mean(returns)), 2), "std": round(float(np.std(returns)), 2)}, indent=2))
    return 0


def cmd_eval_ladder(args) -> int:
    """Evaluation return of every rung of a model folder, against the full budget (rung 0)."""
    import numpy as np

    from tdmpc2_ros.runtime.ladder import read_ladder
    from tdmpc2_ros.training.evaluate import evaluate_onnx

    rows = []
    for rung in read_ladder(args.model):
        returns = evaluate_onnx(rung.path, args.task, args.episodes, seed=args.seed, threads=args.threads)
        rows.append({"budget": rung.budget.label(), "episodes": len(returns), "mean": round(float(np.mean(returns)), 2),
                     "std": round(float(np.std(returns)), 2), "returns": [round(r, 2) for r in returns]})
        print(f"{rows[-1]['budget']:28s} mean {rows[-1]['mean']:8.2f} (std {rows[-1]['std']:.2f}) over {len(returns)} episodes", flush=True)
    full = rows[0]["mean"]
    table = ["| budget | episodes | mean return | std | vs full budget |", "|---|---|---|---|---|"]
    table += [f"| {r['budget']} | {r['episodes']} | {r['mean']} | {r['std']} | {r['mean'] - full:+.1f} |" for r in rows]
    print("\n".join(table))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"model": args.model, "task": args.task, "seed": args.seed, "rungs": rows}, indent=2))
    return 0


def cmd_bench(args) -> int:
    from tdmpc2_ros.benchmark import run_core_benchmark

    return run_core_benchmark(args)


def cmd_bench_train(args) -> int:
    from tdmpc2_ros.benchmark.train import run_train_benchmark

    return run_train_benchmark(args)


def cmd_bench_loop(args) -> int:
    from tdmpc2_ros.benchmark.loop import run_loop_benchmark

    return run_loop_benchmark(args)


def cmd_bench_learn(args) -> int:
    from tdmpc2_ros.benchmark.learn import run_learn_benchmark

    return run_learn_benchmark(args)


def cmd_bringup(args) -> int:
    from tdmpc2_ros.ros import bringup

    try:  # a mistyped argument or a missing params_file: one line, before any node starts
        overrides = bringup.parse_overrides(args.arguments)
        bringup.resolve(args.set, overrides)
    except ValueError as e:
        print(f"tdmpc2-ros bringup: error: {e}", file=sys.stderr)
        return 2
    return bringup.run(args.set, overrides)


def cmd_ship(args) -> int:
    from tdmpc2_ros.training.ship import ship

    card = ship(args.weights, args.out, args.episodes, args.reproduce, args.eval_seed, args.note)
    print(json.dumps(card["evaluation"], indent=2))
    print(f"shipped {args.out}")
    return 0


def cmd_demo(args) -> int:
    from tdmpc2_ros.demo import run_demo
    from tdmpc2_ros.ros import bringup

    summary = run_demo(episodes=args.episodes, model_path=args.model or "", run_dir=args.run_dir,
                       control_rate_hz=args.rate, overrides=bringup.parse_overrides(args.launch_args))
    return 0 if summary["episodes"] == args.episodes else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tdmpc2-ros", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train TD-MPC2 online on a dm_control task, or offline from bags (--bags); no ROS")
    t.add_argument("--task", default="cartpole-swingup", help="dm_control task, domain-task (online training)")
    t.add_argument("--steps", type=int, default=100_000, help="environment steps, action repeat 2 included")
    t.add_argument("--preset", default="1M", choices=["1M", "5M", "19M", "48M", "317M"], help="model size")
    t.add_argument("--seed", type=int, default=1, help="seed of the weights, the environment and the replay sampling")
    t.add_argument("--planner", choices=["mppi", "cem", "gradient"], default="mppi", help="planner while acting and exported")
    t.add_argument("--eval-freq", type=int, default=10_000, help="evaluate every this many environment steps")
    t.add_argument("--eval-episodes", type=int, default=10, help="episodes per evaluation")
    t.add_argument("--checkpoint-freq", type=int, default=10_000, help="checkpoint every this many environment steps")
    t.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime threads")
    t.add_argument("--device", default="cpu", type=_device_arg,
                   help="where the world model trains: cpu (default), cuda, cuda:N, or auto (a GPU where torch sees one)")
    t.add_argument("--act-backend", choices=["auto", "onnx", "torch"], default="auto",
                   help="plan while collecting: auto (default) = ONNX Runtime with the live weights on a CPU, the torch "
                        "planner beside the weights on a GPU")
    t.add_argument("--compile", action="store_true",
                   help="torch.compile the update (for long runs); on a GPU also as CUDA graphs, acting too")
    t.add_argument("--run-dir", help="run folder: curve CSV and PNG, checkpoints, weights (default: runs/<task>-<preset>-s<seed>; "
                                     "offline: runs/offline)")
    t.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoint.pt")
    o = t.add_argument_group("offline training from bags (--bags; the run always resumes from RUN_DIR, default runs/offline)")
    o.add_argument("--bags", help="folder of closed rosbag2 bags: ingest those not yet in RUN_DIR's ledger, train, "
                                  "export + validate into the store")
    o.add_argument("--store", default="tdmpc2_models", help="model store the validated version is added to")
    o.add_argument("--store-keep", type=int, default=0,
                   help="then keep only this many newest versions in the store, and the new one's parent (0 = all)")
    o.add_argument("--store-keep-every-s", type=float, default=0.0,
                   help="with --store-keep: of the older versions, also keep one per this many seconds (0 = none)")
    o.add_argument("--updates", type=int, default=1000, help="gradient updates after ingesting")
    o.add_argument("--init-weights", help="weights.pt or checkpoint.pt to start from (a fresh run only)")
    o.add_argument("--batch-size", type=int, default=256, help="update batch size")
    o.add_argument("--min-transitions", type=int, default=1000, help="no update before the buffer holds this many")
    o.add_argument("--action-repeat", type=int, default=2, help="env steps per transition (1 on a robot)")
    o.add_argument("--discount", type=float, help="default: heuristic from --episode-length, else 0.99")
    o.add_argument("--episode-length", type=int, default=0, help="agent steps per episode (discount heuristic)")
    o.add_argument("--obs-dim", type=int, default=0, help="0 = from the checkpoint, --init-weights or the first bag")
    o.add_argument("--action-dim", type=int, default=0, help="0 = from the checkpoint, --init-weights or the first bag")
    o.add_argument("--action-low", type=float, nargs="+", help="model action bounds (raw mode: command units)")
    o.add_argument("--action-high", type=float, nargs="+", help="model action bounds, high")
    o.add_argument("--ladder", help="exported rungs 'i:s:e:p,i:s:e:p' largest first (default: the default ladder)")
    o.add_argument("--control-rate-hz", type=float, default=50.0, help="for the latency check")
    o.add_argument("--deadline-fraction", type=float, default=0.7,
                   help="a rung fits if its p99 latency <= this fraction of the control period")
    o.add_argument("--latency-runs", type=int, default=30, help="timed plans per rung in the latency check")
    o.add_argument("--record-topics", nargs="+", help="transition-record topics (default: any)")
    o.add_argument("--raw-obs-topic", help="raw mode: observation topic (with --raw-command-topic, --raw-reward-topic)")
    o.add_argument("--raw-command-topic", help="raw mode: command topic (Float64MultiArray, physical units)")
    o.add_argument("--raw-reward-topic", help="raw mode: reward topic (Float64, or reward_node's stamped Float64MultiArray)")
    o.add_argument("--raw-episode-topic", help="raw mode: episode topic (Int64), optional")
    o.add_argument("--raw-observation-sources", nargs="+", metavar="SOURCE",
                   help="raw mode: the planner's observation sources instead of --raw-obs-topic, e.g. "
                        "joint_state:/joint_states:position:slider (runtime/observations.py)")
    o.add_argument("--raw-command-type", default="array", choices=("array", "joint_trajectory", "joint_state"),
                   help="raw mode: the command topic's type, as the planner's command_type")
    o.add_argument("--raw-command-joints", nargs="+", metavar="JOINT",
                   help="raw mode, joint_trajectory / joint_state commands: the joint of each action element")
    o.add_argument("--raw-command-interface", default="effort", choices=("position", "velocity", "effort"),
                   help="raw mode, joint_trajectory / joint_state commands: the field that carries the command")
    o.add_argument("--tolerance-s", type=float, default=0.005, help="raw mode: timestamp tolerance")
    o.add_argument("--raw-command-scale", type=float, nargs="+",
                   help="raw mode: command units per model action unit (the planner's command_scale); --action-low/"
                        "--action-high are then the model's bounds")
    o.add_argument("--raw-episode-return-topic", default="",
                   help="raw mode: the robot's episode returns (std_msgs/Float64, reward_node's) for train.csv and "
                        "the learning curve (default: a row per run of consecutive transitions)")
    o.add_argument("--raw-reward-tolerance-s", type=float, default=0.0,
                   help="raw mode: timestamp tolerance of rewards (0 = --tolerance-s); reward_node's come a few ms "
                        "after the observation they score")
    o.add_argument("--episodic", action="store_true",
                   help="a termination head, for episodes that end by termination (--init-weights may lack it)")
    o.add_argument("--raw-termination-expression", default="",
                   help="raw mode: a numpy expression of obs (the observation after a step), true where the step "
                        "ended the episode by termination, e.g. 'abs(obs[2]) > 1.0' (needs --episodic)")
    # runtime/observations.py's PACES, spelt out: importing it would load onnxruntime for --help (test_cli checks)
    o.add_argument("--raw-pace", default="observation", choices=("observation", "command"),
                   help="raw mode: a transition per pair of observations, or per pair of commands (from the newest "
                        "observation at each: observations faster than the control rate)")
    # runtime/observations.py's REWARD_TIMES, spelt out for the same reason
    o.add_argument("--raw-reward-at", default="observation", choices=("observation", "command"),
                   help="--raw-pace command: match a reward to its observation's time, or to the command that ends "
                        "the step ('command': reward_node with pace command publishes there)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("export", help="export weights.pt (or a checkpoint.pt) as an ONNX planner graph")
    e.add_argument("--weights", required=True, help="weights.pt or checkpoint.pt from `tdmpc2-ros train`")
    e.add_argument("--out", required=True, help="an .onnx file, or a folder with --ladder")
    e.add_argument("--ladder", action="store_true", help="export the default budget ladder into the folder --out")
    _budget_args(e)
    e.set_defaults(func=cmd_export)

    v = sub.add_parser("eval", help="evaluate an exported planner on a dm_control task")
    v.add_argument("--model", required=True, help="an .onnx planner or a model folder")
    _episode_args(v)
    v.add_argument("--video", help="write the first episode as MP4/GIF here")
    v.set_defaults(func=cmd_eval)

    l = sub.add_parser("eval-ladder", help="evaluation return at each rung of a model folder's budget ladder")
    l.add_argument("--model", required=True, help="model folder with ladder.json")
    _episode_args(l)
    l.add_argument("--out", help="write the results as JSON here")
    l.set_defaults(func=cmd_eval_ladder)

    b = sub.add_parser("bench", help="planning/training speed and memory benchmark (JSON + table)")
    b.add_argument("--presets", default="1M,5M", help="comma-separated model sizes")
    b.add_argument("--planners", default="mppi", help="comma-separated: mppi, cem, gradient")
    b.add_argument("--repeats", type=int, default=30, help="timed plans per model (updates: half as many, at least 10)")
    b.add_argument("--providers", default="cpu,openvino",
                   help="execution providers to time the plan on (runtime/onnx_planner.py); one not installed is "
                        "left out with a note. The bars are read on cpu, ONNX Runtime's own CPU kernels")
    b.add_argument("--out", default="benchmark/results/core.json", help="JSON results; the table goes beside it as .md")
    b.set_defaults(func=cmd_bench)
    bt = sub.add_parser("bench-train", help="training speed on one device, preset by preset: update (eager and compiled), "
                                           "act while collecting, peak GPU memory (JSON + table)")
    bt.add_argument("--device", default="auto", type=_device_arg, help="cpu, cuda, cuda:N or auto (default: a GPU where torch sees one)")
    bt.add_argument("--presets", default="1M,5M", help="comma-separated model sizes")
    bt.add_argument("--modes", default="auto",
                    help="eager, compiled (torch.compile) and/or graphs (compiled and captured as CUDA graphs, as "
                         "train --compile runs on a GPU); auto: eager,compiled and, on a GPU, graphs")
    bt.add_argument("--batch-size", type=int, default=256, help="update batch size")
    bt.add_argument("--repeats", type=int, default=30, help="timed updates per mode")
    bt.add_argument("--out", default="benchmark/results/train.json", help="JSON results; the table goes beside it as .md")
    bt.set_defaults(func=cmd_bench_train)
    bl = sub.add_parser("bench-loop", help="learning-loop benchmark: bag ingest throughput and hot-swap cost (JSON + table)")
    bl.add_argument("--transitions", type=int, default=50_000, help="transitions written to each MCAP bag that is ingested (transition records, and a robot's own topics)")
    bl.add_argument("--compression", default="auto", choices=["auto", "chunk", "file", "message", "none"],
                    help="how the ingested bags are compressed (the recorder's compression parameter)")
    bl.add_argument("--swaps", type=int, default=5, help="model swaps announced to the running planner")
    bl.add_argument("--model", default="", help="model folder to swap between (default: the shipped model)")
    bl.add_argument("--busy", type=float, default=0.0, metavar="CORES",
                    help="keep this much of one core busy in another process while the planner runs (0-1; e.g. 0.5: "
                         "10 ms of work every 20 ms), as other software on the robot's computer would")
    bl.add_argument("--parts", default="ingest,swap,stepdown",
                    help="which parts to run: ingest (bag -> buffer), swap (the planner's model swaps through the "
                         "bringup), stepdown (a budget step down's CPU on the hot-swap thread, no ROS)")
    bl.add_argument("--stepdown-reps", type=int, default=5, help="step downs per ladder pair and number of warm-up plans")
    bl.add_argument("--out", default="benchmark/results/loop.json", help="JSON results; the table goes beside it as .md")
    bl.add_argument("planner_args", nargs="*", metavar="name:=value",
                    help="launch arguments for the planner's bringup, e.g. plan_thread_priority:=50 plan_cpu_affinity:=[1]")
    bl.set_defaults(func=cmd_bench_loop)
    bn = sub.add_parser("bench-learn", help="the closed learning loop from random weights through the bringup "
                                            "(lockstep sim, planner, recorder, trainer): learning curve, swaps, JSON + table")
    bn.add_argument("--task", default="cartpole-swingup", help="dm_control task the sim runs")
    bn.add_argument("--env-steps", type=int, default=100_000, help="environment steps to play (action repeat 2 included)")
    bn.add_argument("--rate-hz", type=float, default=8.0,
                    help="planner timer = lockstep transitions per second; keep it below the trainer's updates/s")
    bn.add_argument("--ladder", default="['4:128:16:8','3:64:8:4']", help="rungs the trainer exports (the planner picks one)")
    bn.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True, help="torch.compile the trainer's update")
    bn.add_argument("--bag-split-s", type=float, default=30.0, help="recorder: close a bag for the trainer this often")
    bn.add_argument("--bar", type=float, default=750.0, help="return the loop should reach within --env-steps")
    bn.add_argument("--settle-s", type=float, default=4.0, help="misses counted from before a swap to this long after it")
    bn.add_argument("--eval-episodes", type=int, default=10, help="episodes to evaluate the last version on")
    bn.add_argument("--seed", type=int, default=None,
                    help="one seed for the sim, planner and trainer (default: each node's YAML: sim 0, planner 0, trainer 1)")
    bn.add_argument("--eval-seed", type=int, default=0, help="seed of the evaluation episodes")
    bn.add_argument("--timeout-h", type=float, default=6.0, help="stop the loop after this many hours")
    bn.add_argument("--domain", type=int, default=None, help="ROS_DOMAIN_ID (default: from the process id)")
    bn.add_argument("--run-dir", default="runs/bench-learn", help="bags, model store, trainer run and logs")
    bn.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    bn.add_argument("--out", default="benchmark/results/learn.json", help="JSON results; the table goes beside it as .md")
    bn.set_defaults(func=cmd_bench_learn)

    s = sub.add_parser("ship", help="export the ladder, evaluate, and write a model folder with its model card")
    s.add_argument("--weights", required=True, help="weights.pt or checkpoint.pt produced by `tdmpc2-ros train`")
    s.add_argument("--out", required=True, help="model folder, e.g. models/cartpole_swingup")
    s.add_argument("--episodes", type=int, default=10, help="evaluation episodes for the model card")
    s.add_argument("--eval-seed", type=int, default=0, help="seed of those episodes")
    s.add_argument("--reproduce", default="", help="the exact command that produced the weights (default: the "
                                                   "`train` command recorded in the weights' run folder)")
    s.add_argument("--note", default="", help="a line for the model card")
    s.set_defaults(func=cmd_ship)

    d = sub.add_parser("demo", help="sim + planner with the shipped model in real time; video, latency histogram")
    d.add_argument("--episodes", type=int, default=5, help="episodes to play")
    d.add_argument("--model", help="model folder or .onnx (default: the shipped cartpole model)")
    d.add_argument("--rate", type=float, default=50.0, help="control rate in Hz")
    d.add_argument("--run-dir", help="where the video, histogram and summary go (default: runs/demo-<time>)")
    d.add_argument("launch_args", nargs="*", metavar="name:=value",
                   help="more launch arguments for the bringup, e.g. plan_thread_priority:=50 plan_cpu_affinity:=[1]")
    d.set_defaults(func=cmd_demo)

    i = sub.add_parser("info", help="what a path holds: an .onnx graph's contract, a model folder's rungs with each "
                                    "file's sha256 checked, a model store's versions, a bag or a folder of bags, "
                                    "a training run folder's progress (exit 1 if something is damaged)")
    i.add_argument("path", help="an .onnx planner graph, a model folder (ladder.json), a model store, a bag or a "
                                "folder of bags, a training run folder (RUN_DIR: config.json, train.csv, ...)")
    i.add_argument("--ledger", help="bags: the trainer's RUN_DIR/ingest_ledger.jsonl, to show what became of each bag")
    i.add_argument("--json", action="store_true", help="print the description as JSON")
    i.set_defaults(func=cmd_info)

    from tdmpc2_ros.ros.call import SERVICES

    c = sub.add_parser("call", help="call a running node's service without the ros2 command: rollback, enable true|false, "
                                    "split, export (= ros2 service call)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="services (on ROS_DOMAIN_ID's domain):\n" + "\n".join(
                           f"  {n}: {s.path} (std_srvs/{s.kind}): {s.what}" for n, s in SERVICES.items()))
    c.add_argument("name", choices=list(SERVICES), help="which service")
    c.add_argument("value", nargs="?", help="enable: true or false")
    c.add_argument("--service", default="", help="the service's full name, where the node is remapped or namespaced")
    c.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the service to appear")
    c.set_defaults(func=cmd_call)

    from tdmpc2_ros.ros.bringup import ARGUMENTS

    u = sub.add_parser("bringup", help="start a node set without the ros2 command (same description as launch/)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="launch arguments (name:=value; default in brackets):\n" + "\n".join(
                           f"  {a.name} [{a.default}]: {a.description}" for a in ARGUMENTS.values()))
    u.add_argument("set", choices=["planner", "sim", "trainer", "learn"],
                   help="planner: sim + planner (like planner.launch.py); sim: the sim alone; trainer: the trainer alone; "
                        "learn: sim + planner + recorder + trainer (like learn.launch.py)")
    u.add_argument("arguments", nargs="*", help="launch arguments, name:=value (e.g. use_sim:=false mode:=lockstep)")
    u.set_defaults(func=cmd_bringup)
    return p


def cmd_info(args) -> int:
    from tdmpc2_ros.bags.info import bags_info, format_bags_info, is_bag_folder
    from tdmpc2_ros.runtime.model_info import format_info, model_info
    from tdmpc2_ros.training.run_info import format_run_info, is_run_folder, run_info

    if is_bag_folder(args.path):
        info, text = bags_info(args.path, args.ledger), format_bags_info
    elif args.ledger:
        raise ValueError(f"--ledger goes with a bag or a folder of bags; {args.path} holds none")
    elif is_run_folder(args.path):
        info, text = run_info(args.path), format_run_info
    else:
        info, text = model_info(args.path), format_info
    print(json.dumps(info, indent=2) if args.json else text(info))
    return 1 if info["problems"] else 0


def cmd_call(args) -> int:
    from tdmpc2_ros.ros.call import call, parse_value

    success, message = call(args.name, parse_value(args.name, args.value), args.service, args.wait)
    print(f"{'success' if success else 'refused'}: {message}")
    return 0 if success else 1


def _interrupt(signum, _frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM (a service manager, `timeout`, `kill`) stops a command as Ctrl-C does, so the node sets
    # that demo and the benchmarks start are stopped too, not orphaned. SIGINT is restored for the
    # same reason: a shell that starts a command in the background hands it SIGINT ignored.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return args.func(args)
    except KeyboardInterrupt as e:  # the command's own clean-up has run on the way here
        print(f"tdmpc2-ros {args.command}: interrupted ({e or 'SIGINT'})", file=sys.stderr)
        return 130
    except _user_errors() as e:  # evaluated only when something was raised
        if os.environ.get("TDMPC2_ROS_TRACEBACK"):
            raise
        print(f"tdmpc2-ros {args.command}: error: {e}\n(set TDMPC2_ROS_TRACEBACK=1 for the traceback)", file=sys.stderr)
        return 2


def _user_errors() -> tuple[type, ...]:
    """What a command raises for what it was given (a task, a path, a model, a bag, a checkpoint): one
    line on stderr and exit status 2, as for a bad option, rather than a traceback."""
    from tdmpc2_ros.bags.reader import BagSkipped
    from tdmpc2_ros.ros.call import CallError
    from tdmpc2_ros.runtime.contract import ModelLoadError
    from tdmpc2_ros.runtime.model_store import StoreError
    from tdmpc2_ros.training.checkpoint import CheckpointError

    return (ValueError, FileNotFoundError, PermissionError, ModelLoadError, StoreError, CheckpointError, BagSkipped,
            CallError)


if __name__ == "__main__":
    sys.exit(main())
