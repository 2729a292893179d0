"""The slack after a tick (runtime/tick_slack.py): exact figures for a timer, for observation-
triggered ticks with room before the next, and for a lockstep sim whose next tick comes at once."""

from __future__ import annotations

import math

import pytest

from tdmpc2_ros.runtime.tick_slack import TickSlack

PERIOD, DEADLINE = 0.020, 0.018


def test_on_a_timer_the_slack_is_the_time_left_until_the_next_tick_and_nothing_is_borrowed():
    slack = TickSlack(PERIOD, DEADLINE, timer=True)
    assert slack.after_tick(start=10.0, now=10.007, plan_median_s=0.006, interval_median_s=0.0) == pytest.approx(0.013)
    assert not slack.borrowed
    # A shadow plan still running when the next tick starts stops at once: a timer does not wait.
    assert slack.stop_at(10.02, plan_median_s=0.006) == 10.02


def test_triggered_with_room_before_the_next_observation_the_slack_runs_until_it():
    slack = TickSlack(PERIOD, DEADLINE, timer=False)
    # The next observation is due 20 ms after this tick's start; 7 ms have gone.
    got = slack.after_tick(start=5.0, now=5.007, plan_median_s=0.006, interval_median_s=0.020)
    assert got == pytest.approx(0.013) and not slack.borrowed
    assert slack.stop_at(5.02, plan_median_s=0.006) == 5.02  # early or on time: no waiting for a check


def test_a_lockstep_sim_borrows_from_the_next_deadline_what_its_own_plan_leaves():
    slack = TickSlack(PERIOD, DEADLINE, timer=False)
    # The sim answers at once (interval ~7 ms, all spent): the share is 18 - 1.2 x 6 = 10.8 ms.
    got = slack.after_tick(start=5.0, now=5.007, plan_median_s=0.006, interval_median_s=0.007)
    assert got == pytest.approx(0.0108) and slack.borrowed
    # The next tick lets the shadow plan run on until its own plan would no longer fit.
    assert slack.stop_at(5.007, plan_median_s=0.006) == pytest.approx(5.007 + 0.0108)
    # A plan that takes most of the deadline leaves no share: the shadow plan stops at once.
    assert slack.stop_at(5.007, plan_median_s=0.016) == 5.007


def test_before_any_timing_the_figures_are_unknown_and_nothing_is_borrowed_into_a_tick():
    slack = TickSlack(PERIOD, DEADLINE, timer=False)
    assert math.isnan(slack.share(math.nan))
    # No tick interval yet: the share (unknown too) is all there is; never a number made up.
    assert math.isnan(slack.after_tick(1.0, 1.001, math.nan, math.nan))
    assert slack.stop_at(1.02, math.nan) == 1.02  # an unknown share lends nothing
    # Interval known, plan not yet: the time before the next observation.
    assert slack.after_tick(1.0, 1.004, math.nan, 0.020) == pytest.approx(0.016)
