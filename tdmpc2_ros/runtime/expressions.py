"""Reward (and termination) expressions from configuration: Python/numpy expressions compiled once
and evaluated with only a few names in scope. Two users: the sim's reward for a user's MJCF model
(sim/engine.py) and reward_node, a robot's reward from its own observations (ros/reward_node.py).

Every expression sees ``{"__builtins__": {}}``, its caller's names, and these helpers:

=============  =================================================================================
``np``         numpy; also ``cos sin tanh exp sqrt abs clip minimum maximum square pi``
``tolerance``  ``dm_control.utils.rewards.tolerance`` (only when dm_control is installed): the
               shaped rewards of the dm_control suite, 1 inside ``bounds`` and falling off over
               ``margin``
=============  =================================================================================

The restricted namespace keeps typos from reaching Python's builtins; it is NOT a security sandbox:
an expression is trusted configuration, like a launch file. Pure Python: no ROS.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def helpers() -> dict[str, Any]:
    """The names every expression may use besides its caller's."""
    ns = dict(np=np, cos=np.cos, sin=np.sin, tanh=np.tanh, exp=np.exp, sqrt=np.sqrt, abs=np.abs,
              clip=np.clip, minimum=np.minimum, maximum=np.maximum, square=np.square, pi=np.pi)
    try:
        from dm_control.utils.rewards import tolerance
    except ImportError:  # dm_control is optional off the sim
        pass
    else:
        ns["tolerance"] = tolerance
    return ns


def compile_expression(text, what: str):
    """Compiled code of one expression; a ValueError naming `what` and the text if it is not one."""
    source = str(text)
    if not source.strip():
        raise ValueError(f"{what} is empty")
    try:
        return compile(source, f"<{what}>", "eval")
    except SyntaxError as e:
        raise ValueError(f"{what} {source!r} is not a valid expression: {e.msg}") from e


class Expression:
    """One compiled expression with the helpers bound: ``value(**names)`` evaluates it."""

    def __init__(self, text, what: str):
        self.text, self.what = str(text), what
        self._code = compile_expression(text, what)
        self._helpers = helpers()

    def value(self, **names) -> float:
        """The expression's value as a float. Whatever it raises is passed on (the caller decides
        whether that stops anything); a result that is not a number is a ValueError."""
        with np.errstate(all="ignore"):  # a NaN or Inf result is the caller's to judge, not a warning
            result = eval(self._code, {"__builtins__": {}, **self._helpers, **names})
        try:
            return float(result)
        except (TypeError, ValueError):
            raise ValueError(f"{self.what} {self.text!r} gave {result!r}, not a number") from None

    def finite_value(self, **names) -> float:
        """value(), refusing NaN and Inf with a ValueError naming the expression."""
        v = self.value(**names)
        if not math.isfinite(v):
            raise ValueError(f"{self.what} {self.text!r} is {v}")
        return v
