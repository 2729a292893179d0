"""What one thread cost the kernel between two moments: CPU in user and system mode, page faults,
and context switches, from getrusage(RUSAGE_THREAD) (Linux).

A plan that takes several times its median while its thread was running nearly all the while
(`time.thread_time`) is otherwise a mystery. This splits it: user time is the model's own arithmetic
(or a slow core), system time with minor faults is memory being mapped or compacted under it,
major faults are pages read back from disk, and involuntary switches are preemptions.

Faults and switches are exact counts. The user/system split is not, on a kernel that accounts CPU
by scheduler ticks (this AMD VM's: per-plan figures came in multiples of 4 ms): the kernel scales the
thread's exact total by the share of ticks that found it in each mode, so one plan's split is good to
about a tick. In steady state a plan here faulted 0.06 pages on average (1,000 plans of each of the
i2-s32, i2-s64 and i3-s64 rungs), so a late plan with hundreds of faults points at memory.
"""

from __future__ import annotations

import dataclasses
import resource
import time

# RUSAGE_THREAD is Linux's; elsewhere only the thread's CPU time is known.
_RUSAGE_THREAD = getattr(resource, "RUSAGE_THREAD", None)


@dataclasses.dataclass(frozen=True)
class ThreadUsage:
    user_s: float = 0.0
    system_s: float = 0.0
    minor_faults: int = 0
    major_faults: int = 0
    preempted: int = 0  # involuntary context switches: the kernel took the core away
    yielded: int = 0  # voluntary ones: the thread waited (a lock, the GIL, I/O)

    @classmethod
    def now(cls) -> "ThreadUsage":
        """The calling thread's usage since it started."""
        if _RUSAGE_THREAD is None:
            return cls(user_s=time.thread_time())
        r = resource.getrusage(_RUSAGE_THREAD)
        return cls(r.ru_utime, r.ru_stime, r.ru_minflt, r.ru_majflt, r.ru_nivcsw, r.ru_nvcsw)

    def since(self, earlier: "ThreadUsage") -> "ThreadUsage":
        return ThreadUsage(*(a - b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(earlier))))

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.system_s

    def describe(self) -> str:
        return (f"{self.user_s * 1e3:.1f} ms user, {self.system_s * 1e3:.1f} ms system, {self.minor_faults} minor "
                f"and {self.major_faults} major page faults, preempted {self.preempted} times, "
                f"yielded {self.yielded} times")
