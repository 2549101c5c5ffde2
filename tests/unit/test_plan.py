"""The planner: stages per method, checkpoint selection metric, the adversarial budget."""

from __future__ import annotations

import dataclasses

import pytest

import afa.runs.schema as schema
from afa.methods import ACL, PGDAT, AFAPretrain, LinearProbe, SupConPretrain
from afa.methods.trades import TRADES
from afa.models import create_model
from afa.runs import adversarial_epochs, parse_run_config
from afa.training import LoopOptions, RunSpec
from afa.training.plan import build_method, build_stages, loop_options


def _stages(raw):
    cfg = parse_run_config(raw)
    model = create_model("cnn", 10, in_channels=1, image_size=8, mean=[0.5], std=[0.25], width=4)
    return cfg, build_stages(cfg, model)


@pytest.mark.parametrize(
    ("method", "metric"),
    [("standard", "val/clean_acc"), ("pgd-at", "val/pgd_acc"), ("trades", "val/pgd_acc")],
)
def test_end_to_end_methods_have_one_stage_selected_by_the_right_metric(method, metric):
    cfg, stages = _stages({"method": {"name": method}, "train": {"epochs": 7}})
    assert [s.name for s in stages] == ["train"]
    assert stages[0].select_by == metric and stages[0].epochs == 7


def test_afa_pretrains_then_probes_and_selects_by_pgd_in_stage_two():
    cfg, stages = _stages(
        {
            "method": {"name": "afa"},
            "train": {"epochs": 5},
            "classifier": {"protocol": "linear", "epochs": 3},
        }
    )
    assert [s.name for s in stages] == ["pretrain", "classifier"]
    assert isinstance(stages[0].method, AFAPretrain) and stages[0].select_by is None
    assert isinstance(stages[1].method, LinearProbe) and not stages[1].method.config.adversarial
    assert stages[1].select_by == "val/pgd_acc"
    assert stages[0].method.model is stages[1].method.model  # one classifier through the run
    assert adversarial_epochs(cfg) == 5


def test_finetune_and_linear_adv_count_in_the_adversarial_budget():
    cfg, stages = _stages(
        {
            "method": {"name": "afa"},
            "train": {"epochs": 5},
            "classifier": {"protocol": "finetune", "epochs": 2, "beta": 3.0},
        }
    )
    assert isinstance(stages[1].method, TRADES) and stages[1].method.config.beta == 3.0
    assert adversarial_epochs(cfg) == 7
    cfg, stages = _stages(
        {
            "method": {"name": "afa"},
            "train": {"epochs": 5},
            "classifier": {"protocol": "linear-adv", "epochs": 2},
        }
    )
    assert stages[1].method.config.adversarial and adversarial_epochs(cfg) == 7


def test_clean_supcon_with_a_linear_probe_is_selected_by_clean_accuracy():
    cfg, stages = _stages({"method": {"name": "supcon"}})
    assert isinstance(stages[0].method, SupConPretrain)
    assert stages[1].select_by == "val/clean_acc"
    assert adversarial_epochs(cfg) == 0


@pytest.mark.parametrize("method", ["afa", "supcon", "acl", "dynacl"])
@pytest.mark.parametrize(
    ("classifier", "kind", "adversarial"),
    [
        ({"protocol": "slf"}, LinearProbe, False),
        ({"protocol": "alf"}, LinearProbe, True),
        ({"protocol": "aff"}, TRADES, None),
        ({"protocol": "aff", "finetune_method": "pgd-at"}, PGDAT, None),
        ({"protocol": "linear-adv"}, LinearProbe, True),  # an earlier name, made canonical
    ],
)
def test_the_planner_chooses_stage_two_by_the_protocol(method, classifier, kind, adversarial):
    cfg, stages = _stages({"method": {"name": method}, "classifier": classifier})
    first, second = (s.method for s in stages)
    assert type(second) is kind
    assert second.model is first.model and second.threat == cfg.threat
    if kind is LinearProbe:
        assert second.config.adversarial is adversarial
    if kind is TRADES:
        # AFF trains the one branch model.bn_branch names, with the protocol's beta
        assert not second.config.split_bn and second.config.beta == cfg.classifier.beta
    # the pre-training methods say only that they pre-train: the choice is the planner's
    assert not hasattr(type(first), "classifier_method")


def test_method_options_are_parsed_once_and_built_from_the_typed_object(monkeypatch):
    parsed = []
    real = schema.from_dict

    def counting(cls, data, key=""):
        parsed.append(cls)
        return real(cls, data, key)

    monkeypatch.setattr(schema, "from_dict", counting)
    cfg = parse_run_config({"method": {"name": "acl", "temperature": 0.2}})
    model = create_model("cnn", 10, in_channels=1, image_size=8, mean=[0.5], std=[0.25], width=4)
    method = build_method(cfg, model)
    assert parsed.count(ACL.Config) == 1  # by the schema, not again by the planner
    assert method.config is cfg.method_options and method.config.temperature == 0.2
    # the saved config stays the plain, fully resolved mapping
    assert cfg.method == {"name": "acl", **dataclasses.asdict(ACL.Config(temperature=0.2))}
    # a RunConfig made another way (not parsed) still gives the typed options, once
    other = dataclasses.replace(cfg, name="other")
    assert other.method_options == cfg.method_options
    assert other.method_options is other.method_options


def test_loop_options_carry_every_loop_setting_of_the_train_section():
    cfg = parse_run_config(
        {
            "train": {
                "batch_size": 32,
                "seed": 3,
                "precision": "bf16",
                "channels_last": True,
                "compile": True,
                "sync_bn": True,
                "ema": {"decay": 0.99, "use_for_eval": False},
                "eval_every": 4,
                "val_examples": 200,
                "log_every": 7,
            }
        }
    )
    opt = loop_options(cfg.train)
    assert opt.val_batch_size == 32
    for f in dataclasses.fields(LoopOptions):
        if f.name != "val_batch_size":  # every other setting keeps its TrainConfig name
            assert getattr(opt, f.name) == getattr(cfg.train, f.name), f.name
    assert loop_options(parse_run_config({}).train) == LoopOptions()  # the same defaults
    # and none of them is left at its default by the planner
    assert all(
        getattr(opt, f.name) != getattr(LoopOptions(), f.name) for f in dataclasses.fields(opt)
    )


def test_a_run_spec_refuses_extra_entries_that_would_overwrite_the_payload(tmp_path):
    RunSpec(tmp_path, extra={"dataset_info": {}})
    with pytest.raises(ValueError, match=r"clash with the payload: \['best', 'model'\]"):
        RunSpec(tmp_path, extra={"model": {}, "best": None, "dataset_info": {}})
