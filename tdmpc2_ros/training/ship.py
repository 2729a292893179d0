"""`tdmpc2-ros ship`: turn trained weights into a shippable model folder.

The folder gets the budget ladder (ONNX, one file per rung, ladder.json), the torch weights, an
evaluation of the full-budget rung over N episodes, and a model card (MODEL_CARD.md + card.json)
with preset, steps, seed, returns, every file's sha256 and the exact command that reproduces the
weights. Everything is written to a temporary folder first and moved into place at the end, so a
failed ship never leaves a half-updated model.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tdmpc2_ros.runtime.digest import file_sha256


def ship(weights: str, out: str, episodes: int, reproduce: str, seed: int, note: str = "") -> dict:
    from tdmpc2_ros.cli import load_weights
    from tdmpc2_ros.core.export import export_ladder
    from tdmpc2_ros.envs.dmc import DMControlEnv
    from tdmpc2_ros.runtime.ladder import default_budgets
    from tdmpc2_ros.training.evaluate import evaluate_onnx

    reproduce = reproduce or (f"{training_command(weights)} && tdmpc2-ros ship --weights {weights} --out {out} "
                              f"--episodes {episodes} --eval-seed {seed}")
    model, discount, task, step, source_sha, updates = load_weights(weights, with_updates=True)
    env = DMControlEnv(task)
    out = Path(out)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent if out.parent.exists() else None))
    try:
        rungs = export_ladder(model, default_budgets(model.cfg.action_dim), discount, staging, task=task, train_step=step,
                              checkpoint_sha256=source_sha, **env.contract_spec())
        torch.save({"model": model.state_dict(), "model_config": model.cfg.to_dict(), "discount": discount,
                    "task": task, "env_step": step, "updates": updates}, staging / "weights.pt")
        full = rungs[0]
        returns = evaluate_onnx(full.path, task, episodes, seed=seed)
        card = {
            "task": task, "preset": model.cfg.preset, "env_steps": step, "gradient_updates": updates,
            "train_seed": _seed_of(reproduce),
            "evaluation": {"budget": full.budget.label(), "episodes": episodes, "eval_seed": seed,
                           "returns": [round(r, 2) for r in returns], "mean": round(float(np.mean(returns)), 2),
                           "std": round(float(np.std(returns)), 2)},
            "reproduce": reproduce, "source_weights_sha256": source_sha, "note": note,
            "files": {p.name: file_sha256(p) for p in sorted(staging.iterdir()) if p.is_file()},
            "shipped": time.strftime("%Y-%m-%d"),
        }
        (staging / "card.json").write_text(json.dumps(card, indent=2))
        (staging / "MODEL_CARD.md").write_text(render_card(card))
        staging.chmod(0o755)  # mkdtemp makes 0700
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
        return card
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def training_command(weights: str) -> str:
    """The `tdmpc2-ros train` command recorded by the run that wrote `weights` (its run folder's
    config.json): with the ship command, what the card gives as the way to reproduce the model."""
    config = Path(weights).parent / "config.json"
    if not config.is_file():
        raise ValueError(f"{weights} has no run config beside it ({config}); pass --reproduce with the command that made it")
    c = json.loads(config.read_text())
    run_dir = Path(weights).parent
    flags = {"task": c["task"], "steps": c["steps"], "preset": c["preset"], "seed": c["seed"], "planner": c["planner"],
             "eval-freq": c["eval_freq"], "eval-episodes": c["eval_episodes"], "checkpoint-freq": c["checkpoint_freq"]}
    train = "tdmpc2-ros train " + " ".join(f"--{k} {v}" for k, v in flags.items())
    train += " --compile" * bool(c.get("compile"))
    device = c.get("device", "cpu")  # runs from before the option trained on the CPU
    train += f" --device {device}" * (device != "cpu") + f" --run-dir {run_dir}"
    return train


def _seed_of(command: str):
    parts = command.split()
    return int(parts[parts.index("--seed") + 1]) if "--seed" in parts else None


def render_card(c: dict) -> str:
    e = c["evaluation"]
    lines = [
        f"# Model card: {c['task']} ({c['preset']})", "",
        *([f"> {c['note']}", ""] if c["note"] else []),
        "| field | value |", "|---|---|",
        f"| task | {c['task']} |", f"| preset | {c['preset']} |",
        f"| training | {c['env_steps']} environment steps (action repeat 2), {c['gradient_updates']} gradient updates, "
        f"seed {c['train_seed']} |",
        f"| evaluation | {e['episodes']} episodes, budget {e['budget']}, eval seed {e['eval_seed']}: "
        f"mean return **{e['mean']}** (std {e['std']}) |",
        f"| returns | {', '.join(str(r) for r in e['returns'])} |",
        f"| source weights sha256 | `{c['source_weights_sha256']}` |",
        f"| shipped | {c['shipped']} |", "",
        "## Reproduce", "", "```bash", c["reproduce"], "```", "",
        "## Files", "", "| file | sha256 |", "|---|---|",
        *[f"| {name} | `{sha}` |" for name, sha in c["files"].items()], "",
    ]
    return "\n".join(lines)
