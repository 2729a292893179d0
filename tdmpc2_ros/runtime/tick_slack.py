"""The slack after a tick: how long a swap candidate's shadow plan may run on the slack thread once a
tick has published, and when one still running at the next tick must stop. Pure arithmetic on the
loop's own figures (its period, deadline, recent plan and tick-interval medians); the planner node
(ros/planner_node.py) owns one and the hot-swap thread (hot_swap.py) plans in what it allows.
"""

from __future__ import annotations

import math


class TickSlack:
    # A tick's own plan is budgeted at this multiple of the recent median plan: what is left of the
    # deadline before it may go to a shadow plan that overran into it.
    PLAN_MARGIN = 1.2

    def __init__(self, period_s: float, deadline_s: float, timer: bool):
        self.period, self.deadline, self.timer = period_s, deadline_s, timer
        # The last slack given ran into the next tick's deadline (observation-triggered ticks that
        # come at once, as from a lockstep sim): the next tick lets a shadow plan finish within it.
        self.borrowed = False

    def share(self, plan_median_s: float) -> float:
        """Of a tick's deadline, what its own plan leaves for a shadow plan before it (nan before
        any plan was timed)."""
        return self.deadline - self.PLAN_MARGIN * plan_median_s

    def after_tick(self, start: float, now: float, plan_median_s: float, interval_median_s: float) -> float:
        """The slack after the tick that started at `start`, as seen at `now`. On a timer the next
        tick must not even wait: the time left until it. Triggered by observations, the next one is
        expected one typical tick interval after this one; where that leaves no room (a lockstep sim
        answers at once), the next tick may wait, as long as the shadow plan and that tick's own plan
        both fit its deadline (borrowed)."""
        if self.timer:
            return start + self.period - now
        share = self.share(plan_median_s)
        before_next = start + interval_median_s - now
        self.borrowed = not before_next >= share
        return max(before_next, share) if math.isfinite(before_next) else share

    def stop_at(self, start: float, plan_median_s: float) -> float:
        """When a shadow plan still running at the tick that started at `start` must stop: once this
        tick's own plan would no longer fit, where its slack was borrowed from this tick, else at once
        (on a timer, or an observation that came before the expected time: a robot that does not wait
        for its command is not kept waiting for a check either)."""
        share = self.share(plan_median_s)
        return start + share if self.borrowed and share > 0 else start
