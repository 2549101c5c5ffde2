"""TRADES and MART outer losses against per-example loop oracles."""

from __future__ import annotations

import math

import pytest
import torch

from afa.losses import mart_loss, mart_terms, trades_loss, trades_terms


def _softmax(row):
    m = max(row)
    e = [math.exp(v - m) for v in row]
    s = sum(e)
    return [v / s for v in e]


def trades_oracle(clean, adv, y, beta):
    total = 0.0
    for c, a, t in zip(clean.tolist(), adv.tolist(), y.tolist(), strict=True):
        p, q = _softmax(c), _softmax(a)
        ce = -math.log(p[t])
        kl = sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q, strict=True))
        total += ce + beta * kl
    return total / len(y)


def mart_oracle(clean, adv, y, beta):
    """Wang et al. 2020, eq. 7, written per example (no clamps)."""
    total = 0.0
    for c, a, t in zip(clean.tolist(), adv.tolist(), y.tolist(), strict=True):
        p, q = _softmax(c), _softmax(a)
        runner = max((k for k in range(len(q)) if k != t), key=lambda k: q[k])
        bce = -math.log(q[t]) - math.log(1 - q[runner])
        kl = sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q, strict=True))
        total += bce + beta * kl * (1 - p[t])
    return total / len(y)


def mart_authors_form(clean, adv, y, beta):
    """The authors' code's arithmetic (argsort runner-up, 1.0001 / 1e-12 clamps)."""
    adv_probs = torch.softmax(adv, 1)
    top2 = torch.argsort(adv_probs, 1)[:, -2:]
    new_y = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])
    loss_adv = torch.nn.functional.cross_entropy(adv, y) + torch.nn.functional.nll_loss(
        torch.log(1.0001 - adv_probs + 1e-12), new_y
    )
    nat_probs = torch.softmax(clean, 1)
    true_probs = nat_probs.gather(1, y[:, None]).squeeze(1)
    kl = (nat_probs * (torch.log(nat_probs + 1e-12) - torch.log(adv_probs + 1e-12))).sum(1)
    return loss_adv + beta * (kl * (1.0000001 - true_probs)).mean()


def data(b=6, k=4, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    clean = torch.randn(b, k, generator=g, dtype=dtype) * 2
    adv = clean + torch.randn(b, k, generator=g, dtype=dtype)
    y = torch.randint(0, k, (b,), generator=g)
    return clean, adv, y


@pytest.mark.parametrize("beta", [0.0, 1.0, 6.0])
@pytest.mark.parametrize("k", [2, 5])
def test_trades_matches_oracle(beta, k):
    clean, adv, y = data(k=k, seed=k)
    out = trades_loss(clean, adv, y, beta)
    assert out.dtype == torch.float32
    assert math.isclose(out.item(), trades_oracle(clean, adv, y, beta), rel_tol=1e-5)


def test_trades_kl_gradient_reaches_both_logits():
    clean, adv, y = data()
    clean.requires_grad_(True)
    adv.requires_grad_(True)
    _, kl = trades_terms(clean, adv, y)
    kl.backward()
    assert clean.grad.abs().sum() > 0 and adv.grad.abs().sum() > 0


def test_trades_kl_is_zero_on_equal_logits():
    clean, _, y = data()
    ce, kl = trades_terms(clean, clean.clone(), y)
    assert abs(kl.item()) < 1e-6
    assert math.isclose(ce.item(), trades_oracle(clean, clean, y, 0.0), rel_tol=1e-5)


@pytest.mark.parametrize("beta", [0.0, 6.0])
@pytest.mark.parametrize("k", [2, 3, 10])
def test_mart_matches_oracle_and_authors_form(beta, k):
    clean, adv, y = data(b=8, k=k, seed=k)
    out = mart_loss(clean, adv, y, beta)
    assert out.dtype == torch.float32
    assert math.isclose(out.item(), mart_oracle(clean, adv, y, beta), rel_tol=1e-5)
    authors = mart_authors_form(clean.float(), adv.float(), y, beta)
    assert math.isclose(out.item(), authors.item(), rel_tol=1e-3)


def test_mart_runner_up_when_true_class_is_not_top():
    # adversarial prediction wrong: the runner-up "other" class is the top class itself
    adv = torch.tensor([[0.0, 3.0, 1.0]])
    clean = torch.tensor([[2.0, 0.0, 0.0]])
    y = torch.tensor([0])
    bce, _ = mart_terms(clean, adv, y)
    q = torch.softmax(adv, 1)[0]
    expected = -math.log(q[0]) - math.log(1 - q[1])
    assert math.isclose(bce.item(), expected, rel_tol=1e-6)


def test_mart_weight_gradient_flows_through_clean_probability():
    clean, adv, y = data()
    clean = clean.float().requires_grad_(True)
    _, kl = mart_terms(clean, adv.float(), y)
    kl.backward()
    assert torch.isfinite(clean.grad).all() and clean.grad.abs().sum() > 0


def test_mart_confident_logits_are_finite():
    adv = torch.tensor([[50.0, -50.0, -50.0], [-50.0, 50.0, -50.0]], requires_grad=True)
    clean = torch.tensor([[40.0, 0.0, 0.0], [0.0, 0.0, 40.0]])
    y = torch.tensor([0, 0])
    loss = mart_loss(clean, adv, y, 6.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(adv.grad).all()


def test_bf16_logits_computed_in_float32():
    clean, adv, y = data(dtype=torch.float32)
    ref = trades_loss(clean, adv, y, 6.0)
    out = trades_loss(clean.bfloat16(), adv.bfloat16(), y, 6.0)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=3e-2, atol=3e-2)
    assert mart_loss(clean.bfloat16(), adv.bfloat16(), y, 6.0).dtype == torch.float32
