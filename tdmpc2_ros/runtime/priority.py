"""Lower the CPU priority of work that must not take CPU from the control loop (Linux niceness).

Background work (loading a hot-swap candidate, training beside a running robot) should only get the
CPU the control loop leaves. On Linux niceness is per thread and a new thread inherits its creator's,
so a whole process is lowered thread by thread. Raising priority needs privileges and is left to the
user (`chrt`, `nice -n -5`); lowering never does. Elsewhere both are a no-op.
"""

from __future__ import annotations

import os
import threading


def _lower(tid: int, by: int) -> bool:
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + by))
        return True
    except (AttributeError, OSError):  # no such thread any more, or a platform without per-thread nice
        return False


def lower_thread_priority(by: int = 10) -> bool:
    """The calling thread (and the threads it starts later)."""
    return _lower(threading.get_native_id(), by) if by > 0 else False


def lower_process_priority(by: int = 10) -> bool:
    """Every thread of this process now, and those they start later (ONNX Runtime, torch and DDS
    pools included). Returns whether any thread was lowered."""
    if by <= 0:
        return False
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return lower_thread_priority(by)
    return any([_lower(tid, by) for tid in tids])
