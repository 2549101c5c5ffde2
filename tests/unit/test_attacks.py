"""Attacks: objectives against direct formulas, PGD's ball/box/mode/gradient contracts as
hypothesis properties, and attack strength on a small classifier trained on sklearn digits."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from afa.attacks import (
    ThreatModel,
    attack_mode,
    autoattack,
    cross_entropy,
    cw_margin,
    fgsm,
    fgsm_threat,
    perturb,
    trades_kl,
)

# --------------------------------------------------------------------------- helpers
# (test_evaluation.py imports these too)


def tiny_net(in_ch: int = 1, num_classes: int = 10, seed: int = 0) -> nn.Sequential:
    """Conv -> BN -> ReLU -> conv -> BN -> ReLU -> pool -> linear, for (B, in_ch, 8, 8)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Conv2d(in_ch, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(32, num_classes),
        )


@functools.lru_cache(maxsize=1)
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """sklearn's 8x8 digits in [0, 1]: (train x, train y, test x, test y), a fixed split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return x[:1400], y[:1400], x[1400:], y[1400:]


@functools.lru_cache(maxsize=1)
def _trained_state() -> dict[str, torch.Tensor]:
    x, y, _, _ = digits()
    net = tiny_net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    net.train()
    for _ in range(300):
        idx = torch.randint(0, len(y), (128,), generator=g)
        loss = F.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return {k: v.clone() for k, v in net.state_dict().items()}


def trained_digits_net() -> nn.Sequential:
    """A fresh copy (eval mode) of a tiny net trained with clean CE on digits (~95% test acc)."""
    net = tiny_net()
    net.load_state_dict(_trained_state())
    return net.eval()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).sum().item() / len(y)


def linf(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).flatten(1).abs().amax(1)


def l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).flatten(1).norm(dim=1)


_NET = tiny_net(seed=3)


# --------------------------------------------------------------------------- objectives


def test_cross_entropy_is_minus_log_softmax_of_the_label():
    z = torch.randn(6, 5)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    expected = -torch.log_softmax(z, 1)[torch.arange(6), y]
    torch.testing.assert_close(cross_entropy(z, y), expected)


def test_cw_margin_matches_a_loop():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(20, 7, generator=g)
    y = torch.randint(0, 7, (20,), generator=g)
    expected = torch.tensor(
        [max(z[i, j] for j in range(7) if j != y[i]) - z[i, y[i]] for i in range(20)]
    )
    torch.testing.assert_close(cw_margin(z, y), expected)
    # positive exactly on misclassified rows
    assert torch.equal(cw_margin(z, y) > 0, z.argmax(1) != y)


def test_trades_kl_matches_the_formula_and_detaches_clean():
    g = torch.Generator().manual_seed(0)
    clean = torch.randn(8, 4, generator=g, requires_grad=True)
    adv = torch.randn(8, 4, generator=g, requires_grad=True)
    p, q = clean.softmax(1), adv.softmax(1)
    expected = (p * (p.log() - q.log())).sum(1)
    got = trades_kl(clean)(adv, torch.zeros(8, dtype=torch.long))
    torch.testing.assert_close(got, expected)
    assert torch.allclose(trades_kl(clean)(clean, None), torch.zeros(8), atol=1e-6)
    (grad_clean, grad_adv) = torch.autograd.grad(got.sum(), [clean, adv], allow_unused=True)
    assert grad_clean is None and grad_adv is not None


def test_objectives_compute_in_float32():
    z = torch.randn(4, 3, dtype=torch.bfloat16)
    y = torch.tensor([0, 1, 2, 0])
    for objective in (cross_entropy, cw_margin, trades_kl(z)):
        assert objective(z, y).dtype == torch.float32


# --------------------------------------------------------------------------- PGD contracts


threats = st.builds(
    ThreatModel,
    norm=st.sampled_from(["linf", "l2"]),
    eps=st.floats(0.0, 1.0),
    step_size=st.floats(0.0, 1.0),
    steps=st.integers(0, 4),
    random_start=st.booleans(),
    restarts=st.integers(1, 2),
    bn_mode=st.sampled_from(["eval", "train"]),
)


@settings(max_examples=40, deadline=None)
@given(
    threat=threats,
    seed=st.integers(0, 2**31 - 1),
    objective=st.sampled_from([cross_entropy, cw_margin]),
)
def test_result_is_in_the_ball_and_the_box_and_touches_no_parameter(threat, seed, objective):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(5, 1, 8, 8, generator=g)
    x[0] = 0.0  # corners of the box, where clipping matters
    x[1] = 1.0
    y = torch.randint(0, 10, (5,), generator=g)
    net = _NET
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}

    adv = perturb(net, x, y, threat, objective, generator=g)

    assert adv.shape == x.shape and adv.dtype == x.dtype and not adv.requires_grad
    dist = linf(adv, x) if threat.norm == "linf" else l2(adv, x)
    assert (dist <= threat.eps + 1e-6).all()
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    assert all(p.grad is None and p.requires_grad for p in net.parameters())
    assert all(m.training for m in net.modules())
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # incl. BN running stats


def test_eps_zero_or_steps_zero_returns_x():
    x = torch.rand(4, 1, 8, 8)
    y = torch.zeros(4, dtype=torch.long)
    for threat in (ThreatModel(eps=0.0), ThreatModel(steps=0)):
        out = perturb(_NET, x, y, threat, cross_entropy)
        assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()


def test_dtype_is_kept():
    net = tiny_net().double().eval()
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    adv = perturb(net, x, torch.zeros(3, dtype=torch.long), ThreatModel(eps=0.1), cross_entropy)
    assert adv.dtype == torch.float64
    assert (linf(adv, x) <= 0.1 + 1e-12).all()


def test_modes_and_requires_grad_are_restored_also_on_error():
    net = tiny_net()
    net.train()
    net[1].eval()  # a partly frozen model must come back exactly so
    net[0].weight.requires_grad_(False)
    seen = []

    def failing(out, y):
        seen.append([m.training for m in net.modules()])
        seen.append([p.requires_grad for p in net.parameters()])
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        perturb(
            net, torch.rand(2, 1, 8, 8), torch.zeros(2, dtype=torch.long), ThreatModel(), failing
        )
    assert not any(seen[0]) and not any(seen[1])  # eval mode, no parameter gradients inside
    assert [m.training for m in net.modules()] == [True, True, False] + [True] * 7
    assert not net[0].weight.requires_grad
    assert all(p.requires_grad for n, p in net.named_parameters() if n != "0.weight")


def test_bn_train_mode_uses_batch_statistics_but_leaves_running_stats():
    net = trained_digits_net()
    stats = {k: v.clone() for k, v in net.state_dict().items() if "running" in k or "batches" in k}
    modes = []

    def forward(x):
        modes.append(net[1].training)
        return net(x)

    x, y = digits()[2][:32], digits()[3][:32]
    threat = ThreatModel(eps=0.1, step_size=0.05, steps=3, bn_mode="train", restarts=2)
    adv = perturb(net, x, y, threat, cross_entropy, forward=forward)
    assert modes and all(modes)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in stats.items())
    assert not net.training
    # and the train-mode attack differs from the eval-mode one (batch stats were used)
    g = torch.Generator().manual_seed(0)
    a = perturb(net, x, y, threat, cross_entropy, generator=g)
    b = perturb(
        net,
        x,
        y,
        threat.with_(bn_mode="eval"),
        cross_entropy,
        generator=torch.Generator().manual_seed(0),
    )
    assert not torch.equal(a, b)
    assert adv.shape == x.shape


def test_attack_mode_rejects_unknown_bn_mode():
    with pytest.raises(ValueError, match="bn_mode"):
        with attack_mode(_NET, "frozen"):
            pass


def test_works_under_no_grad_and_under_autocast():
    net = trained_digits_net()
    x, y = digits()[2][:16], digits()[3][:16]
    threat = ThreatModel(eps=0.1, step_size=0.03, steps=3)
    with torch.no_grad():
        adv = perturb(net, x, y, threat, cross_entropy)
    assert (adv != x).any()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        adv = perturb(net, x, y, threat, cross_entropy)
    assert adv.dtype == torch.float32 and (linf(adv, x) <= 0.1 + 1e-6).all()


def test_per_example_objective_is_required():
    with pytest.raises(ValueError, match="per-example"):
        perturb(
            _NET,
            torch.rand(3, 1, 8, 8),
            torch.zeros(3, dtype=torch.long),
            ThreatModel(),
            lambda out, y: cross_entropy(out, y).mean(),
        )


def test_linf_step_is_the_gradient_sign_and_l2_step_the_normalised_gradient():
    lin = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    x = torch.full((3, 1, 8, 8), 0.5)  # far from the box edges: no clipping
    y = torch.tensor([0, 1, 2])
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(cross_entropy(lin(xr), y).sum(), xr)

    adv = fgsm(lin, x, y, ThreatModel(eps=0.1), cross_entropy)
    torch.testing.assert_close(adv, x + 0.1 * grad.sign())

    threat = ThreatModel(norm="l2", eps=1.0, step_size=0.3, steps=1, random_start=False)
    adv = perturb(lin, x, y, threat, cross_entropy)
    unit = grad / grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    torch.testing.assert_close(adv, x + 0.3 * unit)
    # a step past the radius is projected back onto the sphere, along the same direction
    adv = perturb(lin, x, y, threat.with_(step_size=5.0), cross_entropy)
    torch.testing.assert_close(adv, x + 1.0 * unit)


def test_fgsm_threat():
    t = fgsm_threat(ThreatModel(eps=0.2, step_size=0.01, steps=7, restarts=3))
    assert (t.steps, t.step_size, t.random_start, t.restarts) == (1, 0.2, False, 1)


def test_generator_makes_the_attack_reproducible():
    net = trained_digits_net()
    x, y = digits()[2][:16], digits()[3][:16]
    for norm, eps in (("linf", 0.1), ("l2", 1.0)):
        threat = ThreatModel(norm=norm, eps=eps, step_size=eps / 4, steps=3)
        a = perturb(net, x, y, threat, cross_entropy, generator=torch.Generator().manual_seed(5))
        b = perturb(net, x, y, threat, cross_entropy, generator=torch.Generator().manual_seed(5))
        c = perturb(net, x, y, threat, cross_entropy, generator=torch.Generator().manual_seed(6))
        assert torch.equal(a, b) and not torch.equal(a, c)


def test_l2_random_start_fills_radii_up_to_eps():
    x = torch.full((200, 1, 8, 8), 0.5)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    # step_size 0: the result is the random start itself
    threat = ThreatModel(norm="l2", eps=1.0, step_size=0.0, steps=1)
    start = perturb(lin, x, torch.zeros(200, dtype=torch.long), threat, cross_entropy)
    r = l2(start, x)
    assert r.max() <= 1.0 + 1e-6 and r.min() < 0.2 and r.max() > 0.8  # radius ~ U(0, eps)
    threat = threat.with_(norm="linf", eps=0.1)
    start = perturb(lin, x, torch.zeros(200, dtype=torch.long), threat, cross_entropy)
    d = (start - x).flatten()
    assert d.abs().max() <= 0.1 + 1e-6 and d.min() < -0.09 and d.max() > 0.09


def test_restarts_keep_the_per_example_best_final_point():
    net = trained_digits_net()
    x, y = digits()[2][:64], digits()[3][:64]
    threat = ThreatModel(eps=0.15, step_size=0.02, steps=2)
    # restarts=3 with a generator draws the same starts as three single runs in a row
    g = torch.Generator().manual_seed(11)
    runs = [perturb(net, x, y, threat, cw_margin, generator=g) for _ in range(3)]
    best = perturb(
        net, x, y, threat.with_(restarts=3), cw_margin, generator=torch.Generator().manual_seed(11)
    )
    with torch.no_grad():
        losses = torch.stack([cw_margin(net(r), y) for r in runs])  # (3, B)
    pick = losses.argmax(0)
    assert len(set(pick.tolist())) > 1  # the test means something: different runs win
    expected = torch.stack(runs)[pick, torch.arange(len(y))]
    torch.testing.assert_close(best, expected)


# --------------------------------------------------------------------------- attack strength


def test_pgd_lowers_accuracy_below_clean_and_below_random_noise():
    net = trained_digits_net()
    x, y = digits()[2], digits()[3]
    clean = accuracy(net, x, y)
    assert clean > 0.9
    for norm, eps in (("linf", 0.1), ("l2", 1.0)):
        threat = ThreatModel(norm=norm, eps=eps, step_size=eps / 4, steps=10)
        g = torch.Generator().manual_seed(0)
        pgd = accuracy(net, perturb(net, x, y, threat, cross_entropy, generator=g), y)
        noise = accuracy(
            net, perturb(net, x, y, threat.with_(step_size=0.0), cross_entropy, generator=g), y
        )  # the random start alone
        assert pgd < noise - 0.2 and pgd < clean - 0.3, (norm, clean, noise, pgd)


def test_more_steps_do_not_raise_accuracy():
    net = trained_digits_net()
    x, y = digits()[2], digits()[3]
    threat = ThreatModel(eps=0.06, step_size=0.015)
    accs = [
        accuracy(
            net,
            perturb(
                net,
                x,
                y,
                threat.with_(steps=k),
                cross_entropy,
                generator=torch.Generator().manual_seed(0),
            ),
            y,
        )
        for k in (1, 4, 16)
    ]
    assert accs[2] <= accs[1] + 0.01 and accs[1] <= accs[0] + 0.01, accs
    assert accs[2] < accs[0], accs


# --------------------------------------------------------------------------- AutoAttack


def test_autoattack_apgd_ce_runs_and_returns_points_in_the_ball():
    net = trained_digits_net()
    net.train()
    x, y = digits()[2][:24], digits()[3][:24]
    rng = torch.random.get_rng_state()
    for norm, eps in (("linf", 0.1), ("l2", 1.0)):
        threat = ThreatModel(norm=norm, eps=eps)
        adv = autoattack(
            net, x, y, threat, version="custom", attacks_to_run=["apgd-ce"], batch_size=16
        )
        dist = linf(adv, x) if norm == "linf" else l2(adv, x)
        assert adv.shape == x.shape and (dist <= eps + 1e-6).all()
        assert adv.min() >= 0 and adv.max() <= 1
        assert net.training and all(p.requires_grad and p.grad is None for p in net.parameters())
        net.eval()
        assert accuracy(net, adv, y) < accuracy(net, x, y) - 0.3
        net.train()
    assert torch.equal(torch.random.get_rng_state(), rng)


def test_autoattack_version_and_attacks_must_agree():
    x, y = torch.rand(2, 1, 8, 8), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="custom"):
        autoattack(_NET, x, y, ThreatModel(), attacks_to_run=["apgd-ce"])
    with pytest.raises(ValueError, match="custom"):
        autoattack(_NET, x, y, ThreatModel(), version="custom")


@pytest.mark.slow
def test_autoattack_standard_is_at_least_as_strong_as_pgd():
    net = trained_digits_net()
    x, y = digits()[2][:64], digits()[3][:64]
    threat = ThreatModel(eps=0.06, step_size=0.015, steps=20)
    aa = accuracy(net, autoattack(net, x, y, threat, batch_size=64), y)
    pgd = accuracy(net, perturb(net, x, y, threat, cross_entropy), y)
    assert aa <= pgd + 1 / 64
