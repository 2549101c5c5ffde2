"""Stage-2 classifiers on a frozen, pre-trained encoder.

``slf`` is the standard linear-evaluation protocol of adversarial contrastive learning
(SLF: clean CE on a frozen encoder); ``alf`` trains the head on PGD adversaries of the whole
network (ALF). Fine-tuning the whole network (``aff``) is not a probe: the planner reuses
PGD-AT or TRADES for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from afa.attacks import cross_entropy, perturb
from afa.methods.base import Batch, Method, StepOutput, accuracy_metric


class LinearProbe(Method):
    """Train only ``model.head`` with the encoder frozen (weights and BN statistics).

    Args:
        model: the classifier whose encoder was pre-trained.
        threat: the run's threat model (used when ``adversarial``).
        adversarial: craft PGD (CE) adversaries against the full network and train the
            head on them (``alf``); otherwise clean CE (``slf``).
    """

    name = "linear"

    @dataclass(frozen=True)
    class Config:
        adversarial: bool = False

    def trains_clean(self) -> bool:
        return not self.config.adversarial

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.model.head.parameters())

    def train(self, mode: bool = True) -> LinearProbe:
        # The frozen encoder keeps its BN statistics: it stays in eval mode.
        super().train(mode)
        self.model.eval()
        self.model.head.train(mode)
        return self

    def forward(self, batch: Batch) -> StepOutput:
        x = batch.view()
        if self.config.adversarial:
            x = perturb(self.model, x, batch.y, self.threat, cross_entropy)
        with torch.no_grad():
            feats = self.model.features(x)
        logits = self.model.head(feats)
        loss = F.cross_entropy(logits.float(), batch.y)
        key = "adv_acc" if self.config.adversarial else "acc"
        return StepOutput(loss, {"loss": loss.detach(), key: accuracy_metric(logits, batch.y)})
