"""A thread's cost as the kernel counts it (runtime/thread_usage.py), which a late plan's warning
splits into user and system time, page faults and context switches."""

from __future__ import annotations

import mmap
import sys
import threading
import time

import pytest

from tdmpc2_ros.runtime.thread_usage import ThreadUsage

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RUSAGE_THREAD is Linux's")


def test_arithmetic_is_user_time_and_touching_new_memory_is_page_faults():
    start = ThreadUsage.now()
    t = time.thread_time()
    while time.thread_time() - t < 0.05:  # 50 ms of this thread's own CPU
        sum(range(1000))
    with mmap.mmap(-1, 64 << 20) as m:  # 64 MiB, anonymous: each page faults in when first touched
        m.madvise(mmap.MADV_NOHUGEPAGE)  # 4 KiB pages, one fault each
        for i in range(0, len(m), mmap.PAGESIZE):
            m[i] = 1
    used = ThreadUsage.now().since(start)
    assert used.user_s >= 0.03 and used.cpu_s >= used.user_s
    assert used.minor_faults >= 0.9 * (64 << 20) // mmap.PAGESIZE
    assert used.major_faults >= 0 and "ms user" in used.describe()


def test_it_counts_the_calling_thread_only_and_a_wait_as_yielded():
    start = ThreadUsage.now()
    other = threading.Thread(target=lambda: sum(range(3_000_000)))
    other.start()
    other.join()  # this thread sleeps meanwhile
    time.sleep(0.01)
    used = ThreadUsage.now().since(start)
    assert used.yielded >= 1  # waiting for the other thread and sleeping both give up the core
    assert used.user_s < 0.05  # the other thread's arithmetic is not this one's
