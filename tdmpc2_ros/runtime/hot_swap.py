"""Hot swap: bring a new planner graph up beside the running one, check it, and hand it over at a
tick boundary. Pure Python + onnxruntime (the node wires it to ROS).

A background thread takes each request (an announcement from the model store, or a path) through:
1. files: every announced file's sha256 (model_store.materialise), then the rung's own sha256;
2. spec: observation and action spec and budget equal to the running model's;
3. finite outputs on real observations (NaN weights fail here);
4. warm-up, then latency for the running budget. The probe plans run right after a live tick has
   finished, in the slack before the next one, to compete as little as possible with the control
   loop; the median must fit the same limit the ladder was chosen with, or, on a CPU the probes
   share with the loop, be within 25% of the running model's own plans over the same window.
Only then is the candidate offered to the control loop, which installs it between two ticks (a
pointer swap that carries the warm-start mean over). Any failure leaves the running model alone
and reports why.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tdmpc2_ros.runtime.contract import ModelLoadError, SpecMismatch
from tdmpc2_ros.runtime.ladder import read_ladder
from tdmpc2_ros.runtime.model_store import StoreError, materialise
from tdmpc2_ros.runtime.onnx_planner import OnnxPlanner


class SwapRejected(RuntimeError):
    pass


@dataclass
class Candidate:
    planner: OnnxPlanner
    version: str
    source: str
    p50_s: float
    p99_s: float


def load_matching(path: str | os.PathLike, current: OnnxPlanner, threads: int, seed: int) -> OnnxPlanner:
    """The rung of `path` with the running budget, refused unless its spec equals the running one."""
    budget = current.contract.budget
    try:
        rungs = read_ladder(path)
        # A bare .onnx file is one rung whose budget is only known from its metadata (checked below).
        matches = rungs if Path(path).is_file() else [r for r in rungs if r.budget.label() == budget.label()]
        if not matches:
            raise SwapRejected(f"{path} has no rung with the running budget {budget.label()} "
                               f"(it has {[r.budget.label() for r in rungs]})")
        planner = OnnxPlanner(matches[0].path, obs_dim=current.obs_dim, action_dim=current.action_dim, threads=threads,
                              seed=seed, expected_sha256=matches[0].sha256 or None)
    except (ModelLoadError, SpecMismatch) as e:
        raise SwapRejected(str(e)) from e
    new, old = planner.contract, current.contract
    mine = (old.obs.dim, old.action.dim, tuple(old.action.low), tuple(old.action.high), old.budget)
    theirs = (new.obs.dim, new.action.dim, tuple(new.action.low), tuple(new.action.high), new.budget)
    if mine != theirs:
        raise SwapRejected(f"spec mismatch: running obs {old.obs.describe()}, action {old.action.describe()}, budget "
                           f"{old.budget.label()}; candidate obs {new.obs.describe()}, action {new.action.describe()}, "
                           f"budget {new.budget.label()}")
    return planner


def check_finite(planner: OnnxPlanner, observations: list[np.ndarray]):
    for obs in observations:
        r = planner.plan(obs)
        if not (np.all(np.isfinite(r.action)) and np.all(np.isfinite(r.mean)) and np.isfinite(r.value) and np.all(np.isfinite(r.std))):
            raise SwapRejected(f"non-finite output (action {r.action}, value {r.value}) on observation {np.round(obs, 3)}")
    planner.reset()


class HotSwapper:
    """One background thread; requests are handled in order, newest wins if several queue up."""

    def __init__(self, current, limit_s: float, warmup: int, runs: int, threads: int, seed: int, cache_dir, log,
                 live_p50=None):
        self.current = current  # callable -> (running OnnxPlanner, latest observation or None)
        self.live_p50 = live_p50  # callable -> median of the running model's recent plans (s), or None
        self.limit_s, self.warmup, self.runs, self.threads, self.seed = limit_s, warmup, runs, threads, seed
        self.cache_dir, self.log = Path(cache_dir), log
        self.requests: queue.Queue = queue.Queue()
        self.tick_done = threading.Event()
        self._ready: Candidate | None = None
        self._lock = threading.Lock()
        self.rejected = 0
        self.last_result = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="hot-swap", daemon=True)
        self._thread.start()

    # -- called from the control loop -------------------------------------------------------------
    def request(self, what: dict):
        """{'announcement': {...}} or {'path': str, 'version': str}."""
        self.requests.put(what)

    def take_ready(self) -> Candidate | None:
        with self._lock:
            ready, self._ready = self._ready, None
        return ready

    def notify_tick(self):
        self.tick_done.set()

    def stop(self):
        self._stop.set()
        self.requests.put(None)
        self._thread.join(timeout=5)

    # -- the background thread --------------------------------------------------------------------
    def _loop(self):
        while not self._stop.is_set():
            what = self.requests.get()
            if what is None:
                return
            while not self.requests.empty():  # only the newest of a burst matters
                newer = self.requests.get()
                if newer is None:
                    return
                what = newer
            try:
                cand = self._prepare(what)
                with self._lock:
                    self._ready = cand
                self.last_result = (f"version {cand.version} passed checks (p50 {cand.p50_s * 1e3:.2f} ms, "
                                    f"p99 {cand.p99_s * 1e3:.2f} ms); swapping at the next tick")
                self.log("info", self.last_result)
            except SwapRejected as e:
                self.rejected += 1
                self.last_result = f"rejected model update {what.get('version') or what.get('announcement', {}).get('version', '?')}: {e}"
                self.log("error", self.last_result + "; the running model keeps acting")
            except Exception as e:  # noqa: BLE001 - any failure must leave the running model alone
                self.rejected += 1
                self.last_result = f"model update failed unexpectedly: {type(e).__name__}: {e}"
                self.log("error", self.last_result + "; the running model keeps acting")

    def _prepare(self, what: dict) -> Candidate:
        if "announcement" in what:
            ann = what["announcement"]
            try:
                folder = materialise(ann, self.cache_dir)
            except (StoreError, OSError, ValueError) as e:
                raise SwapRejected(str(e)) from e
            version, source = str(ann["version"]), str(folder)
        else:
            version, source = str(what.get("version") or what["path"]), str(what["path"])
        running, obs = self.current()
        planner = load_matching(source, running, self.threads, self.seed)
        probes = [np.zeros(running.obs_dim, np.float32)] + ([np.asarray(obs, np.float32)] if obs is not None else [])
        check_finite(planner, probes)
        lat = self._measure(planner)
        p50, p99 = float(np.median(lat)), float(np.percentile(lat, 99))
        # The probes share the CPU with the running loop (and its ONNX Runtime threads, which spin
        # for a while after each plan), so their tail measures the overlap more than the model: the
        # median is what must fit. The p99 is reported.
        # On a busy CPU both are slowed alike, so the running model's own plans over the same window
        # are the fair yardstick: the candidate may not be more than 25% slower than them.
        live = self.live_p50() if self.live_p50 is not None else float("nan")
        if p50 > self.limit_s and not (np.isfinite(live) and p50 <= 1.25 * live):
            raise SwapRejected(f"median latency {p50 * 1e3:.2f} ms (p99 {p99 * 1e3:.2f} ms) exceeds the "
                               f"{self.limit_s * 1e3:.2f} ms limit for {planner.contract.budget.label()} and the running "
                               f"model's {live * 1e3:.2f} ms over the same window by more than 25%")
        planner.reset()
        return Candidate(planner, version, source, p50, p99)

    def _measure(self, planner: OnnxPlanner) -> np.ndarray:
        """Probe plans, each started right after a live tick finished (or after 0.5 s of no ticks:
        then nothing is running to compete with)."""
        out = []
        for i in range(self.warmup + self.runs):
            self.tick_done.clear()
            self.tick_done.wait(timeout=0.5)
            if self._stop.is_set():
                raise SwapRejected("planner is shutting down")
            _, obs = self.current()
            obs = np.zeros(planner.obs_dim, np.float32) if obs is None else obs
            t = time.perf_counter()
            planner.plan(obs)
            if i >= self.warmup:
                out.append(time.perf_counter() - t)
        return np.asarray(out)
