"""Supervised contrastive pre-training on clean views (Khosla et al., "Supervised
Contrastive Learning", NeurIPS 2020): the non-adversarial ablation of AFA."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from afa.attacks.threat import ThreatModel
from afa.errors import ConfigError
from afa.losses import AFALoss, Views
from afa.methods.afa import (
    ContrastivePretraining,
    alignment_metrics,
    check_options,
    loss_metrics,
    projection_head,
)
from afa.methods.base import Batch, StepOutput, accuracy_metric
from afa.models.base import Classifier


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

    name = "supcon"

    @dataclass(frozen=True)
    class Config:
        """Options of SupCon pre-training.

        Attributes:
            temperature: tau (0.1, Khosla et al.).
            denominator: ``"supcon"`` (default) or ``"negatives"``.
            views: clean augmented views per sample (2, as Khosla et al.).
            head: projection head ``"mlp"`` (default), ``"linear"`` or ``"none"``.
            head_dim: output width of the head (128).
            lambda_ce: weight of a CE term of ``model.head`` on the encoder features (0 = off).
            ce_detach: that CE term trains only the head (default True).
        """

        temperature: float = 0.1
        denominator: Literal["negatives", "supcon"] = "supcon"
        views: int = 2
        head: Literal["mlp", "linear", "none"] = "mlp"
        head_dim: int = 128
        lambda_ce: float = 0.0
        ce_detach: bool = True

        def __post_init__(self) -> None:
            check_options(**{k: getattr(self, k) for k in self.__dataclass_fields__})
            if self.views < 1:
                raise ConfigError(f"method.views: expected >= 1, got {self.views!r}")

    def __init__(
        self, model: Classifier, threat: ThreatModel, config: Config | None = None
    ) -> None:
        super().__init__(model, threat, config)
        c = self.config
        self.projector = projection_head(c.head, model.num_features, c.head_dim)
        self.criterion = AFALoss(
            temperature=c.temperature, denominator=c.denominator, anchors="all"
        )

    def forward(self, batch: Batch) -> StepOutput:
        c = self.config
        views = Views.stack(batch.y, c.views, 0)
        feats = self.model.features(torch.cat([batch.view() for _ in range(c.views)]))
        z = self.projector(feats)
        out = self.criterion(z, views)
        loss = out.loss
        metrics = {**loss_metrics(out), **alignment_metrics(z, feats, views.labels)}
        if c.lambda_ce > 0:
            logits = self.model.head(feats.detach() if c.ce_detach else feats)
            ce = F.cross_entropy(logits.float(), views.labels)
            loss = loss + c.lambda_ce * ce
            metrics["ce"] = ce.detach()
            metrics["acc"] = accuracy_metric(logits, views.labels)
        metrics["loss"] = loss.detach()
        return StepOutput(loss, metrics)


__all__ = ["SupConPretrain"]
