"""ACL, DynACL and the clean contrastive term of afa / afa-trades: loss values against their
formulas, DynACL's weight schedule, the attack (joint, on the adversarial BN branch, inside the
ball, raising the pair's NT-Xent) and the routing of clean and adversarial views."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from afa.attacks.threat import ThreatModel
from afa.errors import ConfigError
from afa.losses import afa_loss
from afa.methods import ACL, AFAPretrain, AFATrades, DynACL
from afa.methods.base import Batch
from afa.methods.clean_term import clean_adv_weights, dynacl_adv_weight
from afa.models import create_model
from afa.models.dual_bn import DualBatchNorm, dual_bn_layers

THREAT = ThreatModel(eps=8 / 255, step_size=2 / 255, steps=3)


def tiny(dual_bn: bool = True):
    torch.manual_seed(0)
    return create_model(
        "cnn", 3, in_channels=1, image_size=8, mean=(0.5,), std=(0.25,), width=4, dual_bn=dual_bn
    )


def batch(b: int = 6, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 1, 8, 8, generator=g)
    y = torch.arange(b) % 3

    def augment(t):  # a different small shift per call, so two views differ
        return (t + 0.05 * torch.randn_like(t)).clamp(0, 1)

    return Batch(x, y, augment)


def ntxent_reference(z: torch.Tensor, t: float) -> torch.Tensor:
    """SimCLR's NT-Xent written as cross-entropy over similarities (rows i and i + B pair)."""
    z = F.normalize(z.double(), dim=1)
    n = z.shape[0]
    s = z @ z.T / t
    s = s.masked_fill(torch.eye(n, dtype=torch.bool), float("-inf"))
    target = (torch.arange(n) + n // 2) % n
    return F.cross_entropy(s, target)


class Capture(torch.nn.Module):
    """Wraps a criterion and records the features it is called with."""

    def __init__(self, crit):
        super().__init__()
        self.crit, self.seen = crit, []

    def forward(self, z, *args):
        self.seen.append(z.detach().clone())
        return self.crit(z, *args)

    def terms(self, *args):  # the AFA attack's scoring, not recorded
        return self.crit.terms(*args)


# --- the weights --------------------------------------------------------------------------------


def test_dynacl_weight_schedule_is_their_formula():
    # Their loop: epoch = e + 1 in 1..1000, w = min(1 + (epoch // 50) * (50 / 1000) * 2/3, 2).
    for e in (0, 48, 49, 50, 500, 999):
        theirs = min(1.0 + ((e + 1) // 50) * (50 / 1000) * (2 / 3), 2.0)
        assert dynacl_adv_weight(e, 1000) == pytest.approx(theirs)
    assert dynacl_adv_weight(999, 1000) == pytest.approx(1 + 20 * 0.05 * 2 / 3)
    assert dynacl_adv_weight(10_000, 100, k=1, swap=5.0) == 2.0  # capped
    assert clean_adv_weights("acl", 3, 10) == (0.5, 0.5)
    assert clean_adv_weights("none", 3, 10) == (0.0, 1.0)
    w = dynacl_adv_weight(120, 200)
    assert clean_adv_weights("dynacl", 120, 200) == pytest.approx(((2 - w) / 2, w / 2))


# --- ACL / DynACL ------------------------------------------------------------------------------


@pytest.mark.parametrize(("cls", "epoch"), [(ACL, 0), (DynACL, 0), (DynACL, 149)])
def test_loss_is_the_weighted_ntxent_of_the_clean_and_adversarial_pairs(cls, epoch):
    method = cls(tiny(), THREAT)
    method.on_epoch_start(epoch, 200)
    spy = Capture(method.criterion)
    method.criterion = spy
    out = method(batch())
    z_clean, z_adv = spy.seen
    w = 1.0 if cls is ACL else dynacl_adv_weight(epoch, 200)
    expected = ((2 - w) * ntxent_reference(z_clean, 0.5) + w * ntxent_reference(z_adv, 0.5)) / 2
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert out.metrics["ntxent_chance"].item() == pytest.approx(math.log(11))
    if cls is DynACL and epoch == 149:
        assert w > 1.0 and out.metrics["adv_weight"].item() == pytest.approx(w / 2)


def test_attack_is_joint_on_the_adversarial_branch_and_raises_the_pair_loss():
    method = ACL(tiny(), THREAT).eval()
    seen_branches = []
    embed = method.embed

    def spy(x):
        seen_branches.append({m.branch for m in dual_bn_layers(method)})
        return embed(x)

    method.embed = spy
    b = batch()
    pair = torch.cat([b.view(), b.view()])
    adv = method.craft_pair(pair)
    assert seen_branches and all(s == {"adv"} for s in seen_branches)
    assert {m.branch for m in dual_bn_layers(method)} == {"clean"}  # restored
    assert (adv - pair).abs().max() <= THREAT.eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert method.attack_threat().steps == 5  # ACL's pgd_iter, not the run's PGD-3
    with torch.no_grad(), method.model.bn_branch("adv"):
        before = ntxent_reference(method.projector(method.model.features(pair)), 0.5)
        after = ntxent_reference(method.projector(method.model.features(adv)), 0.5)
    assert after > before
    # Joint: the adversary of view 1 depends on view 2 (change view 2, view 1's delta moves).
    torch.manual_seed(0)
    a1 = method.craft_pair(pair)
    other = pair.clone()
    other[6:] = torch.rand_like(other[6:])
    torch.manual_seed(0)
    a2 = method.craft_pair(other)
    assert not torch.allclose(a1[:6], a2[:6])


def test_acl_routes_clean_and_adversarial_pairs_through_their_branches():
    method = ACL(tiny(), THREAT)
    assert any(isinstance(m, DualBatchNorm) for m in method.projector.modules())
    layers = dual_bn_layers(method)
    before = [
        (m.clean.num_batches_tracked.item(), m.adv.num_batches_tracked.item()) for m in layers
    ]
    method.train()(batch()).loss.backward()
    after = [(m.clean.num_batches_tracked.item(), m.adv.num_batches_tracked.item()) for m in layers]
    # One training forward per branch (the attack runs in eval mode and moves no statistics).
    assert all(a == (c + 1, d + 1) for (c, d), a in zip(before, after, strict=True))
    assert method.model.head.weight.grad is None  # self-supervised: the classifier is not trained
    head = {id(p) for p in method.model.head.parameters()}
    assert all(id(p) not in head for p in method.trainable_parameters())


def test_acl_head_and_options():
    d = tiny().num_features
    method = ACL(tiny(dual_bn=False), THREAT, ACL.Config(head_layers=3, head_dim=7))
    linears = [m for m in method.projector if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [d, d, 7]
    assert ACL(tiny(), THREAT).projector[-1].clean.num_features == d  # ACL: output width d
    with pytest.raises(ConfigError, match="head_layers"):
        ACL.Config(head_layers=4)
    with pytest.raises(ConfigError, match="dynacl_k"):
        DynACL.Config(dynacl_k=0)
    assert ACL(tiny(), THREAT, ACL.Config(attack_steps=None)).attack_threat() == THREAT


# --- the clean term of afa and afa-trades ------------------------------------------------------


def test_afa_clean_term_is_half_clean_supcon_plus_half_afa():
    method = AFAPretrain(
        tiny(), THREAT, AFAPretrain.Config(clean_views=2, clean_term="acl", head="linear")
    )
    spy = Capture(method.criterion)
    method.criterion = spy
    b = batch()
    out = method(b)
    (z,) = spy.seen
    y = b.y
    labels = y.repeat(3)
    is_adv = torch.tensor([False] * 12 + [True] * 6)
    main = afa_loss(z, labels, is_adv).loss
    clean = afa_loss(z[:12], y.repeat(2), torch.zeros(12, dtype=torch.bool), anchors="all").loss
    assert out.loss.item() == pytest.approx((0.5 * clean + 0.5 * main).item(), rel=1e-5)
    assert out.metrics["clean_term_loss"].item() == pytest.approx(clean.item(), rel=1e-5)
    with pytest.raises(ConfigError, match="clean_views >= 2"):
        AFAPretrain.Config(clean_term="acl")


def test_afa_dual_bn_routes_views_and_attack():
    method = AFAPretrain(tiny(), THREAT, AFAPretrain.Config(clean_views=2, clean_term="dynacl"))
    method.on_epoch_start(99, 100)
    layers = dual_bn_layers(method)
    seen = []
    embed = method.embed

    def spy(x):
        seen.append({m.branch for m in layers})
        return embed(x)

    method.embed = spy
    out = method.train()(batch())
    # The contrast set's clean rows on the clean branch, the attack on the adversarial one.
    assert {"clean"} in seen and {"adv"} in seen and len(seen) == THREAT.steps + 2
    assert all(m.clean.num_batches_tracked == 1 and m.adv.num_batches_tracked == 1 for m in layers)
    w = dynacl_adv_weight(99, 100)
    assert out.metrics["clean_term_weight"].item() == pytest.approx((2 - w) / 2)


def test_afa_trades_clean_term_formula():
    method = AFATrades(tiny(), THREAT, AFATrades.Config(clean_term="acl"))
    out = method.train()(batch())
    m = out.metrics
    contrastive = 0.5 * m["clean_term_loss"] + 0.5 * m["afa_loss"]
    expected = m["ce"] + 6.0 * m["kl"] + 1.0 * contrastive
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    plain = AFATrades(tiny(), THREAT).train()(batch())
    assert "clean_term_loss" not in plain.metrics
