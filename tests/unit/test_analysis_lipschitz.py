"""Local Lipschitzness of linear maps, whose maxima over the L∞ ball are known."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from afa.analysis.lipschitz import lipschitz_ratio, local_lipschitz
from afa.attacks import ThreatModel

THREAT = ThreatModel(norm="linf", eps=0.1, step_size=0.02, steps=20)


def _linear(w: torch.Tensor) -> nn.Module:
    lin = nn.Linear(w.shape[1], w.shape[0], bias=True)
    with torch.no_grad():
        lin.weight.copy_(w)
        lin.bias.uniform_(-1, 1)
    return nn.Sequential(nn.Flatten(), lin)


def _inf_to_one(w: torch.Tensor) -> float:
    """||W||_{inf->1} = max over sign vectors s of ||W s||_1 (brute force, small d)."""
    best = 0.0
    for signs in itertools.product((-1.0, 1.0), repeat=w.shape[1]):
        best = max(best, float((w @ torch.tensor(signs)).abs().sum()))
    return best


def test_ratio_by_hand():
    fx, fa = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 4.0]])
    x, xa = torch.zeros(1, 3), torch.tensor([[0.1, -0.2, 0.05]])
    assert lipschitz_ratio(fx, fa, x, xa).item() == pytest.approx(3.0 / 0.2)


def test_one_dimensional_linear_map_is_exact():
    model = _linear(torch.tensor([[-2.5]]))
    x = torch.full((6, 1), 0.5)
    ratios = local_lipschitz(model, x, THREAT, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ratios, torch.full((6,), 2.5), rtol=1e-4, atol=0)


def test_single_output_reaches_the_sum_of_absolute_weights():
    # f(x) = w.x: the max of |w.d| / ||d||_inf is sum |w_i|, at d = +-eps sign(w).
    w = torch.tensor([[0.5, -1.0, 2.0, -0.25, 1.5]])
    model = _linear(w)
    x = torch.full((8, 5), 0.5)  # far enough from the [0, 1] box for the ball to fit
    ratios = local_lipschitz(model, x, THREAT, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ratios, torch.full((8,), float(w.abs().sum())), rtol=1e-5, atol=1e-5)


def test_matrix_is_bounded_by_sum_abs_and_close_to_the_true_max():
    g = torch.Generator().manual_seed(2)
    w = torch.randn(3, 6, generator=g)
    model = _linear(w)
    x = torch.full((16, 6), 0.5)
    threat = THREAT.with_(restarts=4)
    ratios = local_lipschitz(model, x, threat, generator=torch.Generator().manual_seed(3))
    true_max = _inf_to_one(w)
    assert (ratios <= true_max + 1e-4).all()
    assert (ratios <= w.abs().sum() + 1e-4).all()
    assert ratios.max() == pytest.approx(true_max, rel=1e-4)  # PGD finds the vertex
    assert ratios.mean() >= 0.9 * true_max


def test_softmax_outputs_and_modes_restored():
    model = _linear(torch.randn(4, 5, generator=torch.Generator().manual_seed(4)))
    model.train()
    x = torch.rand(7, 5, generator=torch.Generator().manual_seed(5))
    params_before = [p.detach().clone() for p in model.parameters()]
    r = local_lipschitz(
        model, x, THREAT, output="softmax", batch_size=3, generator=torch.Generator().manual_seed(6)
    )
    assert r.shape == (7,) and torch.isfinite(r).all() and (r > 0).all()
    assert model.training
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(params_before, model.parameters(), strict=True))


def test_random_start_is_forced_even_when_the_threat_has_none():
    model = _linear(torch.tensor([[1.0, -1.0]]))
    x = torch.full((4, 2), 0.5)
    r = local_lipschitz(
        model, x, THREAT.with_(random_start=False), generator=torch.Generator().manual_seed(7)
    )
    torch.testing.assert_close(r, torch.full((4,), 2.0), rtol=1e-5, atol=1e-5)
