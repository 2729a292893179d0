"""Host steal (runtime/host_steal.py): read from /proc/stat on this Linux machine, and measured
over report windows with a fake reader (exact figures, an unknown host, the highest window)."""

from __future__ import annotations

import math
import time

from tdmpc2_ros.runtime.host_steal import StealMeter, host_cpu_jiffies, steal_pct


def test_proc_stat_gives_steal_within_all_cpu_time_both_growing():
    first = host_cpu_jiffies()
    time.sleep(0.2)
    second = host_cpu_jiffies()
    assert first is not None and second is not None  # this machine is Linux
    assert 0 <= first[0] <= first[1] and second[1] > first[1] and second[0] >= first[0]
    assert steal_pct([3, 200]) == 1.5 and steal_pct([0, 0]) is None


def test_each_report_is_the_steal_since_the_previous_one_and_the_highest_is_kept():
    readings = iter([(10, 1000), (12, 1200), (30, 1400), (30, 1600), (31, 1800)])
    meter = StealMeter(lambda: next(readings))
    assert math.isnan(meter.max_pct)
    assert meter.peek() == 1.0  # 2 of 200 jiffies so far; the window goes on
    assert meter.report() == 5.0  # 20 of 400 since the start
    assert meter.report() == 0.0 and meter.max_pct == 5.0  # nothing stolen in the next 200
    assert meter.report() == 0.5 and meter.max_pct == 5.0


def test_an_unknown_host_reports_none_and_keeps_no_maximum():
    meter = StealMeter(lambda: None)
    assert math.isnan(meter.peek()) and math.isnan(meter.report()) and math.isnan(meter.max_pct)
    # /proc/stat unreadable for one report: that window is unknown, the next is measured from the last mark.
    readings = iter([(0, 100), None, (5, 300)])
    meter = StealMeter(lambda: next(readings))
    assert math.isnan(meter.report())
    assert meter.report() == 2.5
