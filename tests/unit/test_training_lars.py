"""LARS against its formula (You et al. 2017, Algorithm 1, in ACL's form), tensor by tensor."""

from __future__ import annotations

import pytest
import torch

from afa.runs import OptimConfig
from afa.training.optim import LARS, build_optimizer


def reference_steps(params, grads_per_step, lr, momentum, wd, eta):
    """Plain float64 loops: one trust ratio per tensor, momentum on the scaled update."""
    ws = [p.detach().double().clone() for p in params]
    bufs = [torch.zeros_like(w) for w in ws]
    for grads in grads_per_step:
        for i, (w, g) in enumerate(zip(ws, grads, strict=True)):
            g = g.double()
            wn, gn = w.norm().item(), g.norm().item()
            trust = 1.0 if wn < 1e-15 or gn < 1e-15 else eta * wn / (gn + wd * wn)
            bufs[i] = momentum * bufs[i] + lr * trust * (g + wd * w)
            ws[i] = w - bufs[i]
    return ws


def test_matches_the_formula_over_steps():
    g = torch.Generator().manual_seed(0)
    params = [
        torch.nn.Parameter(torch.randn(4, 3, generator=g)),
        torch.nn.Parameter(torch.zeros(5)),
    ]
    grads = [[torch.randn(4, 3, generator=g), torch.randn(5, generator=g)] for _ in range(3)]
    expected = reference_steps(params, grads, lr=5.0, momentum=0.9, wd=1e-6, eta=1e-3)
    opt = LARS(params, lr=5.0, momentum=0.9, weight_decay=1e-6, eta=1e-3)
    for step in grads:
        for p, gr in zip(params, step, strict=True):
            p.grad = gr.clone()
        opt.step()
    for p, e in zip(params, expected, strict=True):
        torch.testing.assert_close(p.detach().double(), e, rtol=1e-5, atol=1e-7)
    # The zero-initialised tensor took a trust ratio of 1 (its norm was 0) on step one.
    assert params[1].abs().sum() > 0


def test_built_from_the_config_and_checks_its_options():
    p = [torch.nn.Parameter(torch.ones(2))]
    opt = build_optimizer(p, OptimConfig(name="lars", lr=5.0, weight_decay=1e-6, lars_eta=2e-3))
    assert isinstance(opt, LARS) and opt.param_groups[0]["eta"] == 2e-3
    with pytest.raises(ValueError, match="lars_eta"):
        OptimConfig(name="lars", lars_eta=0.0)
    with pytest.raises(ValueError, match="LARS"):
        LARS(p, lr=-1.0)
    state = opt.state_dict()  # checkpointable like SGD
    p[0].grad = torch.ones(2)
    opt.step()
    fresh = LARS(p, lr=5.0)
    fresh.load_state_dict(opt.state_dict())
    assert "momentum_buffer" in fresh.state[p[0]] and not state["state"]
