"""The checks a trainer runs on an exported ladder before it publishes a version
(training/validation.py): parity with the torch planner, finite outputs, the configured spec, and a
rung that fits the latency limit. Each failure names what failed; nothing here is timed."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from core_helpers import TINY_BUDGET, make_model
from tdmpc2_ros.core.export import export_ladder
from tdmpc2_ros.runtime import PlanBudget
from tdmpc2_ros.training.validation import LadderValidator

OBS, ACT, DISCOUNT = 5, 1, 0.99
RUNG = PlanBudget(**TINY_BUDGET)
BOUNDS = dict(action_low=(-1.0,), action_high=(1.0,))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One model, and a one-rung ladder exported from it."""
    model = make_model("1M", OBS, ACT, seed=3)
    folder = tmp_path_factory.mktemp("ladder")
    export_ladder(model, [RUNG], DISCOUNT, folder, task="unit-test", **BOUNDS)
    return model, folder


def validator(**overrides) -> LadderValidator:
    # A generous limit: latency is not what these tests are about (one of them sets an impossible one).
    base = LadderValidator(OBS, ACT, BOUNDS["action_low"], BOUNDS["action_high"], DISCOUNT, (RUNG,), limit_s=10.0,
                           limit_from="a test", threads=1, parity_observations=2, latency_warmup=1, latency_runs=3)
    return dataclasses.replace(base, **overrides)


def observations(n: int = 6) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, OBS)).astype(np.float32)


def test_a_faithful_ladder_passes_with_its_notes(exported):
    model, folder = exported
    report = validator().validate(folder, model, observations(), np.random.default_rng(1))
    assert report.ok, report.reason
    notes = report.notes
    assert notes["spec"] == "ok" and notes["finite"] == "ok" and notes["chosen_rung"] == RUNG.label()
    parity = notes["parity"][RUNG.label()]
    assert parity["compared"] + parity["ties"] >= 1 and parity["next_mean_max_abs"] <= 1e-3
    assert notes["latency"][RUNG.label()]["runs"] == 3 and notes["latency"][RUNG.label()]["fits"] is True


@pytest.mark.parametrize("override, says", [
    (dict(discount=0.95), "discount 0.99, trained with 0.95"),
    (dict(action_low=(-2.0,), action_high=(2.0,)), "action bounds [-1.0]..[1.0], configured [-2.0]..[2.0]"),
])
def test_a_graph_whose_spec_differs_from_the_configured_one_is_refused(exported, override, says):
    model, folder = exported
    report = validator(**override).validate(folder, model, observations(), np.random.default_rng(1))
    assert not report.ok and "spec of" in report.reason and says in report.reason
    assert says in report.notes["spec"]


def test_a_ladder_with_other_rungs_than_configured_is_refused(exported):
    model, folder = exported
    other = PlanBudget(iterations=1, num_samples=32, num_elites=4, num_pi_trajs=2)
    report = validator(budgets=(RUNG, other)).validate(folder, model, observations(), np.random.default_rng(1))
    assert not report.ok and report.reason.startswith("the ladder holds [" + repr(RUNG.label()))


def test_nan_weights_are_refused_as_non_finite_output(exported, tmp_path):
    model, _ = exported
    broken = copy.deepcopy(model)
    with torch.no_grad():
        next(broken.parameters()).fill_(float("nan"))  # the encoder's first layer
    export_ladder(broken, [RUNG], DISCOUNT, tmp_path, task="unit-test", **BOUNDS)
    report = validator().validate(tmp_path, broken, observations(), np.random.default_rng(1))
    assert not report.ok and "non-finite output on observation 0" in report.reason
    assert report.notes["finite"].startswith(RUNG.label())


def test_a_graph_that_plans_unlike_the_model_is_refused(exported):
    _, folder = exported
    other = make_model("1M", OBS, ACT, seed=11)
    report = validator().validate(folder, other, observations(), np.random.default_rng(1))
    assert not report.ok and "ONNX and torch plans differ" in report.reason


def test_no_rung_within_the_limit_is_refused_naming_the_limit_and_each_rung(exported):
    model, folder = exported
    report = validator(limit_s=1e-9, limit_from="deadline_fraction 0.7 / 1e+08 Hz").validate(
        folder, model, observations(), np.random.default_rng(1))
    assert not report.ok and "no rung's p99 latency fits 0.0 ms (deadline_fraction 0.7 / 1e+08 Hz)" in report.reason
    assert RUNG.label() + " p99" in report.reason and report.notes["latency"][RUNG.label()]["fits"] is False
