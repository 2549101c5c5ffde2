"""The loop flags a contrastive stage whose features stop separating classes."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from test_resume import BATCH, INFO, THREAT, TinyNet, toy_data

from afa.data import BatchLoader, make_augment
from afa.methods.base import Batch, Method, StepOutput
from afa.training import LoopOptions, OptimConfig, RunSpec, ScheduleConfig, Stage, fit, read_metrics


class FixedGap(Method):
    """CE with a reported class gap ``gap`` (what AFA's cos_gap metric reports)."""

    name = "fixed-gap"
    collapse_remedies = ("method.eps_warmup_epochs",)  # the advice comes from the method

    def __init__(self, model, gap: float) -> None:
        super().__init__(model)
        self.gap = gap

    def forward(self, batch: Batch) -> StepOutput:
        loss = F.cross_entropy(self.model(batch.view()), batch.y)
        return StepOutput(
            loss, {"cos_gap": torch.tensor(self.gap), "loss_over_chance": loss.detach()}
        )


def _run(tmp_path, gap: float):
    model = TinyNet()
    stage = Stage("pretrain", FixedGap(model, gap), 6, OptimConfig(lr=0.01), ScheduleConfig())
    fit(
        [stage],
        BatchLoader(toy_data(), BATCH, shuffle=True, drop_last=True, seed=0),
        RunSpec(tmp_path),
        options=LoopOptions(val_batch_size=BATCH),
        val=None,
        threat=THREAT,
        augment=make_augment(INFO, padding=1),
        device=torch.device("cpu"),
    )
    return read_metrics(tmp_path / "metrics.jsonl")


def test_collapse_is_flagged_after_the_first_epochs(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="afa"):
        rows = _run(tmp_path, gap=0.01)
    assert [bool(r.get("collapse_warning")) for r in rows] == [False] * 4 + [True, True]
    assert "collapsed" in caplog.text and "eps_warmup_epochs" in caplog.text


def test_separating_features_are_not_flagged(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="afa"):
        rows = _run(tmp_path, gap=0.4)
    assert not any(r.get("collapse_warning") for r in rows)
    assert "collapsed" not in caplog.text
