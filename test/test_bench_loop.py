"""bench-loop's parts that run without a sim: bag ingest (every transition reaches the buffer), the
table (including results written before the ordinary-tick control existed), and its arguments."""

from __future__ import annotations

import json

import pytest

from ros_harness import REPO
from tdmpc2_ros.benchmark.loop import bench_ingest, bench_swap, format_table


def test_ingest_reaches_the_buffer_whole():
    r = bench_ingest(transitions=3000, episode_length=500)
    assert r["transitions"] == 3000 and r["transitions_per_s"] > 0 and r["bag_mb"] > 0


def test_table_shows_the_swap_ticks_beside_ordinary_ones():
    swap = {"plan_thread": "SCHED_FIFO 50, cores [1]", "swaps": 3, "budget": "mppi-i2-s64-e8-p4-h3", "tick_p50_ms": 8.0,
            "tick_p99_ms": 11.0, "swap_tick_excess_median_ms": 0.2, "swap_tick_excess_max_ms": 1.4, "swaps_within_1ms": 2,
            "ordinary_ticks_sampled": 30, "ordinary_ticks_within_1ms": 24, "missed_deadlines_during_swaps": 0,
            "swap_phase_ticks": 900, "baseline": {"ticks": 1500, "missed": 0}}
    ingest = {"storage": "mcap", "transitions": 10, "bag_mb": 0.1, "seconds": 0.1, "transitions_per_s": 100}
    swap.update(swap_plan_excess_median_ms=0.05, swap_around_plan_excess_median_ms=0.15,
                ordinary_plan_excess_median_ms=-0.02, ordinary_around_plan_excess_median_ms=0.01,
                plan_queued_max_ms={"swapping": 0.9, "baseline": 0.4})
    lines = format_table({"ingest": ingest, "swap": swap}).splitlines()
    row = next(line for line in lines if line.startswith("| 50 Hz real time"))
    assert "SCHED_FIFO 50, cores [1]" in row and "| 2 of 3 |" in row and "| 24 of 30 |" in row
    # Where the excess lies, for swap ticks beside ordinary ones.
    assert "| swap ticks | 0.05 | 0.15 |" in lines and "| ordinary ticks (sampled, no swap) | -0.02 | 0.01 |" in lines
    # How long a live plan waited for the plan thread, while swapping beside with no swap.
    assert any(line.startswith("| behind a shadow plan") and line.endswith("| 0.9 | 0.4 |") for line in lines)
    # A results file from before the control column and the split still renders (they say '-').
    old = format_table(json.loads((REPO / "benchmark" / "results" / "loop_intel_2026-11-29.json").read_text())).splitlines()
    assert "| - of - |" in next(line for line in old if line.startswith("| 50 Hz real time"))
    assert "| swap ticks | - | - |" in old
    assert next(line for line in old if line.startswith("| behind a shadow plan")).endswith("| - | - |")


def test_an_unknown_planner_argument_fails_at_once():
    with pytest.raises(ValueError, match="plan_thread_prio"):
        bench_swap("unused", swaps=1, planner_args=("plan_thread_prio:=50",))
