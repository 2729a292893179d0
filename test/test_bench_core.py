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
