"""Host steal: on a virtual machine, the share of CPU time its cores were ready to run while the
hypervisor ran something else. It is the host's load. No setting of the planner can help with it,
and it makes plans late all the same. On the session-24 Intel VM, 2-9% steal came with 1.6-5.2% of
ticks missing their deadline on the smallest rung. So the planner puts it on /diagnostics and in a
late plan's warning, beside the plan's own figures, and bench-loop splits its windows by it.
Linux's /proc/stat; elsewhere it is unknown (nan), never guessed.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np


def host_cpu_jiffies() -> tuple[int, int] | None:
    """(steal, all) CPU time of every core since boot, in jiffies, from /proc/stat; None where there is
    none (not Linux)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    except (OSError, ValueError):
        return None
    return (fields[7], sum(fields)) if len(fields) == 8 else None


def steal_pct(jiffies) -> float | None:
    """Steal as a percentage of all CPU time from [steal, all] jiffies (summed over windows)."""
    return round(100.0 * jiffies[0] / jiffies[1], 2) if jiffies[1] > 0 else None


class StealMeter:
    """Host steal over report windows: `report()` gives the steal since the previous report (and
    keeps the highest such window); `peek()` the steal since then without ending the window (for a
    late plan's warning). Cheap: one read of /proc/stat each. nan where it is unknown."""

    def __init__(self, read: Callable[[], tuple[int, int] | None] = host_cpu_jiffies):
        self._read = read
        self._mark, self._mark_t = read(), time.monotonic()
        self.max_pct = math.nan  # the highest window reported so far; nan until one is known

    def _since_mark(self, now) -> float:
        if now is None or self._mark is None:
            return math.nan
        pct = steal_pct([now[0] - self._mark[0], now[1] - self._mark[1]])
        return math.nan if pct is None else pct

    def peek(self) -> float:
        return self._since_mark(self._read())

    def window_s(self) -> float:
        """How long the window so far has lasted (a peek over a few jiffies is coarse: one in five is 20%)."""
        return time.monotonic() - self._mark_t

    def report(self) -> float:
        now = self._read()
        pct = self._since_mark(now)
        if now is not None:
            self._mark, self._mark_t = now, time.monotonic()
        self.max_pct = float(np.fmax(self.max_pct, pct))  # a nan on either side leaves the other
        return pct
