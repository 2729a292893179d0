"""What model swaps cost the control loop, in the two measures of the learning-loop bars.

- **Deadlines.** Each tick that planned is counted by the swap work next to it (SWAP_WORK below), and
  so is each missed deadline. The miss rate of the ticks with swap work, against that of the others,
  is what swapping costs in deadlines. A miss next to swap work is not proof that the swap caused it:
  a busy machine misses on its own too, which is why the yardstick counts every tick.
- **The swap tick.** This is the tick that installs a new model version. It is timed against the
  median tick of the moment. Its plan is also split out: that plan against the recent median plan,
  and the time the plan was not running.

Pure Python. The planner node feeds it and publishes values() on /diagnostics.
"""

from __future__ import annotations

import collections
import math

from tdmpc2_ros.runtime.rolling import RollingStats

SHADOW_PLAN, FREE = "shadow plan", "free"  # the jobs a swap puts on the control loop's slack thread (offer_slack)
# The hot-swap thread's own work beside the loop (worked_since): loading and hashing a candidate, and
# plans it runs itself (a smaller rung's warm-up, or a check the loop's slack could not hold).
LOADING, BACKGROUND_PLANS = "loading", "background plans"
# The swap work a control tick can have next to it (the planner's /diagnostics count the ticks and
# misses with each, as ticks_with_swap_work_<name> and missed_with_swap_work_<name>): the tick that
# installs a model, a slack job just before it, or the hot-swap thread's work since the tick began.
SWAP_TICK, AFTER_SHADOW_PLAN, AFTER_FREE = "swap_tick", "after_shadow_plan", "after_free"
BESIDE_LOADING, BESIDE_BACKGROUND_PLANS = "beside_loading", "beside_background_plans"
SWAP_WORK = (SWAP_TICK, AFTER_SHADOW_PLAN, AFTER_FREE, BESIDE_LOADING, BESIDE_BACKGROUND_PLANS)
AFTER = {SHADOW_PLAN: AFTER_SHADOW_PLAN, FREE: AFTER_FREE}  # the slack thread's job before a tick
BESIDE = {LOADING: BESIDE_LOADING, BACKGROUND_PLANS: BESIDE_BACKGROUND_PLANS}  # the hot-swap thread's work


def swap_work(swap_tick: bool, after: str, beside: list[str]) -> list[str]:
    """The swap work next to a tick, widely drawn, so that a miss next to a swap is told from the
    machine's own. The kinds are: the tick installs a new model version (`swap_tick`); the slack
    thread ran a shadow plan or freed a retired model just before it (`after`, a slack job name or
    ""), whether or not that had ended when the tick began; the hot-swap thread loaded a candidate or
    ran plans itself at any time since the tick began (`beside`, its kinds of work)."""
    work = [SWAP_TICK] if swap_tick else []
    work += [AFTER[after]] if after else []
    return work + [BESIDE[kind] for kind in beside]


def _ms(seconds: float) -> float:
    return round(seconds * 1e3, 3)


class SwapCost:
    """The tallies behind the planner's swap figures on /diagnostics."""

    def __init__(self):
        self.ticks_with_work = 0  # ticks that planned with any swap work next to them: the yardstick
        self.ticks_by_kind = collections.Counter()  # the same by kind (a tick may count under several)
        self.missed = 0  # missed deadlines among those ticks
        self.missed_by_kind = collections.Counter()
        # Ticks whose plan ran over the rung's limit (a miss included): far more of them than misses,
        # so they tell what a kind of swap work costs the loop in fewer ticks.
        self.over = 0
        self.over_by_kind = collections.Counter()
        self.swap_tick_latency = RollingStats()
        self.tick_excess_s = math.nan  # the last swap tick minus the median tick at that moment
        self.plan_excess_s = math.nan  # of which its ONNX call: that plan minus the recent median plan
        self.plan_waited_s = math.nan  # of that plan, the time it was not running (a core or the GIL)

    def count(self, work: list[str], missed: bool, over: bool):
        """One tick that planned (or missed), with the swap work next to it (swap_work()). `over`: its
        plan ran over the rung's limit (a miss always has)."""
        if not work:
            return
        self.ticks_with_work += 1
        self.ticks_by_kind.update(work)
        if missed:
            self.missed += 1
            self.missed_by_kind.update(work)
        if over or missed:
            self.over += 1
            self.over_by_kind.update(work)

    def time_swap_tick(self, tick_s: float, median_tick_s: float, plan_s: float, median_plan_s: float,
                       plan_waited_s: float):
        """A tick that installed a new model version, against the median of the moment. A budget step
        is not timed here: it changes what the median means."""
        self.swap_tick_latency.add(tick_s)
        self.tick_excess_s = tick_s - median_tick_s
        # The rest of the excess is around the plan: hand-off to the plan thread, install, publish.
        self.plan_excess_s = plan_s - median_plan_s
        self.plan_waited_s = plan_waited_s

    def values(self) -> dict:
        """The /diagnostics key-values (milliseconds; nan before the first swap)."""
        return {
            "missed_with_swap_work": self.missed, "ticks_with_swap_work": self.ticks_with_work,
            **{f"missed_with_swap_work_{w}": self.missed_by_kind[w] for w in SWAP_WORK},
            **{f"ticks_with_swap_work_{w}": self.ticks_by_kind[w] for w in SWAP_WORK},
            "over_limit_with_swap_work": self.over,
            **{f"over_limit_with_swap_work_{w}": self.over_by_kind[w] for w in SWAP_WORK},
            "swap_tick_latency_max_ms": _ms(self.swap_tick_latency.percentile(100)),
            "swap_tick_latency_last_ms": _ms(self.swap_tick_latency.last()),
            "swap_tick_excess_last_ms": _ms(self.tick_excess_s),
            "swap_plan_excess_last_ms": _ms(self.plan_excess_s),
            "swap_plan_waited_last_ms": _ms(self.plan_waited_s),
        }
