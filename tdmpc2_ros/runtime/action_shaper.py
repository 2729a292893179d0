"""The only way a command leaves the planner: a normalised action in [-1, 1] becomes a physical
command (the model's action spec, times an optional per-joint scale), clamped to the robot's limits
and rate-limited. Pure numpy; the planner node (ros/planner_node.py) owns one."""

from __future__ import annotations

import math

import numpy as np

from tdmpc2_ros.runtime.contract import SpecMismatch


class ActionShaper:
    """Normalised action in [-1, 1] -> physical command: scaled to the model's action spec, clamped
    to the configured limits, rate-limited. The only way a command leaves the node."""

    def __init__(self, model_low, model_high, limit_low, limit_high, max_rate: float, period_s: float, scale=()):
        # scale: per-element factor from the model's action units to the command topic's (e.g. a
        # motor gear, when a ros2_control effort controller takes N or N m).
        scale = np.asarray(scale if len(scale) else np.ones(len(model_low)), float)
        self.model_low, self.model_high = np.asarray(model_low, float) * scale, np.asarray(model_high, float) * scale
        self.low = np.asarray(limit_low if len(limit_low) else model_low, float)
        self.high = np.asarray(limit_high if len(limit_high) else model_high, float)
        if not (self.low.shape == self.high.shape == self.model_low.shape == scale.shape):
            raise SpecMismatch(f"action limits of length {self.low.shape[0]}/{self.high.shape[0]} or command_scale of length "
                               f"{scale.shape[0]} do not match the model's action dim {self.model_low.shape[0]}")
        self.max_step = max_rate * period_s if max_rate > 0 else math.inf
        self.last = self._zero()

    def physical(self, normalised) -> np.ndarray:
        a = np.clip(np.asarray(normalised, float), -1.0, 1.0)
        return self.model_low + (a + 1.0) * 0.5 * (self.model_high - self.model_low)

    def normalised(self, physical) -> np.ndarray:
        """Inverse of physical(): a command in the topic's units back to the model's [-1, 1]."""
        span = np.where(self.model_high > self.model_low, self.model_high - self.model_low, 1.0)
        return np.clip(2.0 * (np.asarray(physical, float) - self.model_low) / span - 1.0, -1.0, 1.0)

    def shape(self, physical) -> np.ndarray:
        cmd = np.clip(np.asarray(physical, float), self.low, self.high)
        cmd = self.last + np.clip(cmd - self.last, -self.max_step, self.max_step)
        if not np.all(np.isfinite(cmd)):  # cannot happen after the clips above; kept as the last guard
            cmd = self.last
        self.last = cmd
        return cmd

    def safe(self, mode: str) -> np.ndarray:
        return self.shape(self.last if mode == "hold" else np.zeros_like(self.low))

    def stop(self, mode: str) -> np.ndarray:
        """The last command of a planner that stops: zero (within the limits) at once, not rate-limited
        (a robot's forward command controller would otherwise keep applying the last effort), or hold."""
        self.last = self.last if mode == "hold" else self._zero()
        return self.last

    def _zero(self) -> np.ndarray:
        """Zero clipped into the limits: the first command, and a stop's."""
        return np.clip(np.zeros_like(self.low), self.low, self.high)
