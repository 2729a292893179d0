"""The torch planners (no ONNX): signature, determinism, exploration, warm start, and MPPI's maths
checked against a plain-loop re-implementation of TDMPC2.md's planning section."""

from __future__ import annotations

import math

import pytest
import torch

from core_helpers import TINY_BUDGET, make_model
from tdmpc2_ros.core.planners import PLANNERS, make_planner
from tdmpc2_ros.core.planners.base import Planner, normal_to_uniform
from tdmpc2_ros.runtime.budget import PlanBudget

OBS, ACT, H = 6, 3, 3
KINDS = ("mppi", "cem", "gradient")
DISCOUNT = 0.99


@pytest.fixture(scope="module")
def model():
    # Frozen like the copy export traces: the gradient planner then differentiates w.r.t. the
    # actions only, which keeps these tests cheap.
    return make_model("1M", OBS, ACT, seed=3).requires_grad_(False)


def budget_for(kind: str, **over) -> PlanBudget:
    return PlanBudget(planner=kind, **{**TINY_BUDGET, **over})


def draw(budget: PlanBudget, seed: int):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(OBS, generator=g)
    prev_mean = (torch.rand(H, ACT, generator=g) * 2 - 1)
    noise = torch.randn(budget.noise_size(ACT), generator=g)
    return obs, prev_mean, noise


def run(planner, obs, prev_mean, noise, explore: float):
    ctx = torch.enable_grad() if isinstance(planner, PLANNERS["gradient"]) else torch.no_grad()
    with ctx:
        out = planner(obs, prev_mean, noise, torch.tensor([float(explore)]))
    return tuple(x.detach() for x in out)


@pytest.mark.parametrize("kind", KINDS)
def test_output_shapes_and_bounds(model, kind):
    b = budget_for(kind)
    planner = make_planner(model, b, DISCOUNT)
    assert isinstance(planner, PLANNERS[kind]) and isinstance(planner, Planner)
    for seed in range(2):
        action, mean, value, std = run(planner, *draw(b, seed), explore=1.0)
        assert action.shape == (ACT,) and mean.shape == (H, ACT) and value.shape == (1,) and std.shape == (ACT,)
        assert torch.all(action.abs() <= 1) and torch.all(mean.abs() <= 1)
        assert torch.all(std >= b.min_std - 1e-7) and torch.all(std <= b.max_std + 1e-7)
        assert torch.isfinite(value).all()


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_given_noise_and_noise_matters(model, kind):
    b = budget_for(kind)
    planner = make_planner(model, b, DISCOUNT)
    obs, prev_mean, noise = draw(b, 0)
    first = run(planner, obs, prev_mean, noise, 0.0)
    again = run(planner, obs.clone(), prev_mean.clone(), noise.clone(), 0.0)
    for x, y in zip(first, again):
        assert torch.equal(x, y)
    # A fresh planner object over the same model gives the same plan too (no hidden state).
    other = run(make_planner(model, b, DISCOUNT), obs, prev_mean, noise, 0.0)
    for x, y in zip(first, other):
        assert torch.equal(x, y)
    _, _, noise2 = draw(b, 1)
    changed = run(planner, obs, prev_mean, noise2, 0.0)
    assert not torch.equal(first[0], changed[0])
    assert not torch.equal(first[1], changed[1])


@pytest.mark.parametrize("kind", KINDS)
def test_exploration_adds_std_times_its_noise_slice_only(model, kind):
    b = budget_for(kind)
    planner = make_planner(model, b, DISCOUNT)
    for seed in range(2):
        obs, prev_mean, noise = draw(b, seed)
        noise[-ACT:] *= 3  # make clamping at the bounds likely for some seeds
        a0, m0, v0, s0 = run(planner, obs, prev_mean, noise, 0.0)
        a1, m1, v1, s1 = run(planner, obs, prev_mean, noise, 1.0)
        assert torch.equal(m0, m1) and torch.equal(v0, v1) and torch.equal(s0, s1)
        eps = planner.split_noise(noise)["exploration"]
        assert eps.shape == (ACT,)
        torch.testing.assert_close(a1, (a0 + s0 * eps).clamp(-1, 1), atol=1e-6, rtol=0)
        assert not torch.equal(a0, a1)


@pytest.mark.parametrize("kind", KINDS)
def test_warm_start_shifts_previous_mean(model, kind):
    """The previous mean enters shifted by one step: its first row is dropped, the others matter."""
    b = budget_for(kind)
    planner = make_planner(model, b, DISCOUNT)
    obs, prev_mean, noise = draw(b, 2)
    base = run(planner, obs, prev_mean, noise, 0.0)
    row0 = prev_mean.clone()
    row0[0] = -row0[0] + 0.5
    for x, y in zip(base, run(planner, obs, row0, noise, 0.0)):
        assert torch.equal(x, y)
    row1 = prev_mean.clone()
    row1[1] = -row1[1]
    assert not torch.equal(run(planner, obs, row1, noise, 0.0)[1], base[1])


def test_warm_start_is_the_sampling_centre():
    """With one iteration, no policy trajectories, all samples elite and uniform weights (CEM),
    the refit mean is the average of clamp(shifted_prev_mean + 2 * eps) over the samples."""
    model = make_model("1M", OBS, ACT, seed=4)
    b = PlanBudget(planner="cem", iterations=1, num_samples=32, num_elites=32, num_pi_trajs=0)
    planner = make_planner(model, b, DISCOUNT)
    obs, prev_mean, noise = draw(b, 5)
    _, mean, _, std = run(planner, obs, prev_mean, noise, 0.0)
    shifted = torch.cat([prev_mean[1:], torch.zeros(1, ACT)])
    eps = planner.split_noise(noise)["samples"][0]  # [H, S, A]
    samples = (shifted.unsqueeze(1) + b.max_std * eps).clamp(-1, 1)
    torch.testing.assert_close(mean, samples.mean(1), atol=1e-5, rtol=0)
    expected_std = samples.std(1, unbiased=False).clamp(b.min_std, b.max_std)
    torch.testing.assert_close(std, expected_std[0], atol=1e-5, rtol=0)


def test_noise_layout_is_consistent(model):
    for kind in KINDS:
        b = budget_for(kind)
        planner = make_planner(model, b, DISCOUNT)
        n = b.noise_size(ACT)
        assert n == sum(size for _, size in b.noise_layout(ACT))
        parts = planner.split_noise(torch.arange(n, dtype=torch.float32))
        assert parts["policy_trajectories"].shape == (H, b.num_pi_trajs, ACT)
        assert parts["samples"].shape == (b.iterations, H, b.num_random, ACT)
        assert parts["terminal_policy"].shape == (b.iterations, b.num_samples, ACT)
        assert parts["q_pairs"].shape == (b.iterations, 2)
        assert parts["selection"].shape == (1,) and parts["exploration"].shape == (ACT,)
        # The slices tile the vector in order, without gaps or overlaps.
        flat = torch.cat([parts[name].flatten() for name, _ in b.noise_layout(ACT)])
        assert torch.equal(flat, torch.arange(n, dtype=torch.float32))


# -- MPPI against a plain-loop re-implementation of TDMPC2.md -------------------------------------


def reference_mppi(planner, obs, prev_mean, noise, explore):
    """TDMPC2.md's planning section, one step at a time. Uses the planner's own estimate_value and
    Q-member choice (tested separately) and nothing else of it."""
    m, b = planner.model, planner.budget
    A, P, S, K, I = ACT, b.num_pi_trajs, b.num_samples, b.num_elites, b.iterations
    R = S - P
    # Slice the flat noise vector as the documented layout says.
    sizes = dict(b.noise_layout(A))
    offsets, start = {}, 0
    for name, size in b.noise_layout(A):
        offsets[name] = noise[start : start + size]
        start += size
    eps_pi = offsets["policy_trajectories"].reshape(H, P, A)
    eps_samples = offsets["samples"].reshape(I, H, R, A)
    eps_terminal = offsets["terminal_policy"].reshape(I, S, A)
    pairs = offsets["q_pairs"].reshape(I, 2)
    assert sizes["selection"] == 1 and sizes["exploration"] == A

    z0 = m.encode(obs.unsqueeze(0))
    # Policy-prior sequences, rolled out through the dynamics.
    pi_actions = torch.zeros(H, P, A)
    z = z0.repeat(P, 1)
    for t in range(H):
        pi_actions[t] = m.pi(z, eps_pi[t])[0]
        z = m.next(z, pi_actions[t])
    # Warm start: last step's mean shifted one step, last entry 0; std reset to max.
    mean = torch.zeros(H, A)
    for t in range(H - 1):
        mean[t] = prev_mean[t + 1]
    std = torch.full((H, A), b.max_std)
    for i in range(I):
        actions = torch.zeros(H, S, A)
        for t in range(H):
            for s in range(S):
                if s < P:
                    actions[t, s] = pi_actions[t, s]
                else:
                    actions[t, s] = (mean[t] + std[t] * eps_samples[i, t, s - P]).clamp(-1, 1)
        value = planner.estimate_value(z0.repeat(S, 1), actions, eps_terminal[i], planner.q_members(pairs[i]))
        value = torch.nan_to_num(value, nan=0.0)
        order = sorted(range(S), key=lambda s: -value[s].item())[:K]
        elite_value = torch.stack([value[s] for s in order])
        elite_actions = torch.stack([actions[:, s] for s in order], dim=1)  # [H, K, A]
        score = torch.exp(b.temperature * (elite_value - elite_value.max()))
        score = score / score.sum()
        mean = torch.zeros(H, A)
        for k in range(K):
            mean = mean + score[k] * elite_actions[:, k]
        var = torch.zeros(H, A)
        for k in range(K):
            var = var + score[k] * (elite_actions[:, k] - mean) ** 2
        std = var.sqrt().clamp(b.min_std, b.max_std)
    # One elite drawn with probability given by its weight (inverse CDF at a uniform draw).
    sel = offsets["selection"][0].item()
    u = min(0.5 * (1 + math.erf(sel / math.sqrt(2))), 1 - 1e-6)
    cum, chosen = 0.0, K - 1
    for k in range(K):
        cum += score[k].item()
        if cum >= u:
            chosen = k
            break
    action = elite_actions[0, chosen] + explore * std[0] * offsets["exploration"]
    return action.clamp(-1, 1), mean, elite_value[chosen], std[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("explore", [0.0, 1.0])
def test_mppi_matches_plain_loop_reference(model, seed, explore):
    b = PlanBudget(planner="mppi", iterations=3, num_samples=48, num_elites=8, num_pi_trajs=6)
    planner = make_planner(model, b, DISCOUNT)
    obs, prev_mean, noise = draw(b, 100 + seed)
    with torch.no_grad():
        action, mean, value, std = run(planner, obs, prev_mean, noise, explore)
        ref_action, ref_mean, ref_value, ref_std = reference_mppi(planner, obs, prev_mean, noise, explore)
    torch.testing.assert_close(mean, ref_mean, atol=1e-5, rtol=0)
    torch.testing.assert_close(std, ref_std, atol=1e-5, rtol=0)
    torch.testing.assert_close(action, ref_action, atol=1e-5, rtol=0)
    torch.testing.assert_close(value[0], ref_value, atol=1e-5, rtol=1e-5)


def policy_rollout(model, obs, eps_pi):
    """The policy-prior sequences [H, P, A], rolled out through the dynamics (TDMPC2.md)."""
    P = eps_pi.shape[1]
    z = model.encode(obs.unsqueeze(0)).repeat(P, 1)
    out = torch.zeros(H, P, ACT)
    for t in range(H):
        out[t] = model.pi(z, eps_pi[t])[0]
        z = model.next(z, out[t])
    return out


def test_cem_refits_uniformly_and_executes_the_best_elite(model):
    b = PlanBudget(planner="cem", iterations=1, num_samples=48, num_elites=8, num_pi_trajs=6)
    planner = make_planner(model, b, DISCOUNT)
    obs, prev_mean, noise = draw(b, 9)
    n = planner.split_noise(noise)
    with torch.no_grad():
        action, mean, value, std = run(planner, obs, prev_mean, noise, 0.0)
        z0 = model.encode(obs.unsqueeze(0))
        pi_actions = policy_rollout(model, obs, n["policy_trajectories"])
        shifted = torch.cat([prev_mean[1:], torch.zeros(1, ACT)])
        samples = (shifted.unsqueeze(1) + b.max_std * n["samples"][0]).clamp(-1, 1)
        actions = torch.cat([pi_actions, samples], dim=1)
        v = planner.estimate_value(z0.repeat(b.num_samples, 1), actions, n["terminal_policy"][0], planner.q_members(n["q_pairs"][0]))
    top = torch.topk(v, b.num_elites).indices
    elites = actions[:, top]
    torch.testing.assert_close(mean, elites.mean(1), atol=1e-5, rtol=0)
    torch.testing.assert_close(std, elites[0].std(0, unbiased=False).clamp(b.min_std, b.max_std), atol=1e-5, rtol=0)
    torch.testing.assert_close(action, elites[0, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(value[0], v.max(), atol=1e-5, rtol=1e-5)


def test_gradient_planner_ascends_the_value(model):
    """One normalised gradient step (TDMPC2.md's "optimise the action sequence through the model")
    raises the value of most candidates, and the planner reports an elite value of the stepped set."""
    b = PlanBudget(planner="gradient", iterations=1, num_samples=64, num_elites=8, num_pi_trajs=8, grad_lr=0.05)
    planner = make_planner(model, b, DISCOUNT)
    obs, prev_mean, noise = draw(b, 11)
    n = planner.split_noise(noise)
    with torch.no_grad():
        z = model.encode(obs.unsqueeze(0)).repeat(b.num_samples, 1)
        pi_actions = policy_rollout(model, obs, n["policy_trajectories"])
    shifted = torch.cat([prev_mean[1:], torch.zeros(1, ACT)])
    draws = (shifted.unsqueeze(1) + b.max_std * n["samples"][0][:, : b.num_random - 1]).clamp(-1, 1)
    start = torch.cat([pi_actions, shifted.unsqueeze(1), draws], dim=1)
    members, eps = planner.q_members(n["q_pairs"][0]), n["terminal_policy"][0]
    with torch.enable_grad():
        a = start.clone().requires_grad_(True)
        v0 = planner.estimate_value(z, a, eps, members)
        (grad,) = torch.autograd.grad(v0.sum(), a)
    scale = grad.pow(2).mean(dim=(0, 2), keepdim=True).sqrt() + 1e-8
    stepped = (start + b.grad_lr * grad / scale).clamp(-1, 1)
    with torch.no_grad():
        v1 = planner.estimate_value(z, stepped, eps, members)
    assert (v1 > v0.detach()).float().mean() > 0.8
    with torch.enable_grad():
        action, mean, value, std = run(planner, obs, prev_mean, noise, 0.0)
    elite_values = torch.topk(v1, b.num_elites).values
    assert (elite_values - value[0]).abs().min() < 1e-4
    assert value[0] >= elite_values[-1] - 1e-4


# -- shared pieces ---------------------------------------------------------------------------------


def test_estimate_value_formula(model):
    b = budget_for("mppi")
    planner = make_planner(model, b, 0.9)
    g = torch.Generator().manual_seed(0)
    z = model.encode(torch.randn(5, OBS, generator=g))
    actions = torch.rand(H, 5, ACT, generator=g) * 2 - 1
    eps = torch.randn(5, ACT, generator=g)
    members = torch.tensor([1, 0])
    with torch.no_grad():
        got = planner.estimate_value(z, actions, eps, members)
        ret, zt = torch.zeros(5, 1), z
        for t in range(H):
            ret = ret + 0.9**t * model.two_hot.decode(model.reward(zt, actions[t]))
            zt = model.next(zt, actions[t])
        a_h = model.pi(zt, eps)[0]
        q = model.two_hot.decode(model.Q_logits(zt, a_h, members)).mean(0)
        expected = (ret + 0.9**H * q).squeeze(-1)
    assert got.shape == (5,)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_estimate_value_stops_at_predicted_termination():
    model = make_model("1M", OBS, ACT, seed=5, episodic=True)
    with torch.no_grad():
        model._termination[-1].weight.zero_()
        model._termination[-1].bias.fill_(50.0)  # always terminates after the first step
    planner = make_planner(model, budget_for("mppi"), 0.9)
    z = model.encode(torch.randn(4, OBS))
    actions = torch.rand(H, 4, ACT) * 2 - 1
    with torch.no_grad():
        got = planner.estimate_value(z, actions, torch.randn(4, ACT), torch.tensor([0, 1]))
        r0 = model.two_hot.decode(model.reward(z, actions[0])).squeeze(-1)
        torch.testing.assert_close(got, r0, atol=1e-6, rtol=1e-6)
        model._termination[-1].bias.fill_(-50.0)  # never terminates: the full discounted return
        never = planner.estimate_value(z, actions, torch.zeros(4, ACT), torch.tensor([0, 1]))
    assert not torch.allclose(never, r0)


def test_q_members_are_two_distinct_uniform_members():
    model = make_model("5M", 4, 1, seed=0, perturb=False)  # num_q = 5
    planner = make_planner(model, budget_for("mppi"), DISCOUNT)
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(5, 5)
    for _ in range(4000):
        pair = planner.q_members(torch.randn(2, generator=g))
        assert pair.dtype == torch.long and pair.shape == (2,)
        i, j = pair.tolist()
        assert 0 <= i < 5 and 0 <= j < 5 and i != j
        counts[i, j] += 1
    assert torch.all(counts.diagonal() == 0)
    off = counts[~torch.eye(5, dtype=torch.bool)] / 4000
    assert torch.all((off - 1 / 20).abs() < 0.02), off
    # Extreme draws stay in range.
    for x in ([-40.0, -40.0], [40.0, 40.0], [40.0, -40.0]):
        i, j = planner.q_members(torch.tensor(x)).tolist()
        assert 0 <= i < 5 and 0 <= j < 5 and i != j


def test_categorical_inverts_the_cdf():
    score = torch.tensor([0.1, 0.2, 0.3, 0.4])
    assert Planner.categorical(score, torch.tensor([0.05])).item() == 0
    assert Planner.categorical(score, torch.tensor([0.15])).item() == 1
    assert Planner.categorical(score, torch.tensor([0.61])).item() == 3
    assert Planner.categorical(score, torch.tensor([0.999999])).item() == 3
    u = normal_to_uniform(torch.randn(20000, generator=torch.Generator().manual_seed(1)))
    assert torch.all((u >= 0) & (u < 1))
    picks = torch.stack([Planner.categorical(score, x.reshape(1)) for x in u[:4000]]).flatten()
    freq = torch.bincount(picks, minlength=4).float() / 4000
    assert torch.all((freq - score).abs() < 0.03), freq


# -- budget validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_samples=64, num_elites=65), "num_elites"),
        (dict(planner="ilqr"), "planner"),
        (dict(iterations=0), "iterations"),
        (dict(horizon=0), "horizon"),
        (dict(num_samples=64, num_pi_trajs=64), "num_pi_trajs"),
        (dict(num_pi_trajs=-1), "num_pi_trajs"),
        (dict(min_std=0.0), "std"),
        (dict(min_std=3.0, max_std=2.0), "std"),
    ],
)
def test_budget_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PlanBudget(**kwargs)


def test_reference_budget():
    b = PlanBudget()
    assert (b.planner, b.horizon, b.iterations, b.num_samples, b.num_elites, b.num_pi_trajs) == ("mppi", 3, 6, 512, 64, 24)
    assert (b.temperature, b.min_std, b.max_std) == (0.5, 0.05, 2.0)
    assert PlanBudget.reference(6).iterations == 6
    assert PlanBudget.reference(19).iterations == 6
    assert PlanBudget.reference(21).iterations == 8
    assert PlanBudget.reference(6, planner="cem").planner == "cem"
    assert PlanBudget.from_dict(b.to_dict()) == b
