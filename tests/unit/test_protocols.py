"""Stage-2 protocols: the benchmark's names (slf / alf / aff), the earlier names as aliases,
each protocol's defaults where the config does not set a key, and the batch rule."""

from __future__ import annotations

import pytest

from afa.attacks import ThreatModel
from afa.config import to_dict
from afa.errors import ConfigError
from afa.finetune import parse_protocols
from afa.methods import METHODS
from afa.methods.probe import LinearProbe
from afa.methods.trades import TRADES
from afa.models import create_model
from afa.runs import (
    PROTOCOL_DEFAULTS,
    ClassifierConfig,
    adversarial_epochs,
    parse_run_config,
)
from afa.training.plan import classifier_method


def _cfg(classifier=None, method="afa", **train):
    raw = {"method": {"name": method}, "train": {"epochs": 3, **train}}
    if classifier is not None:
        raw["classifier"] = classifier
    return parse_run_config(raw)


@pytest.mark.parametrize(
    ("alias", "name"), [("linear", "slf"), ("linear-adv", "alf"), ("finetune", "aff")]
)
def test_earlier_names_load_as_the_benchmark_names(alias, name):
    old, new = _cfg({"protocol": alias}), _cfg({"protocol": name})
    assert old.classifier.protocol == name
    assert old == new  # same defaults, same run
    # the saved config says the new name, and reading it back changes nothing
    assert parse_run_config(to_dict(old)) == old


@pytest.mark.parametrize("protocol", ["slf", "alf", "aff"])
def test_each_protocol_takes_the_benchmark_defaults(protocol):
    c = _cfg({"protocol": protocol}).classifier
    d = PROTOCOL_DEFAULTS[protocol]
    assert c.epochs == d["epochs"] == 25
    assert (c.optimizer.name, c.optimizer.momentum, c.optimizer.weight_decay) == ("sgd", 0.9, 2e-4)
    lr, milestones = (0.1, (0.6, 0.8)) if protocol == "aff" else (0.01, (0.4, 0.8))
    assert c.optimizer.lr == lr and c.schedule.milestones == milestones
    assert c.schedule.name == "piecewise" and c.schedule.gamma == 0.1
    # epochs 10 and 20 (SLF/ALF) or 15 and 20 (AFF) of 25
    assert [round(m * c.epochs) for m in c.schedule.milestones] == (
        [15, 20] if protocol == "aff" else [10, 20]
    )
    assert c.batch_size is None  # after pre-training in the same run: the run's batch


def test_no_section_and_the_dataclass_default_are_slf():
    assert _cfg().classifier == _cfg({"protocol": "slf"}).classifier == ClassifierConfig()


def test_what_the_config_sets_wins_nested_keys_keep_the_protocol_defaults():
    c = _cfg({"protocol": "aff", "epochs": 4, "optimizer": {"lr": 0.05}}).classifier
    assert c.epochs == 4 and c.optimizer.lr == 0.05
    assert c.optimizer.weight_decay == 2e-4  # not OptimConfig's own 5e-4
    assert c.schedule.milestones == (0.6, 0.8)
    # an override of the protocol alone switches every default with it
    cfg = parse_run_config({"method": {"name": "supcon"}}, ["classifier.protocol=aff"])
    assert cfg.classifier.optimizer.lr == 0.1


def test_batch_size_of_a_classifier_only_run_and_of_a_shared_loader():
    for protocol, batch in (("slf", 512), ("alf", 512), ("aff", 128)):
        c = _cfg({"protocol": protocol, "encoder": "pre/last.pt"}).classifier
        assert c.batch_size == batch
    assert _cfg({"encoder": "x.pt", "batch_size": 64}).classifier.batch_size == 64
    assert _cfg({"batch_size": 32}, batch_size=32).classifier.batch_size == 32
    with pytest.raises(
        ConfigError, match=r"classifier.batch_size: 64 differs from train.batch_size 32"
    ):
        _cfg({"batch_size": 64}, batch_size=32)
    with pytest.raises(ConfigError, match="classifier.epochs: expected >= 1"):
        _cfg({"epochs": 0})


def test_unknown_protocol_names_the_closest():
    with pytest.raises(ConfigError, match=r"classifier.protocol: .*'sfl'.*did you mean 'slf'"):
        _cfg({"protocol": "sfl"})


def test_adversarial_budget_by_protocol():
    # afa pre-trains adversarially (3 epochs); ALF / AFF add their own epochs, SLF none
    assert adversarial_epochs(_cfg({"protocol": "linear", "epochs": 2})) == 3
    assert adversarial_epochs(_cfg({"protocol": "alf", "epochs": 2})) == 5
    assert adversarial_epochs(_cfg({"protocol": "finetune", "epochs": 2})) == 5
    assert adversarial_epochs(_cfg({"protocol": "slf", "epochs": 2}, method="supcon")) == 0


@pytest.mark.parametrize("name", ["afa", "supcon", "acl", "dynacl"])
def test_every_pretraining_method_builds_each_protocol(name):
    model = create_model("cnn", 10, in_channels=1, image_size=8, mean=(0.5,), std=(0.5,), width=4)
    method = METHODS.get(name)(model, ThreatModel())
    for protocol, alias in (("slf", "linear"), ("alf", "linear-adv")):
        probe = classifier_method(method, ClassifierConfig(protocol=protocol))
        assert isinstance(probe, LinearProbe)
        assert probe.config.adversarial == (protocol == "alf")
        # an earlier name reaches the planner as the canonical one (the schema replaced it)
        loaded = _cfg({"protocol": alias}, method=name).classifier
        assert classifier_method(method, loaded).config == probe.config
    aff = classifier_method(method, ClassifierConfig(protocol="aff", beta=3.0))
    assert isinstance(aff, TRADES) and aff.config.beta == 3.0
    with pytest.raises(ValueError, match="expected slf, alf or aff"):
        classifier_method(method, ClassifierConfig(protocol="sfl"))  # type: ignore[arg-type]


def test_parse_protocols():
    assert parse_protocols("slf,alf,aff") == ["slf", "alf", "aff"]
    assert parse_protocols("finetune, linear") == ["aff", "slf"]
    for bad, needle in (
        ("slf,,aff", "comma list"),
        ("slf,xyz", "unknown protocol 'xyz'"),
        ("slf,linear", "each protocol once"),
    ):
        with pytest.raises(ConfigError, match=needle):
            parse_protocols(bad)
