"""`tdmpc2-ros bench`'s machine yardsticks: what they measure and how the table shows them (their
figures are the benchmark's business, not a test's)."""

from __future__ import annotations

import collections
import json

import numpy as np
import onnx

from ros_harness import REPO
from tdmpc2_ros.benchmark.core import ACTIVATION_LAYERS, activation_block_model, activation_block_us, format_table


def test_the_activation_probe_is_layer_norm_and_the_exported_mish():
    ops = collections.Counter(n.op_type for n in onnx.load_from_string(activation_block_model(64)).graph.node)
    assert ops["LayerNormalization"] == ACTIVATION_LAYERS
    # The planner graph's Mish (Sigmoid form), not ONNX Runtime's slow Softplus + Tanh.
    assert ops["Sigmoid"] == ACTIVATION_LAYERS and not ops["Softplus"] and not ops["Mish"], ops
    us = activation_block_us(64, repeats=3)
    assert np.isfinite(us) and us > 0


def test_table_shows_both_yardsticks_and_older_results_still_render():
    row = {"preset": "1M", "planner": "mppi", "median_ms": 60.0, "p99_ms": 65.0, "gflop_executed": 12.0,
           "achieved_gflops": 200.0, "fraction_of_gemm_peak": 0.6, "peak_rss_mb": 100.0}
    r = {"machine": {"threads": 2}, "gemm_peak_gflops": 330.0, "activation_block_us": 171.8, "planning": [row], "update": []}
    r["planning"].append({**row, "provider": "openvino", "median_ms": 50.0})
    table = format_table(r)
    assert "330.0 GFLOP/s" in table and "[512, 384] (the planner's elementwise work): 171.8 us" in table
    assert "| 1M | mppi | cpu | 60.0 |" in table and "| 1M | mppi | openvino | 50.0 |" in table  # old rows: cpu
    old = json.loads((REPO / "benchmark" / "results" / "core_intel_s6_2026-11-29.json").read_text())
    assert "elementwise work): - us" in format_table(old)


def test_each_bar_is_met_or_not_and_a_plan_whose_floor_is_over_its_bar_is_out_of_reach():
    """The floor: the plan's multiply-adds at the MatMul peak of the same run. 12 GFLOP at 200 GFLOP/s
    is 60 ms; at 150 GFLOP/s, 80 ms: over the 60 ms bar, which no fp32 graph then meets."""
    from tdmpc2_ros.benchmark.core import bar_lines

    def run(peak, plan_1m, update_1m, rss_5m):
        plan = {"planner": "mppi", "provider": "cpu", "p99_ms": 0.0, "achieved_gflops": 0.0, "fraction_of_gemm_peak": 0.0}
        return {"gemm_peak_gflops": peak, "planning": [
            {**plan, "preset": "1M", "median_ms": plan_1m, "gflop_executed": 12.0, "peak_rss_mb": 100.0},
            {**plan, "preset": "1M", "provider": "openvino", "median_ms": 1.0, "gflop_executed": 12.0, "peak_rss_mb": 999.0},
            {**plan, "preset": "1M", "planner": "cem", "median_ms": 1.0, "gflop_executed": 12.0, "peak_rss_mb": 100.0},
            {**plan, "preset": "5M", "median_ms": 150.0, "gflop_executed": 30.0, "peak_rss_mb": rss_5m}],
            "update": [{"preset": "1M", "mode": "eager", "median_ms": update_1m + 20, "p99_ms": 0.0},
                       {"preset": "1M", "mode": "compiled", "median_ms": update_1m, "p99_ms": 0.0}]}  # no floor before session 34

    fast = bar_lines(run(peak=300.0, plan_1m=59.0, update_1m=55.0, rss_5m=180.0))
    assert fast == ["| bar | measured | |", "|---|---|---|",
                    "| plan median, 1M, <= 60 ms | 59.0 ms (floor 40.0 ms) | met |",
                    "| plan median, 5M, <= 165 ms | 150.0 ms (floor 100.0 ms) | met |",
                    "| update, 1M, <= 60 ms | 55.0 ms (compiled) | met |",
                    "| planner peak RSS, 5M, <= 300 MB | 180.0 MB | met |"]  # the openvino row's RSS is not the bar's
    slow = bar_lines(run(peak=150.0, plan_1m=100.0, update_1m=61.0, rss_5m=301.0))
    assert slow[2] == "| plan median, 1M, <= 60 ms | 100.0 ms (floor 80.0 ms) | not met; the floor is over the bar: out of reach on this CPU |"
    assert slow[3] == "| plan median, 5M, <= 165 ms | 150.0 ms (floor 200.0 ms) | met |"  # met, whatever the floor says
    assert slow[4:] == ["| update, 1M, <= 60 ms | 61.0 ms (compiled) | not met |",
                        "| planner peak RSS, 5M, <= 300 MB | 301.0 MB | not met |"]
    within = bar_lines(run(peak=250.0, plan_1m=70.0, update_1m=50.0, rss_5m=180.0))
    assert within[2] == "| plan median, 1M, <= 60 ms | 70.0 ms (floor 48.0 ms) | not met |"
    assert bar_lines({"gemm_peak_gflops": 1.0, "planning": [], "update": []}) == []


def test_an_update_whose_floor_is_over_its_bar_is_out_of_reach_and_the_table_shows_its_work():
    """The update's floor: its matrix products (FlopCounterMode's count) at torch's own GEMM peak.
    9 GFLOP at 180 GFLOP/s is 50 ms, under the 60 ms bar; at 120 GFLOP/s, 75 ms, over it."""
    from tdmpc2_ros.benchmark.core import bar_lines

    def run(torch_peak, update_1m):
        upd = {"preset": "1M", "p99_ms": 0.0, "gflop": 9.0, "achieved_gflops": 0.0, "fraction_of_torch_gemm_peak": 0.5}
        return {"machine": {"threads": 2}, "gemm_peak_gflops": 300.0, "activation_block_us": 1.0, "torch_gemm_peak_gflops": torch_peak,
                "planning": [], "update": [{**upd, "mode": "eager", "median_ms": update_1m + 20},
                                           {**upd, "mode": "compiled", "median_ms": update_1m}]}

    assert bar_lines(run(180.0, 55.0))[2] == "| update, 1M, <= 60 ms | 55.0 ms (compiled; floor 50.0 ms) | met |"
    assert bar_lines(run(180.0, 70.0))[2] == "| update, 1M, <= 60 ms | 70.0 ms (compiled; floor 50.0 ms) | not met |"
    assert bar_lines(run(120.0, 80.0))[2] == ("| update, 1M, <= 60 ms | 80.0 ms (compiled; floor 75.0 ms) | "
                                              "not met; the floor is over the bar: out of reach on this CPU |")
    table = format_table(run(180.0, 55.0))
    assert "GEMM peak of the update (torch fp32 matrix product, 2 threads): 180.0 GFLOP/s" in table
    assert "| 1M | compiled | 55.0 | 0.0 | 9.0 | 0.0 | 50% |" in table
    old = json.loads((REPO / "benchmark" / "results" / "core_amd_zen3_s33_2026-12-07.json").read_text())
    assert "| 1M | compiled | 86.54 |" in format_table(old) and "GEMM peak of the update" not in format_table(old)


def test_the_update_work_counted_is_its_matrix_products_and_grows_with_the_batch():
    """FlopCounterMode must see the update's products (forward and backward): every one of them is
    per sample, so a batch 4 times larger is exactly 4 times the work."""
    from tdmpc2_ros.benchmark.core import torch_gemm_peak_gflops, update_gflop

    small, large = update_gflop("1M", batch_size=16), update_gflop("1M", batch_size=64)
    assert small > 0 and large == 4 * small, (small, large)
    peak = torch_gemm_peak_gflops(shapes=((256, 256, 256),), repeats=2)
    assert np.isfinite(peak) and peak > 0
