"""bench-loop's parts that run without a sim: bag ingest (every transition reaches the buffer), the
table (including results written before the ordinary-tick control existed), and its arguments."""

from __future__ import annotations

import json
import math

import pytest

from ros_harness import REPO
from tdmpc2_ros.benchmark.loop import (_swap_work_table, bench_ingest, bench_ingest_raw, bench_stepdown, bench_swap, excess_p,
                                        format_table, swap_work_counts)


def test_ingest_reaches_the_buffer_whole():
    r = bench_ingest(transitions=3000, episode_length=500)
    assert r["transitions"] == 3000 and r["transitions_per_s"] > 0 and r["bag_mb"] > 0


def test_raw_ingest_of_a_robots_topics_reaches_the_buffer_whole():
    """Every step of every episode of JointState + Imu + Float64MultiArray + JointTrajectory topics becomes a transition
    (bench_ingest_raw raises if one is lost), and the table names both kinds of bag."""
    raw = bench_ingest_raw(transitions=1000, episode_length=250)
    assert raw["transitions"] == 1000 and raw["bag_mb"] > 0
    lines = format_table({"ingest": bench_ingest(transitions=500), "ingest_raw": raw}).splitlines()
    assert any(line.startswith("| the planner's transition records (mcap, chunk compression) | 500 |") for line in lines)
    assert any(line.startswith("| a robot's own topics: JointState + Imu + Float64MultiArray + JointTrajectory") and "| 1000 |" in line
               for line in lines)


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
    assert any(line.startswith("| from its hand-off") and line.endswith("| 0.9 | 0.4 |") for line in lines)
    # A results file from before the control column and the split still renders (they say '-').
    old = format_table(json.loads((REPO / "benchmark" / "results" / "loop_intel_2026-11-29.json").read_text())).splitlines()
    assert "| - of - |" in next(line for line in old if line.startswith("| 50 Hz real time"))
    assert "| swap ticks | - | - |" in old
    assert next(line for line in old if line.startswith("| from its hand-off")).endswith("| - | - |")
    assert not any(line.startswith("| ticks with swap work") for line in old)  # written before the planner named it


def test_excess_p_is_the_one_sided_exact_test_of_equal_miss_rates():
    assert excess_p(10, 1000, 0, 1000) == pytest.approx(2 ** -10, abs=1e-4)  # all 10 misses on one of two equal sides
    assert excess_p(1, 1, 0, 1) == 0.5
    assert excess_p(0, 1000, 5, 5000) == 1.0  # no miss on the swap side: nothing to explain
    # One side a quarter of the ticks, 2 of 4 misses on it: 1 - P(0) - P(1) of Binomial(4, 1/4).
    assert excess_p(2, 1000, 2, 3000) == pytest.approx(1 - 0.75 ** 4 - 4 * 0.25 * 0.75 ** 3, abs=1e-4)
    assert excess_p(1, 0, 1, 10) is None
    # Thousands of misses (a stalling host): P(X >= 500) for X ~ Binomial(1000, 1/2) is 1/2 + P(X = 500)/2.
    half = 0.5 + math.comb(1000, 500) / 2 ** 1001
    assert excess_p(500, 1000, 500, 1000) == pytest.approx(half, abs=1e-4)
    assert excess_p(3000, 9000, 1000, 9000) == 0.0 and excess_p(1000, 9000, 3000, 9000) == 1.0


def test_host_steal_is_shown_beside_the_windows():
    """The table shows the steal of each kind of window (runtime/host_steal.py reads it), and a
    results file without it renders without the line."""
    work = {"with": {"ticks": 10, "missed": 0}, "without": {"ticks": 90, "missed": 1}, "excess_p": 1.0,
            "by_kind": {"swap_tick": 0}}
    swap = {"swaps": 1, "swaps_within_1ms": 1, "ordinary_ticks_sampled": 5, "ordinary_ticks_within_1ms": 5,
            "swap_phase_ticks": 50, "missed_deadlines_during_swaps": 0, "baseline": {"ticks": 50, "missed": 1},
            "swap_work": work}
    assert not any("Host steal" in line for line in _swap_work_table(swap))
    swap["host_steal_pct"] = {"swapping": 4.2, "baseline": 0.3}
    line = next(line for line in _swap_work_table(swap) if line.startswith("Host steal"))
    assert "4.2% of CPU time in the swap windows, 0.3% in the quiet ones" in line


def test_plans_over_the_limit_are_split_and_tabled_like_misses():
    """The planner's ticks over the rung's limit (misses included) split by swap work next to them,
    with a row per kind; a planner that does not count them (before session 23) gets no table."""
    keys = ["swap_tick", "after_shadow_plan", "after_free", "beside_loading", "beside_background_plans"]
    start = {"ticks": 0, "missed_deadlines": 0, "ticks_with_swap_work": 0, "missed_with_swap_work": 0,
             **{f"{c}_{k}": 0 for k in keys for c in ("missed_with_swap_work", "ticks_with_swap_work")}}
    final = {**start, "ticks": 1000, "ticks_with_swap_work": 200,
             **{f"ticks_with_swap_work_{k}": n for k, n in zip(keys, [10, 100, 10, 50, 30])}}
    assert "over_limit" not in swap_work_counts(start, final)
    start.update({"ticks_over_limit": 3, "over_limit_with_swap_work": 1, **{f"over_limit_with_swap_work_{k}": 0 for k in keys}})
    final.update({"ticks_over_limit": 23, "over_limit_with_swap_work": 11,
                  **{f"over_limit_with_swap_work_{k}": n for k, n in zip(keys, [1, 2, 0, 8, 0])}})
    w = swap_work_counts(start, final)
    over = w["over_limit"]
    assert over["with"] == {"ticks": 200, "over": 10} and over["without"] == {"ticks": 800, "over": 10}
    assert over["excess_p"] == excess_p(10, 200, 10, 800)
    assert over["by_kind"] == {"swap_tick": 1, "after_shadow_plan": 2, "after_free": 0, "beside_loading": 8,
                               "beside_background_plans": 0}
    swap = {"swaps": 1, "swaps_within_1ms": 1, "ordinary_ticks_sampled": 5, "ordinary_ticks_within_1ms": 5,
            "swap_phase_ticks": 50, "missed_deadlines_during_swaps": 0, "baseline": {"ticks": 50, "missed": 0},
            "swap_work": w}
    lines = _swap_work_table(swap)
    assert f"| ticks with swap work next to them | 200 | 10 | 5.000% | {over['excess_p']} |" in lines
    assert f"| ... beside_loading | 50 | 8 | 16.000% | {excess_p(8, 50, 10, 800)} |" in lines
    assert "| ... after_free | 10 | 0 | 0.000% | 1.0 |" in lines
    del w["over_limit"]
    assert not any(line.startswith("| plans over the rung's limit") for line in _swap_work_table(swap))


def test_swap_work_counts_split_the_run_between_two_reports():
    keys = ["swap_tick", "after_shadow_plan", "after_free", "beside_loading", "beside_background_plans"]
    start = {"ticks": 100, "missed_deadlines": 1, "ticks_with_swap_work": 0, "missed_with_swap_work": 0,
             **{f"missed_with_swap_work_{k}": 0 for k in keys}}
    final = {"ticks": 1100, "missed_deadlines": 6, "ticks_with_swap_work": "200", "missed_with_swap_work": "3",
             **{f"missed_with_swap_work_{k}": str(n) for k, n in zip(keys, [0, 2, 0, 2, 1])}}
    assert "ticks_by_kind" not in swap_work_counts(start, final)  # a planner from before it counted them
    start.update({f"ticks_with_swap_work_{k}": 5 for k in keys})
    final.update({f"ticks_with_swap_work_{k}": str(n) for k, n in zip(keys, [25, 105, 15, 65, 35])})
    w = swap_work_counts(start, final)
    assert w["with"] == {"ticks": 200, "missed": 3} and w["without"] == {"ticks": 800, "missed": 2}
    assert w["by_kind"] == dict(zip(keys, [0, 2, 0, 2, 1]))
    assert w["ticks_by_kind"] == dict(zip(keys, [20, 100, 10, 60, 30]))
    assert w["excess_p"] == excess_p(3, 200, 2, 800)
    swap = {"plan_thread": "normal", "swaps": 3, "budget": "b", "tick_p50_ms": 8.0, "tick_p99_ms": 11.0,
            "swap_tick_excess_median_ms": 0.2, "swap_tick_excess_max_ms": 1.4, "swaps_within_1ms": 2,
            "ordinary_ticks_sampled": 100, "ordinary_ticks_within_1ms": 90,
            "missed_deadlines_during_swaps": 4, "swap_phase_ticks": 600,
            "baseline": {"ticks": 400, "missed": 1, "interleaved": True}, "windows_excess_p": excess_p(4, 600, 1, 400),
            "swap_work": w}
    ingest = {"storage": "mcap", "transitions": 10, "bag_mb": 0.1, "seconds": 0.1, "transitions_per_s": 100}
    lines = format_table({"ingest": ingest, "swap": swap}).splitlines()
    assert f"| ticks with swap work next to them (bar: none missed) | 200 | 3 | 1.500% | {w['excess_p']} |" in lines
    assert "| ticks with none, same run | 800 | 2 | 0.250% | - |" in lines
    assert "| quiet windows between them | 400 | 1 | 0.250% | - |" in lines
    assert any(line.startswith("| swap windows (announcement to 4 s after the swap) | 600 | 4 |") for line in lines)
    # Since session 14 a swap window has a fixed length from its announcement, unless the swap came late.
    lines = format_table({"ingest": ingest, "swap": {**swap, "window_s": 10.0, "windows_stretched": 1}}).splitlines()
    assert any(line.startswith("| swap windows (10 s from the announcement; 1 of 3 longer, to 4 s after a swap that came late) "
                               "| 600 | 4 |") for line in lines)
    assert f"| swap ticks | 3 | 1 | 33.333% | {excess_p(1, 3, 10, 100)} |" in lines
    assert "| ordinary ticks (sampled in the quiet windows) | 100 | 10 | 10.000% | - |" in lines
    assert any("after_shadow_plan 2 of 100 ticks" in line and "beside_loading 2 of 60 ticks" in line
               and "beside_background_plans 1 of 30 ticks" in line for line in lines)
    assert "misses with no swap (quiet windows between the swaps)" in next(line for line in lines if line.startswith("| swap cost"))
    assert not any(line.startswith("Budget steps down") for line in lines)  # results from before session 18
    lines = format_table({"swap": {**swap, "budget_steps_down": 2, "budget_steps_from_standby": 1}}).splitlines()
    assert "Budget steps down: 2, 1 of them from the standby (the next smaller rung, loaded and warmed before the step)." in lines
    lines = format_table({"swap": {**swap, "budget_steps_down": 0, "budget_steps_from_standby": 0,
                                   "loads_waited_for_room": 5, "loads_without_room": 1}}).splitlines()
    assert any(line.endswith("Loads that waited for the loop to show room: 5, 1 of them loaded without it after "
                             "swap_load_wait_s.") for line in lines)
    lines = format_table({"swap": {**swap, "budget_steps_down": 0, "budget_steps_from_standby": 0,
                                   "loads_waited_for_room": 5, "loads_without_room": 1, "gc_full_collections": 3,
                                   "gc_pause_max_ms": 4.5, "gc_in_plan_max_ms": 1.25}}).splitlines()
    assert any(line.endswith("Python's garbage collector in the planner once start-up was over: 3 full collections, "
                             "the longest pause 4.5 ms, at most 1.25 ms of one plan.") for line in lines)


def test_a_step_down_is_measured_on_the_hot_swap_thread_for_each_number_of_warm_up_plans(tmp_path):
    """The shipped model's two smallest rungs as a ladder of their own: one pair, each arm measured
    with its own number of warm-up plans (bench_stepdown checks each candidate ran exactly that many),
    and the table shows both."""
    import shutil

    shipped = REPO / "models" / "cartpole_swingup"
    index = json.loads((shipped / "ladder.json").read_text())
    index["rungs"] = index["rungs"][-2:]
    for r in index["rungs"]:
        shutil.copy(shipped / r["file"], tmp_path / r["file"])
    (tmp_path / "ladder.json").write_text(json.dumps(index))
    d = bench_stepdown(str(tmp_path), reps=2, warm_plans=(2, 4))
    [pair] = d["pairs"]
    assert (pair["from"], pair["to"]) == ("mppi-i2-s64-e8-p4-h3", "mppi-i2-s32-e4-p2-h3")
    for arm in ("2", "4"):
        v = pair["by_warm_plans"][arm]
        assert 0 < v["cpu_ms_min"] <= v["cpu_ms_median"] <= v["cpu_ms_max"] and v["wall_ms_median"] > 0
    # The standby: its load and 2 warm-up plans cost the hot-swap thread CPU before the step down (as
    # much as the 2-plan arm's step down: the same work), and taking it at the step down costs the loop
    # thread only a lock and a comparison.
    before, at = pair["standby"]["before"], pair["standby"]["at_step_down"]
    assert 0 < before["cpu_ms_min"] <= before["cpu_ms_median"] <= before["cpu_ms_max"]
    assert 0 <= at["cpu_ms_median"] < before["cpu_ms_min"] and at["wall_ms_median"] >= 0
    table = format_table({"stepdown": d})
    assert "| mppi-i2-s64-e8-p4-h3 -> mppi-i2-s32-e4-p2-h3 |" in table and "4 warm-up plans" in table
    assert "| step down from the standby |" in table
    assert sum(line.startswith("| mppi-i2-s64-e8-p4-h3 -> mppi-i2-s32-e4-p2-h3 |") for line in table.splitlines()) == 2
    assert "ingest" not in table and "swap cost" not in table  # only the parts that ran


def test_an_unknown_planner_argument_or_a_bad_load_fails_at_once():
    with pytest.raises(ValueError, match="plan_thread_prio"):
        bench_swap("unused", swaps=1, planner_args=("plan_thread_prio:=50",))
    with pytest.raises(ValueError, match="busy must be within 0 and 1"):
        bench_swap("unused", swaps=1, busy=1.5)


def test_the_busy_process_takes_about_its_share_of_a_core():
    """--busy 0.5 keeps about half of one core busy: its CPU time over wall time, read from /proc
    (loose bounds: a busy CI machine may give it less)."""
    import os
    import time

    from tdmpc2_ros.benchmark.loop import _busy_process

    def cpu_s(pid: int) -> float:  # user + system time (fields 14 and 15 of /proc/<pid>/stat)
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    assert _busy_process(0.0) is None
    proc = _busy_process(0.5)
    try:
        time.sleep(0.5)  # past the interpreter's start-up
        cpu0, t0 = cpu_s(proc.pid), time.monotonic()
        time.sleep(2.0)
        share = (cpu_s(proc.pid) - cpu0) / (time.monotonic() - t0)
        assert 0.2 < share < 0.8, share
    finally:
        proc.kill()
        proc.wait()
