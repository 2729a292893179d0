"""Python's cyclic garbage collector, seen from a control loop.

A collection stops the thread that triggers it, and every thread that needs the GIL meanwhile. A
full (generation 2) collection scans every tracked object: in a planner process (rclpy, numpy,
onnxruntime and this package imported, about 47k objects) that took 10.9 ms on the 2-core AMD
machine, longer than a small rung's whole plan. Two things follow:

- `GcPauses` times each collection and the thread it ran in, so that a late plan can say how much of
  it was the collector (its own thread's, or another's that held the GIL), and `/diagnostics` can
  report the longest pause;
- `freeze()`, once start-up is over, moves every object alive then into the permanent generation
  (`gc.freeze`), so no later collection scans them: a full collection then took 0.001 ms. The
  start-up objects (modules, classes, the node) live as long as the process anyway; what is garbage
  is collected first.

In two 7-minute busy bench-loop runs (20 swaps each) no collection of any generation ran after
start-up, frozen or not: the tick frees what it allocates, and CPython counts allocations net of
frees. The freeze is insurance for a process that does build up objects (an adapter's, a bigger
node's); the monitor is what showed that the collector was not behind the late plans.
"""

from __future__ import annotations

import gc
import threading
import time


class GcPauses:
    """Collections of Python's garbage collector, timed, by thread and generation. Installed as a
    gc callback; the collector runs one collection at a time, under the GIL, so no lock is needed."""

    def __init__(self):
        self._began: float | None = None
        self.collections = [0, 0, 0]  # by generation
        self.max_s = 0.0  # the longest pause
        self.total_s = 0.0  # all threads
        self._by_thread: dict[int, float] = {}

    def install(self) -> "GcPauses":
        gc.callbacks.append(self._on_gc)
        return self

    def close(self):
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict):
        if phase == "start":
            self._began = time.perf_counter()
            return
        if self._began is None:  # installed during a collection
            return
        took, self._began = time.perf_counter() - self._began, None
        self.collections[min(int(info.get("generation", 0)), 2)] += 1
        self.max_s = max(self.max_s, took)
        self.total_s += took
        me = threading.get_ident()
        self._by_thread[me] = self._by_thread.get(me, 0.0) + took

    def in_thread(self, ident: int | None = None) -> float:
        """Seconds of collections run by a thread (default: this one), since install."""
        return self._by_thread.get(threading.get_ident() if ident is None else ident, 0.0)


def full_collection_s() -> float:
    """Time one full collection (what a generation-2 pause costs now)."""
    t = time.perf_counter()
    gc.collect()
    return time.perf_counter() - t


def freeze() -> tuple[int, float, float]:
    """Collect what is garbage, then take every object alive into the permanent generation, out of
    later collections' scans. Returns (objects frozen, a full collection's seconds before, after)."""
    before = full_collection_s()
    gc.freeze()
    return gc.get_freeze_count(), before, full_collection_s()
