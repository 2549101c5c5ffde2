"""Training options parse strictly through afa.config.from_dict."""

from __future__ import annotations

import pytest

from afa.config import from_dict, to_dict
from afa.errors import ConfigError
from afa.training import EMAConfig, OptimConfig, ScheduleConfig, TrainConfig


def test_defaults_round_trip_through_plain_dicts():
    cfg = TrainConfig()
    assert from_dict(TrainConfig, to_dict(cfg)) == cfg
    # Rice et al.: x0.1 at 50% and 75% of training; plain momentum SGD, wd 5e-4 on all
    assert cfg.schedule == ScheduleConfig("piecewise", 0.0, (0.5, 0.75), 0.1, 0.0)
    assert cfg.optimizer == OptimConfig("sgd", 0.1, 0.9, False, 5e-4, (0.9, 0.999))
    assert not cfg.ema.enabled and cfg.precision == "fp32" and cfg.grad_clip is None


def test_nested_values_parse_with_their_types():
    cfg = from_dict(
        TrainConfig,
        {
            "epochs": 10,
            "optimizer": {"name": "adamw", "lr": "1/1000", "betas": [0.9, 0.95]},
            "schedule": {"name": "cosine", "warmup_epochs": 0.5, "min_lr": 0},
            "ema": {"decay": 0.995},
            "precision": "bf16",
            "grad_clip": 1,
            "val_examples": None,
        },
    )
    assert cfg.optimizer.lr == 0.001 and cfg.optimizer.betas == (0.9, 0.95)
    assert cfg.schedule.warmup_epochs == 0.5 and cfg.schedule.min_lr == 0.0
    assert cfg.ema == EMAConfig(decay=0.995, warmup=True, use_for_eval=True) and cfg.ema.enabled
    assert cfg.grad_clip == 1.0 and cfg.val_examples is None and cfg.precision == "bf16"


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"epoch": 3}, "unknown key 'epoch' (did you mean 'epochs'?)"),
        (
            {"optimizer": {"momentun": 0.9}},
            "unknown key 'optimizer.momentun' (did you mean 'optimizer.momentum'?)",
        ),
        ({"precision": "fp8"}, "precision: expected 'fp32' or 'bf16' or 'fp16', got 'fp8'"),
        ({"epochs": "ten"}, "epochs: expected an integer, got 'ten'"),
        ({"optimizer": {"lr": -1}}, "optimizer: lr: expected > 0"),
        ({"schedule": {"milestones": [0.75, 0.5]}}, "schedule: milestones: expected increasing"),
        ({"schedule": {"milestones": [50, 75]}}, "schedule: milestones: expected fractions"),
        ({"ema": {"decay": 1.0}}, "ema: decay: expected in [0, 1)"),
        ({"grad_clip": 0}, "grad_clip: expected > 0 or null"),
        ({"optimizer": {"nesterov": True, "momentum": 0}}, "nesterov: needs momentum > 0"),
    ],
)
def test_bad_values_name_their_key(raw, message):
    with pytest.raises(ConfigError) as info:
        from_dict(TrainConfig, raw)
    assert message in str(info.value)
