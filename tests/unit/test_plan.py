"""The planner: stages per method, checkpoint selection metric, the adversarial budget."""

from __future__ import annotations

import dataclasses

import pytest

from afa.methods import AFAPretrain, LinearProbe, SupConPretrain
from afa.methods.trades import TRADES
from afa.models import create_model
from afa.training import LoopOptions, RunSpec
from afa.training.plan import adversarial_epochs, build_stages, loop_options, parse_run_config


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
