"""AFA + TRADES, trained end to end (Park et al. 2024, arXiv 2402.12187; ``docs/method.md``,
"The joint AFA and TRADES objective"), on top of TRADES (Zhang et al., ICML 2019)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from afa.attacks import attack_mode, cross_entropy, perturb, trades_kl
from afa.attacks.threat import ThreatModel
from afa.losses import AFALoss, Views, trades_terms
from afa.methods.afa import (
    alignment_metrics,
    check_options,
    craft_afa_views,
    loss_metrics,
    projection_head,
)
from afa.methods.base import Batch, Method, StepOutput, accuracy_metric
from afa.models.base import Classifier


class AFATrades(Method):
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

    name = "afa-trades"

    @dataclass(frozen=True)
    class Config:
        """Options of AFA + TRADES.

        Attributes:
            beta: TRADES β (6.0, Zhang et al.'s CIFAR-10 value).
            afa_weight: λ, the weight of the AFA term (1.0: our choice, not from the
                paper: at initialisation the AFA term is near its chance level, a few
                nats, comparable to CE + β·KL).
            temperature: tau of the AFA loss.
            denominator: ``"negatives"`` (AFA) or ``"supcon"``.
            cross_view_positives: clean and adversarial same-class features are positives.
            head: projection head on g for the AFA term; ``"none"`` (default): the
                method card's ``L_AFA(g; ...)`` aligns the encoder features the classifier
                reads; ``"mlp"`` / ``"linear"`` as in stage 1.
            head_dim: output width of the head.
            shared_adversary: use the TRADES adversary as the AFA anchor (no AFA attack).
            attack_loss: the AFA adversary's objective when not shared: ``"afa"`` or
                ``"ce"`` (PGD on CE of f).
        """

        beta: float = 6.0
        afa_weight: float = 1.0
        temperature: float = 0.1
        denominator: Literal["negatives", "supcon"] = "negatives"
        cross_view_positives: bool = True
        head: Literal["mlp", "linear", "none"] = "none"
        head_dim: int = 128
        shared_adversary: bool = False
        attack_loss: Literal["afa", "ce"] = "afa"

        def __post_init__(self) -> None:
            check_options(**{k: getattr(self, k) for k in self.__dataclass_fields__})

    def __init__(
        self, model: Classifier, threat: ThreatModel, config: Config | None = None
    ) -> None:
        super().__init__(model, threat, config)
        c = self.config
        self.projector = projection_head(c.head, model.num_features, c.head_dim)
        self.criterion = AFALoss(
            temperature=c.temperature,
            denominator=c.denominator,
            anchors="adversarial",
            cross_view_positives=c.cross_view_positives,
        )

    def embed(self, x: Tensor) -> Tensor:
        """``h(g(x))`` (the AFA attack's forward).

        Shape:
            x: (B, C, H, W); result: (B, D).
        """
        return self.projector(self.model.features(x))

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
            x_a = craft_afa_views(
                self,
                self.embed,
                x,
                x,
                y,
                threat,
                temperature=c.temperature,
                denominator=c.denominator,
                cross_view_positives=c.cross_view_positives,
            )
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
