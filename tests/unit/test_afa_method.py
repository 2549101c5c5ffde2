"""AFA pre-training, AFA + TRADES and SupCon methods on a tiny model."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

import afa.methods.afa_trades as afa_trades_mod
import afa.methods.contrastive as afa_mod
from afa.attacks.threat import ThreatModel
from afa.config import from_dict
from afa.errors import ConfigError
from afa.losses import AFALoss, Views, afa_loss
from afa.methods.afa import AFAPretrain
from afa.methods.afa_trades import AFATrades
from afa.methods.base import Batch
from afa.methods.contrastive import afa_objective, alignment_metrics, craft_afa_views
from afa.methods.supcon import SupConPretrain
from afa.models.base import Classifier, Normalize


class TinyNet(Classifier):
    """Flatten -> Linear -> BN -> ReLU -> Linear features; a linear head."""

    def __init__(self, num_classes: int = 3, side: int = 4, width: int = 32, feats: int = 16):
        super().__init__()
        self.normalize = Normalize([0.5], [0.25])
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(side * side, width),
            nn.BatchNorm1d(width),
            nn.ReLU(),
            nn.Linear(width, feats),
        )
        self.num_features = feats
        self.num_classes = num_classes
        self.head = nn.Linear(feats, num_classes)

    def encode(self, x):
        return self.body(x)


THREAT = ThreatModel(eps=0.1, step_size=0.03, steps=4)


def synthetic(n: int = 32, classes: int = 3, side: int = 4, seed: int = 0, noise: float = 0.15):
    """Class prototypes in [0.2, 0.8] plus noise: an easy, separated problem."""
    g = torch.Generator().manual_seed(seed)
    protos = 0.2 + 0.6 * torch.rand(
        classes, 1, side, side, generator=torch.Generator().manual_seed(99)
    )
    y = torch.arange(n) % classes
    x = (protos[y] + noise * torch.randn(n, 1, side, side, generator=g)).clamp(0, 1)
    return x, y


def jitter(x):
    return (x + 0.03 * torch.randn_like(x)).clamp(0, 1)


def batch(n=24, seed=0):
    x, y = synthetic(n, seed=seed)
    return Batch(x, y, jitter)


# ----------------------------------------------------------------------------- forward


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"denominator": "supcon", "anchors": "all", "head": "linear"},
        {"clean_views": 2, "adv_views": 2, "head": "none", "cross_view_positives": False},
        {"clean_views": 0, "adv_views": 2},
        {"attack_loss": "ce", "lambda_ce": 1.0},
        {"clean_anchor_weight": 0.5, "lambda_ce": 0.5, "ce_detach": False},
    ],
)
def test_afa_forward_backward(options):
    torch.manual_seed(0)
    model = TinyNet()
    method = AFAPretrain(model, THREAT, AFAPretrain.Config(**options))
    method.train()
    out = method(batch())
    assert torch.isfinite(out.loss)
    out.loss.backward()
    for key in (
        "loss",
        "afa_loss",
        "loss_over_chance",
        "cos_same",
        "cos_diff",
        "cos_gap",
        "valid_anchors",
        "eps",
    ):
        assert key in out.metrics and torch.isfinite(out.metrics[key]), key
        assert not out.metrics[key].requires_grad
    torch.testing.assert_close(
        out.metrics["cos_gap"], out.metrics["cos_same"] - out.metrics["cos_diff"]
    )
    c = method.config
    n_anchor = 24 * (c.adv_views + (c.clean_views if c.anchors == "all" else 0))
    assert out.metrics["valid_anchors"].item() == n_anchor  # every class has positives
    if c.head != "none":
        assert all(
            p.grad is not None and p.grad.abs().sum() > 0 for p in method.projector.parameters()
        )
    assert all(p.grad is not None for p in model.body.parameters())
    head_params = set(map(id, model.head.parameters()))
    trainable = set(map(id, method.trainable_parameters()))
    if c.lambda_ce > 0:
        assert "acc" in out.metrics or c.clean_views == 0
        assert "adv_acc" in out.metrics
        assert head_params <= trainable
        assert all(p.grad is not None for p in model.head.parameters())
    else:
        assert not head_params & trainable
        assert all(p.grad is None for p in model.head.parameters())
    if c.clean_anchor_weight:
        assert "clean_anchor_loss" in out.metrics


def test_pretraining_flags_and_names():
    assert AFAPretrain.name == "afa" and AFAPretrain.pretraining
    assert SupConPretrain.name == "supcon" and SupConPretrain.pretraining
    assert AFATrades.name == "afa-trades" and not AFATrades.pretraining


def test_projection_head_is_checkpointed_with_the_method():
    method = AFAPretrain(TinyNet(), THREAT)
    keys = method.state_dict().keys()
    assert any(k.startswith("projector.") for k in keys)
    assert any(k.startswith("model.head.") for k in keys)


def test_ce_detach_keeps_encoder_gradient_contrastive_only():
    def encoder_grads(options):
        torch.manual_seed(1)
        model = TinyNet()
        method = AFAPretrain(model, THREAT, AFAPretrain.Config(**options))
        torch.manual_seed(2)
        method(batch()).loss.backward()
        return [p.grad.clone() for p in model.body.parameters()]

    base = encoder_grads({})
    detached = encoder_grads({"lambda_ce": 1.0, "ce_detach": True})
    attached = encoder_grads({"lambda_ce": 1.0, "ce_detach": False})
    for a, b in zip(base, detached, strict=True):
        torch.testing.assert_close(a, b)
    assert any((a - b).abs().max() > 1e-6 for a, b in zip(base, attached, strict=True))


# ----------------------------------------------------------------------------- eps warm-up


def test_eps_warmup_changes_the_effective_eps(monkeypatch):
    seen = []
    real = afa_mod.perturb

    def spy(model, x, y, threat, objective, **kw):
        seen.append(threat)
        return real(model, x, y, threat, objective, **kw)

    monkeypatch.setattr(afa_mod, "perturb", spy)
    method = AFAPretrain(TinyNet(), THREAT, AFAPretrain.Config(eps_warmup_epochs=4))
    b = batch()
    for epoch, frac in [(0, 0.25), (1, 0.5), (3, 1.0), (7, 1.0)]:
        method.on_epoch_start(epoch, 10)
        out = method(b)
        assert seen[-1].eps == pytest.approx(THREAT.eps * frac)
        assert seen[-1].step_size == pytest.approx(THREAT.step_size * frac)
        assert seen[-1].steps == THREAT.steps
        assert out.metrics["eps"].item() == pytest.approx(THREAT.eps * frac)
    # no warm-up: the run's threat model itself
    plain = AFAPretrain(TinyNet(), THREAT)
    plain.on_epoch_start(0, 10)
    assert plain.current_threat is THREAT


def test_warmup_threat_bounds_the_crafted_views(monkeypatch):
    captured = {}
    real = afa_mod.perturb

    def spy(model, x, y, threat, objective, **kw):
        adv = real(model, x, y, threat, objective, **kw)
        captured["delta"] = (adv - x).abs().max().item()
        return adv

    monkeypatch.setattr(afa_mod, "perturb", spy)
    method = AFAPretrain(TinyNet(), THREAT.with_(steps=3), AFAPretrain.Config(eps_warmup_epochs=5))
    method.on_epoch_start(0, 5)
    method(batch())
    assert captured["delta"] <= THREAT.eps / 5 + 1e-6
    assert captured["delta"] > THREAT.eps / 10  # the attack does move


# ----------------------------------------------------------------------------- the attack


def _craft_setup(seed=0):
    torch.manual_seed(seed)
    model = TinyNet()
    method = AFAPretrain(model, THREAT)
    # a few steps of training so the features carry class structure
    opt = torch.optim.SGD(method.trainable_parameters(), lr=0.1)
    for i in range(5):
        opt.zero_grad()
        method(batch(seed=100 + i)).loss.backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    x, y = synthetic(30, seed=seed + 1)
    return method, x, y


def _objective_for(method, clean, starts, y, threat):
    b = y.shape[0]
    views = Views.stack(y, 1, 1)
    with torch.no_grad():
        method.eval()
        ref = method.embed(torch.cat([clean, starts]))
        method.train()
    return afa_objective(
        ref,
        views.labels,
        views.is_adv,
        y,
        torch.arange(b, 2 * b),
        AFALoss(temperature=0.1, denominator="negatives", cross_view_positives=True),
    )


def test_crafted_views_raise_the_afa_loss_over_random_noise_and_stay_in_the_ball():
    method, x, y = _craft_setup()
    threat = ThreatModel(eps=0.08, step_size=0.02, steps=10)
    clean, starts = jitter(x), jitter(x)
    params = {n: p.detach().clone() for n, p in method.named_parameters()}
    buffers = {n: b.clone() for n, b in method.named_buffers()}
    method.train()
    x_adv = craft_afa_views(
        method,
        method.embed,
        clean,
        starts,
        y,
        threat,
        AFALoss(temperature=0.1, denominator="negatives", cross_view_positives=True),
    )
    assert not x_adv.requires_grad
    assert (x_adv - starts).abs().max() <= threat.eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    # crafting touched neither the parameters, their .grad, the BN statistics nor the mode
    assert method.training and all(m.training for m in method.modules())
    for n, p in method.named_parameters():
        assert p.grad is None and torch.equal(p, params[n]) and p.requires_grad
    for n, b in method.named_buffers():
        assert torch.equal(b, buffers[n])

    objective = _objective_for(method, clean, starts, y, threat)
    idx = torch.arange(len(y))
    noise = (starts + (2 * torch.rand_like(starts) - 1) * threat.eps).clamp(0, 1)
    with torch.no_grad():
        method.eval()
        adv_loss = objective(method.embed(x_adv), idx)
        noise_loss = objective(method.embed(noise), idx)
        start_loss = objective(method.embed(starts), idx)
    assert adv_loss.mean() > noise_loss.mean() + 0.1
    assert adv_loss.mean() > start_loss.mean() + 0.1
    assert (adv_loss >= noise_loss - 1e-3).float().mean() > 0.9


def test_objective_equals_the_loss_terms_with_a_reference_set():
    method, x, y = _craft_setup()
    clean, starts = jitter(x), jitter(x)
    objective = _objective_for(method, clean, starts, y, THREAT)
    with torch.no_grad():
        method.eval()
        ref = method.embed(torch.cat([clean, starts]))
        z = method.embed(starts + 0.01)
    views = Views.stack(y, 1, 1)
    out = afa_loss(
        z,
        y,
        torch.ones_like(y, dtype=torch.bool),
        ref_z=ref,
        ref_labels=views.labels,
        ref_is_adv=views.is_adv,
        self_index=torch.arange(len(y), 2 * len(y)),
    )
    # permuted, subset indices: the objective is per example, whatever PGD evaluates
    perm = torch.randperm(len(y))[:7]
    torch.testing.assert_close(objective(z[perm], perm), out.per_anchor[perm])
    assert objective(z, torch.arange(len(y))).dtype == torch.float32


# ----------------------------------------------------------------------------- AFA + TRADES


@pytest.mark.parametrize("shared,expected_calls", [(True, 1), (False, 2)])
def test_shared_adversary_does_one_attack(monkeypatch, shared, expected_calls):
    calls = []

    def counting(real):
        def spy(model, x, y, threat, objective, **kw):
            calls.append(objective)
            return real(model, x, y, threat, objective, **kw)

        return spy

    monkeypatch.setattr(afa_trades_mod, "perturb", counting(afa_trades_mod.perturb))
    monkeypatch.setattr(afa_mod, "perturb", counting(afa_mod.perturb))
    torch.manual_seed(0)
    method = AFATrades(TinyNet(), THREAT, AFATrades.Config(shared_adversary=shared, head="mlp"))
    out = method(batch())
    assert len(calls) == expected_calls
    out.loss.backward()
    assert torch.isfinite(out.loss)
    for key in ("loss", "ce", "kl", "acc", "adv_acc", "afa_loss", "loss_over_chance", "cos_gap"):
        assert key in out.metrics
    assert all(p.grad is not None for p in method.projector.parameters())
    assert all(p.grad is not None for p in method.model.parameters())


def test_afa_trades_loss_is_the_sum_of_its_terms():
    torch.manual_seed(0)
    method = AFATrades(TinyNet(), THREAT, AFATrades.Config(beta=3.0, afa_weight=0.5))
    out = method(batch())
    m = out.metrics
    torch.testing.assert_close(out.loss.detach(), m["ce"] + 3.0 * m["kl"] + 0.5 * m["afa_loss"])
    method_ce = AFATrades(TinyNet(), THREAT, AFATrades.Config(attack_loss="ce"))
    assert torch.isfinite(method_ce(batch()).loss)


# ----------------------------------------------------------------------------- SupCon


def test_supcon_forward_is_clean_and_matches_the_loss():
    torch.manual_seed(0)
    method = SupConPretrain(TinyNet(), THREAT, SupConPretrain.Config(lambda_ce=0.5))
    b = batch()
    out = method(b)
    out.loss.backward()
    assert out.metrics["valid_anchors"].item() == 2 * len(b)
    assert "acc" in out.metrics and torch.isfinite(out.loss)
    assert all(p.grad is not None for p in method.projector.parameters())


# ----------------------------------------------------------------------------- config


def test_configs_validate_and_parse():
    cfg = from_dict(AFAPretrain.Config, {"temperature": "1/10", "adv_views": 2, "head": "linear"})
    assert cfg.temperature == pytest.approx(0.1) and cfg.adv_views == 2
    for bad in (
        {"temperature": 0.0},
        {"adv_views": 0},
        {"clean_views": -1},
        {"head_dim": 0},
        {"lambda_ce": -1.0},
        {"clean_views": 0, "clean_anchor_weight": 1.0},
    ):
        with pytest.raises(ConfigError):
            AFAPretrain.Config(**bad)
    with pytest.raises(ConfigError, match="method.denominator"):
        AFAPretrain.Config(denominator="simclr")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        from_dict(AFATrades.Config, {"shared_adversery": True})
    with pytest.raises(ConfigError):
        SupConPretrain.Config(views=0)
    assert dataclasses.asdict(AFATrades.Config())["afa_weight"] == 1.0


# ----------------------------------------------------------------------------- training


def _train(method, steps, lr=0.05, seed=0):
    torch.manual_seed(seed)
    opt = torch.optim.SGD(method.trainable_parameters(), lr=lr, momentum=0.9)
    method.train()
    history = []
    for i in range(steps):
        out = method(batch(n=30, seed=1000 + i))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        history.append({k: float(v) for k, v in out.metrics.items()})
    return history


def _mean(history, key, sl):
    values = [h[key] for h in history[sl]]
    return sum(values) / len(values)


def test_afa_training_lowers_the_loss_and_aligns_classes():
    torch.manual_seed(0)
    method = AFAPretrain(
        TinyNet(),
        ThreatModel(eps=0.05, step_size=0.02, steps=3),
        AFAPretrain.Config(head="linear", head_dim=16),
    )
    hist = _train(method, 100)
    first, last = _mean(hist, "afa_loss", slice(0, 3)), _mean(hist, "afa_loss", slice(-10, None))
    assert last < 0.6 * first, (first, last)
    assert _mean(hist, "loss_over_chance", slice(-10, None)) < 0.5
    assert _mean(hist, "cos_gap", slice(-10, None)) > _mean(hist, "cos_gap", slice(0, 3)) + 0.2


def test_supcon_training_lowers_the_loss():
    torch.manual_seed(0)
    method = SupConPretrain(TinyNet(), THREAT, SupConPretrain.Config(head="linear", head_dim=16))
    hist = _train(method, 100)
    first, last = _mean(hist, "afa_loss", slice(0, 3)), _mean(hist, "afa_loss", slice(-10, None))
    # SupCon's floor is log |P(i)| (the positives share the denominator): log 19 = 2.94 here
    assert last < first - 0.2 and last < math.log(19) + 0.2, (first, last)
    assert _mean(hist, "cos_gap", slice(-10, None)) > _mean(hist, "cos_gap", slice(0, 3)) + 0.2


# ----------------------------------------------------------------------------- precision, metrics


def test_afa_forward_under_bf16_autocast_gives_a_float32_loss():
    torch.manual_seed(0)
    method = AFAPretrain(TinyNet(), THREAT, AFAPretrain.Config(lambda_ce=0.5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = method(batch())
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in method.projector.parameters())


def test_alignment_metrics_on_known_geometry():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    z = torch.eye(3)[labels] * 5.0  # same class: cosine 1; other class: cosine 0
    m = alignment_metrics(z, -z, labels)
    assert m["cos_same"].item() == pytest.approx(1.0)
    assert m["cos_diff"].item() == pytest.approx(0.0)
    assert m["cos_gap"].item() == pytest.approx(1.0)
    # the collapse indicator's statistics are of g(x) (here -z: classes are points)
    assert m["feat_separation"].item() == pytest.approx(1.0)
    assert m["feat_erank"].item() == pytest.approx(2.0)  # 3 points span a plane
    collapsed = alignment_metrics(torch.ones(6, 4), torch.ones(6, 4), labels)
    assert collapsed["cos_gap"].item() == pytest.approx(0.0, abs=1e-6)
    assert collapsed["feat_separation"].item() == 0.0 and collapsed["feat_erank"].item() == 0.0
    one_class = alignment_metrics(torch.randn(4, 3), torch.randn(4, 3), torch.zeros(4).long())
    assert torch.isfinite(one_class["cos_diff"]) and one_class["cos_diff"].item() == 0.0
    assert one_class["feat_separation"].item() == 0.0  # undefined: 0, never a NaN


# ------------------------------------------------------------- the cheaper AFA adversary


def test_afa_adversary_takes_its_own_steps_and_step_size(monkeypatch):
    seen = []

    def spy(model, x, y, threat, objective, **kw):
        seen.append((threat.steps, threat.step_size, kw.get("init") is not None))
        return real(model, x, y, threat, objective, **kw)

    real = afa_mod.perturb
    monkeypatch.setattr(afa_mod, "perturb", spy)
    config = AFATrades.Config(afa_steps=1, afa_step_size=0.1, afa_init="trades")
    out = AFATrades(TinyNet(), THREAT, config)(batch())
    assert torch.isfinite(out.loss)
    assert seen == [(1, 0.1, True)]  # the TRADES attack keeps the run's threat model


def test_afa_adversary_started_at_trades_with_no_step_is_the_shared_adversary():
    """afa_init=trades with 0 AFA steps anchors AFA at x̃_T: the shared adversary's loss."""
    losses = []
    for config in (
        AFATrades.Config(shared_adversary=True),
        AFATrades.Config(afa_steps=0, afa_init="trades"),
    ):
        torch.manual_seed(0)
        model = TinyNet()
        torch.manual_seed(1)
        losses.append(AFATrades(model, THREAT, config)(batch()).loss)
    torch.testing.assert_close(losses[0], losses[1])


def test_afa_adversary_started_at_trades_stays_in_the_ball_and_raises_its_loss():
    torch.manual_seed(0)
    model = TinyNet().eval()
    method = AFATrades(model, THREAT, AFATrades.Config())
    x, y = synthetic(24)
    start = (x + THREAT.eps * torch.sign(torch.randn_like(x))).clamp(0, 1)
    views = craft_afa_views(method, method.embed, x, x, y, THREAT, method.criterion, init=start)
    assert (views - x).abs().max() <= THREAT.eps + 1e-6
    assert views.min() >= 0 and views.max() <= 1

    def afa_term(adv):
        with torch.no_grad():
            z = torch.cat([method.embed(x), method.embed(adv)])
            return method.criterion(z, Views.stack(y, 1, 1)).loss

    assert afa_term(views) > afa_term(start)


@pytest.mark.parametrize("key,value", [("afa_steps", -1), ("afa_step_size", -0.1)])
def test_afa_adversary_options_are_checked(key, value):
    with pytest.raises(ConfigError, match=f"method.{key}"):
        AFATrades.Config(**{key: value})
    with pytest.raises(ConfigError, match="method.afa_init"):
        AFATrades.Config(afa_init="clean")


@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_afa_trades_reuses_its_clean_forward_as_the_attack_reference(monkeypatch, bn_mode):
    """The reference features AFA + TRADES passes its AFA attack are the ones the attack
    would compute itself: the same adversaries and the same loss."""
    threat = THREAT.with_(bn_mode=bn_mode)
    real = afa_trades_mod.craft_afa_views
    losses, refs = [], []

    def recompute(*args, reference=None, **kw):
        refs.append(reference)
        return real(*args, **kw)

    for patch in (False, True):
        if patch:
            monkeypatch.setattr(afa_trades_mod, "craft_afa_views", recompute)
        torch.manual_seed(0)
        method = AFATrades(TinyNet(), threat, AFATrades.Config(head="mlp"))
        torch.manual_seed(1)
        losses.append(method(batch()).loss)
    assert refs[0] is not None
    torch.testing.assert_close(losses[0], losses[1])
