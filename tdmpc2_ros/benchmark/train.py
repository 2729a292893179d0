"""`tdmpc2-ros bench-train`: the training side on one device, preset by preset. Per preset and mode: one
update, one act (the planner used while collecting: ONNX Runtime with the live weights on a CPU, the
torch planner beside the weights on a GPU) and, on a GPU, the peak memory of the update. Modes: eager,
compiled (torch.compile), graphs (compiled and captured as CUDA graphs, acting too: what
`train --compile` runs on a GPU). Writes JSON (after every row, so a run cut short keeps what it measured) and a table.

Walker-walk dimensions (obs 24, action 6), the default budget, batch 256, as `tdmpc2-ros bench`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from tdmpc2_ros.benchmark.core import ACTION_DIM, OBS_DIM, THREADS, _percentiles, bench_agent, bench_update, write_results
from tdmpc2_ros.benchmark.machine import machine


COMPILE_MODES = {"eager": None, "compiled": "default", "graphs": "graphs"}  # bench mode -> TDMPC2.compile mode


def _machine(device) -> dict:
    import torch

    info = {**machine(THREADS), "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["tf32_matmul"] = bool(torch.backends.cuda.matmul.allow_tf32)
    return info


def bench_act(agent, repeats: int) -> dict:
    """Seconds of agent.act (exploring, as while collecting) on random observations, after 3 warm-ups."""
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((repeats + 3, OBS_DIM)).astype(np.float32)
    for o in obs[:3]:
        agent.act(o, explore=True)
    times = []
    for o in obs[3:]:
        t = time.perf_counter()
        agent.act(o, explore=True)  # returns a numpy action: the device has finished
        times.append(time.perf_counter() - t)
    return _percentiles(times)


def run_train_benchmark(args) -> int:
    import torch

    from tdmpc2_ros.core.device import resolve_device

    device = resolve_device(args.device)
    presets = [p for p in args.presets.split(",") if p]
    modes = [m for m in args.modes.split(",") if m]
    if args.modes == "auto":
        modes = ["eager", "compiled"] + ["graphs"] * (device.type == "cuda")
    if any(m not in COMPILE_MODES for m in modes):
        raise SystemExit(f"--modes takes auto or a list of {', '.join(COMPILE_MODES)}, not {args.modes!r}")
    if "graphs" in modes and device.type != "cuda":
        raise SystemExit("--modes graphs (CUDA graphs) needs --device cuda")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"machine": _machine(device), "dims": {"obs": OBS_DIM, "action": ACTION_DIM}, "batch_size": args.batch_size,
              "rows": []}
    for preset in presets:
        for mode in modes:
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            agent = bench_agent(preset, str(device))
            upd = bench_update(preset, args.repeats, COMPILE_MODES[mode], args.batch_size, agent=agent)
            row = {"preset": preset, "mode": mode, "parameters": agent.model.num_parameters(), "update": upd}
            if device.type == "cuda":
                row["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
            if mode != "compiled":  # "compiled" acts as "eager" does; "graphs" captures the planner too
                row["act"] = bench_act(agent, args.repeats)
            result["rows"].append(row)
            act = f"  act {row['act']['median_ms']:.1f} ms" if "act" in row else ""
            mem = f"  peak {row['peak_gpu_mb']:.0f} MB" if "peak_gpu_mb" in row else ""
            print(f"{preset:5s} {mode:8s} update median {upd['median_ms']:8.2f} ms  p99 {upd['p99_ms']:8.2f} ms{act}{mem}",
                  flush=True)
            out.write_text(json.dumps(result, indent=2))  # a run cut short keeps what it measured
            del agent
    write_results(out, result, format_train_table(result))
    return 0


def format_train_table(r: dict) -> str:
    m = r["machine"]
    where = m.get("gpu", m["platform"])
    lines = [f"Training on {m['device']} ({where}), torch {m['torch']}, batch {r['batch_size']}, walker dimensions", "",
             "| preset | parameters | update | median ms | p99 ms | act median ms | peak GPU MB |", "|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        act = row.get("act", {}).get("median_ms", "-")
        lines.append(f"| {row['preset']} | {row['parameters']:,} | {row['mode']} | {row['update']['median_ms']} | "
                     f"{row['update']['p99_ms']} | {act} | {row.get('peak_gpu_mb', '-')} |")
    return "\n".join(lines) + "\n"
