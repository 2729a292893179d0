"""Python's garbage collector as the planner sees it (runtime/gc_pauses.py): each collection timed and
put down to the thread that ran it, and start-up's objects frozen out of later collections."""

from __future__ import annotations

import gc
import threading
import weakref

import pytest

from tdmpc2_ros.runtime import gc_pauses


@pytest.fixture
def pauses():
    p = gc_pauses.GcPauses().install()
    yield p
    p.close()


def test_a_collection_is_timed_and_put_down_to_the_thread_that_ran_it(pauses):
    before_here = pauses.in_thread()
    gc.collect()  # a full collection in this thread
    assert pauses.collections[2] >= 1 and pauses.max_s > 0
    here = pauses.in_thread() - before_here
    assert here > 0 and pauses.total_s >= here

    other = {}

    def collect_elsewhere():
        gc.collect(0)
        other["ident"] = threading.get_ident()

    mine, total = pauses.in_thread(), pauses.total_s
    worker = threading.Thread(target=collect_elsewhere)
    worker.start()
    worker.join()
    assert pauses.collections[0] >= 1
    assert pauses.in_thread(other["ident"]) > 0  # the other thread's, not this one's
    assert pauses.in_thread() == mine and pauses.total_s > total


def test_close_stops_the_timing(pauses):
    pauses.close()
    count = list(pauses.collections)
    gc.collect()
    assert pauses.collections == count
    pauses.close()  # twice is harmless


class _Cycle:
    def __init__(self):
        self.me = self  # only the collector frees it


def test_freeze_keeps_what_is_alive_out_of_later_collections_and_collects_the_garbage_first():
    alive, garbage = [[1]], weakref.ref(_Cycle())
    try:
        frozen, before, after = gc_pauses.freeze()
        assert frozen == gc.get_freeze_count() > 0 and before > 0 and after >= 0
        assert not any(o is alive for o in gc.get_objects())  # in the permanent generation: no collection scans it
        assert garbage() is None  # the cycle was collected first, not frozen
    finally:
        gc.unfreeze()
    assert any(o is alive for o in gc.get_objects())
