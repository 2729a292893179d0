"""The world model's architecture, initialisation and components, against TDMPC2.md."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from tdmpc2_ros.core import layers
from tdmpc2_ros.core.config import PRESETS, ModelConfig
from tdmpc2_ros.core.layers import EnsembleLinear, SimNorm, SparseDropout
from tdmpc2_ros.core.world_model import WorldModel

WALKER_OBS, WALKER_ACT = 24, 6


def expected_parameters(preset: str, obs_dim: int, action_dim: int, num_bins: int = 101) -> int:
    """Trainable parameters from the layer shapes listed in TDMPC2.md (single task, not episodic).

    A normed hidden layer is Linear (in*out + out) plus LayerNorm (2*out); an output layer is a
    plain Linear, except the encoder's and dynamics' which are normed (LayerNorm -> SimNorm).
    """
    enc, mlp_dim, latent, enc_layers, num_q = PRESETS[preset]

    def normed(i, o):
        return i * o + o + 2 * o

    def plain(i, o):
        return i * o + o

    enc_dims = [obs_dim] + max(enc_layers - 1, 1) * [enc] + [latent]
    encoder = sum(normed(a, b) for a, b in zip(enc_dims[:-1], enc_dims[1:]))
    za = latent + action_dim
    trunk_za = normed(za, mlp_dim) + normed(mlp_dim, mlp_dim)
    dynamics = trunk_za + normed(mlp_dim, latent)
    reward = trunk_za + plain(mlp_dim, num_bins)
    pi = normed(latent, mlp_dim) + normed(mlp_dim, mlp_dim) + plain(mlp_dim, 2 * action_dim)
    q = num_q * (trunk_za + plain(mlp_dim, num_bins))
    return encoder + dynamics + reward + pi + q


# -- parameter counts ---------------------------------------------------------------------------


@pytest.mark.parametrize("preset, reference", [("1M", 1_214_651), ("5M", 4_960_618)])
def test_parameter_count_matches_reference(preset, reference):
    model = WorldModel(ModelConfig.from_preset(preset, WALKER_OBS, WALKER_ACT))
    assert model.num_parameters() == reference
    # The layer-shape formula reproduces the reference figure too, so it can be trusted for the
    # presets the reference page gives no figure for.
    assert expected_parameters(preset, WALKER_OBS, WALKER_ACT) == reference


def test_parameter_counts_of_all_presets_follow_layer_shapes():
    counts = []
    for preset in ["1M", "5M", "19M", "48M", "317M"]:
        # Shapes only: the meta device allocates nothing (the 317M model would need ~2.5 GB).
        with torch.device("meta"):
            model = WorldModel(ModelConfig.from_preset(preset, WALKER_OBS, WALKER_ACT))
        n = model.num_parameters()
        assert n == expected_parameters(preset, WALKER_OBS, WALKER_ACT), preset
        counts.append(n)
    assert all(a < b for a, b in zip(counts, counts[1:])), counts
    # Each preset's name is its approximate size.
    for n, nominal in zip(counts, [1e6, 5e6, 19e6, 48e6, 317e6]):
        assert 0.75 * nominal < n < 1.25 * nominal, (n, nominal)


def test_target_ensemble_is_a_frozen_copy_not_counted():
    model = WorldModel(ModelConfig.from_preset("1M", 5, 1))
    online = dict(model._Qs.named_parameters())
    target = dict(model._target_Qs.named_parameters())
    assert online.keys() == target.keys()
    for k in online:
        assert torch.equal(online[k], target[k])
        assert online[k].data_ptr() != target[k].data_ptr()
        assert not target[k].requires_grad
    total = sum(p.numel() for p in model.parameters())
    assert model.num_parameters() == total - sum(p.numel() for p in target.values())


def test_layer_shapes_follow_the_preset():
    cfg = ModelConfig.from_preset("19M", 7, 3)
    with torch.device("meta"):
        model = WorldModel(cfg)
    enc_linears = [m for m in model._encoder if isinstance(m, nn.Linear)]
    # 19M: num_enc_layers 3 -> 2 hidden layers of enc_dim 1024, then the latent (768).
    assert [(m.in_features, m.out_features) for m in enc_linears] == [(7, 1024), (1024, 1024), (1024, 768)]
    assert [m.out_features for m in model._dynamics] == [1024, 1024, 768]
    assert model._dynamics[0].in_features == 768 + 3
    assert model._reward[-1].out_features == 101
    assert model._pi[-1].out_features == 2 * 3
    assert model._Qs.layers[0].weight.shape == (5, 768 + 3, 1024)
    assert model._Qs.layers[-1].weight.shape == (5, 1024, 101)


# -- SimNorm ------------------------------------------------------------------------------------


def _assert_simplex_groups(x: torch.Tensor, group: int = 8):
    g = x.reshape(*x.shape[:-1], x.shape[-1] // group, group)
    assert torch.all(g >= 0)
    torch.testing.assert_close(g.sum(-1), torch.ones(g.shape[:-1]), atol=1e-5, rtol=0)


def test_simnorm_groups_are_probability_vectors():
    x = 10 * torch.randn(4, 6, 64)
    y = SimNorm(8)(x)
    assert y.shape == x.shape
    _assert_simplex_groups(y)
    # Softmax within each group of 8, and only within it.
    torch.testing.assert_close(y[..., :8], F.softmax(x[..., :8], dim=-1))
    x2 = x.clone()
    x2[..., 8:] += 100.0
    torch.testing.assert_close(SimNorm(8)(x2)[..., :8], y[..., :8])


def test_encoder_and_dynamics_outputs_are_simnormed(small_model):
    obs = 3 * torch.randn(32, 5)
    z = small_model.encode(obs)
    assert z.shape == (32, 128)
    _assert_simplex_groups(z)
    z2 = small_model.next(z, torch.rand(32, 1) * 2 - 1)
    assert z2.shape == (32, 128)
    _assert_simplex_groups(z2)


# -- initialisation -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fresh_model():
    torch.manual_seed(0)
    return WorldModel(ModelConfig.from_preset("1M", WALKER_OBS, WALKER_ACT)).eval()


def test_reward_and_q_heads_start_at_zero(fresh_model):
    m = fresh_model
    assert torch.count_nonzero(m._reward[-1].weight) == 0
    assert torch.count_nonzero(m._reward[-1].bias) == 0
    last_q = m._Qs.layers[-1]
    assert last_q.weight.shape[0] == m.cfg.num_q
    for member in range(m.cfg.num_q):
        assert torch.count_nonzero(last_q.weight[member]) == 0
        assert torch.count_nonzero(last_q.bias[member]) == 0
    # ...so decoded reward and every Q member start at exactly 0 (uniform bins, symmetric around 0).
    z = m.encode(torch.randn(16, WALKER_OBS))
    a = torch.rand(16, WALKER_ACT) * 2 - 1
    r = m.two_hot.decode(m.reward(z, a))
    assert r.shape == (16, 1)
    assert torch.allclose(r, torch.zeros_like(r), atol=1e-6)
    q_all = m.two_hot.decode(m.Q_logits(z, a))
    assert q_all.shape == (m.cfg.num_q, 16, 1)
    assert torch.allclose(q_all, torch.zeros_like(q_all), atol=1e-6)
    assert torch.allclose(m.Q(z, a, torch.tensor([0, 1]), reduce="min", target=True), torch.zeros(16, 1), atol=1e-6)


def test_weights_truncated_normal_002_and_zero_biases(fresh_model):
    m = fresh_model
    zero_init = {id(m._reward[-1].weight), id(m._Qs.layers[-1].weight), id(m._target_Qs.layers[-1].weight)}
    checked = 0
    for module in m.modules():
        if isinstance(module, (nn.Linear, EnsembleLinear)):
            assert torch.count_nonzero(module.bias) == 0
            if id(module.weight) in zero_init:
                continue
            w = module.weight.detach()
            assert abs(w.std().item() - 0.02) < 0.1 * 0.02, (module, w.std().item())
            assert abs(w.mean().item()) < 0.005
            assert w.abs().max().item() <= 2.0  # truncated
            checked += 1
        if isinstance(module, nn.LayerNorm):
            assert torch.all(module.weight == 1) and torch.all(module.bias == 0)
    assert checked >= 12
    for layer in m._Qs.layers[:-1]:  # ensemble LayerNorm parameters start at 1 / 0 too
        assert torch.all(layer.ln_weight == 1) and torch.all(layer.ln_bias == 0)


def test_dropout_only_on_first_q_layer():
    m = WorldModel(ModelConfig.from_preset("1M", 5, 1))
    drops = [layer.dropout for layer in m._Qs.layers]
    assert isinstance(drops[0], SparseDropout) and drops[0].p == pytest.approx(0.01)
    assert all(d is None for d in drops[1:])
    for head in (m._encoder, m._dynamics, m._reward, m._pi):
        assert not any(isinstance(x, (nn.Dropout, SparseDropout)) for x in head.modules())
    # Train mode keeps the target ensemble deterministic.
    m.train()
    assert m._Qs.training and not m._target_Qs.training


# -- policy prior -------------------------------------------------------------------------------


def test_pi_actions_bounded_and_deterministic_given_eps(small_model):
    z = small_model.encode(5 * torch.randn(64, 5))
    eps = 3 * torch.randn(64, 1)
    a1, mu1, lp1 = small_model.pi(z, eps)
    a2, mu2, lp2 = small_model.pi(z, eps.clone())
    assert a1.shape == (64, 1) and mu1.shape == (64, 1) and lp1.shape == (64, 1)
    assert torch.all(a1.abs() <= 1) and torch.all(mu1.abs() <= 1)
    assert torch.equal(a1, a2) and torch.equal(mu1, mu2) and torch.equal(lp1, lp2)
    assert torch.isfinite(lp1).all()
    a3, _, _ = small_model.pi(z, -eps)
    assert not torch.equal(a1, a3)
    # Without eps it samples, so two calls differ.
    assert not torch.equal(small_model.pi(z)[0], small_model.pi(z)[0])


@pytest.mark.parametrize("bias, expected_log_std", [(1e4, 2.0), (-1e4, -10.0), (0.0, -4.0)])
def test_pi_log_std_squashed_into_bounds(bias, expected_log_std):
    torch.manual_seed(0)
    m = WorldModel(ModelConfig.from_preset("1M", 5, 2)).eval()
    last = m._pi[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        last.bias[:2] = torch.tensor([0.3, -0.2])  # mean
        last.bias[2:] = bias  # pre-squash log_std
    z = m.encode(torch.randn(3, 5))
    eps = torch.tensor([[1.0, -0.5]]).expand(3, 2)
    a, mu, log_prob = m.pi(z, eps)
    mean = torch.tensor([0.3, -0.2])
    std = torch.exp(torch.tensor(expected_log_std))
    torch.testing.assert_close(a, torch.tanh(mean + eps * std), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(mu, torch.tanh(mean).expand(3, 2))
    # log-prob: Gaussian with that log_std, minus the tanh change of variables.
    pre = mean + eps * std
    expected = (-0.5 * eps.pow(2) - expected_log_std - 0.5 * torch.log(torch.tensor(2 * torch.pi))).sum(-1, keepdim=True)
    expected = expected - torch.log(F.relu(1 - torch.tanh(pre).pow(2)) + 1e-6).sum(-1, keepdim=True)
    torch.testing.assert_close(log_prob, expected, atol=1e-4, rtol=1e-5)


def test_squashed_log_std_range():
    from tdmpc2_ros.core.math import squashed_log_std

    x = torch.cat([torch.linspace(-50, 50, 1001), torch.tensor([-1e9, 1e9])])
    y = squashed_log_std(x, -10.0, 2.0)
    assert torch.all(y >= -10.0) and torch.all(y <= 2.0)
    assert y[-2] == -10.0 and y[-1] == 2.0
    assert torch.all(y[1:1001] >= y[:1000])  # monotone
    assert squashed_log_std(torch.zeros(()), -10.0, 2.0).item() == pytest.approx(-4.0)


# -- termination head ---------------------------------------------------------------------------


def test_termination_head_only_when_episodic():
    plain = WorldModel(ModelConfig.from_preset("1M", 5, 1))
    assert plain._termination is None
    episodic = WorldModel(ModelConfig.from_preset("1M", 5, 1, episodic=True))
    assert episodic._termination is not None
    z = episodic.encode(torch.randn(4, 5))
    assert episodic.termination_logit(z).shape == (4, 1)
    extra = sum(p.numel() for p in episodic._termination.parameters())
    assert episodic.num_parameters() == plain.num_parameters() + extra
    # latent -> 2 hidden layers of mlp_dim -> 1
    assert extra == (128 * 384 + 384 + 768) + (384 * 384 + 384 + 768) + (384 + 1)


def test_model_config_validation():
    with pytest.raises(ValueError, match="preset"):
        ModelConfig.from_preset("2M", 5, 1)
    with pytest.raises(ValueError, match="obs_dim"):
        ModelConfig.from_preset("1M", 0, 1)
    with pytest.raises(ValueError, match="simnorm"):
        ModelConfig(5, 1, latent_dim=100)
    with pytest.raises(ValueError, match="num_q"):
        ModelConfig(5, 1, num_q=1)


# -- the export-friendly Mish -------------------------------------------------------------------


def test_export_friendly_mish_equals_torch_mish():
    xs = [torch.linspace(-30, 30, 6001), 8 * torch.randn(10_000), torch.randn(64, 384),
          torch.tensor([-1e4, -100.0, -20.0, 0.0, 19.99, 20.0, 20.01, 100.0, 1e4])]
    for x in xs:
        with layers.export_friendly():
            y = layers.mish(x)
        assert torch.isfinite(y).all()
        torch.testing.assert_close(y, F.mish(x), atol=1e-6, rtol=1e-6)
    # Outside the context the layer is torch's own Mish; the context restores the flag on exit.
    x = torch.randn(100)
    assert torch.equal(layers.mish(x), F.mish(x))
    assert layers._EXPORTING is False


def test_compiled_mish_gradient_is_mishs():
    """The derivative written out for torch.compile (g + x s (1 - g^2)) is Mish's: against autograd of
    torch's own Mish in float64, finite everywhere (saturated tails too), and as gradcheck sees it."""
    x = torch.cat([torch.linspace(-30, 30, 6001), 8 * torch.randn(10_000),
                   torch.tensor([-1e4, -100.0, -20.0, 0.0, 20.0, 100.0, 1e4])])
    ours = x.clone().requires_grad_(True)
    layers._CompiledMish.apply(ours).backward(torch.ones_like(x))
    exact = x.double().requires_grad_(True)
    F.mish(exact).backward(torch.ones_like(exact))
    assert torch.isfinite(ours.grad).all()
    torch.testing.assert_close(ours.grad.double(), exact.grad, atol=2e-6, rtol=1e-5)
    probe = torch.randn(40, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layers._CompiledMish.apply, (probe,))


def test_export_friendly_context_restores_after_error():
    with pytest.raises(RuntimeError):
        with layers.export_friendly():
            assert layers._EXPORTING is True
            raise RuntimeError("boom")
    assert layers._EXPORTING is False


def test_model_outputs_identical_inside_export_context(small_model):
    obs = torch.randn(8, 5)
    a = torch.rand(8, 1) * 2 - 1
    z = small_model.encode(obs)
    ref = (z, small_model.next(z, a), small_model.reward(z, a), small_model.Q_logits(z, a))
    with layers.export_friendly():
        z2 = small_model.encode(obs)
        got = (z2, small_model.next(z2, a), small_model.reward(z2, a), small_model.Q_logits(z2, a))
    for r, g in zip(ref, got):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-5)
