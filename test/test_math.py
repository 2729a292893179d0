"""symlog / symexp and two-hot discrete regression (101 bins over [-10, 10] in symlog space)."""

from __future__ import annotations

import math

import pytest
import torch

from tdmpc2_ros.core.math import TwoHot, symexp, symlog


@pytest.fixture
def two_hot():
    return TwoHot(101, -10.0, 10.0)


def test_symlog_symexp_are_inverse():
    x = torch.cat([torch.linspace(-1000, 1000, 20001), torch.tensor([0.0, 1e-6, -1e-6, 1e5, -1e5])]).double()
    torch.testing.assert_close(symexp(symlog(x)), x, rtol=1e-10, atol=1e-10)
    y = torch.linspace(-12, 12, 2401).double()
    torch.testing.assert_close(symlog(symexp(y)), y, rtol=1e-10, atol=1e-10)


def test_symlog_values():
    x = torch.tensor([-math.e + 1, -1.0, 0.0, 1.0, math.e - 1, 99.0])
    torch.testing.assert_close(symlog(x), torch.tensor([-1.0, -math.log(2), 0.0, math.log(2), 1.0, math.log(100)]))
    assert torch.all(symlog(-x) == -symlog(x))  # odd
    xs = torch.linspace(-100, 100, 1001)
    assert torch.all(symlog(xs)[1:] > symlog(xs)[:-1])  # strictly increasing


def test_bins(two_hot):
    assert two_hot.bins.shape == (101,)
    assert two_hot.bins[0] == -10.0 and two_hot.bins[-1] == 10.0
    assert two_hot.bins[50].item() == pytest.approx(0.0, abs=1e-6)
    torch.testing.assert_close(two_hot.bins[1:] - two_hot.bins[:-1], torch.full((100,), 0.2), atol=1e-5, rtol=0)
    assert two_hot.bin_size == pytest.approx(0.2)


def test_encode_rows_sum_to_one_with_at_most_two_adjacent_nonzeros(two_hot):
    x = torch.cat([torch.linspace(-1000, 1000, 4001), torch.tensor([0.0, 1e6, -1e6, 22025.0, -22025.0])]).unsqueeze(-1)
    enc = two_hot.encode(x)
    assert enc.shape == (x.shape[0], 101)
    assert torch.all(enc >= 0)
    torch.testing.assert_close(enc.sum(-1), torch.ones(x.shape[0]), atol=1e-6, rtol=0)
    nz = enc > 0
    assert torch.all(nz.sum(-1) <= 2) and torch.all(nz.sum(-1) >= 1)
    idx = [torch.nonzero(r).flatten() for r in nz]
    assert all(len(i) == 1 or (i[1] - i[0]).item() == 1 for i in idx)


def test_encode_leading_dims_and_exact_bins(two_hot):
    x = torch.zeros(3, 4, 1)
    enc = two_hot.encode(x)
    assert enc.shape == (3, 4, 101)
    assert torch.all(enc[..., 50] == 1)
    # symlog(x) exactly on a bin centre -> all mass on that bin.
    on_bin = symexp(torch.tensor([[1.0]]))
    e = two_hot.encode(on_bin)[0]
    assert e[55].item() == pytest.approx(1.0, abs=1e-5)
    # Half-way between bins 50 (0.0) and 51 (0.2).
    half = symexp(torch.tensor([[0.1]]))
    e = two_hot.encode(half)[0]
    assert e[50].item() == pytest.approx(0.5, abs=1e-5) and e[51].item() == pytest.approx(0.5, abs=1e-5)


def test_encode_clamps_out_of_range(two_hot):
    e = two_hot.encode(torch.tensor([[1e9], [-1e9]]))
    assert e[0, -1] == 1.0 and e[0, :-1].sum() == 0
    assert e[1, 0] == 1.0 and e[1, 1:].sum() == 0


def test_decode_of_log_two_hot_recovers_value(two_hot):
    x = torch.cat([torch.linspace(-1000, 1000, 2001), torch.tensor([0.0, 0.5, -0.5, 3.3, -7.1, 5000.0, -5000.0])])
    logits = torch.log(two_hot.encode(x.unsqueeze(-1)))  # -inf off the two bins: softmax gives them 0
    dec = two_hot.decode(logits).squeeze(-1)
    assert dec.shape == x.shape
    torch.testing.assert_close(dec, x, rtol=1e-3, atol=1e-4)


def test_decode_of_zero_logits_is_zero_and_shapes(two_hot):
    assert two_hot.decode(torch.zeros(5, 101)).abs().max() < 1e-6
    assert two_hot.decode(torch.zeros(2, 3, 4, 101)).shape == (2, 3, 4, 1)
    # Decoding is bounded by the range: symexp(10).
    big = torch.full((1, 101), -1e4)
    big[0, -1] = 1e4
    assert two_hot.decode(big).item() == pytest.approx(math.exp(10) - 1, rel=1e-4)


def test_soft_ce_minimised_at_the_matching_target(two_hot):
    targets = torch.tensor([[-250.0], [-3.0], [0.0], [0.7], [12.0], [900.0]])
    matching = torch.log(two_hot.encode(targets).clamp_min(1e-30))
    ce_match = two_hot.soft_ce(matching, targets)
    assert ce_match.shape == (6, 1)
    for shift in [-0.3, -0.05, 0.05, 0.3]:
        other = torch.log(two_hot.encode(targets + shift * targets.abs().clamp_min(1.0)).clamp_min(1e-30))
        assert torch.all(two_hot.soft_ce(other, targets) > ce_match)
    # Compared with any random logits, too.
    for _ in range(5):
        assert torch.all(two_hot.soft_ce(torch.randn(6, 101) * 3, targets) > ce_match)
    # And gradient descent on free logits converges to a prediction that decodes to the target.
    logits = torch.zeros(6, 101, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.2)
    for _ in range(400):
        opt.zero_grad()
        two_hot.soft_ce(logits, targets).sum().backward()
        opt.step()
    torch.testing.assert_close(two_hot.decode(logits.detach()), targets, rtol=2e-2, atol=2e-2)


def test_soft_ce_equals_cross_entropy_with_two_hot_targets(two_hot):
    logits = torch.randn(7, 101)
    target = torch.randn(7, 1) * 30
    expected = -(two_hot.encode(target) * torch.log_softmax(logits, -1)).sum(-1, keepdim=True)
    torch.testing.assert_close(two_hot.soft_ce(logits, target), expected)
    # Leading dimensions broadcast, as the value loss uses them ([E, H, B, bins] vs [1, H, B, 1]).
    ens_logits = torch.randn(2, 3, 4, 101)
    t = torch.randn(1, 3, 4, 1)
    assert two_hot.soft_ce(ens_logits, t).shape == (2, 3, 4, 1)


def test_sparse_dropout_is_bernoulli_dropout():
    """Gap-sampled dropout: the same distribution of masks as nn.Dropout(p) (independent
    Bernoulli(p) per element, survivors scaled by 1 / (1 - p)), identity in eval mode."""
    from tdmpc2_ros.core.layers import SparseDropout

    torch.manual_seed(0)
    p, shape, draws = 0.01, (5, 96, 128), 400
    d = SparseDropout(p).train()
    x = torch.ones(shape, requires_grad=True)
    masks = torch.stack([(d(x) == 0).flatten() for _ in range(draws)]).double()
    n = masks.shape[1]
    rate = masks.mean().item()
    assert abs(rate - p) < 5 * math.sqrt(p * (1 - p) / (n * draws))
    # Every position alike: the first and the last tenth of the tensor (the gaps' cumulative sum must
    # reach the end), and no dependence between neighbours.
    tenth = n // 10
    for part in (masks[:, :tenth], masks[:, -tenth:]):
        assert abs(part.mean().item() - p) < 5 * math.sqrt(p * (1 - p) / part.numel())
    after_drop = (masks[:, :-1] * masks[:, 1:]).sum() / masks[:, :-1].sum()
    assert abs(after_drop.item() - p) < 5 * math.sqrt(p * (1 - p) / masks[:, :-1].sum().item())
    # Survivors are scaled, and the gradient is the same mask.
    y = d(x)
    assert torch.allclose(y[y != 0], torch.tensor(1 / (1 - p)))
    y.sum().backward()
    assert torch.equal(x.grad == 0, y == 0)
    assert torch.equal(d.eval()(x), x)
    with pytest.raises(ValueError):
        SparseDropout(1.0)
