"""The standby slot: the next smaller rung of the running version, held ready for a step down.

The loop says after every install which standby it wants (a Request.standby, or None). The hot-swap
thread (hot_swap.py) brings the wanted one up, loaded and warmed, and holds it here; a step down then
takes it (a pointer swap) instead of loading a rung beside a late loop. This class only keeps the
state both threads share, under one lock: what is wanted, what is held, and how the last bring-up
went (for /diagnostics). Loading, warming and retiring sessions stay with the hot-swap thread.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from tdmpc2_ros.runtime.candidate import Candidate
from tdmpc2_ros.runtime.swap_request import Request

if TYPE_CHECKING:
    from tdmpc2_ros.runtime.onnx_planner import OnnxPlanner


def stands_for(held: Candidate, want: Request) -> bool:
    """The held standby is the one `want` asks for (same version, source and running budget)."""
    return (held.version, held.source, held.below) == (want.version, want.path, want.below)


class StandbySlot:
    """What the loop wants as its standby, what is held, and how the last bring-up went."""

    def __init__(self):
        self._lock = threading.Lock()
        self._wanted: Request | None = None
        self._held: Candidate | None = None
        self.result = ""  # the last bring-up's outcome, or why there is none (on /diagnostics)
        self.cpu_s = 0.0  # the hot-swap thread's CPU for the last bring-up
        self.failures = 0  # standbys that could not be brought up (a step down then loads its rung)

    def want(self, want: Request | None, warm: OnnxPlanner | None = None,
             warmed: str = "") -> tuple[list[OnnxPlanner], bool]:
        """The loop wants `want` (None: no standby). `warm`, a rung the loop has planned with (`warmed`
        says how), is held as it at once. Returns the planners no longer held or needed (to retire)
        and whether the wanted standby still has to be brought up."""
        with self._lock:
            self._wanted = want
            old, self._held = self._held, None
            if warm is not None and want is not None:
                self._held = Candidate(warm, want.version, want.path, float("nan"), float("nan"), rung_change=True,
                                       below=want.below)
                self.result = (f"standby {warm.contract.budget.label()} of {want.version} ready (warm: "
                               f"{warmed or 'planned with before'}; nothing loaded)")
                warm = None
            elif old is not None and want is not None and stands_for(old, want):
                self._held, old = old, None
            missing = want is not None and self._held is None
        leftovers = [p for p in (old.planner if old is not None else None, warm) if p is not None]
        return leftovers, missing

    def take(self, version: str, source: str, below: str = "", label: str = "") -> Candidate | None:
        """The held standby, if it is `version` from `source` and the next smaller rung below the
        budget `below` (or has the budget `label`); it is no longer held. None otherwise."""
        with self._lock:
            held = self._held
            if (held is None or (held.version, held.source) != (version, source) or (below and held.below != below)
                    or (label and held.planner.contract.budget.label() != label)):
                return None
            self._held = None
        return held

    def label(self) -> str:
        """The budget of the held standby, "" for none (on /diagnostics)."""
        held = self._held
        return held.planner.contract.budget.label() if held is not None else ""

    def held(self) -> Candidate | None:
        return self._held

    def still_wanted(self, want: Request) -> bool:
        """`want` is still the loop's wish (a bring-up stops once it is not)."""
        return want == self._wanted

    def needs(self, want: Request) -> bool:
        """`want` is still wished for and nothing is held for it yet."""
        with self._lock:
            return want == self._wanted and self._held is None

    def hold(self, want: Request, cand: Candidate, ready: str) -> bool:
        """Hold `cand` as the standby `want`, with `ready` as the result, if the loop still wants it and
        nothing else is held; False otherwise (the caller retires it). Held and described at once:
        whoever sees it held reads its own result."""
        with self._lock:
            if want != self._wanted or self._held is not None:
                return False
            self._held, self.result = cand, ready
        return True

    def failed(self, result: str, cpu_s: float):
        self.failures += 1
        self.result, self.cpu_s = result, cpu_s
