"""Rolling statistics of a window of recent samples (tick and plan latencies and the like)."""

from __future__ import annotations

from collections import deque

import numpy as np


class RollingStats:
    """The last `window` samples, for percentiles of tick latency and the like."""

    def __init__(self, window: int = 1000):
        self.samples: deque[float] = deque(maxlen=window)

    def add(self, value: float):
        self.samples.append(value)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.samples, q)) if self.samples else float("nan")

    def last(self) -> float:
        return self.samples[-1] if self.samples else float("nan")

    def recent_median(self, n: int) -> float:
        recent = list(self.samples)[-n:]
        return float(np.median(recent)) if recent else float("nan")

    def __len__(self):
        return len(self.samples)
