"""The `tdmpc2-ros` command: train, export, evaluate and benchmark without ROS."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _budget_args(p: argparse.ArgumentParser):
    g = p.add_argument_group("planning budget (fixed at export)")
    g.add_argument("--planner", choices=["mppi", "cem", "gradient"], default="mppi")
    g.add_argument("--iterations", type=int)
    g.add_argument("--samples", type=int, dest="num_samples")
    g.add_argument("--elites", type=int, dest="num_elites")
    g.add_argument("--pi-trajs", type=int, dest="num_pi_trajs")


def _budget_from(args, action_dim: int):
    from tdmpc2_ros.runtime import PlanBudget

    over = {k: getattr(args, k) for k in ("iterations", "num_samples", "num_elites", "num_pi_trajs") if getattr(args, k) is not None}
    return PlanBudget.reference(action_dim, planner=args.planner, **over)


def cmd_train(args) -> int:
    from tdmpc2_ros.training.online import OnlineTrainer, RunConfig

    cfg = RunConfig(task=args.task, steps=args.steps, preset=args.preset, seed=args.seed, planner=args.planner,
                    eval_freq=args.eval_freq, eval_episodes=args.eval_episodes, checkpoint_freq=args.checkpoint_freq,
                    threads=args.threads)
    run_dir = Path(args.run_dir or f"runs/{args.task}-{args.preset}-s{args.seed}")
    summary = OnlineTrainer(cfg, run_dir, resume=args.resume).run()
    print(json.dumps(summary, indent=2))
    return 0


def cmd_export(args) -> int:
    import torch

    from tdmpc2_ros.core.config import ModelConfig
    from tdmpc2_ros.core.export import export_planner
    from tdmpc2_ros.core.world_model import WorldModel
    from tdmpc2_ros.training.checkpoint import CheckpointError, file_sha256

    try:
        w = torch.load(args.weights, map_location="cpu", weights_only=False)
        cfg = ModelConfig(**w["model_config"])
        model = WorldModel(cfg)
        model.load_state_dict(w["model"])
    except Exception as e:
        raise CheckpointError(f"cannot load weights {args.weights}: {e}") from e
    budget = _budget_from(args, cfg.action_dim)
    contract = export_planner(model, budget, w["discount"], args.out, task=w.get("task", ""), train_step=w.get("env_step", 0),
                              checkpoint_sha256=file_sha256(args.weights))
    print(f"wrote {args.out}: {contract.describe()}")
    return 0


def cmd_eval(args) -> int:
    import numpy as np

    from tdmpc2_ros.training.evaluate import evaluate_onnx

    returns = evaluate_onnx(args.model, args.task, args.episodes, seed=args.seed, threads=args.threads, video_path=args.video)
    print(json.dumps({"model": args.model, "task": args.task, "episodes": len(returns), "returns": [round(r, 2) for r in returns],
                      "mean": round(float(np.mean(returns)), 2), "std": round(float(np.std(returns)), 2)}, indent=2))
    return 0


def cmd_bench(args) -> int:
    from tdmpc2_ros.benchmark import run_core_benchmark

    return run_core_benchmark(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tdmpc2-ros", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train TD-MPC2 online on a dm_control task (no ROS)")
    t.add_argument("--task", default="cartpole-swingup")
    t.add_argument("--steps", type=int, default=100_000, help="environment steps, action repeat 2 included")
    t.add_argument("--preset", default="1M", choices=["1M", "5M", "19M", "48M", "317M"])
    t.add_argument("--seed", type=int, default=1)
    t.add_argument("--planner", choices=["mppi", "cem", "gradient"], default="mppi")
    t.add_argument("--eval-freq", type=int, default=10_000)
    t.add_argument("--eval-episodes", type=int, default=10)
    t.add_argument("--checkpoint-freq", type=int, default=10_000)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--run-dir")
    t.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoint.pt")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("export", help="export weights.pt as an ONNX planner graph")
    e.add_argument("--weights", required=True)
    e.add_argument("--out", required=True)
    _budget_args(e)
    e.set_defaults(func=cmd_export)

    v = sub.add_parser("eval", help="evaluate an exported planner on a dm_control task")
    v.add_argument("--model", required=True)
    v.add_argument("--task", default="cartpole-swingup")
    v.add_argument("--episodes", type=int, default=10)
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--threads", type=int, default=2)
    v.add_argument("--video", help="write the first episode as MP4/GIF here")
    v.set_defaults(func=cmd_eval)

    b = sub.add_parser("bench", help="planning/training speed and memory benchmark (JSON + table)")
    b.add_argument("--presets", default="1M,5M")
    b.add_argument("--planners", default="mppi")
    b.add_argument("--repeats", type=int, default=30)
    b.add_argument("--out", default="benchmark/results/core.json")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
