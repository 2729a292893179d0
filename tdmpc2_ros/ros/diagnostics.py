"""Rolling latency statistics and the planner's /diagnostics status."""

from __future__ import annotations

from collections import deque

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


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


def status_array(stamp, name: str, hardware_id: str, level: bytes, message: str, values: dict) -> DiagnosticArray:
    """level is one of OK, WARN, ERROR (DiagnosticStatus byte constants)."""
    status = DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                              values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
    return DiagnosticArray(header=_header(stamp), status=[status])


def _header(stamp):
    from std_msgs.msg import Header

    return Header(stamp=stamp)
