"""The standby slot (runtime/standby.py) on its own: what the loop wants, what is held, what is left
to retire, and when a step down may take the held rung. Fake planners: the slot never plans."""

from __future__ import annotations

from types import SimpleNamespace

from tdmpc2_ros.runtime.budget import PlanBudget
from tdmpc2_ros.runtime.candidate import Candidate
from tdmpc2_ros.runtime.swap_request import Request
from tdmpc2_ros.runtime.standby import StandbySlot, stands_for

BIG = PlanBudget(iterations=3, num_samples=64, num_elites=8, num_pi_trajs=4)
SMALL = PlanBudget(iterations=2, num_samples=32, num_elites=4, num_pi_trajs=2)


def planner(budget=SMALL):
    return SimpleNamespace(contract=SimpleNamespace(budget=budget))


def brought_up(want: Request, budget=SMALL) -> Candidate:
    """A candidate as the hot-swap thread makes one for `want` (checked_candidate, then `below`)."""
    return Candidate(planner(budget), want.version, want.path, 0.004, 0.005, rung_change=True, below=want.below)


def test_a_wanted_standby_is_brought_up_held_and_taken_once():
    slot, want = StandbySlot(), Request.standby(BIG.label(), "/models/a", "v1")
    leftovers, missing = slot.want(want)
    assert leftovers == [] and missing and slot.needs(want) and slot.label() == ""
    cand = brought_up(want)
    assert slot.hold(want, cand, "standby ready")
    assert slot.result == "standby ready" and slot.label() == SMALL.label() and not slot.needs(want)
    assert not slot.hold(want, brought_up(want), "again")  # one held at a time
    # Only the standby of this version, source and running budget (or of this label) is taken.
    assert slot.take("v2", "/models/a", below=BIG.label()) is None
    assert slot.take("v1", "/models/b", below=BIG.label()) is None
    assert slot.take("v1", "/models/a", below=SMALL.label()) is None
    assert slot.take("v1", "/models/a", label=BIG.label()) is None
    assert slot.take("v1", "/models/a", label=SMALL.label()) is cand
    assert slot.held() is None and slot.label() == ""
    assert slot.take("v1", "/models/a", below=BIG.label()) is None  # taken once


def test_a_warm_rung_is_held_at_once_and_nothing_is_left_to_bring_up():
    slot, want, warm = StandbySlot(), Request.standby(BIG.label(), "/models/a", "v1"), planner()
    leftovers, missing = slot.want(want, warm=warm, warmed="the rung the step up left")
    assert leftovers == [] and not missing
    held = slot.held()
    assert held.planner is warm and stands_for(held, want) and held.rung_change
    assert slot.result == (f"standby {SMALL.label()} of v1 ready (warm: the rung the step up left; "
                           "nothing loaded)")
    assert slot.take("v1", "/models/a", below=BIG.label()) is held


def test_a_new_wish_keeps_a_held_standby_that_stands_for_it_and_hands_back_one_that_does_not():
    slot, v1 = StandbySlot(), Request.standby(BIG.label(), "/models/a", "v1")
    slot.want(v1)
    held = brought_up(v1)
    assert slot.hold(v1, held, "ready")
    assert slot.want(Request.standby(BIG.label(), "/models/a", "v1")) == ([], False)  # the same wish again
    assert slot.held() is held
    v2 = Request.standby(BIG.label(), "/models/a", "v2")
    leftovers, missing = slot.want(v2)  # a new version runs: v1's rung is no standby for it
    assert leftovers == [held.planner] and missing and slot.held() is None
    # v1's bring-up finishing late is not held: the caller retires it.
    assert not slot.still_wanted(v1) and not slot.hold(v1, brought_up(v1), "late")
    # A warm rung offered with no wish is handed back too, as is what was held.
    second = brought_up(v2)
    assert slot.hold(v2, second, "ready")
    warm = planner()
    leftovers, missing = slot.want(None, warm=warm)
    assert leftovers == [second.planner, warm]
    assert not missing and slot.held() is None and slot.label() == ""


def test_a_failed_bring_up_is_counted_and_says_why():
    slot = StandbySlot()
    slot.failed("no standby i2: p99 over the limit; a step down will load it then", 0.125)
    slot.failed("no standby i2: NaN in the plan; a step down will load it then", 0.5)
    assert slot.failures == 2 and slot.cpu_s == 0.5 and slot.result.startswith("no standby i2: NaN")


def test_a_bring_up_and_a_new_wish_leave_nothing_held_for_the_old_version_in_either_order():
    """The hot-swap thread holds v1's rung while the loop, having installed v2, wants v2's standby.
    Held first: the wish hands it back to retire. Wished first: the late hold is refused (the thread
    retires it). Either way nothing of v1 stays held."""
    for hold_first in (True, False):
        slot, v1 = StandbySlot(), Request.standby(BIG.label(), "/m", "v1")
        v2 = Request.standby(BIG.label(), "/m", "v2")
        slot.want(v1)
        cand = brought_up(v1)
        held = slot.hold(v1, cand, "ready") if hold_first else None
        leftovers, missing = slot.want(v2)
        if not hold_first:
            held = slot.hold(v1, cand, "ready")
        assert held is hold_first and leftovers == ([cand.planner] if hold_first else []) and missing
        assert slot.held() is None and slot.needs(v2)
