"""The loop flags a stage whose encoder collapsed, and only such a stage.

On digits with a validation split: an encoder that never learns (its features stay those
of its random initialisation) and one whose features are constant are flagged from the 5th
epoch on; the same network trained with cross-entropy is not. Without a validation split,
the training batches' statistics are judged by the absolute rules only.
"""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from afa.attacks import ThreatModel
from afa.data import BatchLoader, load_splits
from afa.methods import Standard
from afa.methods.base import Batch, Method, StepOutput
from afa.methods.collapse import MIN_GAIN_OVER_INIT
from afa.models import create_model
from afa.models.base import Classifier
from afa.recipes import resolve_recipe
from afa.runs import load_run_config
from afa.training import LoopOptions, OptimConfig, RunSpec, ScheduleConfig, Stage, fit, read_metrics

THREAT = ThreatModel(norm="linf", eps=0.1, step_size=0.05, steps=1)
EPOCHS = 6


@pytest.fixture(scope="module")
def digits():
    return load_splits(load_run_config(resolve_recipe("digits-standard")).data)


def cnn(splits) -> Classifier:
    torch.manual_seed(0)
    info = splits.info
    return create_model(
        "cnn", 10, in_channels=1, image_size=8, mean=info.mean, std=info.std, width=8
    )


class HeadOnly(Method):
    """CE of the head on detached features: the encoder stays at its initialisation
    (its parameters are still the optimizer's, so the stage counts as training it)."""

    name = "head-only"
    collapse_remedies = ("method.eps_warmup_epochs",)  # the advice comes from the method

    def forward(self, batch: Batch) -> StepOutput:
        logits = self.model.head(self.model.features(batch.view()).detach())
        return StepOutput(F.cross_entropy(logits, batch.y))


class ConstantFeatures(Classifier):
    """The CNN with its pooled features replaced by a constant (a collapsed encoder)."""

    def __init__(self, inner: Classifier) -> None:
        super().__init__()
        self.inner, self.normalize, self.head = inner, inner.normalize, inner.head
        self.num_features, self.num_classes = inner.num_features, inner.num_classes

    def encode(self, x: Tensor) -> Tensor:
        f = self.inner.encode(x)
        return f * 0 + 1.0


class ReportsStats(Method):
    """CE, reporting fixed per-batch collapse statistics (as contrastive methods do)."""

    name = "reports-stats"

    def __init__(self, model: Classifier, stats: dict[str, float]) -> None:
        super().__init__(model, THREAT)
        self.stats = stats

    def forward(self, batch: Batch) -> StepOutput:
        loss = F.cross_entropy(self.model(batch.view()), batch.y)
        return StepOutput(loss, {k: torch.tensor(v) for k, v in self.stats.items()})


def _run(tmp_path, splits, method: Method, *, val: bool = True) -> list[dict]:
    fit(
        [Stage("train", method, EPOCHS, OptimConfig(lr=0.05), ScheduleConfig())],
        BatchLoader(splits.train, 64, shuffle=True, drop_last=True, seed=0),
        RunSpec(tmp_path),
        options=LoopOptions(val_batch_size=256),
        val=(torch.as_tensor(splits.val.images[:]), torch.as_tensor(splits.val.labels[:]))
        if val
        else None,
        threat=THREAT,
        augment=lambda t: t,
        device=torch.device("cpu"),
    )
    return read_metrics(tmp_path / "metrics.jsonl")


def flags(rows: list[dict]) -> list[bool]:
    return [bool(r.get("collapse_warning")) for r in rows]


def test_an_encoder_that_stays_at_initialisation_is_flagged(tmp_path, digits, caplog):
    with caplog.at_level(logging.WARNING, logger="afa"):
        rows = _run(tmp_path, digits, HeadOnly(cnn(digits), THREAT))
    assert flags(rows) == [False] * 4 + [True, True]
    last = rows[-1]
    assert last["val/feat_separation"] < MIN_GAIN_OVER_INIT * last["val/feat_separation_init"]
    assert "randomly initialised" in caplog.text and "eps_warmup_epochs" in caplog.text


def test_constant_features_are_flagged(tmp_path, digits, caplog):
    with caplog.at_level(logging.WARNING, logger="afa"):
        rows = _run(tmp_path, digits, Standard(ConstantFeatures(cnn(digits)), THREAT))
    assert flags(rows) == [False] * 4 + [True, True]
    assert rows[-1]["val/feat_erank"] == 0.0 and rows[-1]["val/feat_separation"] == 0.0
    assert "effective directions" in caplog.text and "learning rate" in caplog.text


def test_a_learning_encoder_is_not_flagged(tmp_path, digits, caplog):
    with caplog.at_level(logging.WARNING, logger="afa"):
        rows = _run(tmp_path, digits, Standard(cnn(digits), THREAT))
    assert not any(flags(rows))
    assert "collapsed" not in caplog.text
    last = rows[-1]
    assert last["val/feat_separation"] > 2 * last["val/feat_separation_init"]
    assert last["val/feat_erank"] > 2


def test_without_validation_the_batch_statistics_are_judged(tmp_path, digits):
    collapsed = {"feat_separation": 0.0, "feat_erank": 1.0}
    rows = _run(tmp_path / "a", digits, ReportsStats(cnn(digits), collapsed), val=False)
    assert flags(rows) == [False] * 4 + [True, True]
    # no random-initialisation reference without validation: only the absolute rules
    spread = {"feat_separation": 0.1, "feat_erank": 8.0}
    rows = _run(tmp_path / "b", digits, ReportsStats(cnn(digits), spread), val=False)
    assert not any(flags(rows)) and "val/feat_separation" not in rows[-1]
