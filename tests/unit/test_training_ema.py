"""ModelEMA: the decay warm-up, a manual EMA oracle, buffers copied, state round trip."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from afa.training import ModelEMA


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))


def test_decay_warmup_formula():
    ema = ModelEMA(_net(), decay=0.99, warmup=True)
    assert [ema.decay_at(t) for t in (0, 1, 10, 100, 10_000)] == pytest.approx(
        [1 / 10, 2 / 11, 11 / 20, 101 / 110, 0.99]
    )
    assert ModelEMA(_net(), decay=0.99, warmup=False).decay_at(0) == 0.99


@pytest.mark.parametrize("warmup", [True, False])
def test_equals_a_manual_ema_and_copies_buffers(warmup):
    live = _net()
    ema = ModelEMA(live, decay=0.9, warmup=warmup)
    manual = {k: v.clone() for k, v in live.named_parameters()}
    opt = torch.optim.SGD(live.parameters(), lr=0.1)
    for t in range(15):
        live.train()
        loss = live(torch.randn(8, 4)).square().mean()  # also moves the BN running stats
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update(live)
        d = min(0.9, (1 + t) / (10 + t)) if warmup else 0.9
        for k, p in live.named_parameters():
            manual[k] = d * manual[k] + (1 - d) * p.detach()
    assert ema.updates == 15
    live_params = dict(live.named_parameters())
    for k, p in ema.module.named_parameters():
        assert torch.allclose(p, manual[k], atol=1e-6), k
        assert not p.requires_grad
    # an average, not a copy (the bias before BN gets no gradient and stays put)
    assert not torch.allclose(ema.module[0].weight, live_params["0.weight"])
    for (k, b), (_, live_b) in zip(ema.module.named_buffers(), live.named_buffers(), strict=True):
        assert torch.equal(b, live_b), k  # running_mean, running_var, num_batches_tracked
    assert not ema.module.training


def test_state_dict_round_trip():
    live = _net()
    ema = ModelEMA(live, decay=0.5)
    with torch.no_grad():
        for p in live.parameters():
            p.add_(1.0)
    ema.update(live)
    other = ModelEMA(_net(), decay=0.9, warmup=False)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 1 and other.decay == 0.5 and other.warmup
    for a, b in zip(
        other.module.state_dict().values(), ema.module.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
