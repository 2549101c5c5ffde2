"""Every registered method keeps the method contract (as timm tests every model).

The traits the planner and the loop ask a method for are checked here too: the collapse
advice names only options the method has, and the selection metric follows from the
method's own clean/adversarial trait.
"""

from __future__ import annotations

import dataclasses

import pytest

from afa.attacks.threat import ThreatModel
from afa.methods import METHODS, LinearProbe, method_config_class
from afa.models import create_model

NAMES = METHODS.names()
THREAT = ThreatModel(eps=0.1, step_size=0.05, steps=2)


def tiny_model():
    return create_model("cnn", 3, in_channels=1, image_size=8, mean=(0.5,), std=(0.25,), width=4)


@pytest.mark.parametrize("name", NAMES)
def test_collapse_advice_names_only_the_methods_own_options(name):
    cls = METHODS.get(name)
    fields = {f.name for f in dataclasses.fields(method_config_class(cls))}
    for remedy in cls.collapse_remedies:
        assert remedy.startswith("method."), remedy
        key = remedy.removeprefix("method.").split("=")[0]
        assert key in fields, f"{name}: the collapse advice names {remedy}, not an option"


@pytest.mark.parametrize("name", ["supcon", "afa-trades"])
def test_collapse_warning_of_other_methods_names_no_afa_only_option(name):
    method = METHODS.get(name)(tiny_model(), THREAT)
    msg = method.collapse_message({"cos_gap": 0.01, "loss_over_chance": 1.0}, epoch=5)
    assert msg is not None and "collapsed" in msg
    assert "eps_warmup_epochs" not in msg and "clean_anchor_weight" not in msg
    assert method.collapse_message({"cos_gap": 0.01}, epoch=3) is None  # grace epochs
    assert method.collapse_message({"cos_gap": 0.3}, epoch=5) is None


def test_selection_metric_follows_the_methods_traits():
    model = tiny_model()
    by_name = {n: METHODS.get(n)(model, THREAT) for n in NAMES}
    assert by_name["standard"].selection_metric() == "val/clean_acc"
    for n in ("pgd-at", "trades", "mart", "afa-trades"):
        assert by_name[n].selection_metric() == "val/pgd_acc"
    for n in ("afa", "supcon"):
        assert by_name[n].selection_metric() is None  # pre-training: the head means nothing
    clean_probe = LinearProbe(model, THREAT)
    adv_probe = LinearProbe(model, THREAT, LinearProbe.Config(adversarial=True))
    assert clean_probe.selection_metric(after=[by_name["supcon"]]) == "val/clean_acc"
    assert clean_probe.selection_metric(after=[by_name["afa"]]) == "val/pgd_acc"
    assert adv_probe.selection_metric(after=[by_name["supcon"]]) == "val/pgd_acc"
    with pytest.raises(TypeError, match="end to end"):
        by_name["pgd-at"].classifier_method("linear", "trades", 6.0)
    assert isinstance(by_name["afa"].classifier_method("linear", "trades", 6.0), LinearProbe)
