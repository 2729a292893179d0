"""Budget steps while running: when the running rung of a model steps down to the next smaller
one, or back up, and how long a failed step up waits before the next try.

At start-up the planner takes the largest rung that fits (ladder.fit_ladder), but start-up may
see a quieter CPU than operation does. So the running rung is watched (ladder.RungGovernor):
- A rung whose plans overrun the limit too often steps down, and so does one that misses a
  deadline: a miss is what the budget exists to prevent, so the step comes at once rather than
  after 1% of the window has overrun. The step takes the standby where there is one. The standby
  is the next smaller rung, loaded and warmed while all was well, and is installed between two
  ticks. Without one, the hot-swap thread is asked to load the next smaller rung.
- A rung that has fitted for `up_after` plans in a row tries the next larger one. A burst that
  forced a step down has passed, or start-up saw a busier CPU. The larger rung gets shadow plans
  and must show its own p99 within the limit. A try that fails, or a larger rung that does not
  hold, doubles the wait before the next try, up to UP_BACKOFF_CAP times the first.
One budget change is in flight at a time. Pure Python: the planner node calls it between two ticks
(observe() from its plan thread), and installs what it is handed.
"""

from __future__ import annotations

from dataclasses import dataclass

from tdmpc2_ros.runtime.budget import PlanBudget
from tdmpc2_ros.runtime.candidate import Candidate
from tdmpc2_ros.runtime.swap_request import Request
from tdmpc2_ros.runtime.ladder import RungGovernor, next_larger_rung, next_smaller_rung


@dataclass
class Step:
    """What a budget step decided. `standby`: install it now. `message`: for the log (info).
    `problem`: a warning for /diagnostics while it lasts; `log_problem`: also log it (once per rung)."""

    standby: Candidate | None = None
    message: str = ""
    problem: str = ""
    log_problem: bool = False


class BudgetSteps:
    UP_BACKOFF_CAP = 16  # a failed step up waits at most this many times the first wait

    def __init__(self, limit_s: float, up_after_plans: int, swapper, rung_p50: dict[str, float] | None = None):
        self.governor = RungGovernor(limit_s)
        self.swapper = swapper  # runtime.hot_swap.HotSwapper: standby.take, request, rung_failures
        self.down_due = self.up_due = False  # set by the plan thread (and a miss), acted on between ticks
        self.missed_since_install = 0
        self.requested = ""  # the rung asked of the swapper and not yet installed or failed ("": none)
        self.requested_up = False
        self._failures_seen = 0  # the swapper's rung_failures when it was asked
        self.last_change_up = False  # the last budget change installed was a step up
        self.up_base = self.up_after = up_after_plans  # 0: never step up
        self.rung_p50 = dict(rung_p50 or {})  # start-up's measurement, a first estimate for a step up
        self.steps_down = self.steps_up = self.steps_from_standby = 0
        self._smallest_reported = ""

    # -- what the loop reports ----------------------------------------------------------------------
    def observe(self, plan_s: float):
        """One plan of the running rung (from the plan thread)."""
        if self.governor.observe(plan_s):
            self.down_due = True
        elif self.up_after and self.governor.quiet >= self.up_after:
            self.up_due = True

    def set_limit(self, limit_s: float):
        """A new plan-time limit (deadline_fraction changed): the running rung is judged afresh
        against it, and steps down at once if it no longer fits."""
        self.governor.limit_s = limit_s
        self.governor.restart()

    def missed(self):
        """A tick missed its deadline: step down at once. A burst that caused it passes, and the
        budget steps back up."""
        self.missed_since_install += 1
        self.down_due = True

    def installed(self):
        """A new model or rung is about to run: it is judged on its own plans, not on what the one
        it replaces did."""
        self.governor.restart()
        self.down_due = self.up_due = False
        self.missed_since_install = 0
        self.requested = ""

    def stepped(self, candidate: Candidate):
        """A budget change (candidate.rung_change) was installed: count it."""
        self.steps_up += candidate.step_up
        self.steps_down += not candidate.step_up
        self.steps_from_standby += bool(candidate.below)
        self.last_change_up = candidate.step_up

    # -- the steps ----------------------------------------------------------------------------------
    def step_down(self, running: PlanBudget, version: str, source: str) -> Step:
        """The running rung overran its limit too often, or missed a deadline."""
        self.down_due = False
        if self.requested and self.requested_up:
            self.swapper.abandon_step_up("the running budget overran while it was being checked")
        if self.pending():
            return Step()
        if self.last_change_up:  # the larger rung did not hold: wait longer before the next try
            self.back_off()
        why = (f"budget {running.label()} missed {self.missed_since_install} deadline(s)" if self.missed_since_install
               else f"budget {running.label()} overruns: {self.governor.describe()}")
        self.governor.restart()
        # The standby: installed now, between two ticks, with nothing loaded beside this late loop.
        standby = self.swapper.standby.take(version, source, below=running.label())
        if standby is not None:
            return Step(standby, f"{why}; stepping down to {standby.planner.contract.budget.label()} (the standby)")
        smaller = next_smaller_rung(source, running)  # a read of the ladder: only without a standby
        if smaller is None:
            first = self._smallest_reported != running.label()  # logged once per rung, not every few ticks
            self._smallest_reported = running.label()
            return Step(problem=f"{why}; {source} has no smaller rung, so ticks may miss their deadline",
                        log_problem=first)
        self.ask(smaller.budget.label(), False, version, source)
        return Step(message=f"{why}; stepping down to {smaller.budget.label()}")

    def step_up(self, running: PlanBudget, version: str, source: str) -> Step:
        """The running rung has fitted for a long run of plans: try the next larger one."""
        self.up_due = False
        if self.pending():
            return Step()
        quiet, self.governor.quiet = self.governor.quiet, 0  # the next try after another quiet run
        larger = next_larger_rung(source, running)
        if larger is None:
            return Step()
        label = larger.budget.label()
        self.ask(label, True, version, source, self.rung_p50.get(label))
        return Step(message=f"{quiet} plans in a row within the {self.governor.limit_s * 1e3:.1f} ms limit; "
                            f"checking the larger budget {label}")

    def back_off(self):
        """Wait twice as long before the next step up (capped)."""
        self.up_after = min(2 * self.up_after, self.UP_BACKOFF_CAP * self.up_base)
        self.last_change_up = False

    def ask(self, label: str, up: bool, version: str, source: str, expected_s: float | None = None):
        self.requested, self._failures_seen, self.requested_up = label, self.swapper.rung_failures, up
        self.swapper.request(Request.budget(label, source, version, up, expected_s))

    def pending(self) -> bool:
        """A budget change is still being prepared. One that failed (the swapper logged why) is
        forgotten, so a later overrun or quiet run may ask again; a failed step up waits longer."""
        if not self.requested:
            return False
        if self.swapper.rung_failures == self._failures_seen:
            return True
        if self.requested_up:
            self.back_off()
        self.requested = ""
        return False
