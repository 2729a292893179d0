"""The action shaper (runtime/action_shaper.py): the model's [-1, 1] action to a physical command,
within the robot's limits and rate. Pure numpy, no ROS."""

from __future__ import annotations

import numpy as np
import pytest

from tdmpc2_ros.runtime import SpecMismatch
from tdmpc2_ros.runtime.action_shaper import ActionShaper


def test_scales_clamps_and_rate_limits():
    # Model acts in [-1, 1] mapped to [-10, 10] N; the robot allows [-4, 6] N and 50 N/s at 50 Hz.
    shaper = ActionShaper([-10.0], [10.0], [-4.0], [6.0], max_rate=50.0, period_s=0.02)
    assert shaper.physical([0.5])[0] == pytest.approx(5.0)
    out = [shaper.shape(shaper.physical([1.0]))[0] for _ in range(8)]
    assert np.allclose(np.diff([0.0] + out), [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0])  # 1 N per tick up to 6 N
    assert shaper.shape([-100.0])[0] == pytest.approx(5.0)  # far below the limit: still only one step down
    assert shaper.safe("hold")[0] == pytest.approx(5.0)
    assert shaper.safe("zero")[0] == pytest.approx(4.0)  # towards zero, rate-limited


def test_the_stop_command_is_zero_at_once_or_the_last_command():
    """A stopping planner's last command is not rate-limited: zero (within the limits) at once, or hold."""
    shaper = ActionShaper([-10.0], [10.0], [-4.0], [6.0], max_rate=50.0, period_s=0.02)
    for _ in range(8):
        shaper.shape([6.0])
    assert shaper.stop("hold")[0] == pytest.approx(6.0)
    assert shaper.stop("zero")[0] == 0.0 and shaper.last[0] == 0.0  # not 5.0, one rate-limited step
    assert ActionShaper([0.5], [1.5], [], [], max_rate=0.0, period_s=0.02).stop("zero")[0] == 0.5  # zero is outside


def test_limits_default_to_the_model_spec_and_the_first_command_starts_inside_them():
    shaper = ActionShaper([0.5, -2.0], [1.5, 2.0], [], [], max_rate=0.0, period_s=0.02)
    assert np.array_equal(shaper.low, [0.5, -2.0]) and np.array_equal(shaper.high, [1.5, 2.0])
    assert np.array_equal(shaper.last, [0.5, 0.0])  # zero clipped into the limits
    # No rate limit (max_rate 0): a command goes straight to its clamped value.
    assert np.array_equal(shaper.shape([9.0, -9.0]), [1.5, -2.0])
    assert np.array_equal(shaper.physical([-3.0, 3.0]), [0.5, 2.0])  # actions beyond [-1, 1] are clipped first


def test_command_scale_converts_the_model_units_and_normalised_inverts_physical():
    # A motor with gear 100: the model's [-1, 1] N m at the joint is [-100, 100] on the command topic.
    shaper = ActionShaper([-1.0, 0.0], [1.0, 2.0], [-100.0, -10.0], [100.0, 10.0], 0.0, 0.02, scale=[100.0, 1.0])
    assert np.allclose(shaper.physical([0.25, 0.0]), [25.0, 1.0])
    actions = np.array([[-1.0, 1.0], [0.3, -0.7], [0.0, 0.0]])
    for a in actions:
        assert np.allclose(shaper.normalised(shaper.physical(a)), a)
    assert np.array_equal(shaper.normalised([1e6, -1e6]), [1.0, -1.0])  # clipped back into [-1, 1]
    # A degenerate axis (low == high) has no span to divide by: it maps to -1, not NaN.
    flat = ActionShaper([2.0], [2.0], [], [], 0.0, 0.02)
    assert np.array_equal(flat.normalised([2.0]), [-1.0])


def test_a_non_finite_command_never_leaves():
    shaper = ActionShaper([-1.0], [1.0], [], [], max_rate=0.0, period_s=0.02)
    shaper.shape([0.4])
    # np.clip passes NaN through; the guard keeps the last command instead.
    assert np.array_equal(shaper.shape([np.nan]), [0.4])
    assert np.array_equal(shaper.shape([np.inf]), [1.0])  # an infinity is clipped to the limit


def test_limits_or_scale_of_another_length_are_refused_naming_the_action_dim():
    with pytest.raises(SpecMismatch, match="action dim 1"):
        ActionShaper([-1.0], [1.0], [-1.0, -1.0], [1.0, 1.0], 0.0, 0.02)
    with pytest.raises(SpecMismatch, match="command_scale of length 2"):
        ActionShaper([-1.0], [1.0], [], [], 0.0, 0.02, scale=[1.0, 2.0])
