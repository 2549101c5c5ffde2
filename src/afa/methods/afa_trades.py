"""AFA + TRADES, trained end to end (Park et al. 2024, arXiv 2402.12187; ``docs/method.md``,
"The joint AFA and TRADES objective"), on top of TRADES (Zhang et al., ICML 2019)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from afa.attacks import attack_mode, cross_entropy, perturb, trades_kl
from afa.losses import Views, trades_terms
from afa.methods.base import Batch, StepOutput, accuracy_metric, check_non_negative
from afa.methods.contrastive import (
    ContrastiveConfig,
    ContrastiveMethod,
    HeadKind,
    alignment_metrics,
    craft_afa_views,
    loss_metrics,
)
from afa.methods.registry import register_method


@register_method("afa-trades")
class AFATrades(ContrastiveMethod):
    """``L = CE(f(x), y) + β · KL(f(x) ‖ f(x̃_T)) + λ · L_AFA(g; x, x̃_A, y)``.

    ``x̃_T`` is the TRADES adversary (PGD on the KL from the clean prediction, crafted
    like :class:`afa.methods.TRADES`), ``x̃_A`` the AFA adversary of the same clean view
    ``x`` (PGD on its own AFA term against the detached clean features). The AFA term's
    contrast set is ``{x, x̃_A}`` (one clean and one adversarial view per sample; the
    adversarial features are the anchors). With ``shared_adversary`` ``x̃_T`` is also the
    AFA anchor: one attack per step instead of two.

    The clean, TRADES and AFA inputs go through the network in separate forwards, as in
    :class:`afa.methods.TRADES` (batch-norm statistics per kind of input).

    Args:
        model: the classifier f = W ∘ g, trained end to end.
        threat: the run's threat model (both attacks).
        config: the options below.
    """

    collapse_remedies = (
        "method.afa_weight",
        "method.temperature",
        "method.head",
        "method.attack_loss=ce",
    )

    @dataclass(frozen=True)
    class Config(ContrastiveConfig):
        """Options of AFA + TRADES (besides those of :class:`ContrastiveConfig`).

        Attributes:
            head: projection head on g for the AFA term; ``"none"`` (default): the
                method card's ``L_AFA(g; ...)`` aligns the encoder features the classifier
                reads; ``"mlp"`` / ``"linear"`` as in stage 1.
            beta: TRADES β (6.0, Zhang et al.'s CIFAR-10 value).
            afa_weight: λ, the weight of the AFA term (1.0: our choice, not from the
                paper: at initialisation the AFA term is near its chance level, a few
                nats, comparable to CE + β·KL).
            cross_view_positives: clean and adversarial same-class features are positives.
            shared_adversary: use the TRADES adversary as the AFA anchor (no AFA attack).
            attack_loss: the AFA adversary's objective when not shared: ``"afa"`` or
                ``"ce"`` (PGD on CE of f).
        """

        head: HeadKind = "none"
        beta: float = 6.0
        afa_weight: float = 1.0
        cross_view_positives: bool = True
        shared_adversary: bool = False
        attack_loss: Literal["afa", "ce"] = "afa"

        def __post_init__(self) -> None:
            super().__post_init__()
            check_non_negative(self, "beta", "afa_weight")

    config: Config

    def criterion_options(self) -> dict[str, Any]:
        return {"anchors": "adversarial", "cross_view_positives": self.config.cross_view_positives}

    def forward(self, batch: Batch) -> StepOutput:
        c = self.config
        x, y = batch.view(), batch.y
        threat = self.threat
        with torch.no_grad(), attack_mode(self, threat.bn_mode):
            clean_logits = self.model(x)  # the TRADES attack's fixed clean prediction
        x_t = perturb(self.model, x, y, threat, trades_kl(clean_logits))
        if c.shared_adversary:
            x_a = x_t
        elif c.attack_loss == "afa":
            x_a = craft_afa_views(self, self.embed, x, x, y, threat, self.criterion)
        else:
            x_a = perturb(self.model, x, y, threat, cross_entropy)

        feats_clean = self.model.features(x)
        feats_t = self.model.features(x_t)
        feats_a = feats_t if c.shared_adversary else self.model.features(x_a)
        logits_clean = self.model.head(feats_clean)
        logits_t = self.model.head(feats_t)
        ce, kl = trades_terms(logits_clean, logits_t, y)

        feats = torch.cat([feats_clean, feats_a])
        z = self.projector(feats)
        views = Views.stack(y, 1, 1)
        out = self.criterion(z, views)
        loss = ce + c.beta * kl + c.afa_weight * out.loss
        metrics = {
            "loss": loss.detach(),
            "ce": ce.detach(),
            "kl": kl.detach(),
            "acc": accuracy_metric(logits_clean, y),
            "adv_acc": accuracy_metric(logits_t, y),
            **loss_metrics(out),
            **alignment_metrics(z, feats, views.labels),
        }
        return StepOutput(loss, metrics)


__all__ = ["AFATrades"]
