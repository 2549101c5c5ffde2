"""acl and dynacl through the one loop on digits: a run with dual BN, contrastive augmentation
(annealed for dynacl), LARS and a classifier stage trains, and interrupted + resumed equals
uninterrupted."""

from __future__ import annotations

import functools

import pytest
import torch

import afa.training.plan as plan
from afa.runs import load_checkpoint, parse_run_config
from afa.training.plan import train_run


def _cfg(method: str, out: str):
    return parse_run_config(
        {
            "data": {
                "name": "digits",
                "val_size": 60,
                "augment": "contrastive",
                "contrastive": {"schedule": "anneal", "anneal_every": 1},
            },
            "model": {"name": "cnn", "options": {"width": 4}, "dual_bn": True, "bn_branch": "adv"},
            "threat": {"eps": 0.1, "step_size": 0.05, "steps": 2},
            "method": {"name": method, "attack_steps": 2},
            "train": {
                "epochs": 2,
                "batch_size": 256,
                "val_examples": 60,
                "log_every": 100,
                "optimizer": {"name": "lars", "lr": 1.0, "weight_decay": 1e-6},
                "schedule": {"name": "cosine", "warmup_epochs": 1},
            },
            "classifier": {"protocol": "linear", "epochs": 1},
            "eval": {"attacks": ["pgd"]},
            "out_dir": out,
        }
    )


@pytest.mark.parametrize("method", ["acl", "dynacl"])
def test_trains_and_resumes(tmp_path, monkeypatch, method):
    full = train_run(_cfg(method, str(tmp_path / "full")))
    assert full.completed
    history = full.history
    assert [r["stage"] for r in history] == ["pretrain", "pretrain", "classifier"]
    first = history[0]
    for key in ("train/clean_loss", "train/adv_loss", "train/loss_over_chance", "train/cos_gap"):
        assert torch.isfinite(torch.tensor(first[key])), key
    assert first["train/adv_loss"] > 0 and first["train/clean_loss"] > 0

    real_fit = plan.fit
    monkeypatch.setattr(plan, "fit", functools.partial(real_fit, stop_after=1))
    part_cfg = _cfg(method, str(tmp_path / "part"))
    assert not train_run(part_cfg).completed
    monkeypatch.setattr(plan, "fit", real_fit)
    resumed = train_run(part_cfg, resume=True)
    assert resumed.completed
    a = load_checkpoint(full.last_path)["model"]
    b = load_checkpoint(resumed.last_path)["model"]
    assert a.keys() == b.keys() and any(".adv." in k for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
