"""What swaps cost the loop (runtime/swap_cost.py): the swap work named next to a tick, the tallies
against every tick, and the swap tick's excess over the median."""

from __future__ import annotations

import math

import pytest

from tdmpc2_ros.runtime.swap_cost import (AFTER_FREE, AFTER_SHADOW_PLAN, BACKGROUND_PLANS, BESIDE_BACKGROUND_PLANS,
                                          BESIDE_LOADING, FREE, LOADING, SHADOW_PLAN, SWAP_TICK, SWAP_WORK, SwapCost,
                                          swap_work)


def test_swap_work_names_every_kind_next_to_a_tick():
    assert swap_work(False, "", []) == []  # nothing of a swap is going on
    assert swap_work(True, SHADOW_PLAN, [LOADING, BACKGROUND_PLANS]) == [SWAP_TICK, AFTER_SHADOW_PLAN, BESIDE_LOADING,
                                                                         BESIDE_BACKGROUND_PLANS]
    assert swap_work(False, FREE, []) == [AFTER_FREE]
    with pytest.raises(KeyError):
        swap_work(False, "something else", [])  # an unnamed slack job would be miscounted: refuse it


def test_ticks_and_misses_are_tallied_by_the_work_next_to_them():
    cost = SwapCost()
    cost.count([], missed=True, over=True)  # a miss with no swap work is the machine's own: not counted here
    cost.count([BESIDE_LOADING], missed=False, over=False)
    cost.count([BESIDE_LOADING, AFTER_SHADOW_PLAN], missed=True, over=False)  # a miss is over the limit too
    cost.count([AFTER_SHADOW_PLAN], missed=False, over=False)
    assert (cost.ticks_with_work, cost.missed) == (3, 1)
    v = cost.values()
    assert (v["ticks_with_swap_work"], v["missed_with_swap_work"]) == (3, 1)
    assert v["ticks_with_swap_work_beside_loading"] == 2 and v["missed_with_swap_work_beside_loading"] == 1
    assert v["ticks_with_swap_work_after_shadow_plan"] == 2 and v["missed_with_swap_work_after_shadow_plan"] == 1
    assert v["ticks_with_swap_work_swap_tick"] == 0
    assert v["over_limit_with_swap_work"] == 1 and v["over_limit_with_swap_work_beside_loading"] == 1
    # Every kind has its keys, so a reader can tell "none" from "not reported".
    assert all(f"{k}_{w}" in v for w in SWAP_WORK for k in ("ticks_with_swap_work", "missed_with_swap_work",
                                                             "over_limit_with_swap_work"))


def test_plans_over_the_limit_are_tallied_apart_from_misses():
    """Far more plans overrun the rung's limit than miss the deadline: the finer measure of what a
    kind of swap work costs the loop."""
    cost = SwapCost()
    cost.count([BESIDE_LOADING], missed=False, over=True)
    cost.count([BESIDE_LOADING, SWAP_TICK], missed=False, over=True)
    cost.count([AFTER_FREE], missed=False, over=False)
    cost.count([], missed=False, over=True)  # no swap work: the caller's total counts it, not this
    v = cost.values()
    assert (v["over_limit_with_swap_work"], v["missed_with_swap_work"], v["ticks_with_swap_work"]) == (2, 0, 3)
    assert v["over_limit_with_swap_work_beside_loading"] == 2 and v["over_limit_with_swap_work_swap_tick"] == 1
    assert v["over_limit_with_swap_work_after_free"] == 0


def test_the_swap_tick_is_timed_against_the_median_of_the_moment():
    cost = SwapCost()
    assert math.isnan(cost.values()["swap_tick_excess_last_ms"])  # no swap yet: nan, not a made-up 0
    cost.time_swap_tick(0.0215, median_tick_s=0.0200, plan_s=0.0190, median_plan_s=0.0182, plan_waited_s=0.0004)
    cost.time_swap_tick(0.0230, median_tick_s=0.0205, plan_s=0.0200, median_plan_s=0.0190, plan_waited_s=0.0)
    v = cost.values()
    assert v["swap_tick_latency_last_ms"] == pytest.approx(23.0) and v["swap_tick_latency_max_ms"] == pytest.approx(23.0)
    assert v["swap_tick_excess_last_ms"] == pytest.approx(2.5)
    assert v["swap_plan_excess_last_ms"] == pytest.approx(1.0) and v["swap_plan_waited_last_ms"] == 0.0
    assert len(cost.swap_tick_latency) == 2
