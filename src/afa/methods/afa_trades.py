"""AFA + TRADES, trained end to end (Park et al. 2024, arXiv 2402.12187; ``docs/method.md``,
"The joint AFA and TRADES objective"), on top of TRADES (Zhang et al., ICML 2019)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from afa.attacks import attack_mode, cross_entropy, perturb, trades_kl
from afa.attacks.threat import ThreatModel
from afa.losses import Views, trades_terms
from afa.methods.base import Batch, StepOutput, check_non_negative, clean_adv_metrics
from afa.methods.clean_term import CleanTerm, CleanTermMixin, check_schedule
from afa.methods.contrastive import (
    ContrastiveConfig,
    ContrastiveMethod,
    HeadKind,
    alignment_metrics,
    craft_afa_views,
    loss_metrics,
)
from afa.methods.registry import register_method
from afa.models.base import Classifier
from afa.models.dual_bn import bn_branch, on_branch


@register_method("afa-trades")
class AFATrades(CleanTermMixin, ContrastiveMethod):
    """``L = CE(f(x), y) + β · KL(f(x) ‖ f(x̃_T)) + λ · L_AFA(g; x, x̃_A, y)``.

    ``x̃_T`` is the TRADES adversary (PGD on the KL from the clean prediction, crafted
    like :class:`afa.methods.TRADES`), ``x̃_A`` the AFA adversary of the same clean view
    ``x`` (PGD on its own AFA term against the detached clean features). The AFA term's
    contrast set is ``{x, x̃_A}`` (one clean and one adversarial view per sample; the
    adversarial features are the anchors). With ``shared_adversary`` ``x̃_T`` is also the
    AFA anchor: one attack per step instead of two. ``afa_steps`` / ``afa_step_size`` /
    ``afa_init`` make the AFA adversary cheaper: fewer steps (larger ones), or a few AFA
    steps that start from ``x̃_T`` instead of a random point. The defaults are the paper's
    two PGD-k adversaries; the natural-image recipes take one AFA step of ε from a random
    start, which kept the PGD-k anchor's accuracy within noise at 1.2-1.35x the cost of a
    TRADES step instead of 1.9x (``docs/results.md``, "afa-trades: the cost of the AFA
    adversary").

    The clean, TRADES and AFA inputs go through the network in separate forwards, as in
    :class:`afa.methods.TRADES` (batch-norm statistics per kind of input). With dual batch
    norm (``model.dual_bn``) the clean view (and the TRADES attack's fixed clean prediction)
    uses the ``clean`` BN branch, both attacks and the adversarial views the ``adv`` one.

    With ``clean_term`` a second clean view ``x'`` is drawn and the AFA term becomes
    ``a * L(x, x') + b * L_AFA`` (:mod:`afa.methods.clean_term`): the two clean views
    contrasted among themselves (every clean view an anchor), weighted as ACL or DynACL.

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
            afa_steps: PGD steps of the AFA adversary (``None``: the threat model's);
                each costs about one attack step of the TRADES adversary.
            afa_step_size: its step (``None``: the threat model's).
            afa_init: where the AFA adversary starts: ``"random"`` (the threat model's
                random start, independent of ``x̃_T``) or ``"trades"`` (at ``x̃_T``: the
                AFA anchor refines the TRADES attack's final iterate).
            clean_term: ``"none"`` (default), ``"acl"`` (1/2, 1/2) or ``"dynacl"``
                (DynACL's schedule): add the clean term of a second clean view.
            dynacl_k / dynacl_swap: DynACL's K (50) and swap (2/3).
        """

        head: HeadKind = "none"
        beta: float = 6.0
        afa_weight: float = 1.0
        cross_view_positives: bool = True
        shared_adversary: bool = False
        attack_loss: Literal["afa", "ce"] = "afa"
        afa_steps: int | None = None
        afa_step_size: float | None = None
        afa_init: Literal["random", "trades"] = "random"
        clean_term: CleanTerm = "none"
        dynacl_k: int = 50
        dynacl_swap: float = 2 / 3

        def __post_init__(self) -> None:
            super().__post_init__()
            check_non_negative(self, "beta", "afa_weight", "afa_steps", "afa_step_size")
            check_schedule(self.dynacl_k, self.dynacl_swap)

    config: Config

    def __init__(
        self, model: Classifier, threat: ThreatModel, config: Config | None = None
    ) -> None:
        super().__init__(model, threat, config)
        self.init_clean_term()

    def criterion_options(self) -> dict[str, Any]:
        return {"anchors": "adversarial", "cross_view_positives": self.config.cross_view_positives}

    def splits_bn(self) -> bool:
        return True

    def afa_threat(self) -> ThreatModel:
        """The AFA adversary's threat model: the run's ball, with this method's steps."""
        c = self.config
        changes: dict[str, Any] = {}
        if c.afa_steps is not None:
            changes["steps"] = c.afa_steps
        if c.afa_step_size is not None:
            changes["step_size"] = c.afa_step_size
        return self.threat.with_(**changes) if changes else self.threat

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self.set_term_weights(epoch, epochs)

    def forward(self, batch: Batch) -> StepOutput:
        c = self.config
        x, y = batch.view(), batch.y
        threat = self.threat
        # Without dual BN the branches are one network (bn_branch is then a no-op).
        model_adv = on_branch(self, "adv", self.model)
        with torch.no_grad(), attack_mode(self, threat.bn_mode), bn_branch(self, "clean"):
            clean_feats = self.model.features(x)
            clean_logits = self.model.head(clean_feats)  # the TRADES attack's fixed target
            # The AFA attack's contrast set is {x, x} under the same modes: reuse the
            # features (with dual BN its second half is on the adv branch: computed there).
            reference = None
            if not self.model.dual_bn:
                z_ref = self.projector(clean_feats)
                reference = torch.cat([z_ref, z_ref])
        x_t = perturb(self.model, x, y, threat, trades_kl(clean_logits), forward=model_adv)
        if c.shared_adversary:
            x_a = x_t
        elif c.attack_loss == "afa":
            x_a = craft_afa_views(
                self,
                on_branch(self, "adv", self.embed),
                x,
                x,
                y,
                self.afa_threat(),
                self.criterion,
                # Dual BN: the contrast set's clean rows on the clean branch, the rest on
                # adv (two forwards); one BN: the reference computed above.
                clean_embed=on_branch(self, "clean", self.embed) if self.model.dual_bn else None,
                init=x_t if c.afa_init == "trades" else None,
                reference=reference,
            )
        else:
            x_a = perturb(
                self.model,
                x,
                y,
                self.afa_threat(),
                cross_entropy,
                forward=model_adv,
                init=x_t if c.afa_init == "trades" else None,
            )

        with bn_branch(self, "clean"):
            feats_clean = self.model.features(x)
            z_clean = self.projector(feats_clean)
        with bn_branch(self, "adv"):
            feats_t = self.model.features(x_t)
            feats_a = feats_t if c.shared_adversary else self.model.features(x_a)
            z_a = self.projector(feats_a)
        logits_clean = self.model.head(feats_clean)
        logits_t = self.model.head(feats_t)
        ce, kl = trades_terms(logits_clean, logits_t, y)

        feats = torch.cat([feats_clean, feats_a])
        z = torch.cat([z_clean, z_a])
        views = Views.stack(y, 1, 1)
        out = self.criterion(z, views)
        contrastive = out.loss
        clean_metrics: dict[str, torch.Tensor] = {}
        if c.clean_term != "none":
            with bn_branch(self, "clean"):
                z_second = self.projector(self.model.features(batch.view()))
            z_clean_views = torch.cat([z_clean, z_second])
            contrastive, clean_metrics = self.add_clean_term(contrastive, z_clean_views, y, 2)
        loss = ce + c.beta * kl + c.afa_weight * contrastive
        metrics = {
            **clean_adv_metrics(loss, logits_clean, logits_t, y),
            "ce": ce.detach(),
            "kl": kl.detach(),
            **loss_metrics(out),
            **alignment_metrics(z, feats, views.labels),
            **clean_metrics,
        }
        return StepOutput(loss, metrics)


__all__ = ["AFATrades"]
