"""The update (losses, weights, optimisers, target EMA), the schedule heuristics, and the online
trainer's exact resume from a checkpoint."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from core_helpers import TINY_BUDGET
from tdmpc2_ros.core.agent import TDMPC2
from tdmpc2_ros.core.buffer import ReplayBuffer
from tdmpc2_ros.core.config import ModelConfig, TrainConfig, heuristic_discount, seed_steps_for
from tdmpc2_ros.runtime import OnnxPlanner, PlanBudget

OBS, ACT, H = 5, 1, 3


def make_agent(seed: int = 0, **model_over) -> TDMPC2:
    return TDMPC2(ModelConfig.from_preset("1M", OBS, ACT, **model_over), TrainConfig(batch_size=32),
                  PlanBudget(**TINY_BUDGET), discount=0.99, seed=seed)


def reward_of(obs: np.ndarray) -> np.ndarray:
    return (2.0 * obs[..., 0] - obs[..., 1]).astype(np.float32)


@pytest.fixture(scope="module")
def batch():
    """A fixed batch from a buffer of random episodes whose reward is a simple function of the
    observation the action was taken from."""
    rng = np.random.default_rng(0)
    buf = ReplayBuffer(2000, OBS, ACT, H, seed=0)
    for _ in range(10):
        T = 50
        obs = rng.standard_normal((T + 1, OBS)).astype(np.float32)
        buf.add_episode(obs, rng.uniform(-1, 1, (T, ACT)), reward_of(obs[:-1]))
    obs, action, reward, term = buf.sample(32)
    np.testing.assert_allclose(reward[..., 0], reward_of(obs[:-1]), rtol=1e-6)
    return obs, action, reward, term


# -- hyper-parameters ------------------------------------------------------------------------------


def test_train_config_defaults_follow_the_reference():
    c = TrainConfig()
    assert (c.consistency_coef, c.reward_coef, c.value_coef, c.termination_coef) == (20.0, 0.1, 0.1, 1.0)
    assert (c.rho, c.tau, c.lr, c.enc_lr_scale, c.grad_clip_norm) == (0.5, 0.01, 3e-4, 0.3, 20.0)
    assert (c.batch_size, c.horizon, c.entropy_coef, c.buffer_size) == (256, 3, 1e-4, 1_000_000)


def test_optimisers_follow_the_reference():
    agent = make_agent()
    m = agent.model
    g0, g1 = agent.optim.param_groups
    assert g0["lr"] == pytest.approx(3e-4 * 0.3) and g1["lr"] == pytest.approx(3e-4)
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(g0["params"]) == ids(m._encoder.parameters())
    assert ids(g1["params"]) == ids(m._dynamics.parameters()) | ids(m._reward.parameters()) | ids(m._Qs.parameters())
    (pg,) = agent.pi_optim.param_groups
    assert ids(pg["params"]) == ids(m._pi.parameters())
    assert pg["lr"] == pytest.approx(3e-4) and pg["eps"] == 1e-5
    assert isinstance(agent.optim, torch.optim.Adam) and isinstance(agent.pi_optim, torch.optim.Adam)
    # The target ensemble is never optimised; the policy only by its own optimiser.
    in_optim = ids(g0["params"]) | ids(g1["params"])
    assert not in_optim & ids(m._target_Qs.parameters()) and not in_optim & ids(m._pi.parameters())
    assert agent.cfg.grad_clip_norm == 20.0
    torch.testing.assert_close(agent.rho, torch.tensor([1.0, 0.5, 0.25, 0.125]))


def test_termination_head_is_optimised_when_episodic():
    agent = make_agent(episodic=True)
    ids = {id(p) for p in agent.optim.param_groups[1]["params"]}
    assert {id(p) for p in agent.model._termination.parameters()} <= ids


def test_horizon_mismatch_refused():
    with pytest.raises(ValueError, match="horizon"):
        TDMPC2(ModelConfig.from_preset("1M", OBS, ACT), TrainConfig(), PlanBudget(horizon=5), 0.99)


def test_schedule_heuristics():
    assert heuristic_discount(500) == 0.99
    assert heuristic_discount(1000) == pytest.approx(0.995)
    assert heuristic_discount(10) == 0.95
    assert heuristic_discount(100_000) == 0.995
    assert heuristic_discount(250) == pytest.approx(0.98)
    assert seed_steps_for(500) == 2500
    assert seed_steps_for(100) == 1000
    assert seed_steps_for(200) == 1000
    assert seed_steps_for(201) == 1005


# -- the update -------------------------------------------------------------------------------------


def test_loss_matches_an_independent_computation(batch):
    """The total loss, recomputed from TDMPC2.md step by step (dropout off so only the policy draw
    and the target pair are random; both are replayed from the same torch seed)."""
    agent = make_agent(seed=1, dropout=0.0)
    m, cfg = agent.model, agent.cfg
    with torch.no_grad():  # give the heads some signal first
        for p in m.parameters():
            p.add_(0.02 * torch.randn_like(p))
    obs, action, reward, term = (torch.as_tensor(x) for x in batch)
    term = term.clone()
    term[-1, :5] = 1.0
    gamma, rho, nq = agent.discount, cfg.rho, m.cfg.num_q
    torch.manual_seed(1234)
    with torch.no_grad():
        pair = torch.randperm(nq)[:2]  # the update draws the target pair first, then the policy noise
        next_z = m.encode(obs[1:])
        a_next = m.pi(next_z)[0]
        q = torch.stack([m.two_hot.decode(m.Q_logits(next_z, a_next, target=True)[int(i)]) for i in pair]).min(0).values
        td = reward + gamma * (1 - term) * q

        def ce(logits, target):
            return -(m.two_hot.encode(target) * torch.log_softmax(logits, -1)).sum(-1)

        z = m.encode(obs[0])
        consistency = reward_loss = value_loss = 0.0
        for t in range(H):
            reward_loss += rho**t * ce(m.reward(z, action[t]), reward[t]).mean()
            q_all = m.Q_logits(z, action[t])
            for e in range(nq):
                value_loss += rho**t * ce(q_all[e], td[t]).mean()
            z = m.next(z, action[t])
            consistency += rho**t * ((z - next_z[t]) ** 2).mean()
        expected = 20 * consistency / H + 0.1 * reward_loss / H + 0.1 * value_loss / (H * nq)
    torch.manual_seed(1234)
    metrics = agent.update(obs, action, reward, term)
    assert metrics["total_loss"] == pytest.approx(float(expected), rel=1e-5)
    assert metrics["consistency_loss"] == pytest.approx(float(consistency) / H, rel=1e-5)
    assert metrics["reward_loss"] == pytest.approx(float(reward_loss) / H, rel=1e-5)
    assert metrics["value_loss"] == pytest.approx(float(value_loss) / (H * nq), rel=1e-5)
    assert metrics["total_loss"] == pytest.approx(
        20 * metrics["consistency_loss"] + 0.1 * metrics["reward_loss"] + 0.1 * metrics["value_loss"], rel=1e-5)


def test_update_metrics_finite_and_reward_loss_falls(batch):
    agent = make_agent(seed=2)
    first = agent.update(*batch)
    expected_keys = {"consistency_loss", "reward_loss", "value_loss", "termination_loss", "pi_loss", "total_loss",
                     "grad_norm", "pi_scale"}
    assert set(first) == expected_keys
    history = [first]
    for _ in range(20):
        history.append(agent.update(*batch))
    for metrics in history:
        assert all(np.isfinite(v) for v in metrics.values()), metrics
        assert metrics["pi_scale"] >= 1.0
    # Zero-initialised reward head: uniform over 101 bins at first.
    assert first["reward_loss"] == pytest.approx(np.log(101) * sum(0.5**t for t in range(H)) / H, rel=0.05)
    assert history[-1]["reward_loss"] < 0.9 * first["reward_loss"]
    assert history[-1]["total_loss"] < first["total_loss"]
    assert not agent.model.training  # update leaves the model in eval mode for acting


def test_target_ensemble_is_an_exact_tau_ema(batch):
    agent = make_agent(seed=3)
    m = agent.model
    online_before = [p.detach().clone() for p in m._Qs.parameters()]
    target_before = [p.detach().clone() for p in m._target_Qs.parameters()]
    for a, b in zip(online_before, target_before):
        assert torch.equal(a, b)
    others_before = {k: v.clone() for k, v in m.state_dict().items() if not k.startswith("_target_Qs")}
    agent.update(*batch)
    online_after = [p.detach() for p in m._Qs.parameters()]
    target_after = [p.detach() for p in m._target_Qs.parameters()]
    moved = 0
    for old_t, new_o, new_t, old_o in zip(target_before, online_after, target_after, online_before):
        assert torch.equal(new_t, torch.lerp(old_t, new_o, 0.01))
        torch.testing.assert_close(new_t, 0.99 * old_t + 0.01 * new_o, atol=1e-7, rtol=1e-6)
        moved += int(not torch.equal(new_o, old_o))
    # The online ensemble learned. Its last layer starts at zero, so on this first step only that
    # layer (weight and bias) receives a gradient.
    assert moved >= 2
    after = m.state_dict()
    for key in ("_Qs.layers.2.weight", "_reward.2.weight", "_encoder.0.weight", "_dynamics.0.weight", "_pi.0.weight"):
        assert not torch.equal(after[key], others_before[key]), key
    # A second update moves the target again, by the same rule.
    target_mid = [p.detach().clone() for p in m._target_Qs.parameters()]
    agent.update(*batch)
    for old_t, new_o, new_t in zip(target_mid, m._Qs.parameters(), m._target_Qs.parameters()):
        assert torch.equal(new_t, torch.lerp(old_t, new_o.detach(), 0.01))
    # Now the hidden layers have a gradient as well: the whole ensemble (and target) moves.
    assert all(not torch.equal(a, b.detach()) for a, b in zip(target_mid, m._target_Qs.parameters()))


def test_policy_update_leaves_q_untouched(batch):
    agent = make_agent(seed=4)
    m = agent.model
    zs = m.encode(torch.as_tensor(batch[0])).detach()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    loss = agent.update_pi(zs)
    assert np.isfinite(float(loss))
    after = m.state_dict()
    for k in before:
        if k.startswith("_pi."):
            continue
        assert torch.equal(before[k], after[k]), f"{k} changed by the policy update"
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("_pi."))
    assert all(p.requires_grad for p in m._Qs.parameters())  # restored after being frozen
    assert all(p.grad is None for p in m.parameters())


def test_gradients_are_clipped_to_norm_20(batch, monkeypatch):
    agent = TDMPC2(ModelConfig.from_preset("1M", OBS, ACT), TrainConfig(consistency_coef=1e7), PlanBudget(**TINY_BUDGET),
                   discount=0.99, seed=5)
    seen = []
    real = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *a, **k):
        params = [p for p in params if p.grad is not None]
        out = real(params, max_norm, *a, **k)
        seen.append((max_norm, float(out), float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])))))
        return out

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    metrics = agent.update(*batch)
    assert len(seen) == 2  # the model's update and the policy's
    assert all(max_norm == 20.0 for max_norm, _, _ in seen)
    pre, post = seen[0][1], seen[0][2]
    assert metrics["grad_norm"] == pytest.approx(pre) and pre > 1000.0  # the raw gradient was huge...
    assert post == pytest.approx(20.0, rel=1e-3)  # ...and was scaled down to norm 20
    assert all(p <= 20.0 * (1 + 1e-4) for _, _, p in seen)


def test_agent_state_dict_round_trip(batch):
    a = make_agent(seed=6)
    a.update(*batch)
    a.act(np.zeros(OBS), t0=True, explore=True)
    b = make_agent(seed=7)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    obs = np.linspace(-1, 1, OBS)
    np.testing.assert_array_equal(a.act(obs, explore=True), b.act(obs, explore=True))
    torch.manual_seed(0)
    ma = a.update(*batch)
    torch.manual_seed(0)
    mb = b.update(*batch)
    assert ma == mb
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k


# -- the online trainer -------------------------------------------------------------------------------


class _SmallReferenceBudget:
    """Stands in for PlanBudget inside the trainer: the reference planner shape with a tiny search,
    so the test's 1000 planning steps, 3 evaluation episodes and 4 exports stay cheap. The resume
    logic under test does not depend on the search size."""

    @staticmethod
    def reference(action_dim, **overrides):
        return PlanBudget(**{**TINY_BUDGET, **overrides})


def _run_config(steps):
    from tdmpc2_ros.training.online import RunConfig

    # threads=1: ~1000 small updates per run are latency-bound, and on a shared 2-core machine one
    # thread is several times faster than two. Both runs use the same setting, which is what
    # bitwise reproducibility needs.
    return RunConfig(task="cartpole-swingup", steps=steps, preset="1M", seed=0, eval_freq=10**9, eval_episodes=1,
                     checkpoint_freq=1000, seed_steps=500, buffer_size=5000, batch_size=32, threads=1)


def _same_buffer(a: ReplayBuffer, b: ReplayBuffer):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        if isinstance(sa[k], np.ndarray):
            np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)  # NaN == NaN here
        else:
            assert sa[k] == sb[k], k


def _same_state_dict(a: dict, b: dict, what: str):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{what}: {k} differs"


def test_online_training_resumes_exactly(tmp_path, monkeypatch):
    from tdmpc2_ros.training import online
    from tdmpc2_ros.training.online import OnlineTrainer

    monkeypatch.setattr(online, "PlanBudget", _SmallReferenceBudget)
    threads = torch.get_num_threads()
    try:
        # A: straight to 2000 environment steps (2 episodes of 500 agent steps).
        a = OnlineTrainer(_run_config(2000), tmp_path / "A", show_progress=False)
        assert a.budget == PlanBudget(**TINY_BUDGET) and a.discount == 0.99 and a.seed_steps == 500
        summary_a = a.run()
        # B: stop at 1000, then a new trainer resumes from the checkpoint and goes on to 2000.
        OnlineTrainer(_run_config(1000), tmp_path / "B", show_progress=False).run()
        b = OnlineTrainer(_run_config(2000), tmp_path / "B", resume=True, show_progress=False)
        assert b.env_step == 1000 and b.episode == 1
        summary_b = b.run()
    finally:
        torch.set_num_threads(threads)

    assert a.env_step == b.env_step == 2000 == summary_a["env_steps"] == summary_b["env_steps"]
    _same_state_dict(a.agent.model.state_dict(), b.agent.model.state_dict(), "model")
    _same_buffer(a.buffer, b.buffer)
    assert len(a.buffer) == 1000 and a.buffer.num_episodes == 2
    assert torch.equal(a.agent.scale.value, b.agent.scale.value)
    assert torch.equal(a.agent.plan_rng.get_state(), b.agent.plan_rng.get_state())
    opt_a, opt_b = a.agent.optim.state_dict()["state"], b.agent.optim.state_dict()["state"]
    assert opt_a.keys() == opt_b.keys()
    for k in opt_a:
        _same_state_dict(opt_a[k], opt_b[k], f"optimizer state {k}")
    # Same logged training returns, and the same final evaluation (same weights, same eval seed).
    def train_rows(d):
        return [(r["step"], r["episode"], r["episode_reward"]) for r in online.CsvLog(d / "train.csv", []).read()]

    assert train_rows(tmp_path / "A") == train_rows(tmp_path / "B")
    assert [(s, e) for s, e, _ in train_rows(tmp_path / "A")] == [("1000", "1"), ("2000", "2")]
    assert summary_a["final_eval_return"] == summary_b["final_eval_return"]
    assert summary_a["weights_sha256"] == summary_b["weights_sha256"]

    # The run folder holds every artefact.
    run = tmp_path / "A"
    for name in ("train.csv", "eval.csv", "metrics.csv", "learning_curve.png", "planner.onnx", "weights.pt",
                 "summary.json", "checkpoint.pt", "config.json"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    assert (run / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((run / "summary.json").read_text())
    assert summary == summary_a
    from tdmpc2_ros.runtime.digest import file_sha256

    assert summary["planner_sha256"] == file_sha256(run / "planner.onnx")
    assert summary["weights_sha256"] == file_sha256(run / "weights.pt")
    evals = online.CsvLog(run / "eval.csv", []).read()
    assert [int(r["step"]) for r in evals] == [2000] and int(evals[0]["episodes"]) == 1
    assert float(evals[0]["episode_reward"]) == pytest.approx(summary["final_eval_return"])
    # The exported planner is the final model's, and says so.
    planner = OnnxPlanner(run / "planner.onnx", obs_dim=5, action_dim=1)
    c = planner.contract
    assert c.train_step == 2000 and c.task == "cartpole-swingup" and c.preset == "1M"
    assert c.checkpoint_sha256 == summary["weights_sha256"]
    assert c.obs.names == a.env.obs_names and c.discount == pytest.approx(0.99)
    weights = torch.load(run / "weights.pt", weights_only=False)
    _same_state_dict(weights["model"], a.agent.model.state_dict(), "weights.pt")


def test_seed_steps_must_cover_an_episode(tmp_path):
    from tdmpc2_ros.training.online import OnlineTrainer, RunConfig

    with pytest.raises(ValueError, match=r"seed_steps \(499\)"):
        OnlineTrainer(RunConfig(task="cartpole-swingup", steps=2000, seed_steps=499), tmp_path, show_progress=False)


def test_compiled_updates_compute_what_eager_ones_do(batch, monkeypatch):
    """`--compile` (the shipped model's and the reference runs' setting) changes the speed of an
    update, not its numbers: three updates of a compiled agent give the eager agent's losses. Random
    draws inside the compiled loss (the TD target's policy sample, dropout) are taken as eager takes
    them, so both see the same numbers."""
    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)
    runs = []
    for compiled in (False, True):
        agent = make_agent(seed=5)
        if compiled:
            agent.compile()
        torch.manual_seed(0)
        runs.append([agent.update(*batch) for _ in range(3)])
    for eager, comp in zip(*runs):
        for key in ("consistency_loss", "reward_loss", "value_loss", "pi_loss", "total_loss", "grad_norm"):
            assert comp[key] == pytest.approx(eager[key], rel=1e-3, abs=1e-6), key
    assert runs[0][0]["total_loss"] != runs[0][2]["total_loss"]  # the updates did move the model
