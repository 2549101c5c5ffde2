"""Supervised contrastive pre-training on clean views (Khosla et al., "Supervised
Contrastive Learning", NeurIPS 2020): the non-adversarial ablation of AFA."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from afa.errors import ConfigError
from afa.losses import Views
from afa.losses.contrastive import Denominator
from afa.methods.base import Batch, StepOutput
from afa.methods.contrastive import (
    ContrastivePretraining,
    PretrainConfig,
    alignment_metrics,
    loss_metrics,
)
from afa.methods.registry import register_method


@register_method("supcon")
class SupConPretrain(ContrastivePretraining):
    """Minimise SupCon (L_out) over ``views`` clean augmented views of every sample.

    Every view is an anchor; positives are the other same-class views, the denominator
    sums over every view but the anchor (``denominator="supcon"``, default) or over the
    negatives only (``"negatives"``, AFA's form without the adversary). Stage 2 is the
    planner's classifier stage (``pretraining = True``). The threat model is accepted for a
    uniform constructor; nothing here is adversarial.

    Args:
        model: the classifier whose encoder is pre-trained.
        threat: the run's threat model (unused in training).
        config: the options below.
    """

    clean_training = True
    collapse_remedies = ("method.temperature", "method.views", "method.lambda_ce")

    @dataclass(frozen=True)
    class Config(PretrainConfig):
        """Options of SupCon pre-training (besides those of :class:`PretrainConfig`).

        Attributes:
            denominator: ``"supcon"`` (default) or ``"negatives"``.
            views: clean augmented views per sample (2, as Khosla et al.).
        """

        denominator: Denominator = "supcon"
        views: int = 2

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.views < 1:
                raise ConfigError(f"method.views: expected >= 1, got {self.views!r}")

    config: Config

    def criterion_options(self) -> dict[str, Any]:
        return {"anchors": "all"}

    def forward(self, batch: Batch) -> StepOutput:
        c = self.config
        views = Views.stack(batch.y, c.views, 0)
        feats = self.model.features(torch.cat([batch.view() for _ in range(c.views)]))
        z = self.projector(feats)
        out = self.criterion(z, views)
        loss = out.loss
        metrics = {**loss_metrics(out), **alignment_metrics(z, feats, views.labels)}
        if c.lambda_ce > 0:
            ce_term, ce_metrics = self.probe_ce(feats, views.labels, len(views))
            loss = loss + ce_term
            metrics.update(ce_metrics)
        metrics["loss"] = loss.detach()
        return StepOutput(loss, metrics)


__all__ = ["SupConPretrain"]
