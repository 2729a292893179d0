"""Validation of an exported ladder before the trainer publishes it as a new version.

The checks, on every rung of the ladder folder against the torch model it was exported from:
(a) parity: the ONNX graph plans like the torch planner on the given observations with identical
    noise (next_mean and plan value within ``parity_tolerance``, relative for values beyond 1);
(b) finite outputs;
(c) spec: the graph's obs/action dims, action bounds, budget and discount are the configured ones;
(d) latency: at least one rung's p99 plan time on this machine fits ``limit_s`` (every rung's p50
    and p99 go into the report's notes, and so into the version's manifest).

Parity and ties: ONNX Runtime and torch agree on candidate values to about 1e-6, so when the elites
are separated from the rest by less than that (an untrained or barely trained value head predicts
nearly the same value for every candidate) rounding alone picks them and next_mean can legitimately
differ. An observation whose torch plan moves by more than the tolerance when the candidates' values
are jittered by TIE_JITTER is therefore not compared (counted as ``ties`` in the notes). The caller
passes spares: the first ``parity_observations`` decisive ones are compared, and every observation is
checked for finite outputs. Latency is that of this machine; the planner measures its own at load.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from tdmpc2_ros.core.planners import make_planner
from tdmpc2_ros.runtime.budget import PlanBudget
from tdmpc2_ros.runtime.contract import ModelLoadError, SpecMismatch
from tdmpc2_ros.runtime.candidate import finite_plan
from tdmpc2_ros.runtime.ladder import RungTiming, measure_latency, read_ladder
from tdmpc2_ros.runtime.onnx_planner import OnnxPlanner

# ONNX Runtime and torch agree on plan values to about 1e-6 (relative). A plan that moves by more than
# the parity tolerance when its candidates' values are jittered by TIE_JITTER (10x that) has its
# elites picked by rounding (near-ties, e.g. an untrained value head): it is not compared.
TIE_JITTER = 1e-5


@dataclass
class ValidationReport:
    ok: bool
    reason: str = ""
    notes: dict = field(default_factory=dict)


@dataclass(frozen=True)
class LadderValidator:
    """What an exported ladder must be, and how closely it is checked."""

    obs_dim: int
    action_dim: int
    action_low: tuple
    action_high: tuple
    discount: float
    budgets: tuple  # the rungs, largest first, as ladder.json must list them
    limit_s: float  # (d): the plan time a rung's p99 must fit
    limit_from: str = ""  # where the limit comes from, for the failure message
    threads: int = 2
    seed: int = 1
    parity_observations: int = 3
    parity_tolerance: float = 1e-3
    latency_warmup: int = 5
    latency_runs: int = 30

    def validate(self, folder, model: torch.nn.Module, observations, rng: np.random.Generator) -> ValidationReport:
        """Checks (a)-(d) of the module docstring on an exported ladder folder against the torch
        model it came from; `rng` draws the parity noise. Never raises for a bad model: the report
        says what failed."""
        limit = self.limit_s
        notes: dict = {"spec": "", "finite": "", "parity": {}, "latency": {}, "limit_ms": round(limit * 1e3, 3),
                       "parity_tolerance": self.parity_tolerance}

        def fail(reason: str) -> ValidationReport:
            return ValidationReport(False, reason, notes)

        try:
            rungs = read_ladder(folder)
        except ModelLoadError as e:
            return fail(str(e))
        if [r.budget for r in rungs] != list(self.budgets):
            return fail(f"the ladder holds {[r.budget.label() for r in rungs]}, expected "
                        f"{[b.label() for b in self.budgets]}")
        observations = [np.asarray(o, np.float32) for o in observations]
        fitting = []
        for rung in rungs:
            label = rung.budget.label()
            try:
                planner = OnnxPlanner(rung.path, obs_dim=self.obs_dim, action_dim=self.action_dim, threads=self.threads,
                                      seed=self.seed, expected_sha256=rung.sha256 or None)
            except (ModelLoadError, SpecMismatch) as e:
                return fail(f"{rung.path.name}: {e}")
            c = planner.contract
            wrong = self._spec_problems(c, rung.budget)
            if wrong:
                notes["spec"] = f"{label}: " + "; ".join(wrong)
                return fail(f"spec of {rung.path.name} differs: {'; '.join(wrong)}")

            why = self._finite_and_parity(planner, rung.budget, model, observations, rng, notes)
            if why:
                return fail(why)
            if self._latency_fits(planner, label, observations[0], notes):
                fitting.append(label)
        notes["spec"] = notes["spec"] or "ok"
        notes["finite"] = notes["finite"] or "ok"
        if not fitting:
            worst = ", ".join(f"{k} p99 {v['p99_ms']} ms" for k, v in notes["latency"].items())
            return fail(f"no rung's p99 latency fits {limit * 1e3:.1f} ms ({self.limit_from}): {worst}")
        notes["chosen_rung"] = fitting[0]
        notes["fitting_rungs"] = fitting
        return ValidationReport(True, "", notes)

    def _finite_and_parity(self, planner: OnnxPlanner, budget: PlanBudget, model, observations, rng, notes: dict) -> str:
        """(b) finite outputs on every observation, and (a) parity with the torch planner on the first
        parity_observations well-conditioned ones: same observation, zero warm start, same noise.
        Returns why the rung failed, "" if it passed; notes get its parity figures."""
        label, c = budget.label(), planner.contract
        compared, ill, d_mean, d_value = 0, 0, 0.0, 0.0
        for i, obs in enumerate(observations):
            noise = rng.standard_normal(c.noise_size, dtype=np.float32)
            planner.reset()
            got = planner.plan(obs, noise=noise)
            if not finite_plan(got):
                notes["finite"] = f"{label}: non-finite output on observation {i}"
                return f"{label}: non-finite output on observation {i} (action {got.action.tolist()}, value {got.value})"
            if compared >= self.parity_observations:
                continue  # the remaining observations are only checked for finite outputs
            want_mean, want_value = self._torch_plan(model, budget, obs, noise)
            if not (np.isfinite(want_mean).all() and np.isfinite(want_value)):
                return f"{label}: the torch planner gives non-finite output on observation {i}"
            if not self._well_conditioned(model, budget, obs, noise, want_mean, want_value):
                ill += 1  # elites picked by float rounding: no number-for-number comparison possible
                continue
            compared += 1
            d_mean = max(d_mean, float(np.abs(got.mean - want_mean).max()))
            d_value = max(d_value, abs(got.value - want_value) / max(1.0, abs(want_value)))
        notes["parity"][label] = {"compared": compared, "ties": ill, "next_mean_max_abs": float(f"{d_mean:.3g}"),
                                  "value_max_rel": float(f"{d_value:.3g}")}
        if d_mean > self.parity_tolerance or d_value > self.parity_tolerance:
            return (f"{label}: ONNX and torch plans differ (next_mean by {d_mean:.2e}, value by {d_value:.2e}; "
                    f"tolerance {self.parity_tolerance:g})")
        return ""

    def _latency_fits(self, planner: OnnxPlanner, label: str, obs, notes: dict) -> bool:
        """(d) latency on this machine: the rung's p99 within the limit (its figures go to notes)."""
        planner.reset()
        t = RungTiming.of(label, measure_latency(lambda: planner.plan(obs), self.latency_warmup, self.latency_runs,
                                                 self.limit_s))
        fits = t.p99_s <= self.limit_s
        notes["latency"][label] = {"p50_ms": round(t.p50_s * 1e3, 3), "p99_ms": round(t.p99_s * 1e3, 3),
                                   "runs": t.runs, "fits": bool(fits)}
        return fits

    def _spec_problems(self, c, budget: PlanBudget) -> list[str]:
        """(c): how the graph's contract differs from the configured spec and its ladder entry."""
        wrong = []
        if (c.obs.dim, c.action.dim) != (self.obs_dim, self.action_dim):
            wrong.append(f"dims obs {c.obs.dim} action {c.action.dim}, configured {self.obs_dim}/{self.action_dim}")
        if tuple(c.action.low) != self.action_low or tuple(c.action.high) != self.action_high:
            wrong.append(f"action bounds {list(c.action.low)}..{list(c.action.high)}, configured "
                         f"{list(self.action_low)}..{list(self.action_high)}")
        if c.budget != budget:
            wrong.append(f"budget {c.budget.label()}, ladder.json says {budget.label()}")
        if abs(c.discount - self.discount) > 1e-9:
            wrong.append(f"discount {c.discount}, trained with {self.discount}")
        return wrong

    def _well_conditioned(self, model, budget, obs, noise, mean, value) -> bool:
        for seed in (1, 2):
            m, v = self._torch_plan(model, budget, obs, noise, jitter=TIE_JITTER, seed=seed)
            if np.abs(m - mean).max() > self.parity_tolerance or abs(v - value) / max(1.0, abs(value)) > self.parity_tolerance:
                return False
        return True

    def _torch_plan(self, model, budget: PlanBudget, obs: np.ndarray, noise: np.ndarray, jitter: float = 0.0,
                    seed: int = 0):
        """The torch planner's (next_mean, value) for one tick from a zero warm start. jitter > 0 adds
        jitter * max(1, |value|) * N(0, 1) to every candidate's value before the elites are picked:
        how much the plan moves under value errors of that size (float rounding) tells whether the
        plan can be compared number for number at all."""
        planner = make_planner(model, budget, self.discount).eval()
        if jitter > 0:
            g = torch.Generator().manual_seed(seed)

            def elites(value, actions, _elites=planner.elites):
                scale = jitter * max(1.0, float(value.detach().abs().max()))
                return _elites(value + scale * torch.randn(value.shape, generator=g), actions)

            planner.elites = elites  # an instance attribute: search() calls self.elites
        grad = torch.enable_grad if budget.planner == "gradient" else torch.no_grad
        with grad():
            _, mean, value, _ = planner(torch.from_numpy(obs), torch.zeros(budget.horizon, self.action_dim),
                                        torch.from_numpy(noise), torch.zeros(1))
        return mean.detach().numpy(), float(value.detach().reshape(-1)[0])
