"""Models the planner no longer runs, held until a tick's slack can free them one at a time.

Destroying an ONNX Runtime session took 3.7 ms on 2 quiet cores and 5.7-10.8 ms on a busy machine.
Inside a tick that would delay the tick, and at any other moment it would run beside one. So a
retired model waits here until the hot swapper's offer_slack finds slack after a tick that fits a
free (estimate()), and is freed there, on the loop's slack thread. A free cannot be stopped once
begun, so it is only started where it fits.
"""

from __future__ import annotations

import collections
import time

import numpy as np


class RetiredModels:
    FREE_S = 0.005  # slack a free needs before one was timed (and at least a plan's time)

    def __init__(self):
        self._held: collections.deque = collections.deque()
        self._times: collections.deque = collections.deque(maxlen=20)  # seconds each free took
        self.freed = 0  # freed so far

    def add(self, planner):
        self._held.append(planner)

    def __len__(self) -> int:
        """Retired models not freed yet (each holds its session's memory until then)."""
        return len(self._held)

    def estimate(self) -> float:
        """Slack a free needs: 1.2x the median of those timed here, FREE_S before the first."""
        if not self._times:
            return self.FREE_S
        return max(self.FREE_S, 1.2 * float(np.median(self._times)))

    def free_one(self):
        t = time.perf_counter()
        self._held.popleft()  # the last reference: the session is destroyed here, on the calling thread
        self._times.append(time.perf_counter() - t)
        self.freed += 1
