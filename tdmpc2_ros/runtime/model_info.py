"""What a model path holds, for the person about to deploy it: ``tdmpc2-ros info PATH``.

- an ``.onnx`` planner graph: its contract (observation and action spec, budget, preset, task,
  training step, source checkpoint hash, format version) and its sha256;
- a model folder (``ladder.json``): its rungs, each file checked against the sha256 recorded beside
  it (``ladder.json``, and ``manifest.json`` or ``card.json`` where present), the contract of the
  largest rung, and the model card's or manifest's summary;
- a model store: its versions with parent, steps, updates, age, size, the rung validation chose and
  that rung's p99 latency, and what a crash left behind (hidden folders).

It only reads. A planner refuses a damaged model at load anyway; this says so before a robot is
involved, as ``ros2 bag info`` does for a bag. Pure Python: no ROS, no torch, no ONNX Runtime
session (``onnx`` reads the metadata).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tdmpc2_ros.runtime.contract import METADATA_KEY, ModelContract, ModelLoadError
from tdmpc2_ros.runtime.digest import file_sha256, folder_bytes
from tdmpc2_ros.runtime.ladder import LADDER_FILE, read_ladder
from tdmpc2_ros.runtime.model_store import MANIFEST, Manifest, ModelStore, StoreError, is_store

CARD = "card.json"


def graph_contract(path: str | Path) -> ModelContract:
    """The contract an exported planner graph carries; ModelLoadError if it is not one."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file raises protobuf's own errors
        raise ModelLoadError(f"{path}: not a readable ONNX file ({type(e).__name__}: {e})") from e
    meta = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in meta:
        raise ModelLoadError(f"{path} carries no '{METADATA_KEY}' metadata: not a tdmpc2_ros planner graph")
    return ModelContract.from_json(meta[METADATA_KEY], source=str(path))


def _contract_summary(c: ModelContract) -> dict:
    return {"obs": c.obs.describe(), "action": c.action.describe(), "budget": c.budget.label(), "preset": c.preset,
            "task": c.task, "train_step": c.train_step, "checkpoint_sha256": c.checkpoint_sha256,
            "discount": c.discount, "format_version": c.format_version,
            "episodic": bool(c.extra.get("model", {}).get("episodic", False))}


def _mb(path: Path) -> float:
    return round(path.stat().st_size / 1e6, 2)


def graph_info(path: Path) -> dict:
    info = {"kind": "planner graph", "path": str(path), "problems": []}
    try:
        info["contract"] = _contract_summary(graph_contract(path))
    except ModelLoadError as e:
        info["problems"].append(str(e))
    info["files"] = [{"file": path.name, "mb": _mb(path), "sha256": file_sha256(path), "check": "not recorded"}]
    return info


def _recorded_sha256(folder: Path, rungs) -> dict[str, str]:
    """file name -> the sha256 written down for it: the manifest's or card's list, else ladder.json's."""
    recorded = {}
    for rung in rungs:
        if rung.sha256:
            recorded[rung.path.name] = rung.sha256
    for doc in (CARD, MANIFEST):
        try:
            recorded.update(json.loads((folder / doc).read_text()).get("files", {}))
        except (OSError, ValueError, AttributeError):
            pass
    return recorded


def _check_file(path: Path, expected: str) -> dict:
    if not path.is_file():
        return {"file": path.name, "mb": None, "sha256": None, "check": "MISSING"}
    actual = file_sha256(path)
    check = "not recorded" if not expected else ("ok" if actual == expected else f"MISMATCH (recorded {expected[:12]}...)")
    return {"file": path.name, "mb": _mb(path), "sha256": actual, "check": check}


def folder_info(folder: Path) -> dict:
    rungs = read_ladder(folder)
    info = {"kind": "model folder", "path": str(folder), "problems": [],
            "rungs": [r.budget.label() for r in rungs]}
    recorded = _recorded_sha256(folder, rungs)
    names = [r.path.name for r in rungs] + sorted(n for n in recorded if n not in {r.path.name for r in rungs})
    info["files"] = [_check_file(folder / n, recorded.get(n, "")) for n in names]
    info["problems"] += [f"{f['file']}: {f['check']}" for f in info["files"] if f["check"] not in ("ok", "not recorded")]
    try:
        info["contract"] = _contract_summary(graph_contract(rungs[0].path))
    except ModelLoadError as e:
        info["problems"].append(str(e))
    info.update(_provenance(folder))
    return info


def _provenance(folder: Path) -> dict:
    """The model card's evaluation, or the store manifest's lineage, where the folder has one."""
    out = {}
    try:
        card = json.loads((folder / CARD).read_text())
        ev = card.get("evaluation", {})
        out["card"] = {"env_steps": card.get("env_steps"), "eval_mean": ev.get("mean"), "eval_std": ev.get("std"),
                       "eval_episodes": ev.get("episodes"), "reproduce": card.get("reproduce")}
    except (OSError, ValueError, AttributeError):
        pass
    try:
        out["manifest"] = _version_row(Manifest.from_json((folder / MANIFEST).read_text()), folder)
    except (OSError, ValueError, TypeError):
        pass
    return out


def _version_row(m: Manifest, folder: Path) -> dict:
    validation = m.notes.get("validation", {}) if isinstance(m.notes, dict) else {}
    chosen = validation.get("chosen_rung", "")
    p99 = validation.get("latency", {}).get(chosen, {}).get("p99_ms")
    return {"version": m.version, "parent": m.parent, "env_steps": m.env_steps, "updates": m.updates,
            "created": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(m.created)) if m.created else "",
            "mb": round(folder_bytes(folder) / 1e6, 1),
            "chosen_rung": chosen, "p99_ms": p99, "bags": len(m.bags)}


def store_info(root: Path) -> dict:
    """Every version's row, oldest first. Reads manifests only (a version's files: `info <version>`)."""
    info = {"kind": "model store", "path": str(root), "problems": [], "versions": []}
    store = ModelStore(root)
    for version in store.versions():
        try:
            info["versions"].append(_version_row(store.manifest(version), store.path(version)))
        except (StoreError, OSError) as e:
            info["problems"].append(f"{version}: {e}")
    info["mb"] = round(sum(v["mb"] for v in info["versions"]), 1)
    info["leftovers"] = sorted(p.name for p in root.iterdir() if p.name.startswith("."))
    return info


def model_info(path: str | Path) -> dict:
    """The description of whatever model path this is; FileNotFoundError or ModelLoadError if none."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist")
    if p.is_file():
        return graph_info(p)
    if (p / LADDER_FILE).is_file():
        return folder_info(p)
    if is_store(p):
        return store_info(p)
    raise StoreError(f"{p} is neither an .onnx planner graph, a model folder ({LADDER_FILE}) nor a model store "
                     f"(nor a bag or a training run folder)")


def format_info(info: dict) -> str:
    """The readable form of model_info's dict."""
    lines = [f"{info['kind']}: {info['path']}"]
    if "contract" in info:
        c = info["contract"]
        lines += [f"  task {c['task']}, preset {c['preset']}{' (episodic)' if c['episodic'] else ''}, trained {c['train_step']} steps, discount {c['discount']:g}",
                  f"  observation {c['obs']}", f"  action {c['action']}",
                  f"  {'largest rung' if 'rungs' in info else 'budget'} {c['budget']}; checkpoint "
                  f"{c['checkpoint_sha256'][:16]}; format {c['format_version']}"]
    if "card" in info:
        k = info["card"]
        lines.append(f"  model card: {k['env_steps']} env steps, return {k['eval_mean']} +- {k['eval_std']} "
                     f"over {k['eval_episodes']} episodes")
    if "manifest" in info:
        v = info["manifest"]
        lines.append(f"  store version {v['version']} (parent {v['parent'] or '-'}), {v['env_steps']} env steps, "
                     f"{v['updates']} updates, created {v['created']} UTC")
    if "files" in info:
        lines.append(f"  {'file':<40} {'MB':>7}  sha256")
        lines += [f"  {f['file']:<40} {f['mb'] if f['mb'] is not None else '-':>7}  {f['check']}" for f in info["files"]]
    if "versions" in info:
        lines += _version_table(info)
    lines += [f"  PROBLEM: {p}" for p in info["problems"]]
    return "\n".join(lines)


def _version_table(info: dict) -> list[str]:
    rows = info["versions"]
    lines = [f"  {len(rows)} versions, {info['mb']} MB; newest {rows[-1]['version'] if rows else '-'}"]
    if rows:
        lines.append(f"  {'version':<20} {'parent':<20} {'env steps':>10} {'updates':>8} {'created (UTC)':<19} "
                     f"{'MB':>6}  chosen rung (p99 ms)")
        for v in rows:
            chosen = f"{v['chosen_rung']} ({v['p99_ms']})" if v["chosen_rung"] else "-"
            lines.append(f"  {v['version']:<20} {v['parent'] or '-':<20} {v['env_steps']:>10} {v['updates']:>8} "
                         f"{v['created']:<19} {v['mb']:>6}  {chosen}")
    if rows:
        lines.append(f"  (a version's files and contract: tdmpc2-ros info {Path(info['path']) / rows[-1]['version']})")
    if info["leftovers"]:
        lines.append(f"  hidden (being written or removed, or left by a crash): {', '.join(info['leftovers'])}")
    return lines
