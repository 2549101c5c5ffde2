"""AFA stage 1: adversarial feature alignment pre-training of the encoder.

Park et al., "Adversarial Feature Alignment: Balancing Robustness and Accuracy in Deep
Learning via Adversarial Training", arXiv 2402.12187 (ACM AISec 2024); the method card is
``docs/method.md``. One step:

1. draw ``clean_views`` clean augmented views and ``adv_views`` more augmented views of the
   batch (``Batch.view()``, a fresh augmentation each);
2. craft each of the latter into an adversarial view (the inner maximisation): PGD on the
   adversarial anchor's own AFA term ``l(i)`` (``attack_loss="afa"``) with the rest of the
   contrast set computed on clean inputs and held fixed, or on the cross-entropy of
   ``f = model(x)`` (``attack_loss="ce"``);
3. minimise the AFA loss (:class:`afa.losses.AFALoss`) of all views' features
   ``z = normalize(h(g(x)))`` (one forward over the concatenated views), plus, with
   ``clean_term``, the clean views' own supervised contrastive term weighted as ACL or DynACL
   (:mod:`afa.methods.clean_term`).

With dual batch norm (``model.dual_bn``) the clean views go through the ``clean`` BN branch
and the adversarial views, and the attack crafting them, through the ``adv`` branch (two
forwards instead of one).

Stage 2 (a linear probe or fine-tuning) is added by the planner (``pretraining = True``).

The shared contrastive pieces (config base, projection head, ``embed``, the AFA attack,
the per-batch feature geometry) live in :mod:`afa.methods.contrastive`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from afa.attacks import cross_entropy, perturb
from afa.attacks.threat import ThreatModel
from afa.errors import ConfigError
from afa.losses import Views
from afa.methods.base import Batch, StepOutput, check_non_negative
from afa.methods.clean_term import CleanTerm, CleanTermMixin, check_schedule
from afa.methods.contrastive import (
    ContrastivePretraining,
    PretrainConfig,
    alignment_metrics,
    craft_afa_views,
    loss_metrics,
)
from afa.methods.registry import register_method
from afa.models.base import Classifier
from afa.models.dual_bn import Branch, bn_branch, on_branch


@register_method("afa")
class AFAPretrain(CleanTermMixin, ContrastivePretraining):
    """AFA pre-training: min over the encoder (and head) of the AFA loss on adversarial views.

    ``min_θ E [ L_AFA(z(x_clean views), z(x̃ views), y) ]`` with
    ``x̃_i = argmax_{‖δ‖ ≤ ε} l(i; x_i + δ)`` (Park et al. 2024; ``docs/method.md``).

    Args:
        model: the classifier whose encoder g (``model.features``) is pre-trained.
        threat: the run's threat model (radius, PGD schedule, BN mode while crafting).
        config: the options below.

    The projection head is a sub-module (``projector``), so it is checkpointed with the
    method. ``model.head`` (the linear classifier) is trained only when ``lambda_ce > 0``.
    """

    collapse_reference = "'When AFA collapses', docs/results.md#when-afa-collapses"
    collapse_remedies = (
        "method.clean_term=acl",  # with method.clean_views=2: docs/results.md#when-afa-collapses
        "method.eps_warmup_epochs",
        "method.clean_anchor_weight",
        "method.lambda_ce",
        "method.temperature",
        "method.attack_loss=ce",
    )

    @dataclass(frozen=True)
    class Config(PretrainConfig):
        """Options of AFA pre-training (besides those of :class:`PretrainConfig`).

        Attributes:
            anchors: ``"adversarial"`` (the adversarial views, default) or ``"all"``.
            cross_view_positives: clean and adversarial same-class features are positives
                of each other (default True; False ignores cross-kind same-class pairs).
            clean_views: V_c, clean augmented views per sample (default 1).
            adv_views: V_a, adversarial views per sample (default 1), each crafted from
                its own fresh augmented view.
            attack_loss: ``"afa"`` (each adversarial anchor maximises its own AFA term)
                or ``"ce"`` (PGD on the cross-entropy of ``model(x)``; a cheaper
                baseline, meaningful with ``lambda_ce > 0`` so the head is trained).
            eps_warmup_epochs: ramp eps and step_size linearly over this many epochs:
                epoch e (from 0) uses ``min(1, (e + 1) / eps_warmup_epochs)`` of them
                (0 = off).
            clean_anchor_weight: weight of an extra AFA term with the clean views as
                anchors (0 = off); a remedy if the clean features collapse.
            clean_term: ``"none"`` (default), ``"acl"`` or ``"dynacl"``: add the clean
                views' own term (the AFA loss with every clean view an anchor and only the
                clean views as the contrast set; needs ``clean_views >= 2``) and minimise
                ``a * L_clean + b * L_AFA`` with ACL's (1/2, 1/2) or DynACL's schedule
                ((2 - w)/2, w/2) (:mod:`afa.methods.clean_term`); ``none``: ``L_AFA`` alone.
            dynacl_k / dynacl_swap: DynACL's K (50) and swap (2/3) of ``clean_term: dynacl``.

        The CE probe (``lambda_ce``, ``ce_detach``) sees every view, clean and
        adversarial.
        """

        anchors: Literal["adversarial", "all"] = "adversarial"
        cross_view_positives: bool = True
        clean_views: int = 1
        adv_views: int = 1
        attack_loss: Literal["afa", "ce"] = "afa"
        eps_warmup_epochs: int = 0
        clean_anchor_weight: float = 0.0
        clean_term: CleanTerm = "none"
        dynacl_k: int = 50
        dynacl_swap: float = 2 / 3

        def __post_init__(self) -> None:
            super().__post_init__()
            check_non_negative(self, "clean_anchor_weight", "eps_warmup_epochs", "clean_views")
            check_schedule(self.dynacl_k, self.dynacl_swap)
            if self.clean_term != "none" and self.clean_views < 2:
                raise ConfigError(
                    f"method.clean_term: {self.clean_term!r} contrasts two clean views "
                    f"among themselves; needs clean_views >= 2, got {self.clean_views}"
                )
            if self.adv_views < 1:
                raise ConfigError(f"method.adv_views: expected >= 1, got {self.adv_views!r}")
            if self.clean_anchor_weight > 0 and self.clean_views == 0:
                raise ConfigError("method.clean_anchor_weight: needs clean_views >= 1")

    config: Config

    def __init__(
        self, model: Classifier, threat: ThreatModel, config: Config | None = None
    ) -> None:
        super().__init__(model, threat, config)
        self.current_threat = self.warmup_threat(0)
        self.init_clean_term()

    def criterion_options(self) -> dict[str, Any]:
        c = self.config
        return {
            "anchors": c.anchors,
            "cross_view_positives": c.cross_view_positives,
            "clean_anchor_weight": c.clean_anchor_weight,
        }

    def warmup_threat(self, epoch: int) -> ThreatModel:
        """The threat model of ``epoch`` (from 0) under the eps warm-up."""
        w = self.config.eps_warmup_epochs
        if w <= 0:
            return self.threat
        frac = min(1.0, (epoch + 1) / w)
        return self.threat.with_(eps=self.threat.eps * frac, step_size=self.threat.step_size * frac)

    def splits_bn(self) -> bool:
        return True

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self.current_threat = self.warmup_threat(epoch)
        self.set_term_weights(epoch, epochs)

    def forward(self, batch: Batch) -> StepOutput:
        c = self.config
        y = batch.y
        clean = [batch.view() for _ in range(c.clean_views)]
        starts = torch.cat([batch.view() for _ in range(c.adv_views)])
        clean_x = torch.cat(clean) if clean else starts[:0]
        threat = self.current_threat
        # Without dual BN both routes are the same network (bn_branch is then a no-op).
        embed_adv = on_branch(self, "adv", self.embed)
        if c.attack_loss == "afa":
            x_adv = craft_afa_views(
                self,
                embed_adv,
                clean_x,
                starts,
                y,
                threat,
                self.criterion,
                # Dual BN: the contrast set's clean rows on the clean branch (two forwards);
                # one BN: one forward over both, as before (the same batch statistics in
                # bn_mode train).
                clean_embed=on_branch(self, "clean", self.embed) if self.model.dual_bn else None,
            )
        else:
            forward = on_branch(self, "adv", self.model)
            x_adv = perturb(
                self.model, starts, y.repeat(c.adv_views), threat, cross_entropy, forward=forward
            )

        views = Views.stack(y, c.clean_views, c.adv_views)
        if self.model.dual_bn:
            feats_c, z_c = self._features_and_z(clean_x, "clean")
            feats_a, z_a = self._features_and_z(x_adv, "adv")
            feats, z = torch.cat([feats_c, feats_a]), torch.cat([z_c, z_a])
        else:
            feats = self.model.features(torch.cat([clean_x, x_adv]))
            z = self.projector(feats)
        out = self.criterion(z, views)
        loss = out.loss
        metrics = {**loss_metrics(out), **alignment_metrics(z, feats, views.labels)}
        if c.clean_term != "none":
            n_clean = c.clean_views * y.shape[0]
            loss, clean_metrics = self.add_clean_term(loss, z[:n_clean], y, c.clean_views)
            metrics.update(clean_metrics)
        if c.clean_anchor_weight > 0:
            metrics["clean_anchor_loss"] = out.clean
        if c.lambda_ce > 0:
            ce_term, ce_metrics = self.probe_ce(feats, views.labels, c.clean_views * y.shape[0])
            loss = loss + ce_term
            metrics.update(ce_metrics)
        metrics["eps"] = torch.tensor(threat.eps, device=loss.device)
        metrics["loss"] = loss.detach()
        return StepOutput(loss, metrics)

    def _features_and_z(self, x: torch.Tensor, branch: Branch) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder features and projections of ``x`` on one BN branch (model and head)."""
        with bn_branch(self, branch):
            feats = self.model.features(x)
            return feats, self.projector(feats)


__all__ = ["AFAPretrain"]
