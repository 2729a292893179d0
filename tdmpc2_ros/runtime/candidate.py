"""A swap candidate: a planner brought up beside the running one, and the checks it goes through
before the control loop may install it (runtime/hot_swap.py drives them on its thread and in the
loop's slack).

- load_matching: the rung of a model folder with the running budget, refused unless its spec (obs
  and action dims, action bounds, budget) equals the running model's;
- ShadowProbe: its check plans, one per call by whichever thread has slack. Each is checked for
  finite outputs; the timed ones give its latency, and a plan stopped at the end of its slack counts
  as longer than any limit;
- warm_up: a few such plans on the calling thread (a budget step, and the planner's first standby);
- Candidate: a planner that passed, with its latencies (checked_candidate).
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tdmpc2_ros.runtime.contract import ModelLoadError, SpecMismatch
from tdmpc2_ros.runtime.ladder import read_ladder
from tdmpc2_ros.runtime.onnx_planner import OnnxPlanner, PlanStopped, StopHandle


class SwapRejected(RuntimeError):
    """A candidate failed a check: the running model keeps acting, and the message says why."""


@dataclass
class Candidate:
    """A planner that passed its checks, ready for the loop to install between two ticks."""

    planner: OnnxPlanner
    version: str
    source: str
    p50_s: float
    p99_s: float
    shadow_plans: int = 0
    stopped: int = 0  # timed shadow plans stopped at the end of their slack
    rung_change: bool = False  # the running model at another budget, not a new version
    step_up: bool = False  # that budget is the next larger one
    below: str = ""  # a standby: the running budget (label) it is the next smaller rung of


def load_matching(path: str | os.PathLike, current: OnnxPlanner, threads: int, seed: int,
                  budget_label: str | None = None) -> OnnxPlanner:
    """The rung of `path` with the running budget (or `budget_label`), refused unless its spec
    equals the running one."""
    label = budget_label or current.contract.budget.label()
    try:
        rungs = read_ladder(path)
        # A bare .onnx file is one rung whose budget is only known from its metadata (checked below).
        matches = rungs if Path(path).is_file() else [r for r in rungs if r.budget.label() == label]
        if not matches:
            raise SwapRejected(f"{path} has no rung with the {'requested' if budget_label else 'running'} budget {label} "
                               f"(it has {[r.budget.label() for r in rungs]})")
        planner = OnnxPlanner(matches[0].path, obs_dim=current.obs_dim, action_dim=current.action_dim, threads=threads,
                              seed=seed, expected_sha256=matches[0].sha256 or None)
    except (ModelLoadError, SpecMismatch) as e:
        raise SwapRejected(str(e)) from e
    new, old = planner.contract, current.contract
    mine = (old.obs.dim, old.action.dim, tuple(old.action.low), tuple(old.action.high), label)
    theirs = (new.obs.dim, new.action.dim, tuple(new.action.low), tuple(new.action.high), new.budget.label())
    if mine != theirs:
        raise SwapRejected(f"spec mismatch: running obs {old.obs.describe()}, action {old.action.describe()}, budget "
                           f"{old.budget.label()}; candidate obs {new.obs.describe()}, action {new.action.describe()}, "
                           f"budget {new.budget.label()}")
    return planner


def warm_up(planner: OnnxPlanner, obs, plans: int, stopping=lambda: False, each=contextlib.nullcontext) -> ShadowProbe:
    """`plans` plans on the calling thread, the first on zeros and the rest on `obs` (zeros if None),
    each checked for finite outputs (SwapRejected otherwise); `each()` wraps every plan (a work mark),
    `stopping()` ends it early as a rejection. A budget step's warm-up, and the planner's first standby."""
    probe = ShadowProbe(planner, warmup=1, runs=plans - 1)
    while not probe.done.is_set():
        if stopping():
            raise SwapRejected("planner is shutting down")
        with each():
            probe.step(obs)
    if probe.error is not None:
        raise probe.error
    return probe


def finite_plan(r) -> bool:
    return bool(np.all(np.isfinite(r.action)) and np.all(np.isfinite(r.mean)) and np.isfinite(r.value)
                and np.all(np.isfinite(r.std)))


class ShadowProbe:
    """The candidate's check plans, run one per call of `step` by whichever thread has slack."""

    WARMUP_STOPS = 3  # warm-up plans stopped in a row before the slack is deemed too short for one

    def __init__(self, planner: OnnxPlanner, warmup: int, runs: int, expected_s: float | None = None,
                 step_up: bool = False):
        self.planner, self.warmup, self.runs = planner, max(1, warmup), runs
        self.expected_s = expected_s  # what the candidate's plans took at start-up, where known
        self.step_up = step_up  # it checks a larger rung (the loop may abandon that check)
        self.latencies: list[float] = []
        self.plans = 0
        self.stopped = 0  # timed plans stopped at the end of their slack (they took longer than it)
        self.warmup_stopped = 0  # warm-up plans stopped so (they are tried again)
        self.error: SwapRejected | None = None
        self.done = threading.Event()
        self._busy = threading.Lock()

    def timed(self) -> np.ndarray:
        """The timed plans' seconds; a stopped one as +inf (it took longer than its slack, by an
        amount nobody measured), so a check is judged on every plan it tried, not on the ones that
        happened to be quick."""
        return np.asarray(self.latencies + [math.inf] * self.stopped)

    def estimate(self, live_s: float) -> float:
        """Expected seconds for the next shadow plan: its own median once measured (infinite once
        most were stopped: then it gets no more slack), before that its start-up latency if known
        (a larger rung), else the running model's (same budget), with room for a first run on a
        fresh session (measured 1.05-1.2x on the shared thread pool)."""
        if self.latencies or self.stopped:
            return quantile(self.timed(), 0.5)
        if self.warmup_stopped >= self.WARMUP_STOPS:
            return math.inf
        if self.expected_s is not None:
            return 1.2 * self.expected_s
        return 1.2 * live_s if np.isfinite(live_s) else 0.0

    def step(self, obs, cpu_time: bool = False, stop: StopHandle | None = None):
        """One check plan. Timed on the wall clock in a tick's slack, where `stop` ends it when
        that slack does; in `cpu_time` (this thread's, which with 1 ONNX Runtime thread is the whole
        plan) when run beside the loop."""
        if self.done.is_set() or not self._busy.acquire(blocking=False):
            return
        try:
            probe = np.zeros(self.planner.obs_dim, np.float32) if self.plans == 0 or obs is None else obs
            clock = time.thread_time if cpu_time else time.perf_counter
            t = clock()
            try:
                r = self.planner.plan(probe, stop=stop)
            except PlanStopped:
                # Warm-up plans are tried again; a timed one is a sample over the slack. More stopped
                # than the check's whole sample: it will not fit, so stop trying.
                timed = self.plans >= self.warmup
                self.stopped += timed
                self.warmup_stopped = 0 if timed else self.warmup_stopped + 1
                if self.stopped >= self.runs:
                    self.done.set()
                return
            dt = clock() - t
            self.plans += 1
            self.warmup_stopped = 0
            if not finite_plan(r):
                self.error = SwapRejected(f"non-finite output (action {r.action}, value {r.value}) on observation "
                                          f"{np.round(probe, 3)}")
            elif self.plans > self.warmup:
                self.latencies.append(dt)
            if self.error is not None or len(self.latencies) >= self.runs:
                self.done.set()
        except Exception as e:  # noqa: BLE001 - reported as the rejection reason
            self.error = SwapRejected(f"shadow plan failed: {type(e).__name__}: {e}")
            self.done.set()
        finally:
            self._busy.release()


def quantile(samples: np.ndarray, q: float) -> float:
    """A sample itself, the one at or above q: no interpolation, which would make nan of +inf."""
    return float(np.quantile(samples, q, method="higher"))


def checked_candidate(planner: OnnxPlanner, probe: ShadowProbe, version: str, source: str, rung_change: bool = False,
               step_up: bool = False) -> Candidate:
    """A checked planner, reset to a zero warm start, with its probe's latencies."""
    lat = probe.timed()
    planner.reset()
    return Candidate(planner, version, source, quantile(lat, 0.5), quantile(lat, 0.99), probe.plans,
                     probe.stopped, rung_change, step_up)
