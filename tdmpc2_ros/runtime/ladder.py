"""A ladder of planning budgets for one model, the start-up choice of the largest rung that fits
the control period, and the steps down (and back up) while running.

The default TD-MPC2 budget costs several control periods at 50 Hz on a 2-core CPU, so a model
folder ships the same weights exported at several budgets (ladder.json + one .onnx per rung,
largest first). At start-up the planner measures each rung after warm-up and takes the largest
whose p99 latency fits `fraction * period`. Start-up may see a quieter CPU than operation does (the
sim or other nodes not yet running), so the running rung is watched too (RungGovernor).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tdmpc2_ros.runtime.budget import PlanBudget
from tdmpc2_ros.runtime.contract import ModelLoadError

LADDER_FILE = "ladder.json"

# (iterations, samples, elites, policy trajectories); horizon stays 3. Largest first.
# The last rung is for slower CPUs: on the 2-core AMD machine of 2026-12-03, under the running sim at
# 50 Hz, i2-s64 planned at p99 16.7 ms against the 14 ms limit and missed 49 of 2,496 deadlines with
# nowhere to step down. i2-s32 plans in 5.6 against 8.6 ms alone (1 thread) and the shipped model keeps
# its return (866.5 against 867.1 over 5 episodes); one iteration instead of two costs 28 of it (838.7).
DEFAULT_RUNGS = [(6, 512, 64, 24), (4, 256, 32, 12), (4, 128, 16, 8), (3, 64, 8, 4), (2, 64, 8, 4), (2, 32, 4, 2)]


def default_budgets(action_dim: int, planner: str = "mppi") -> list[PlanBudget]:
    full = PlanBudget.reference(action_dim, planner=planner)
    out = [full]
    for it, s, e, p in DEFAULT_RUNGS[1:]:
        out.append(PlanBudget(planner=planner, iterations=it, num_samples=s, num_elites=e, num_pi_trajs=p))
    return out


@dataclass(frozen=True)
class Rung:
    path: Path
    budget: PlanBudget
    sha256: str = ""


def rung_filename(budget: PlanBudget) -> str:
    return f"planner_{budget.label()}.onnx"


def read_ladder(model_path: str | os.PathLike) -> list[Rung]:
    """Rungs of a model folder (ladder.json), or the single rung of a bare .onnx file."""
    p = Path(model_path)
    if p.is_file():
        return [Rung(p, PlanBudget())]  # budget is read from the graph's own metadata on load
    index = p / LADDER_FILE
    if not index.is_file():
        raise ModelLoadError(f"model path {p} is neither an .onnx file nor a folder with {LADDER_FILE}")
    try:
        entries = json.loads(index.read_text())["rungs"]
        rungs = [Rung(p / e["file"], PlanBudget.from_dict(e["budget"]), e.get("sha256", "")) for e in entries]
    except (KeyError, TypeError, ValueError) as e:
        raise ModelLoadError(f"{index} is malformed: {e}") from e
    if not rungs:
        raise ModelLoadError(f"{index} lists no rungs")
    return rungs


def write_ladder_index(folder: Path, rungs: list[Rung], extra: dict | None = None):
    doc = {"rungs": [{"file": r.path.name, "budget": r.budget.to_dict(), "sha256": r.sha256} for r in rungs], **(extra or {})}
    (folder / LADDER_FILE).write_text(json.dumps(doc, indent=2))


def measure_latency(plan_once, warmup: int, runs: int, limit_s: float | None = None) -> np.ndarray:
    """Seconds per call of plan_once(), after warm-up. With limit_s, stops as soon as more than 1%
    of the runs exceeded it (the p99 cannot fit any more): a too-large rung costs a few calls, not all."""
    for _ in range(warmup):
        plan_once()
    out = []
    allowed_over = int(0.01 * runs)
    for _ in range(runs):
        t = time.perf_counter()
        plan_once()
        out.append(time.perf_counter() - t)
        if limit_s is not None and sum(x > limit_s for x in out) > allowed_over:
            break
    return np.asarray(out)


@dataclass(frozen=True)
class RungTiming:
    """One rung's start-up measurement (seconds)."""

    label: str
    p50_s: float
    p99_s: float
    runs: int

    @classmethod
    def of(cls, label: str, latencies) -> RungTiming:
        """The summary of measure_latency's samples."""
        lat = np.asarray(latencies, dtype=float)
        return cls(label, float(np.median(lat)), float(np.percentile(lat, 99)), int(lat.size))


def fit_ladder(rungs: list[Rung], open_rung, time_plans, limit_s: float):
    """The start-up choice: open and time the rungs largest first, and stop at the first whose p99
    fits limit_s. The rungs below it are never loaded, so a machine that fits the largest pays for one
    load and one timing. If none fits, the rung with the smallest p99 is chosen, and the caller
    should expect misses.

    open_rung(rung) returns a planner (its budget label is read from its own graph: a bare .onnx
    file's Rung does not know it). time_plans(planner) returns its plan latencies in seconds.
    Returns (the chosen planner, the timings of the rungs tried, largest first; fits)."""
    tried, chosen, best_p99 = [], None, math.inf
    for rung in rungs:
        planner = open_rung(rung)
        tried.append(RungTiming.of(planner.contract.budget.label(), time_plans(planner)))
        if tried[-1].p99_s < best_p99:
            chosen, best_p99 = planner, tried[-1].p99_s
        if tried[-1].p99_s <= limit_s:
            return planner, tried, True
    return chosen, tried, False


def describe_fit(tried: list[RungTiming], chosen: str, rate_hz: float, limit_s: float, fits: bool) -> str:
    """The start-up log line of fit_ladder's choice."""
    table = ", ".join(f"{t.label}: p50 {t.p50_s * 1e3:.1f} ms p99 {t.p99_s * 1e3:.1f} ms ({t.runs} runs)" for t in tried)
    return (f"budget ladder at {rate_hz:g} Hz (limit {limit_s * 1e3:.1f} ms): [{table}] -> chose {chosen}"
            + ("" if fits else " (NO rung fits; expect misses)"))


def next_smaller_rung(model_path: str | os.PathLike, running: PlanBudget | str) -> Rung | None:
    """The rung after the running budget (or budget label) in the model's ladder (None: it is the
    smallest, the model is a bare .onnx file, or the folder does not list the running budget)."""
    return _neighbour_rung(model_path, running, +1)


def next_larger_rung(model_path: str | os.PathLike, running: PlanBudget) -> Rung | None:
    """The rung before the running budget (None: it is the largest, or as next_smaller_rung)."""
    return _neighbour_rung(model_path, running, -1)


def _neighbour_rung(model_path, running: PlanBudget | str, step: int) -> Rung | None:
    try:
        rungs = read_ladder(model_path)
    except ModelLoadError:
        return None
    labels = [r.budget.label() for r in rungs]
    label = running if isinstance(running, str) else running.label()
    if Path(model_path).is_file() or label not in labels:
        return None
    i = labels.index(label) + step
    return rungs[i] if 0 <= i < len(rungs) else None


class RungGovernor:
    """Decides when the running rung no longer fits: more than 1% of the last `window` plans took
    longer than the limit, the rule the start-up choice applies (its p99 cannot fit any more). It
    also counts the plans in a row that fitted (`quiet`): the planner tries the next larger rung
    after a long quiet run (a burst that forced a step down has passed).

    A short burst does not trigger it (at the default 200 plans, 3 overruns are needed) but a rung
    that overruns every tick does within 3 ticks. After a rung change the window starts afresh, so
    each step down is judged on the new rung's own plans.

    It also counts the plans in a row that took at most ROOM of the limit (`roomy`): the hot-swap
    thread loads a model beside the loop only after a run of them (HotSwapper's room gate)."""

    # A load beside the loop delayed its plans by up to 6.2 ms at p99 on the 2-core AMD machine
    # (benchmark/results/cpu_class_ab_amd_s18_2026-12-04.md): at 50 Hz, plans within 75% of the
    # 14 ms limit (10.5 ms) leave more than that before the 18 ms deadline.
    ROOM = 0.75

    def __init__(self, limit_s: float, window: int = 200):
        self.limit_s, self.window = float(limit_s), int(window)
        self.allowed = int(0.01 * self.window)
        self.recent: deque[float] = deque(maxlen=self.window)
        self.over = 0
        self.quiet = 0  # plans in a row within the limit: how long the CPU has left this rung room
        self.roomy = 0  # plans in a row within ROOM of the limit (read by the hot-swap thread)

    def observe(self, plan_s: float) -> bool:
        """Record one plan's latency; True when the running rung should step down."""
        if len(self.recent) == self.window:
            self.over -= self.recent[0] > self.limit_s
        self.recent.append(float(plan_s))
        self.over += plan_s > self.limit_s
        self.quiet = 0 if plan_s > self.limit_s else self.quiet + 1
        self.roomy = 0 if plan_s > self.ROOM * self.limit_s else self.roomy + 1
        return self.over > self.allowed

    def restart(self):
        self.recent.clear()
        self.over = 0
        self.quiet = self.roomy = 0

    def describe(self) -> str:
        p99 = float(np.percentile(self.recent, 99)) * 1e3 if self.recent else float("nan")
        return (f"{self.over} of the last {len(self.recent)} plans over the {self.limit_s * 1e3:.1f} ms limit "
                f"(p99 {p99:.1f} ms)")
