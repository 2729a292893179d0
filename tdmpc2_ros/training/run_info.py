"""What a training run folder holds, for the person watching a robot learn: ``tdmpc2-ros info RUN_DIR``.

Two kinds share the folder layout (training/online.py and training/offline.py): the direct trainer's
(``tdmpc2-ros train --task``: ``eval.csv``, ``summary.json``) and the trainer from bags'
(``trainer_node``, ``tdmpc2-ros train --bags``: ``ingest_ledger.jsonl``). It reads ``config.json``,
the CSV logs, the ledger and the files' sizes and times; never the checkpoint's contents (it can
hold a million-transition buffer). Pure Python: no ROS, no torch.
"""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

from tdmpc2_ros.bags.ledger import IngestLedger

CONFIG, CHECKPOINT, WEIGHTS, PLOT = "config.json", "checkpoint.pt", "weights.pt", "learning_curve.png"
LOGS = ("train.csv", "eval.csv", "metrics.csv")
LEDGER = "ingest_ledger.jsonl"  # training/offline.py's LEDGER (not imported: that module imports torch)
RECENT = 10  # the curve's recent mean: the last this many episodes


def is_run_folder(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / CONFIG).is_file() and any((p / f).is_file() for f in (*LOGS, CHECKPOINT))


def _file(path: Path) -> dict | None:
    if not path.is_file():
        return None
    stat = path.stat()
    return {"mb": round(stat.st_size / 1e6, 2), "modified": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(stat.st_mtime))}


def _rows(path: Path, problems: list) -> list[dict]:
    if not path.is_file():
        return []
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        problems.append(f"{path.name}: {e}")
        return []


def _number(row: dict, key: str, problems: list, name: str) -> float:
    try:
        return float(row[key])
    except (KeyError, TypeError, ValueError):
        problems.append(f"{name}: no number in column {key!r} of row {row}")
        return math.nan


def _curve(rows: list[dict], problems: list) -> dict | None:
    if not rows:
        return None
    returns = [_number(r, "episode_reward", problems, "train.csv") for r in rows]
    recent = returns[-RECENT:]
    return {"episodes": len(rows), "last_step": int(_number(rows[-1], "step", problems, "train.csv")),
            "last_return": returns[-1], f"mean_last_{len(recent)}": round(sum(recent) / len(recent), 2),
            "best_return": max(returns)}


def _ledger(path: Path, problems: list) -> dict | None:
    if not path.is_file():
        return None
    ledger = IngestLedger(path)  # each bag's latest entry, as the trainer reads them
    problems += [f"{LEDGER} line {n} is not JSON (a write cut short?)" for n in ledger.torn_at]
    entries = ledger.entries.values()
    ingested = [e for e in entries if e.get("status", "ingested") == "ingested"]
    skipped = [e for e in entries if e.get("status") == "skipped"]
    out = {"ingested": len(ingested), "transitions": sum(int(e.get("transitions", 0)) for e in ingested),
           "skipped": len(skipped)}
    if skipped:
        out["last_skipped"] = f"{skipped[-1].get('bag')}: {skipped[-1].get('reason', '')}"
    return out


def run_info(path: str | Path) -> dict:
    """The description of a run folder (see the module docstring); ``problems`` lists what could not be read."""
    p = Path(path)
    problems: list[str] = []
    try:
        config = json.loads((p / CONFIG).read_text())
    except (OSError, ValueError) as e:
        config = {}
        problems.append(f"{CONFIG}: {e}")
    model = config.get("model", {}) if isinstance(config.get("model"), dict) else {}
    from_bags = (p / LEDGER).is_file() or "raw" in config
    info = {"kind": "run folder (trainer from bags)" if from_bags else "run folder (direct trainer)", "path": str(p),
            "task": config.get("task", ""), "preset": config.get("preset", model.get("preset", "")),
            "seed": config.get("seed", ""), "files": {f: _file(p / f) for f in (CHECKPOINT, WEIGHTS, PLOT)},
            "curve": _curve(_rows(p / "train.csv", problems), problems), "problems": problems}
    if model:
        info["dims"] = {"obs": model.get("obs_dim"), "action": model.get("action_dim")}
    if "steps" in config:
        info["steps_planned"] = config["steps"]
    evals = _rows(p / "eval.csv", problems)
    if evals:
        last = evals[-1]
        info["last_eval"] = {"step": int(_number(last, "step", problems, "eval.csv")),
                             "return": _number(last, "episode_reward", problems, "eval.csv"),
                             "std": _number(last, "episode_reward_std", problems, "eval.csv")}
    metrics = _rows(p / "metrics.csv", problems)
    if metrics:
        info["last_losses"] = {k: v for k, v in metrics[-1].items() if k in ("updates", "step") or k.endswith("loss")}
    ledger = _ledger(p / LEDGER, problems)
    if ledger is not None:
        info["bags"] = ledger
    if (p / "summary.json").is_file():
        try:
            info["summary"] = json.loads((p / "summary.json").read_text())
        except ValueError as e:
            problems.append(f"summary.json: {e}")
    return info


def format_run_info(info: dict) -> str:
    """The readable form of run_info's dict."""
    dims = info.get("dims", {})
    lines = [f"{info['kind']}: {info['path']}",
             f"  task {info['task'] or '-'}, preset {info['preset'] or '-'}, seed {info['seed']}"
             + (f", obs {dims['obs']}, action {dims['action']}" if dims else "")
             + (f", {info['steps_planned']} steps planned" if "steps_planned" in info else "")]
    c = info["curve"]
    if c:
        mean_key = next(k for k in c if k.startswith("mean_last_"))
        lines.append(f"  train.csv: {c['episodes']} episodes to step {c['last_step']}; last return {c['last_return']:g}, "
                     f"mean of the last {mean_key.removeprefix('mean_last_')} {c[mean_key]:g}, best {c['best_return']:g}")
    else:
        lines.append("  train.csv: no episode yet")
    if "last_eval" in info:
        e = info["last_eval"]
        lines.append(f"  last evaluation: {e['return']:g} +- {e['std']:g} at step {e['step']}")
    if "summary" in info and "final_eval_return" in info["summary"]:
        lines.append(f"  final evaluation (summary.json): {info['summary']['final_eval_return']}")
    if "last_losses" in info:
        lines.append("  last losses: " + ", ".join(f"{k} {v}" for k, v in info["last_losses"].items()))
    if "bags" in info:
        b = info["bags"]
        lines.append(f"  bags: {b['ingested']} ingested ({b['transitions']} transitions), {b['skipped']} skipped"
                     + (f"; last skipped {b['last_skipped']}" if "last_skipped" in b else ""))
    for name, f in info["files"].items():
        lines.append(f"  {name:<20} " + (f"{f['mb']:>8} MB, written {f['modified']} UTC" if f else "    none"))
    lines += [f"  PROBLEM: {p}" for p in info["problems"]]
    return "\n".join(lines)
