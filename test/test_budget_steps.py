"""Budget steps while running (runtime/budget_steps.py), against a fake hot-swap thread: when the
running rung steps down or up, what it asks for, and how a failed step up waits longer."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tdmpc2_ros.runtime.budget import PlanBudget
from tdmpc2_ros.runtime.budget_steps import BudgetSteps
from tdmpc2_ros.runtime.candidate import Candidate
from tdmpc2_ros.runtime.swap_request import Request
from tdmpc2_ros.runtime.ladder import Rung, write_ladder_index
from tdmpc2_ros.runtime.standby import StandbySlot

LIMIT = 0.010
RUNGS = [PlanBudget(iterations=4, num_samples=128, num_elites=16, num_pi_trajs=8),
         PlanBudget(iterations=3, num_samples=64, num_elites=8, num_pi_trajs=4),
         PlanBudget(iterations=2, num_samples=32, num_elites=4, num_pi_trajs=2)]
BIG, MID, SMALL = RUNGS


class FakeSwapper:
    """What BudgetSteps uses of HotSwapper."""

    def __init__(self, standby: Candidate | None = None):
        self.rung_failures = 0
        self.requests, self.abandoned, self.standby = [], [], StandbySlot()
        if standby is not None:  # held as the hot-swap thread holds a standby it brought up
            want = Request.standby(standby.below, standby.source, standby.version)
            self.standby.want(want)
            assert self.standby.hold(want, standby, "ready")

    def request(self, what):
        self.requests.append(what)

    def abandon_step_up(self, why):
        self.abandoned.append(why)


@pytest.fixture
def ladder(tmp_path) -> str:
    """A ladder index (read_ladder does not open the .onnx files it lists)."""
    write_ladder_index(tmp_path, [Rung(tmp_path / f"r{i}.onnx", b) for i, b in enumerate(RUNGS)])
    return str(tmp_path)


def make(swapper, up_after=20) -> BudgetSteps:
    return BudgetSteps(LIMIT, up_after, swapper, rung_p50={BIG.label(): 0.008})


def candidate(budget, source, below="", step_up=False) -> Candidate:
    planner = SimpleNamespace(contract=SimpleNamespace(budget=budget))
    return Candidate(planner, "v1", source, 0.005, 0.006, rung_change=True, step_up=step_up, below=below)


def test_a_lasting_overrun_or_one_miss_makes_a_step_down_due_and_a_quiet_run_a_step_up():
    steps = make(FakeSwapper(), up_after=20)
    for _ in range(2):
        steps.observe(0.020)  # a burst of two overruns in 200 plans is allowed
    assert not steps.down_due
    steps.observe(0.020)
    assert steps.down_due
    steps.installed()  # a new rung is judged afresh
    assert not steps.down_due and steps.governor.over == 0
    steps.missed()
    assert steps.down_due and steps.missed_since_install == 1
    steps.installed()
    for _ in range(19):
        steps.observe(0.005)
    assert not steps.up_due
    steps.observe(0.005)
    assert steps.up_due
    never = make(FakeSwapper(), up_after=0)  # budget_step_up_after_s 0: never step up
    for _ in range(500):
        never.observe(0.001)
    assert not never.up_due


def test_a_step_down_takes_the_standby_and_loads_nothing(ladder):
    standby = candidate(MID, ladder, below=BIG.label())
    swapper = FakeSwapper(standby)
    steps = make(swapper)
    steps.missed()
    step = steps.step_down(BIG, "v1", ladder)
    assert step.standby is standby and not swapper.requests and not steps.down_due
    assert swapper.standby.held() is None  # taken: no longer held
    assert step.message == f"budget {BIG.label()} missed 1 deadline(s); stepping down to {MID.label()} (the standby)"
    steps.installed()
    steps.stepped(step.standby)
    assert (steps.steps_down, steps.steps_up, steps.steps_from_standby) == (1, 0, 1)


def test_without_a_standby_a_step_down_asks_for_the_next_smaller_rung_once(ladder):
    swapper = FakeSwapper()
    steps = make(swapper)
    for _ in range(3):
        steps.observe(0.020)
    step = steps.step_down(BIG, "v1", ladder)
    assert step.standby is None and "overruns: 3 of the last 3 plans over the 10.0 ms limit" in step.message
    (req,) = swapper.requests
    assert (req.rung, req.up, req.path, req.version) == (MID.label(), False, ladder, "v1")
    # Another overrun while that rung is being prepared asks for nothing more ...
    assert steps.step_down(BIG, "v1", ladder).message == "" and len(swapper.requests) == 1
    # ... but once it failed (the swapper logged why), a later overrun asks again.
    swapper.rung_failures += 1
    steps.step_down(BIG, "v1", ladder)
    assert len(swapper.requests) == 2 and swapper.requests[-1].rung == MID.label()


def test_the_smallest_rung_reports_that_it_cannot_step_down_and_logs_it_once(ladder):
    steps = make(FakeSwapper())
    first = steps.step_down(SMALL, "v1", ladder)
    assert first.problem.endswith(f"{ladder} has no smaller rung, so ticks may miss their deadline") and first.log_problem
    again = steps.step_down(SMALL, "v1", ladder)
    assert again.problem and not again.log_problem  # on /diagnostics while it lasts, in the log once


def test_a_step_up_asks_for_the_larger_rung_and_a_failed_one_waits_twice_as_long(ladder):
    swapper = FakeSwapper()
    steps = make(swapper, up_after=20)
    for _ in range(20):
        steps.observe(0.005)
    step = steps.step_up(MID, "v1", ladder)
    assert step.message == f"20 plans in a row within the 10.0 ms limit; checking the larger budget {BIG.label()}"
    (req,) = swapper.requests
    assert (req.rung, req.up, req.expected_s) == (BIG.label(), True, 0.008)  # start-up's p50 of that rung
    assert steps.governor.quiet == 0 and not steps.up_due
    swapper.rung_failures += 1  # its shadow plans did not fit
    steps.step_down(MID, "v1", ladder)  # any later step sees the failure: it forgets the try ...
    assert steps.up_after == 40 and swapper.requests[-1].rung == SMALL.label()
    steps.installed()
    for _ in range(39):
        steps.observe(0.005)
    assert not steps.up_due  # ... and the next try waits twice as long
    steps.observe(0.005)
    assert steps.up_due
    for _ in range(10):
        steps.back_off()
    assert steps.up_after == 16 * 20  # ... capped
    assert steps.step_up(BIG, "v1", ladder).message == ""  # the largest rung has nowhere to go


def test_an_overrun_while_a_step_up_is_checked_ends_that_check(ladder):
    swapper = FakeSwapper()
    steps = make(swapper)
    steps.step_up(MID, "v1", ladder)
    step = steps.step_down(MID, "v1", ladder)
    assert swapper.abandoned == ["the running budget overran while it was being checked"]
    assert step.message == "" and len(swapper.requests) == 1  # the step up is still pending until it ends


def test_a_larger_rung_that_does_not_hold_waits_longer_before_the_next_try(ladder):
    swapper = FakeSwapper()
    steps = make(swapper, up_after=20)
    steps.installed()
    steps.stepped(candidate(BIG, ladder, step_up=True))
    assert steps.steps_up == 1 and steps.last_change_up
    steps.step_down(BIG, "v1", ladder)  # the step up did not hold
    assert steps.up_after == 40 and not steps.last_change_up
    assert swapper.requests[-1].rung == MID.label()


def test_a_tighter_limit_judges_the_running_rung_afresh():
    steps = make(FakeSwapper())
    for _ in range(100):
        steps.observe(0.005)  # well within the 10 ms limit
    steps.set_limit(0.004)  # deadline_fraction tightened: the same plans now overrun
    assert steps.governor.quiet == 0 and not steps.down_due
    for _ in range(3):
        steps.observe(0.005)
    assert steps.down_due
