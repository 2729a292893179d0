"""`tdmpc2-ros bench`: planning latency, achieved GFLOP/s against a GEMM peak measured in the same
run, training update time, and the planner's peak memory. Writes JSON and a readable table.

Measured on ONNX Runtime CPU with 2 threads, walker-walk dimensions (obs 24, action 6), the default
budget (512 samples, 24 policy trajectories, 64 elites, horizon 3, 6 iterations).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tdmpc2_ros.benchmark.machine import describe as describe_machine, machine

OBS_DIM, ACTION_DIM = 24, 6
THREADS = 2
# The core issue's bars, by preset: the plan median (MPPI at the reference budget, ONNX Runtime's own
# CPU kernels), the update median (batch 256, eager or compiled) and the planner's peak RSS.
PLAN_BARS_MS = {"1M": 60.0, "5M": 165.0}
UPDATE_BARS_MS = {"1M": 60.0, "5M": 220.0}
RSS_BARS_MB = {"5M": 300.0}


GEMM_SHAPES = ((2048, 2048, 2048), (1024, 1024, 1024), (8192, 512, 512))  # (m, k, n); the last like the planner's


def _median_run_s(model_bytes: bytes, feeds: dict, repeats: int) -> float:
    """Median seconds of one run of an ONNX model on ONNX Runtime CPU with THREADS threads (after one
    warm-up), with the session options the planner gets (the process's shared pool where one is set)."""
    from tdmpc2_ros.runtime.onnx_planner import new_session

    sess = new_session(model_bytes, THREADS, providers=["CPUExecutionProvider"])
    sess.run(None, feeds)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        sess.run(None, feeds)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


ACTIVATION_ROWS, ACTIVATION_WIDTH, ACTIVATION_LAYERS = 512, 384, 8  # the 1M preset's hidden width


def activation_block_model(width: int = ACTIVATION_WIDTH) -> bytes:
    """ACTIVATION_LAYERS LayerNorm -> Mish blocks on [ACTIVATION_ROWS, width], exported as the planner
    graph is (the same tracer, exporter and export-friendly Mish)."""
    import torch
    import torch.nn as nn
    from torch.fx.experimental.proxy_tensor import make_fx

    from tdmpc2_ros.core.export import _quiet_onnx_export
    from tdmpc2_ros.core.layers import export_friendly, mish

    class Blocks(nn.Module):
        def __init__(self):
            super().__init__()
            self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(ACTIVATION_LAYERS))

        def forward(self, x):
            for norm in self.norms:
                x = mish(norm(x))
            return x

    x = torch.zeros(ACTIVATION_ROWS, width)
    with export_friendly():
        gm = make_fx(Blocks().eval().requires_grad_(False))(x)
    return _quiet_onnx_export(gm, (x,), input_names=("x",), output_names=("y",)).SerializeToString()


def activation_block_us(width: int = ACTIVATION_WIDTH, repeats: int = 50) -> float:
    """Microseconds of one LayerNorm -> Mish block on [512, width] (the 1M preset's hidden width): the
    bulk of a plan's elementwise work (Mish and LayerNorm were about 37% of a 1-thread plan profile).

    Why beside the GEMM peak: on the 2-core VM the GEMM peak stayed at 326-341 GFLOP/s across hours
    while the same 1M plan graph took 59 to 68 ms; what a busy host slows down is the elementwise
    passes, which stream activations through the caches. With both in the same run, a slower plan
    can be told apart from a slower hour."""
    x = np.random.default_rng(0).standard_normal((ACTIVATION_ROWS, width), dtype=np.float32)
    return _median_run_s(activation_block_model(width), {"x": x}, repeats) / ACTIVATION_LAYERS * 1e6


def gemm_peak_gflops(shapes=GEMM_SHAPES, repeats: int = 10) -> float:
    """fp32 MatMul throughput of ONNX Runtime on THREADS threads: the ceiling for the planner, as the
    best of a few shapes. One measurement of one size is a poor ceiling: on 2026-11-29 a 2048^3 run gave
    139 GFLOP/s while the planner reached 146 ("105% of peak"); alone, each of these shapes gave
    158-161. B is a constant, as the planner's weights are, so ONNX Runtime prepacks it the same way."""
    import onnx
    import onnx.helper as h
    import onnx.numpy_helper as nh

    rng = np.random.default_rng(0)
    best = 0.0
    for m, k, n in shapes:
        a_val = rng.standard_normal((m, k), dtype=np.float32)
        b_val = rng.standard_normal((k, n), dtype=np.float32)
        a = h.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [m, k])
        c = h.make_tensor_value_info("c", onnx.TensorProto.FLOAT, [m, n])
        graph = h.make_graph([h.make_node("MatMul", ["a", "b"], ["c"])], "gemm", [a], [c],
                             initializer=[nh.from_array(b_val, "b")])
        model = h.make_model(graph, opset_imports=[h.make_opsetid("", 18)])
        best = max(best, 2 * m * k * n / _median_run_s(model.SerializeToString(), {"a": a_val}, repeats) / 1e9)
    return best


def torch_gemm_peak_gflops(shapes=GEMM_SHAPES, repeats: int = 10) -> float:
    """fp32 matrix-product throughput of torch on THREADS threads, as the best of the same shapes: the
    ceiling for the update, which runs in torch (its own BLAS), not in ONNX Runtime."""
    import torch

    torch.set_num_threads(THREADS)
    gen = torch.Generator().manual_seed(0)
    best = 0.0
    for m, k, n in shapes:
        a, b = torch.randn(m, k, generator=gen), torch.randn(k, n, generator=gen)
        for _ in range(2):
            a @ b
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t)
        best = max(best, 2 * m * k * n / float(np.median(times)) / 1e9)
    return best


def update_gflop(preset: str, batch_size: int = 256) -> float:
    """The floating-point work of one update at `batch_size`, as torch's FlopCounterMode counts it
    (matrix products, forward and backward; the elementwise work is not counted): its time at the
    torch GEMM peak is the update's floor. Counted on an eager update of a fresh agent."""
    from torch.utils.flop_counter import FlopCounterMode

    agent = bench_agent(preset)
    obs, action, reward, terminated = random_buffer(episodes=1).sample(batch_size)
    with FlopCounterMode(display=False) as counter:
        agent.update(obs, action, reward, terminated)
    return counter.get_total_flops() / 1e9


def _percentiles(samples_s: list[float]) -> dict:
    ms = np.asarray(samples_s) * 1e3
    return {"median_ms": round(float(np.median(ms)), 2), "p90_ms": round(float(np.percentile(ms, 90)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2), "min_ms": round(float(ms.min()), 2), "n": len(ms)}


def bench_planner(path: str, repeats: int) -> dict:
    from tdmpc2_ros.runtime import OnnxPlanner

    planner = OnnxPlanner(path, OBS_DIM, ACTION_DIM, threads=THREADS)
    obs = np.random.default_rng(1).standard_normal(OBS_DIM).astype(np.float32)
    for _ in range(5):
        planner.plan(obs)
    times = []
    for _ in range(repeats):
        noise = planner.draw_noise()  # drawn outside the timed call: the node draws it off the tick too
        t = time.perf_counter()
        planner.plan(obs, noise=noise)
        times.append(time.perf_counter() - t)
    return _percentiles(times)


# VmHWM (peak resident set of this process image). Not ru_maxrss: Linux carries that across fork and
# exec, so a child of this torch-laden benchmark would report the parent's peak.
PEAK_RSS_SNIPPET = """
import sys, numpy as np
from tdmpc2_ros.runtime import OnnxPlanner
from tdmpc2_ros.runtime.onnx_planner import set_execution_provider
set_execution_provider(sys.argv[2])
p = OnnxPlanner(sys.argv[1], threads=2)
obs = np.zeros(p.obs_dim, np.float32)
for _ in range(20): p.plan(obs)
assert 'torch' not in sys.modules
print(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:')))
"""


def planner_peak_rss_mb(path: str, provider: str = "cpu") -> float:
    """Peak RSS of a fresh robot-side process (runtime only: no torch) that loads and runs the planner."""
    out = subprocess.run([sys.executable, "-c", PEAK_RSS_SNIPPET, path, provider], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def bench_update(preset: str, repeats: int, compile_mode: str | None = None, batch_size: int = 256, agent=None) -> dict:
    """One update at `batch_size` (from a numpy batch, as the trainers feed it), by `agent` (default: a
    CPU one of `preset`); `compile_mode` None: eager, else TDMPC2.compile's mode ("auto" is what
    `tdmpc2-ros train --compile` runs). The compile itself happens in the untimed warm-up updates."""
    import torch

    if agent is None:
        agent = bench_agent(preset)
    if compile_mode is not None:
        agent.compile(compile_mode)
    buf = random_buffer()
    batches = [buf.sample(batch_size) for _ in range(repeats + 3)]
    t0 = time.perf_counter()
    for b in batches[:3]:
        agent.update(*b)
    warmup_s = time.perf_counter() - t0  # with torch.compile: mostly the compile
    times = []
    for b in batches[3:]:
        t = time.perf_counter()
        agent.update(*b)
        if agent.device.type == "cuda":
            torch.cuda.synchronize(agent.device)  # update() reads its losses back, but say so
        times.append(time.perf_counter() - t)
    return {**_percentiles(times), "warmup_s": round(warmup_s, 1)}


def bench_agent(preset: str, device: str = "cpu", planner: str = "mppi"):
    """An agent at walker dimensions with the default budget, on `device`, torch at THREADS threads."""
    import torch

    from tdmpc2_ros.core.agent import TDMPC2
    from tdmpc2_ros.core.config import ModelConfig, TrainConfig
    from tdmpc2_ros.runtime import PlanBudget

    torch.set_num_threads(THREADS)
    return TDMPC2(ModelConfig.from_preset(preset, OBS_DIM, ACTION_DIM), TrainConfig(),
                  PlanBudget.reference(ACTION_DIM, planner=planner), 0.99, device=device, act_backend="auto")


def random_buffer(episodes: int = 4, seed: int = 0):
    """A buffer of random episodes at walker dimensions (500 steps each) to sample update batches from."""
    from tdmpc2_ros.core.buffer import ReplayBuffer

    buf = ReplayBuffer(10_000, OBS_DIM, ACTION_DIM, 3)
    rng = np.random.default_rng(seed)
    for _ in range(episodes):
        buf.add_episode(rng.standard_normal((501, OBS_DIM)), rng.uniform(-1, 1, (500, ACTION_DIM)), rng.random(500))
    return buf


def trained_like(model, std: float = 0.02, seed: int = 0):
    """The model with N(0, std) added to every parameter, in place: no bias, LayerNorm shift or output
    weight left at the exact zero of the reference initialisation. Why: the exporter drops a bias
    that is all zeros, so a fresh model's graph has none and plans faster than any trained model can
    (1M at walker dimensions, one A/B run: 64.3 against 74.7 ms before the bias split of
    core/onnx_passes.py). The benchmark times the graph a trained model has."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(std * torch.randn(p.shape, generator=g))
    return model


def available_providers(names: list[str]) -> list[str]:
    """The requested execution providers that this machine has; each one left out is said why."""
    from tdmpc2_ros.runtime.onnx_planner import set_execution_provider

    kept = []
    for name in names:
        try:
            set_execution_provider(name)
            kept.append(name)
        except ValueError as e:
            print(f"not timed on {name}: {e}", flush=True)
    set_execution_provider("auto")
    if not kept:
        raise SystemExit("no execution provider to time the planner on")
    return kept


def run_core_benchmark(args) -> int:
    import torch

    from tdmpc2_ros.benchmark.flops import plan_macs
    from tdmpc2_ros.core.config import ModelConfig
    from tdmpc2_ros.core.export import export_planner
    from tdmpc2_ros.core.world_model import WorldModel
    from tdmpc2_ros.runtime import PlanBudget
    from tdmpc2_ros.runtime.onnx_planner import set_execution_provider

    presets = [p for p in args.presets.split(",") if p]
    planners = [p for p in args.planners.split(",") if p]
    providers = available_providers([p for p in getattr(args, "providers", "cpu").split(",") if p])
    peak, block_us, torch_peak = gemm_peak_gflops(), activation_block_us(), torch_gemm_peak_gflops()
    result = {"machine": machine(THREADS),
              "gemm_peak_gflops": round(peak, 1), "activation_block_us": round(block_us, 1),
              "torch_gemm_peak_gflops": round(torch_peak, 1),
              "dims": {"obs": OBS_DIM, "action": ACTION_DIM}, "planning": [], "update": []}
    print(f"ONNX Runtime fp32 MatMul peak ({THREADS} threads, best of {len(GEMM_SHAPES)} shapes): {peak:.0f} GFLOP/s; "
          f"one LayerNorm + Mish block on [{ACTIVATION_ROWS}, {ACTIVATION_WIDTH}]: {block_us:.0f} us; "
          f"torch fp32 matrix-product peak: {torch_peak:.0f} GFLOP/s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for preset in presets:
            cfg = ModelConfig.from_preset(preset, OBS_DIM, ACTION_DIM)
            torch.manual_seed(0)
            model = trained_like(WorldModel(cfg))
            for kind in planners:
                budget = PlanBudget.reference(ACTION_DIM, planner=kind)
                path = os.path.join(tmp, f"{preset}-{kind}.onnx")
                export_planner(model, budget, 0.99, path, task="walker-walk(bench)")
                macs = plan_macs(OBS_DIM, ACTION_DIM, cfg.enc_dim, cfg.mlp_dim, cfg.latent_dim, cfg.num_enc_layers, cfg.num_bins, budget)
                ref_macs = plan_macs(OBS_DIM, ACTION_DIM, cfg.enc_dim, cfg.mlp_dim, cfg.latent_dim, cfg.num_enc_layers, cfg.num_bins, budget, executed=False)
                for provider in providers:
                    set_execution_provider(provider)
                    lat = bench_planner(path, args.repeats)
                    gflops = 2 * macs / (lat["median_ms"] / 1e3) / 1e9
                    row = {"preset": preset, "planner": kind, "provider": provider, "budget": budget.label(), **lat,
                           "gflop_executed": round(2 * macs / 1e9, 2), "gflop_reference_loop": round(2 * ref_macs / 1e9, 2),
                           "achieved_gflops": round(gflops, 1), "fraction_of_gemm_peak": round(gflops / peak, 3),
                           "peak_rss_mb": round(planner_peak_rss_mb(path, provider), 1)}
                    result["planning"].append(row)
                    print(f"plan {preset:4s} {kind:8s} {provider:8s} median {lat['median_ms']:7.1f} ms  p99 {lat['p99_ms']:7.1f} ms  "
                          f"{gflops:6.1f} GFLOP/s ({gflops / peak:.0%} of peak)  RSS {row['peak_rss_mb']:.0f} MB", flush=True)
                set_execution_provider("auto")
            gflop = update_gflop(preset)
            for compiled in (False, True):
                upd = bench_update(preset, max(10, args.repeats // 2), "auto" if compiled else None)
                mode = "compiled" if compiled else "eager"
                gflops = gflop / (upd["median_ms"] / 1e3)
                result["update"].append({"preset": preset, "mode": mode, "batch_size": 256, **upd, "gflop": round(gflop, 2),
                                         "achieved_gflops": round(gflops, 1), "fraction_of_torch_gemm_peak": round(gflops / torch_peak, 3)})
                print(f"update {preset:4s} {mode:8s} batch 256: median {upd['median_ms']:.1f} ms  "
                      f"{gflops:6.1f} GFLOP/s ({gflops / torch_peak:.0%} of torch's peak)", flush=True)
    write_results(Path(args.out), result, format_table(result))
    return 0


def write_results(out: Path, result: dict, table: str):
    """A benchmark's JSON at `out` and its table beside it (.md), and the table on the console."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(table)
    print("\n" + table)
    print(f"wrote {out} and {out.with_suffix('.md')}")


def format_table(r: dict) -> str:
    lines = [f"Machine: {describe_machine(r['machine'])}", "",
             f"GEMM peak (ONNX Runtime fp32 MatMul, {r['machine']['threads']} threads): {r['gemm_peak_gflops']} GFLOP/s", "",
             f"LayerNorm + Mish block on [{ACTIVATION_ROWS}, {ACTIVATION_WIDTH}] (the planner's elementwise work): "
             f"{r.get('activation_block_us', '-')} us", "",
             "| preset | planner | provider | median ms | p99 ms | GFLOP/plan | GFLOP/s | of peak | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for p in r["planning"]:
        lines.append(f"| {p['preset']} | {p['planner']} | {p.get('provider', 'cpu')} | {p['median_ms']} | {p['p99_ms']} | {p['gflop_executed']} | "
                     f"{p['achieved_gflops']} | {p['fraction_of_gemm_peak']:.0%} | {p['peak_rss_mb']} |")
    lines += [""]
    if "torch_gemm_peak_gflops" in r:  # since session 34
        lines += [f"GEMM peak of the update (torch fp32 matrix product, {r['machine']['threads']} threads): "
                  f"{r['torch_gemm_peak_gflops']} GFLOP/s", ""]
    lines += ["| preset | update (batch 256) | median ms | p99 ms | GFLOP/update | GFLOP/s | of peak |", "|---|---|---|---|---|---|---|"]
    for u in r["update"]:
        work = (f"{u['gflop']} | {u['achieved_gflops']} | {u['fraction_of_torch_gemm_peak']:.0%}" if "gflop" in u else "- | - | -")
        lines.append(f"| {u['preset']} | {u.get('mode', 'eager')} | {u['median_ms']} | {u['p99_ms']} | {work} |")
    return "\n".join(lines + ["", *bar_lines(r)]) + "\n"


def _verdict(median_ms: float, bar_ms: float, floor_ms: float | None) -> str:
    if median_ms <= bar_ms:
        return "met"
    if floor_ms is not None and floor_ms > bar_ms:
        return "not met; the floor is over the bar: out of reach on this CPU"
    return "not met"


def bar_lines(r: dict) -> list[str]:
    """The bars this run measured, each met or not. A plan's floor is its time if every multiply-add
    ran at the MatMul peak measured in the same run: where the floor is over the bar, no fp32 graph of
    that budget meets it on this CPU, whatever its elementwise work costs. An update's floor is the
    same with its matrix products at torch's peak (results since session 34)."""
    rows = []
    for p in r["planning"]:
        bar = PLAN_BARS_MS.get(p["preset"])
        if bar is None or p["planner"] != "mppi" or p.get("provider", "cpu") != "cpu":
            continue
        floor = p["gflop_executed"] / r["gemm_peak_gflops"] * 1e3
        rows.append(f"| plan median, {p['preset']}, <= {bar:g} ms | {p['median_ms']} ms (floor {floor:.1f} ms) | "
                    f"{_verdict(p['median_ms'], bar, floor)} |")
    for preset, bar in UPDATE_BARS_MS.items():
        runs = [u for u in r["update"] if u["preset"] == preset]
        if runs:
            best = min(runs, key=lambda u: u["median_ms"])
            floor = best["gflop"] / r["torch_gemm_peak_gflops"] * 1e3 if "gflop" in best else None
            said = f"{best.get('mode', 'eager')}" + ("" if floor is None else f"; floor {floor:.1f} ms")
            rows.append(f"| update, {preset}, <= {bar:g} ms | {best['median_ms']} ms ({said}) | "
                        f"{_verdict(best['median_ms'], bar, floor)} |")
    for preset, bar in RSS_BARS_MB.items():
        rss = [p["peak_rss_mb"] for p in r["planning"] if p["preset"] == preset and p.get("provider", "cpu") == "cpu"]
        if rss:
            rows.append(f"| planner peak RSS, {preset}, <= {bar:g} MB | {max(rss)} MB | {'met' if max(rss) <= bar else 'not met'} |")
    return ["| bar | measured | |", "|---|---|---|", *rows] if rows else []
