"""Dual BN in the supervised adversarial methods: TRADES and MART send clean inputs through the
``clean`` branch and the attack and adversarial inputs through ``adv`` (``split_bn``, default
on); stage-2 fine-tuning of a pre-trained dual-BN encoder trains one branch; the planner
refuses ``model.dual_bn`` for a method that has nothing to route."""

from __future__ import annotations

import pytest
import torch

from afa.attacks.threat import ThreatModel
from afa.errors import ConfigError
from afa.methods import MART, TRADES, AFAPretrain
from afa.methods.base import Batch
from afa.models import create_model
from afa.models.dual_bn import bn_branch, dual_bn_layers, set_bn_branch
from afa.runs import ClassifierConfig, parse_run_config
from afa.training.plan import build_method, build_stages, classifier_method

THREAT = ThreatModel(eps=8 / 255, step_size=2 / 255, steps=3)


def tiny(dual_bn: bool = True):
    torch.manual_seed(0)
    return create_model(
        "cnn", 3, in_channels=1, image_size=8, mean=(0.5,), std=(0.25,), width=4, dual_bn=dual_bn
    )


def batch(b: int = 6) -> Batch:
    g = torch.Generator().manual_seed(0)
    return Batch(torch.rand(b, 1, 8, 8, generator=g), torch.arange(b) % 3, lambda t: t)


def record_first_bn(model):
    """Every input of the first dual BN layer, by the branch that normalised it."""
    first = dual_bn_layers(model)[0]
    seen: dict[str, list[torch.Tensor]] = {"clean": [], "adv": []}
    for name in ("clean", "adv"):
        getattr(first, name).register_forward_hook(
            lambda _m, inputs, _out, name=name: seen[name].append(inputs[0].detach().clone())
        )
    return seen


@pytest.mark.parametrize("cls", [TRADES, MART])
def test_split_bn_routes_clean_and_adversarial_inputs(cls):
    model = tiny()
    method = cls(model, THREAT)
    method.train()
    seen = record_first_bn(model)
    x = batch().x
    out = method(batch())
    out.loss.backward()
    # The clean branch sees the clean batch only: TRADES' fixed clean prediction for its attack
    # and the clean forward; MART's clean forward.
    n_clean = 2 if cls is TRADES else 1
    assert len(seen["clean"]) == n_clean
    with torch.no_grad(), bn_branch(model, "clean"):
        model(x)  # what the first BN receives from the clean batch (no weight changed)
    assert all(torch.equal(s, seen["clean"][n_clean]) for s in seen["clean"][:n_clean])
    # The attack (one forward per step) and the adversarial forward run on adv, on inputs
    # other than the clean batch.
    assert len(seen["adv"]) == THREAT.steps + 1
    assert not any(torch.equal(s, seen["clean"][0]) for s in seen["adv"])
    # Both branches received gradients from their own forwards.
    first = dual_bn_layers(model)[0]
    assert first.clean.weight.grad.abs().sum() > 0 and first.adv.weight.grad.abs().sum() > 0
    assert method.splits_bn()


@pytest.mark.parametrize("cls", [TRADES, MART])
def test_split_bn_off_uses_the_default_branch_only(cls):
    model = tiny()
    set_bn_branch(model, "adv")
    method = cls(model, THREAT, cls.Config(split_bn=False))
    method.train()
    seen = record_first_bn(model)
    method(batch()).loss.backward()
    assert seen["clean"] == [] and len(seen["adv"]) >= THREAT.steps + 2
    assert not method.splits_bn()


@pytest.mark.parametrize("cls", [TRADES, MART])
def test_split_bn_is_a_no_op_without_dual_bn(cls):
    losses = []
    for split in (True, False):
        method = cls(tiny(dual_bn=False), THREAT, cls.Config(split_bn=split))
        method.train()
        torch.manual_seed(1)
        losses.append(method(batch()).loss.detach())
    torch.testing.assert_close(losses[0], losses[1], rtol=0, atol=0)


def test_aff_fine_tunes_one_branch():
    model = tiny()
    stage2 = classifier_method(AFAPretrain(model, THREAT), ClassifierConfig(protocol="aff"))
    assert isinstance(stage2, TRADES) and not stage2.config.split_bn and stage2.config.beta == 6.0


def _cfg(method: dict, dual_bn: bool = True):
    return parse_run_config(
        {"model": {"name": "cnn", "options": {"width": 4}, "dual_bn": dual_bn}, "method": method}
    )


@pytest.mark.parametrize(
    "method",
    [
        {"name": "pgd-at"},
        {"name": "standard"},
        {"name": "supcon"},
        {"name": "trades", "split_bn": False},
        {"name": "mart", "split_bn": False},
    ],
)
def test_planner_refuses_dual_bn_where_nothing_is_routed(method):
    cfg = _cfg(method)
    with pytest.raises(ConfigError, match=rf"model.dual_bn.*{method['name']!r}"):
        build_method(cfg, tiny())
    build_method(_cfg(method, dual_bn=False), tiny(dual_bn=False))  # fine with one BN


@pytest.mark.parametrize("name", ["trades", "mart", "afa", "afa-trades", "acl", "dynacl"])
def test_planner_accepts_dual_bn_for_routing_methods(name):
    stages = build_stages(_cfg({"name": name}), tiny())
    assert stages[0].method.splits_bn()
