"""CPU priority: lower work that must not take CPU from the control loop, and, where the user asks
and the system allows, raise the control loop's own thread.

Background work (loading a hot-swap candidate, training beside a running robot) should only get the
CPU the control loop leaves. On Linux niceness is per thread and a new thread inherits its creator's,
so a whole process is lowered thread by thread; lowering needs no privileges. Raising (a real-time
policy, a pinned core) does, so it is opt-in (planner `plan_thread_priority`, `plan_cpu_affinity`, as
ros2_control's `thread_priority` and `cpu_affinity`) and a refusal is reported, never fatal.
Elsewhere than Linux all of it is a no-op.
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


def pin_thread(cpus: tuple[int, ...]) -> str:
    """Pin the calling thread to `cpus`; returns why not ('' when done, or when cpus is empty)."""
    if not cpus:
        return ""
    try:
        os.sched_setaffinity(0, {int(c) for c in cpus})  # 0 = the calling thread on Linux
        return ""
    except (AttributeError, OSError, ValueError) as e:
        return f"cannot pin to cores {list(cpus)}: {getattr(e, 'strerror', None) or e}"


def make_thread_realtime(priority: int = 0, cpus: tuple[int, ...] = ()) -> tuple[list[str], list[str]]:
    """The calling thread: SCHED_FIFO at `priority` (1-99; 0 = leave the policy alone) and pinned to
    `cpus` (() = any core). Returns (what was done, why the rest was not), one item each.

    Why: a plan's CPU time varies with what shares its core (p99 40% over the median on a 2-core VM
    beside the sim); a real-time thread is not preempted by normal threads, and a pinned one keeps
    its caches. With ONNX Runtime at 1 thread the whole plan runs on this thread. A FIFO thread that
    blocks (waiting for the next tick, or for Python's GIL) sleeps, so it cannot starve the others.
    """
    done, problems = [], []
    if cpus:
        problem = pin_thread(cpus)
        if problem:
            problems.append(f"the plan thread {problem}")
        else:
            done.append(f"cores {sorted(set(cpus))}")
    if priority > 0:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(int(priority)))
            done.append(f"SCHED_FIFO {priority}")
        except (AttributeError, OSError, ValueError) as e:
            why = getattr(e, "strerror", None) or e
            problems.append(f"cannot give the plan thread SCHED_FIFO priority {priority}: {why} (needs CAP_SYS_NICE or an "
                            "rtprio limit, e.g. in /etc/security/limits.conf)")
    return done, problems
