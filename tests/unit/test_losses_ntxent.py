"""NT-Xent against a float64 loop oracle, pytorch-metric-learning's NTXentLoss and ACL's
interleaved formula; gradcheck; bf16 under autocast; the chance level; bad inputs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from afa.losses.ntxent import NTXentLoss, nt_xent, view_sample_ids


def oracle(z: torch.Tensor, views: int, temperature: float) -> float:
    """Row by row, in float64: -mean over the other views p of log e^s_ip / sum_{a!=i} e^s_ia."""
    z = F.normalize(z.double(), dim=1)
    n = z.shape[0]
    b = n // views
    total = 0.0
    for i in range(n):
        s = [float(z[i] @ z[a]) / temperature for a in range(n)]
        denom = sum(math.exp(s[a]) for a in range(n) if a != i)
        positives = [a for a in range(n) if a != i and a % b == i % b]
        total += sum(-math.log(math.exp(s[p]) / denom) for p in positives) / len(positives)
    return total / n


@settings(max_examples=25, deadline=None)
@given(
    b=st.integers(2, 9),
    views=st.integers(2, 4),
    d=st.integers(2, 8),
    temperature=st.sampled_from([0.1, 0.5, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_matches_the_loop_oracle(b, views, d, temperature, seed):
    z = torch.randn(
        views * b, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    out = NTXentLoss(temperature)(z, views)
    assert out.loss.item() == pytest.approx(oracle(z, views, temperature), rel=1e-10)
    assert out.chance.item() == pytest.approx(math.log(views * b - 1))
    assert out.num_rows == views * b


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_matches_pytorch_metric_learning(temperature):
    pml = pytest.importorskip("pytorch_metric_learning.losses")
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2 * 12, 16, generator=g)
    ours = NTXentLoss(temperature)(z).loss
    theirs = pml.NTXentLoss(temperature=temperature)(z, view_sample_ids(12, 2))
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_matches_acl_interleaved_formula():
    # ACL (utils.py nt_xent): pairs on adjacent rows, self-similarity subtracted as e^(1/t).
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 7, 5, generator=g, dtype=torch.float64)
    inter = torch.stack([a, b], 1).reshape(14, 5)
    x = F.normalize(inter, dim=1)
    e = torch.exp(x @ x.T / 0.5)
    idx = torch.arange(14) ^ 1  # the partner row of each row
    acl = -torch.log(e[idx, torch.arange(14)] / (e.sum(0) - math.exp(1 / 0.5))).mean()
    ours = NTXentLoss(0.5)(torch.cat([a, b])).loss
    torch.testing.assert_close(ours, acl)


def test_sample_ids_and_positive_structure():
    assert view_sample_ids(3, 2, offset=10).tolist() == [10, 11, 12, 10, 11, 12]
    # Aligning each pair lowers the loss; swapping which rows pair up raises it.
    g = torch.Generator().manual_seed(2)
    a = torch.randn(8, 6, generator=g)
    aligned = NTXentLoss()(torch.cat([a, a + 0.01 * torch.randn(8, 6, generator=g)])).loss
    shuffled = NTXentLoss()(torch.cat([a, a.roll(1, 0)])).loss
    assert aligned < math.log(15) < shuffled


def test_a_sample_without_a_second_view_is_left_out():
    z = torch.randn(5, 3, dtype=torch.float64)
    sample = torch.tensor([0, 1, 2, 0, 1])  # image 2 has one view
    out = nt_xent(z, sample, temperature=0.5)
    assert out.valid.tolist() == [True, True, False, True, True]
    rows = [0, 1, 3, 4]
    full = F.normalize(z, dim=1)
    s = full @ full.T / 0.5
    ref = 0.0
    for i, p in zip(rows, [3, 4, 0, 1], strict=True):
        ref += -(s[i, p] - torch.logsumexp(s[i][torch.arange(5) != i], 0)).item()
    assert out.loss.item() == pytest.approx(ref / 4)


def test_gradcheck():
    z = torch.randn(2 * 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: NTXentLoss(0.5)(t).loss, (z,))
    assert torch.autograd.gradgradcheck(lambda t: NTXentLoss(0.5)(t, 2).loss, (z,))


def test_bf16_autocast_gives_float32_close_to_fp32():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2 * 16, 32, generator=g)
    w = torch.randn(32, 16, generator=g)
    fp32 = NTXentLoss()(x @ w).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = x @ w
        assert z.dtype == torch.bfloat16
        out = NTXentLoss()(z).loss
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, NTXentLoss()(z.float()).loss)
    torch.testing.assert_close(out, fp32, rtol=2e-2, atol=2e-2)


def test_small_temperature_is_stable():
    z = torch.randn(2 * 8, 4, requires_grad=True)
    out = NTXentLoss(1e-3)(z).loss
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(z.grad).all()


def test_bad_inputs():
    with pytest.raises(ValueError, match="temperature"):
        NTXentLoss(0.0)
    with pytest.raises(ValueError, match="views"):
        NTXentLoss()(torch.randn(7, 3), 2)
    with pytest.raises(ValueError, match="sample"):
        nt_xent(torch.randn(4, 3), torch.zeros(3, dtype=torch.long))
